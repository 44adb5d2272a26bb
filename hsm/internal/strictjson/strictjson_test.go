package strictjson

import (
	"errors"
	"strings"
	"testing"
)

type doc struct {
	Name  string   `json:"name"`
	Items []string `json:"items"`
	Inner *struct {
		A int `json:"a"`
	} `json:"inner"`
}

func TestDecodeAcceptsCanonical(t *testing.T) {
	var d doc
	if err := Decode([]byte(`{"name":"x","items":["a","b"],"inner":{"a":1}}`+"\n"), &d, 1024); err != nil {
		t.Fatal(err)
	}
	if d.Name != "x" || len(d.Items) != 2 || d.Inner.A != 1 {
		t.Fatalf("decoded %+v", d)
	}
}

func TestDecodeRefuses(t *testing.T) {
	cases := map[string]struct {
		in   string
		want string
	}{
		"duplicate key":        {`{"name":"x","name":"y"}`, "duplicate key"},
		"nested duplicate key": {`{"inner":{"a":1,"a":2}}`, "duplicate key"},
		"unknown field":        {`{"name":"x","extra":1}`, "unknown field"},
		"trailing data":        {`{"name":"x"}{}`, "trailing data"},
		"trailing garbage":     {`{"name":"x"} x`, "malformed"},
		"truncated":            {`{"name":"x"`, "malformed"},
		"wrong type":           {`{"name":1}`, "malformed"},
		"too deep":             {strings.Repeat("[", 100) + strings.Repeat("]", 100), "deeper"},
		"empty":                {``, "malformed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(c.in), &d, 1<<20)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want error containing %q", err, c.want)
			}
		})
	}
}

func TestDecodeRefusesOversize(t *testing.T) {
	var d doc
	err := Decode([]byte(`{"name":"`+strings.Repeat("a", 100)+`"}`), &d, 64)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"name":"x","items":["a"],"inner":{"a":1}}`))
	f.Add([]byte(`{"name":"x","name":"y"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		_ = Decode(data, &d, 4096)
	})
}
