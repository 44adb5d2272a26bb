// Package strictjson decodes JSON documents that an attacker may have
// written. It accepts one meaning per document and refuses everything
// else: documents over a size cap, invalid UTF-8, nesting deeper than 64
// levels, duplicate keys at any depth, trailing data after the top-level
// value, and any object key that is not exactly a field name of the target
// type.
//
// Exact means byte for byte after JSON unescaping. encoding/json matches
// keys without regard to letter case and with Unicode simple folding
// ("Recipient", "RECIPIENT", "recipient" with U+017F for the "s"), so a
// document with "recipient" and "Recipient" means the second to Go while
// jq or Python show the first; here the second is an unknown field.
//
// Escaped keys are allowed: "recip\u0069ent" unescapes to "recipient" in
// every JSON parser, so it names the recipient field and nothing else. The
// duplicate check and the field match both see the unescaped key, so the
// escaped and the plain spelling in one object are a duplicate.
//
// Decoding is github.com/go-json-experiment/json, the module form of Go's
// encoding/json/v2 (which Go 1.26 has only behind GOEXPERIMENT), with
// case-sensitive names, unknown members rejected and duplicate names
// rejected; the options below move unchanged to encoding/json/v2. A field type with its own UnmarshalJSON gets
// bytes that already passed the duplicate, UTF-8 and depth checks; it must
// match any object keys of its own exactly too.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The refusals a caller may want to tell apart. Every other refusal is a
// malformed document.
var (
	// ErrTooLarge is returned for a document over the caller's size cap.
	ErrTooLarge = errors.New("document too large")
	// ErrDuplicateKey is returned for a key that appears twice in one object.
	ErrDuplicateKey = errors.New("malformed JSON: duplicate key")
	// ErrUnknownField is returned for an object key that is not exactly a
	// field name of the target type.
	ErrUnknownField = errors.New("malformed JSON: unknown field")
	// ErrTrailingData is returned for anything after the top-level value.
	ErrTrailingData = errors.New("malformed JSON: trailing data after the document")
)

// A FieldError is a value its field cannot hold: a wrong JSON type, or a
// value the field's own decoder refused.
type FieldError struct {
	// Field is the value's JSON Pointer (RFC 6901) without the leading
	// slash, e.g. "version" or "envelopes/0/enc".
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("malformed JSON: field %q: %v", e.Field, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// maxDepth bounds nesting: no format needs more, and a hostile document
// should not make the decoder work through thousands of levels.
const maxDepth = 64

// options are the decoder's rules; the defaults are restated so that the
// contract does not hang on a library default.
var options = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// Decode parses data into v, which must be a pointer. It refuses data longer
// than maxSize bytes and everything the package documentation lists.
func Decode(data []byte, v any, maxSize int) error {
	if len(data) > maxSize {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(data), maxSize)
	}
	if err := checkSyntax(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v, options); err != nil {
		return semanticRefusal(err)
	}
	return nil
}

// checkSyntax reads data token by token: one JSON value, valid UTF-8, no
// duplicate keys, at most maxDepth levels, then only white space.
func checkSyntax(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data), options)
	for {
		if _, err := dec.ReadToken(); err != nil {
			return syntaxRefusal(data, err)
		}
		if dec.StackDepth() > maxDepth {
			return fmt.Errorf("malformed JSON: nested deeper than %d levels", maxDepth)
		}
		if dec.StackDepth() == 0 {
			break
		}
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}

// syntaxRefusal says what is wrong with data's syntax in words, with the
// place as an editor shows it (line and column), never the decoder's text.
func syntaxRefusal(data []byte, err error) error {
	var serr *jsontext.SyntacticError
	if errors.Is(err, jsontext.ErrDuplicateName) && errors.As(err, &serr) {
		return fmt.Errorf("%w %q", ErrDuplicateKey, serr.JSONPointer.LastToken())
	}
	if err == io.EOF {
		return errors.New("malformed JSON: the document is empty")
	}
	if !errors.As(err, &serr) {
		return errors.New("malformed JSON: the document cannot be read as JSON")
	}
	what := "text that is not JSON"
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		what = "the document ends before its JSON closes (cut off?)"
	case errors.Is(err, jsontext.ErrNonStringName):
		what = "an object key that is not a quoted string"
	case !utf8.Valid(data):
		what = "bytes that are not UTF-8 text"
	}
	line, col := place(data, serr.ByteOffset)
	return fmt.Errorf("malformed JSON: %s, at line %d, column %d", what, line, col)
}

// place is the 1-based line and column of byte offset off in data.
func place(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	return line, utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
}

func semanticRefusal(err error) error {
	var serr *json.SemanticError
	if !errors.As(err, &serr) {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if errors.Is(err, json.ErrUnknownName) {
		return fmt.Errorf("%w %q: field names must match exactly, letter case included", ErrUnknownField, serr.JSONPointer.LastToken())
	}
	field := strings.TrimPrefix(string(serr.JSONPointer), "/")
	if serr.Err != nil {
		return &FieldError{Field: field, Err: serr.Err}
	}
	return &FieldError{Field: field, Err: errors.New(wrongType(serr))}
}

// wrongType describes a type mismatch without the library's Go type names.
func wrongType(serr *json.SemanticError) string {
	kinds := map[jsontext.Kind]string{'n': "null", 'f': "a boolean", 't': "a boolean", '"': "a string", '0': "a number", '{': "an object", '[': "an array"}
	if k, ok := kinds[serr.JSONKind]; ok {
		return k + " is not allowed here"
	}
	return "the value does not fit the field"
}
