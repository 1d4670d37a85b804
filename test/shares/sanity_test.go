package shares_test

import (
	"strings"
	"testing"
)

// A csi-sanity run's output as ginkgo prints it without colour: two failed specs among passed ones.
const sanityOut = `Running Suite: CSI Driver Test Suite - /tmp/sanity-nfs-0
======================================================
Will run 3 of 3 specs
••
------------------------------
• [FAILED] [2.565 seconds]
Node Service NodeUnpublishVolume [It] should remove target path
github.com/kubernetes-csi/csi-test/v5@v5.4.0/pkg/sanity/node.go:409

  Timeline >>
  STEP: creating mount and staging directories @ 12/04/26 10:31:40.177
  STEP: node staging volume @ 12/04/26 10:31:41.217
  [FAILED] in [It] - node.go:455 @ 12/04/26 10:31:42.01
  Unexpected error: rpc error: code = Internal desc = unmount x: device busy
  << Timeline

  [FAILED] Unexpected error: rpc error: code = Internal desc = unmount x: device busy
  In [It] at: node.go:455 @ 12/04/26 10:31:42.01
------------------------------
• [FAILED] [0.010 seconds]
Node Service [BeforeEach] NodeStageVolume should fail when no volume id is provided
  [FAILED] failed to create staging directory
------------------------------
• [FAILED] [0.010 seconds]
Node Service [BeforeEach] NodeStageVolume should fail when no staging target path is provided
  [FAILED] failed to create staging directory
------------------------------

Summarizing 3 Failures:
  [FAIL] Node Service NodeUnpublishVolume [It] should remove target path

Ran 3 of 3 Specs in 2.389 seconds
FAIL! -- 0 Passed | 3 Failed | 0 Pending | 0 Skipped
`

// The first failure is kept whole but for its steps; the ones past the limit are counted, not printed.
func TestSanityFailures(t *testing.T) {
	got := sanityFailures(sanityOut, 2)
	for _, want := range []string{"should remove target path", "desc = unmount x: device busy", "In [It] at: node.go:455",
		"no volume id is provided", "... and 1 more failed specs"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"STEP:", "Timeline", "no staging target path", "Summarizing", "••"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("has %q:\n%s", unwanted, got)
		}
	}
	if got := sanityFailures("Ran 3 of 3 Specs\nSUCCESS! -- 3 Passed\n", 3); got != "" {
		t.Errorf("a run without failures: %q", got)
	}
}
