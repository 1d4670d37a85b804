package exitcode

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/exit-codes.md has, in its first part (before the other commands' sections), one table row per code, in
// order, with the class name this package gives it.
func TestDocumentedCodesMatch(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/exit-codes.md")
	if err != nil {
		t.Fatal(err)
	}
	agent, _, _ := strings.Cut(string(doc), "\n## ")
	rows := regexp.MustCompile(`(?m)^\| (\d+) \| ([^|]+) \|`).FindAllStringSubmatch(agent, -1)
	var got []Info
	for _, r := range rows {
		code, _ := strconv.Atoi(r[1])
		got = append(got, Info{Code: code, Name: strings.TrimSpace(r[2])})
	}
	var want []Info
	for _, i := range All() {
		want = append(want, Info{Code: i.Code, Name: i.Name})
	}
	if !slices.Equal(got, want) {
		t.Errorf("docs/exit-codes.md rows %v\nwant %v", got, want)
	}
}

func TestLookupAndPermanent(t *testing.T) {
	if i, ok := Lookup(Token); !ok || !i.Permanent || i.Name != "token" {
		t.Errorf("Lookup(Token) = %+v, %v", i, ok)
	}
	if _, ok := Lookup(3); ok {
		t.Error("Lookup(3) found a code the agent never uses")
	}
	if got := Permanent(); !slices.IsSorted(got) || slices.Contains(got, Timeout) || !slices.Contains(got, InvalidConfig) {
		t.Errorf("Permanent() = %v", got)
	}
}
