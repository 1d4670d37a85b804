package mergepatch

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The examples of RFC 7386 appendix A.
func TestRFC7386Examples(t *testing.T) {
	for _, c := range []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	} {
		var target, patch map[string]any
		if err := json.Unmarshal([]byte(c.target), &target); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(c.patch), &patch); err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(Apply(target, patch))
		if string(got) != c.want {
			t.Errorf("Apply(%s, %s) = %s, want %s", c.target, c.patch, got, c.want)
		}
	}
}

// The RFC 7386 properties on any pair of documents: every key the patch nulls is gone, every object merges, every
// other value of the patch is in the result as given; applying the same patch again changes nothing; an empty
// patch changes nothing.
func FuzzApply(f *testing.F) {
	f.Add(`{"a":{"b":1,"c":[1]},"x":null}`, `{"a":{"b":null,"d":{"e":null,"f":"g"}},"c":[{"k":null}]}`)
	f.Add(`{"spec":{"kubelet":{"config":{"maxPods":10}}}}`, `{"spec":{"kubelet":{"config":null}}}`)
	f.Add(`{}`, `{"a":"b"}`)
	f.Fuzz(func(t *testing.T, target, patch string) {
		var tg, p map[string]any
		if json.Unmarshal([]byte(target), &tg) != nil || json.Unmarshal([]byte(patch), &p) != nil || tg == nil || p == nil {
			return
		}
		clone := func(m map[string]any) map[string]any {
			var out map[string]any
			b, _ := json.Marshal(m)
			json.Unmarshal(b, &out)
			return out
		}
		once := Apply(clone(tg), p)
		var check func(res, p map[string]any, path string)
		check = func(res, p map[string]any, path string) {
			for k, v := range p {
				switch pv := v.(type) {
				case nil:
					if _, ok := res[k]; ok {
						t.Fatalf("%s%s: nulled by the patch but still there", path, k)
					}
				case map[string]any:
					rm, ok := res[k].(map[string]any)
					if !ok {
						t.Fatalf("%s%s: the patch's object did not become an object", path, k)
					}
					check(rm, pv, path+k+".")
				default:
					if !reflect.DeepEqual(res[k], v) {
						t.Fatalf("%s%s = %v, want the patch's %v", path, k, res[k], v)
					}
				}
			}
		}
		check(once, p, "")
		if twice := Apply(clone(once), p); !reflect.DeepEqual(once, twice) {
			t.Fatalf("not idempotent:\nonce  %v\ntwice %v", once, twice)
		}
		if same := Apply(clone(tg), map[string]any{}); !reflect.DeepEqual(same, tg) {
			t.Fatalf("an empty patch changed %v into %v", tg, same)
		}
	})
}
