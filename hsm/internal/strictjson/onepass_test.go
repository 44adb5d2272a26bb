package strictjson

import (
	"bytes"
	"io"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// twoPassAccepts is the earlier two-pass decoder: a
// token-by-token syntax pass, then Unmarshal. It is the reference the
// one-pass decoder must not be looser than.
func twoPassAccepts(data []byte, v any) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(data), options)
	for {
		if _, err := dec.ReadToken(); err != nil {
			return false
		}
		if dec.StackDepth() > maxDepth {
			return false
		}
		if dec.StackDepth() == 0 {
			break
		}
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return false
	}
	return json.Unmarshal(data, v, options) == nil
}

type breakInner struct {
	X int `json:"x"`
}

type probeDoc struct {
	A   int               `json:"a"`
	In  breakInner        `json:"in"`
	M   map[string]int64  `json:"m"`
	Any any               `json:"any"`
	Raw jsontext.Value    `json:"raw"`
	U   upper             `json:"u"`
	L   []breakInner      `json:"l"`
	S   string            `json:"s"`
	MS  map[string]string `json:"ms"`
}

var probeInputs = []string{
	`{"m":{"k":1,"k":2}}`,
	`{"any":{"k":1,"k":2}}`,
	`{"any":{"o":{"k":1,"k":2}}}`,
	`{"raw":{"k":1,"k":2}}`,
	`{"raw":[{"k":1,"k":2}]}`,
	`{"u":"a","u":"b"}`,
	`{"l":[{"x":1,"x":2}]}`,
	`{"in":{"x":1,"X":2}}`,
	`{"In":{"x":1}}`,
	`{"s":"\xff"}`,
	`{"raw":"\xff"}`,
	`{"any":"\xff"}`,
	`{"ms":{"\xff":"a"}}`,
	`{"a":1} `,
	`{"a":1}{}`,
	`{"a":1}x`,
	`{"a":01}`,
	`{"a":1e2}`,
	`{"a":-0}`,
	`{"a":1.0}`,
	`{"any":1e999}`,
	`{"raw":1e999}`,
	`{"raw":01}`,
	`{"any":` + string(bytes.Repeat([]byte("["), 70)) + string(bytes.Repeat([]byte("]"), 70)) + `}`,
	`{"raw":` + string(bytes.Repeat([]byte("["), 70)) + string(bytes.Repeat([]byte("]"), 70)) + `}`,
	`{"s":"` + string(bytes.Repeat([]byte("["), 70)) + `"}`,
	`{"s":"\"` + string(bytes.Repeat([]byte("]"), 70)) + `","any":` + string(bytes.Repeat([]byte("["), 66)) + string(bytes.Repeat([]byte("]"), 66)) + `}`,
	"\ufeff{\"a\":1}",
	`{"a":1,}`,
	`{"a":null}`,
	`{"m":{"k":1,"\u006b":2}}`,
	"{\"s\":\"a\u2028b\"}",
	`{"s":"\ud800"}`,
	`{"ms":{"\ud800":"a","\udbff":"b"}}`,
	`{"any":{"\ud800":1,"\udbff":2}}`,
	`{"raw":{"\ud800":1,"\udbff":2}}`,
}

// TestInvariantOnePassIsNoLooserThanTwoPass: every document the one-pass
// decoder accepts, the two-pass decoder it replaced accepted too.
func TestInvariantOnePassIsNoLooserThanTwoPass(t *testing.T) {
	for _, in := range probeInputs {
		var a, b probeDoc
		newOK := Decode([]byte(in), &a, 1<<20) == nil
		oldOK := twoPassAccepts([]byte(in), &b)
		if newOK && !oldOK {
			t.Errorf("one-pass accepts what two-pass refused: %q", in)
		}
		if oldOK != newOK {
			t.Logf("differs (old %v new %v): %q", oldOK, newOK, in)
		}
	}
}

func FuzzOnePassNoLooser(f *testing.F) {
	for _, in := range probeInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a, b probeDoc
		if Decode(data, &a, 1<<20) == nil && !twoPassAccepts(data, &b) {
			t.Fatalf("one-pass accepts what two-pass refused: %q", data)
		}
	})
}
