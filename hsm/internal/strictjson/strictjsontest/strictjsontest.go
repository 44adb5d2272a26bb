// Package strictjsontest checks, in the fuzz targets of strict JSON
// formats, what every accepted document must satisfy, so that a fuzzer
// finds a parser that is lax, not only one that panics.
package strictjsontest

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// Accepted checks a document data that a strict parser accepted as v:
//
//   - encoding/json reads it too (it is JSON, one value), and no object
//     repeats a name;
//   - every object key is the exact JSON name of a field of the struct it
//     decodes into (no unknown key, no case or Unicode folding);
//   - v re-encodes to a document that reparse accepts and that encodes
//     the same again (nothing is lost or changed on a round trip).
func Accepted[T any](tb testing.TB, data []byte, v *T, reparse func([]byte) (*T, error)) {
	tb.Helper()
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		tb.Fatalf("accepted a document encoding/json refuses: %v", err)
	}
	if err := uniqueNames(data); err != nil {
		tb.Fatalf("accepted a document with a repeated key: %v", err)
	}
	if obj, ok := generic.(map[string]any); ok {
		checkKeys(tb, obj, reflect.TypeOf(v).Elem())
	}
	once, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("accepted a document that does not encode again: %v", err)
	}
	again, err := reparse(once)
	if err != nil {
		tb.Fatalf("the re-encoding of an accepted document is refused: %v\n%s", err, once)
	}
	twice, err := json.Marshal(again)
	if err != nil || !bytes.Equal(once, twice) {
		tb.Fatalf("a round trip changed the document (%v):\n%s\n%s", err, once, twice)
	}
}

// uniqueNames reads data with a decoder that refuses a name repeated in
// one object (compared after unescaping).
func uniqueNames(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(false))
	for {
		if _, err := dec.ReadToken(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkKeys checks obj's keys against the json names of struct type st,
// and recurses into the values that are structs again (unless they decode
// themselves).
func checkKeys(tb testing.TB, obj map[string]any, st reflect.Type) {
	tb.Helper()
	if st.Kind() != reflect.Struct || reflect.PointerTo(st).Implements(unmarshaler) {
		return
	}
	fields := jsonFields(st)
	for k, v := range obj {
		ft, ok := fields[k]
		if !ok {
			tb.Fatalf("accepted key %q, which is no field name of %v", k, st)
		}
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		switch v := v.(type) {
		case map[string]any:
			checkKeys(tb, v, ft)
		case []any:
			for _, e := range v {
				if m, ok := e.(map[string]any); ok {
					checkKeys(tb, m, ft)
				}
			}
		}
	}
}

// jsonFields maps the json names of st's exported fields, embedded ones
// inlined, to their types.
func jsonFields(st reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type)
	for f := range st.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
