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

// fmt cannot call a method on an unexported field, so it prints such a field's insides: a Token held that way must
// still not show its secret, under any verb, nor in a nested pointer.
func TestTokenInAnUnexportedFieldNeverPrintsSecret(t *testing.T) {
	tok, err := Parse("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	type holder struct {
		name string
		tok  Token
		ptr  *Token
	}
	h := holder{name: "n", tok: tok, ptr: &tok}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		for _, v := range []any{h, &h, []holder{h}, map[string]holder{"k": h}} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, "0123456789abcdef") || strings.Contains(out, fmt.Sprintf("%x", "0123456789abcdef")) {
				t.Errorf("%s of %T leaks the secret: %s", verb, v, out)
			}
		}
	}
	if tok.Value() != "abcdef.0123456789abcdef" || tok.Secret() != "0123456789abcdef" {
		t.Errorf("Value/Secret = %q/%q", tok.Value(), tok.Secret())
	}
}
