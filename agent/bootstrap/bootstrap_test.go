package bootstrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenNeverPrintsSecret(t *testing.T) {
	tok, err := ParseToken("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("joining", "token", tok)
	js, _ := json.Marshal(struct{ T Token }{tok})
	for name, out := range map[string]string{
		"String": tok.String(), "%v": fmt.Sprintf("%v", tok), "%+v": fmt.Sprintf("%+v", tok), "%#v": fmt.Sprintf("%#v", tok),
		"%s": fmt.Sprintf("%s", tok), "slog": logs.String(), "json": string(js),
	} {
		if strings.Contains(out, "0123456789abcdef") {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, "abcdef") {
			t.Errorf("%s does not show the token id: %s", name, out)
		}
	}
	if tok.Value() != "abcdef.0123456789abcdef" {
		t.Errorf("Value = %q", tok.Value())
	}
}

func TestParseTokenRejectsAndDoesNotEcho(t *testing.T) {
	for _, s := range []string{"", "abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcdeX", "abcdefg.0123456789abcdef"} {
		_, err := ParseToken(s)
		if err == nil {
			t.Errorf("ParseToken(%q) succeeded, want an error", s)
			continue
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error for %q echoes the input: %v", s, err)
		}
	}
}

func TestParsePin(t *testing.T) {
	good := "sha256:" + strings.Repeat("Ab", 32)
	p, err := ParsePin(good)
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != strings.ToLower(good) {
		t.Errorf("pin = %s, want lower case", p)
	}
	for _, bad := range []string{"", strings.Repeat("ab", 32), "md5:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("ab", 31), "sha256:zz"} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) succeeded", bad)
		}
	}
}
