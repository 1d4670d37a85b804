package bootstraptoken

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenNeverPrintsSecret(t *testing.T) {
	tok, err := Parse("abcdef.0123456789abcdef")
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
		_, err := Parse(s)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", s)
			continue
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error for %q echoes the input: %v", s, err)
		}
	}
}
