// Package bootstraptoken is the bootstrap token "<id>.<secret>" (kubeadm's format) shared by the NodeConfig API,
// the agent and the dev tools: parsed once, and never printed in full.
package bootstraptoken

import (
	"encoding/json"
	"fmt"
	"log/slog"

	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Token is a bootstrap token "<id>.<secret>" (kubeadm's format). It never prints its secret: String, GoString,
// slog and JSON all show only the public id, so a token that reaches a log line or a status file leaks nothing.
// Call Value to get the full token for the one place that needs it (a 0600 kubeconfig).
type Token struct {
	id string
	// secret is a closure over the secret: fmt prints a struct's unexported fields without calling their methods,
	// so a Token held in one would show a string field whole (under any verb, a wrong one too); a func it prints
	// only as an address.
	secret func() string
}

// ScrubbedSecret replaces a token's secret in copies the agent scrubs after the join (cloud-init's copies of the
// user data): as long as the secret, so a length-prefixed copy (cloud-init's pickled datasource) stays readable,
// and not of the secret's alphabet, so a scrubbed copy can never pass for a token.
const ScrubbedSecret = "SCRUBBED-BYBERTH"

// Scrubbed reports whether s is a token whose secret the agent scrubbed (ScrubbedSecret).
func Scrubbed(s string) bool {
	return len(s) == 7+len(ScrubbedSecret) && s[6] == '.' && s[7:] == ScrubbedSecret
}

// Parse checks s is "<6 chars>.<16 chars>" of [a-z0-9].
func Parse(s string) (Token, error) {
	if Scrubbed(s) {
		return Token{}, fmt.Errorf("bootstrap token %s was scrubbed from this copy after the node joined: a new join needs a new token", s[:6])
	}
	if !bootstraputil.IsValidBootstrapToken(s) {
		// Never echo s: it may be a mistyped but real secret.
		return Token{}, fmt.Errorf("bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	sec := s[7:]
	return Token{id: s[:6], secret: func() string { return sec }}, nil
}

// GenerateToken returns a new random token.
func Generate() (Token, error) {
	s, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return Token{}, fmt.Errorf("generate bootstrap token: %w", err)
	}
	return Parse(s)
}

// ID is the token's public part.
func (t Token) ID() string { return t.id }

// Secret is the token's secret part.
func (t Token) Secret() string {
	if t.secret == nil {
		return ""
	}
	return t.secret()
}

// Value is the full token, secret included.
func (t Token) Value() string {
	if t.id == "" {
		return ""
	}
	return t.id + "." + t.Secret()
}

// IsZero reports whether t is unset.
func (t Token) IsZero() bool { return t.id == "" }

func (t Token) String() string   { return t.redacted() }
func (t Token) GoString() string { return "bootstraptoken.Token{" + t.redacted() + "}" }

// LogValue keeps the secret out of structured logs.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.redacted()) }

// MarshalJSON keeps the secret out of anything serialised, such as status files.
func (t Token) MarshalJSON() ([]byte, error) { return json.Marshal(t.redacted()) }

func (t Token) redacted() string {
	if t.id == "" {
		return ""
	}
	return t.id + ".<redacted>"
}
