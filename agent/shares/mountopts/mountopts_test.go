package mountopts

import (
	"strings"
	"testing"
)

func ptr(v int64) *int64 { return &v }

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want string // the options joined with commas
	}{
		{"smb defaults", Request{Protocol: SMB}, "vers=3.0,dir_mode=0777,file_mode=0777,mfsymlinks,cache=strict,actimeo=30,nosharesock"},
		{"nfs defaults", Request{Protocol: NFS}, "nfsvers=4.1,hard,noresvport"},
		{"smb: the volume's options replace the defaults they set, and come after the rest",
			Request{Protocol: SMB, Options: []string{"vers=3.1.1", "dir_mode=0755,file_mode=0644", "cache=none"}},
			"mfsymlinks,actimeo=30,nosharesock,vers=3.1.1,dir_mode=0755,file_mode=0644,cache=none"},
		{"smb: fsGroup becomes gid, read-only adds ro", Request{Protocol: SMB, FSGroup: ptr(2000), ReadOnly: true},
			"vers=3.0,dir_mode=0777,file_mode=0777,mfsymlinks,cache=strict,actimeo=30,nosharesock,gid=2000,ro"},
		{"smb: a gid equal to the fsGroup is kept once", Request{Protocol: SMB, FSGroup: ptr(2000), Options: []string{"gid=2000"}},
			"vers=3.0,dir_mode=0777,file_mode=0777,mfsymlinks,cache=strict,actimeo=30,nosharesock,gid=2000"},
		{"nfs: soft replaces hard, vers replaces nfsvers (aliases)", Request{Protocol: NFS, Options: []string{"soft", "vers=4.2"}},
			"noresvport,soft,vers=4.2"},
		{"nfs: fsGroup is the kubelet's to apply", Request{Protocol: NFS, FSGroup: ptr(2000)}, "nfsvers=4.1,hard,noresvport"},
		{"the same option twice is passed once; ro given and asked", Request{Protocol: NFS, Options: []string{"ro", "nconnect=4", "ro, nconnect=4"}, ReadOnly: true},
			"nfsvers=4.1,hard,noresvport,ro,nconnect=4"},
		{"smb: guest needs no Secret", Request{Protocol: SMB, Options: []string{"guest"}},
			"vers=3.0,dir_mode=0777,file_mode=0777,mfsymlinks,cache=strict,actimeo=30,nosharesock,guest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("got  %s\nwant %s", strings.Join(got, ","), tc.want)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want []string // each must be in the error
	}{
		{"contradicting flags", Request{Protocol: NFS, Options: []string{"hard", "soft"}}, []string{`mountOptions[1]: "soft" conflicts with mountOptions[0]: "hard"`}},
		{"two values of one setting, through an alias", Request{Protocol: NFS, Options: []string{"nfsvers=4.1,vers=3"}},
			[]string{`mountOptions[0]: "vers=3" conflicts with mountOptions[0]: "nfsvers=4.1"`}},
		{"rw on a read-only volume", Request{Protocol: SMB, Options: []string{"rw"}, ReadOnly: true}, []string{`mountOptions[0]: "rw" conflicts with the volume mounted read-only`}},
		{"gid against the pod's fsGroup", Request{Protocol: SMB, Options: []string{"gid=1000"}, FSGroup: ptr(2000)}, []string{`"gid=1000" conflicts with the pod's fsGroup 2000`}},
		{"credentials, every one named", Request{Protocol: SMB, Options: []string{"username=alice", "password=hunter2,vers=3.0"}},
			[]string{`mountOptions[0]: option "username": a credential does not belong`, `mountOptions[1]: option "password"`}},
		{"bad shapes, values never echoed", Request{Protocol: SMB, Options: []string{"vers=3.0,,cache=none", "a b=hunter2", "x=1\n2hunter2", "password=hunter2,"}},
			[]string{`mountOptions[0]: an empty option`, `mountOptions[1]: option "a b": an option's name`, `mountOptions[2]: option "x": its value holds a control character`,
				`mountOptions[3]: an empty option`, `mountOptions[3]: option "password"`}},
		{"unknown protocol", Request{Protocol: "ftp"}, []string{`protocol "ftp"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.req)
			if err == nil {
				t.Fatalf("accepted: %v", got)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error echoes a password: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
