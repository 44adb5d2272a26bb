package strictjson

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

type inner struct {
	A int `json:"a"`
}

// Embedded structs are inlined, as encoding/json does.
type Common struct {
	Kind string `json:"kind"`
}

// upper decodes itself from a JSON string, as bootpolicy.Digest does.
type upper string

func (u *upper) UnmarshalJSON(data []byte) error {
	var s string
	if err := Decode(data, &s, len(data)); err != nil {
		return err
	}
	*u = upper(strings.ToUpper(s))
	return nil
}

type doc struct {
	Common
	Name   string            `json:"name"`
	Items  []string          `json:"items"`
	Inner  *inner            `json:"inner"`
	List   []inner           `json:"list"`
	Labels map[string]string `json:"labels"`
	Upper  upper             `json:"upper"`
}

const canonical = `{"kind":"k","name":"x","items":["a","b"],"inner":{"a":1},"list":[{"a":2}],"labels":{"Key":"v","key":"w"},"upper":"up"}`

func TestDecodeAcceptsCanonical(t *testing.T) {
	var d doc
	if err := Decode([]byte(canonical+"\n"), &d, 1024); err != nil {
		t.Fatal(err)
	}
	want := doc{Common: Common{Kind: "k"}, Name: "x", Items: []string{"a", "b"}, Inner: &inner{A: 1},
		List: []inner{{A: 2}}, Labels: map[string]string{"Key": "v", "key": "w"}, Upper: "UP"}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("decoded %+v, want %+v", d, want)
	}
}

// TestInvariantStrictFormatsMatchFieldNamesExactly: a key is a field only
// when it is the field's name byte for byte. encoding/json would read each
// of these keys as a known field; here each is unknown.
func TestInvariantStrictFormatsMatchFieldNamesExactly(t *testing.T) {
	folded := map[string]string{
		"upper case":                  `{"Name":"x"}`,
		"all caps":                    `{"NAME":"x"}`,
		"long s folds to s":           "{\"item\u017f\":[\"a\"]}",
		"long s, escaped":             `{"item\u017f":["a"]}`,
		"kelvin sign folds to k":      "{\"\u212aind\":\"k\"}",
		"kelvin sign, escaped":        `{"\u212aind":"k"}`,
		"case variant after the name": `{"name":"x","Name":"y"}`,
		"case variant nested":         `{"inner":{"a":1,"A":2}}`,
		"case variant in a list":      `{"list":[{"A":2}]}`,
		"case variant of an embedded": `{"kind":"k","Kind":"j"}`,
	}
	for name, in := range folded {
		t.Run(name, func(t *testing.T) {
			var lax doc
			if err := json.Unmarshal([]byte(in), &lax); err != nil || reflect.DeepEqual(lax, doc{}) {
				t.Fatalf("encoding/json does not read the key as a field (%v), so the case shows nothing", err)
			}
			var d doc
			if err := Decode([]byte(in), &d, 1024); !errors.Is(err, ErrUnknownField) {
				t.Fatalf("got %v, want ErrUnknownField", err)
			}
		})
	}
	for _, in := range []string{`{"name":"x","extra":1}`, `{"inner":{"b":1}}`} {
		var d doc
		if err := Decode([]byte(in), &d, 1024); !errors.Is(err, ErrUnknownField) {
			t.Errorf("%s: got %v, want ErrUnknownField", in, err)
		}
	}
}

// TestEscapedKeyIsTheSameKey: an escaped key unescapes to the field's name
// in every JSON parser, so it is that field, and the duplicate check sees
// the same unescaped key as the field match.
func TestEscapedKeyIsTheSameKey(t *testing.T) {
	var d doc
	if err := Decode([]byte(`{"n\u0061me":"x"}`), &d, 1024); err != nil || d.Name != "x" {
		t.Fatalf("escaped name: %v, %+v", err, d)
	}
	for _, in := range []string{`{"name":"x","n\u0061me":"y"}`, `{"n\u0061me":"x","name":"y"}`, `{"labels":{"k":"1","\u006b":"2"}}`} {
		if err := Decode([]byte(in), &d, 1024); !errors.Is(err, ErrDuplicateKey) {
			t.Errorf("%s: got %v, want ErrDuplicateKey", in, err)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	cases := map[string]struct {
		in   string
		want error
		msg  string
	}{
		"duplicate key":        {`{"name":"x","name":"y"}`, ErrDuplicateKey, `"name"`},
		"nested duplicate key": {`{"inner":{"a":1,"a":2}}`, ErrDuplicateKey, `"a"`},
		"duplicate map key":    {`{"labels":{"k":"1","k":"2"}}`, ErrDuplicateKey, `"k"`},
		// One pass: the unknown name is refused before its value is read.
		"duplicate in an unknown": {`{"extra":{"b":1,"b":2}}`, ErrUnknownField, `"extra"`},
		"unknown field":           {`{"name":"x","extra":1}`, ErrUnknownField, `"extra"`},
		"trailing data":           {`{"name":"x"}{}`, ErrTrailingData, "trailing"},
		"trailing garbage":        {`{"name":"x"} x`, ErrTrailingData, "trailing"},
		"truncated":               {`{"name":"x"`, nil, "malformed"},
		"wrong type":              {`{"name":1}`, nil, `field "name"`},
		"wrong type nested":       {`{"list":[{"a":"1"}]}`, nil, `field "list/0/a"`},
		"own decoder refuses":     {`{"upper":1}`, nil, `field "upper"`},
		"invalid utf-8":           {"{\"name\":\"\xff\"}", nil, "UTF-8"},
		"invalid utf-8 in a key":  {"{\"n\xffme\":\"x\"}", nil, "UTF-8"},
		"lone surrogate":          {`{"name":"\ud800"}`, nil, "malformed"},
		"too deep":                {strings.Repeat("[", 100) + strings.Repeat("]", 100), nil, "deeper"},
		"empty":                   {``, nil, "empty"},
		"white space only":        {" \n", nil, "empty"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(c.in), &d, 1<<20)
			if err == nil || !strings.Contains(err.Error(), c.msg) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
}

// typed has fields whose values the decoder's library parses itself.
type typed struct {
	N    uint8     `json:"n"`
	Raw  []byte    `json:"raw"`
	When time.Time `json:"when"`
	List [2]int    `json:"list"`
}

// TestRefusalsSayWhatIsWrongInWords: a refusal names the place (a field, or
// a byte with line and column) and never carries decoder text.
func TestRefusalsSayWhatIsWrongInWords(t *testing.T) {
	cases := map[string]struct{ in, msg string }{
		"out of range":      {`{"n":300}`, `field "n": the number is out of range`},
		"fraction":          {`{"n":1.5}`, `field "n": the value is not of the form`},
		"bad base64":        {`{"raw":"*"}`, `field "raw": the value is not valid base64`},
		"bad time":          {`{"when":"yesterday"}`, `field "when": the value is not a time in RFC 3339 form`},
		"array too long":    {`{"list":[1,2,3]}`, `field "list"`},
		"missing comma":     {"{\"n\":1\n \"raw\":\"\"}", "byte 8 (line 2, column 2)"},
		"bad literal":       {`{"n":tru}`, `not valid JSON at byte 8 (line 1, column 9) (in field "n")`},
		"nested bad":        {`{"list":[1,}`, `not valid JSON at byte 10 (line 1, column 11) (in field "list")`},
		"key not a string":  {`{1:2}`, "an object key at byte 1"},
		"truncated":         {`{"n":1`, "ends before its value is complete"},
		"bad utf-8 in data": {"{\"raw\":\"\xc3\"}", "not valid UTF-8 (first bad byte at byte 8"},
		"duplicate nested":  {`{"when":"2026-01-01T00:00:00Z","list":[1,2],"list":[3,4]}`, `duplicate key "list"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var v typed
			err := Decode([]byte(c.in), &v, 1024)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want a refusal containing %q", err, c.msg)
			}
			checkWords(t, err)
		})
	}
}

// checkWords fails on a refusal that carries the decoder's own text.
func checkWords(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{"json:", "jsontext", "Go ", "cannot unmarshal", "strconv", "reflect", "parsing time", "illegal base64", "uint8", "[]byte"} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("refusal %q carries decoder text %q", err, s)
		}
	}
}

func TestWrongTypeIsAFieldError(t *testing.T) {
	var d doc
	var fe *FieldError
	if err := Decode([]byte(`{"inner":{"a":true}}`), &d, 1024); !errors.As(err, &fe) || fe.Field != "inner/a" {
		t.Fatalf("got %v, want a FieldError for inner/a", err)
	}
}

func TestDecodeRefusesOversize(t *testing.T) {
	var d doc
	err := Decode([]byte(`{"name":"`+strings.Repeat("a", 100)+`"}`), &d, 64)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// FuzzDecode checks two properties of whatever Decode accepts: every key of
// every object at a field position is exactly a field name of doc, and
// encoding/json (which folds case and keeps the last duplicate) reads the
// document into the same value, so no lax parser can see another meaning.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(canonical))
	f.Add([]byte(`{"name":"x","name":"y"}`))
	f.Add([]byte(`{"Name":"x"}`))
	f.Add([]byte(`{"item\u017f":["a"]}`))
	f.Add([]byte(`{"n\u0061me":"x","labels":{"\u006b":"v"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		if err := Decode(data, &d, 4096); err != nil {
			checkWords(t, err)
			var v typed
			if err := Decode(data, &v, 4096); err != nil {
				checkWords(t, err)
			}
			return
		}
		var generic any
		if err := json.Unmarshal(data, &generic); err != nil {
			t.Fatalf("accepted a document encoding/json refuses: %v", err)
		}
		if obj, ok := generic.(map[string]any); ok {
			checkKeys(t, obj, reflect.TypeOf(d))
		}
		var lax doc
		if err := json.Unmarshal(data, &lax); err != nil || !reflect.DeepEqual(lax, d) {
			t.Fatalf("encoding/json reads %+v (%v), strictjson %+v", lax, err, d)
		}
	})
}

// checkKeys checks obj's keys against the json names of struct type st,
// and recurses into the values that are structs again.
func checkKeys(t *testing.T, obj map[string]any, st reflect.Type) {
	t.Helper()
	fields := jsonFields(st)
	for k, v := range obj {
		ft, ok := fields[k]
		if !ok {
			t.Fatalf("accepted key %q, which is no field name of %v", k, st)
		}
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct {
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			checkKeys(t, v, ft)
		case []any:
			for _, e := range v {
				if m, ok := e.(map[string]any); ok {
					checkKeys(t, m, ft)
				}
			}
		}
	}
}

// jsonFields maps the json names of st's fields, embedded ones inlined,
// to their types.
func jsonFields(st reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type)
	for f := range st.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		out[name] = f.Type
	}
	return out
}

// TestRestatedErrorsKeepTheirCause: a caller can still tell a base64 or
// range error apart, though the message is restated.
func TestRestatedErrorsKeepTheirCause(t *testing.T) {
	var v typed
	var b64 base64.CorruptInputError
	if err := Decode([]byte(`{"raw":"*"}`), &v, 1024); !errors.As(err, &b64) {
		t.Fatalf("got %v, want a base64.CorruptInputError inside", err)
	}
	if err := Decode([]byte(`{"n":256}`), &v, 1024); !errors.Is(err, strconv.ErrRange) {
		t.Fatalf("got %v, want strconv.ErrRange inside", err)
	}
}
