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
// rejected; the options below move unchanged to encoding/json/v2. The
// document is parsed once: the duplicate, exact-name, UTF-8 and
// trailing-data checks happen while it is decoded, and the depth cap is a
// count of brackets before it. A field type with its own UnmarshalJSON gets
// bytes that already passed the duplicate, UTF-8 and depth checks; it must
// match any object keys of its own exactly too.
//
// A refusal says in words what is wrong and where (the field's path, or the
// byte offset, line and column); it never carries the decoder's own text or
// Go type names, so it can be shown to the person who wrote the document.
package strictjson

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
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

// decoders are reused: a decoder keeps buffers for object names (the
// duplicate check) that a fresh one would allocate again for every document.
var decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(new(bytes.Buffer), options) }}

// Decode parses data into v, which must be a pointer. It refuses data longer
// than maxSize bytes and everything the package documentation lists.
func Decode(data []byte, v any, maxSize int) error {
	if len(data) > maxSize {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(data), maxSize)
	}
	if len(bytes.Trim(data, jsonSpace)) == 0 {
		return errors.New("malformed JSON: the document is empty")
	}
	if err := checkDepth(data); err != nil {
		return err
	}
	dec := decoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(new(bytes.Buffer), options) // drop the reference to data
		decoders.Put(dec)
	}()
	dec.Reset(bytes.NewBuffer(data), options)
	if err := json.UnmarshalDecode(dec, v); err != nil {
		return refusal(data, err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}

// jsonSpace is the white space JSON allows between tokens (RFC 8259).
const jsonSpace = " \t\r\n"

// checkDepth refuses nesting deeper than maxDepth before the decoder sees
// the document. Most documents have fewer brackets in all than the cap and
// are let through on a count; the others are scanned, skipping strings.
// For valid JSON the scan is exact; invalid JSON the decoder refuses anyway.
func checkDepth(data []byte) error {
	if bytes.Count(data, []byte("{"))+bytes.Count(data, []byte("[")) <= maxDepth {
		return nil
	}
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > maxDepth {
				return fmt.Errorf("malformed JSON: nested deeper than %d levels", maxDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// refusal turns a decoder error into one a person can act on.
func refusal(data []byte, err error) error {
	var serr *json.SemanticError
	if errors.As(err, &serr) {
		return semanticRefusal(data, serr)
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		return syntaxRefusal(data, syn)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("malformed JSON: the document ends before its value is complete")
	}
	return errors.New("malformed JSON: the document could not be read")
}

func syntaxRefusal(data []byte, serr *jsontext.SyntacticError) error {
	switch {
	case errors.Is(serr.Err, jsontext.ErrDuplicateName):
		return fmt.Errorf("%w %q%s", ErrDuplicateKey, serr.JSONPointer.LastToken(), inObject(serr.JSONPointer.Parent()))
	case errors.Is(serr.Err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: the document ends before its value is complete")
	case !utf8.Valid(data):
		return fmt.Errorf("malformed JSON: the document is not valid UTF-8 (first bad byte at %s)", position(data, firstInvalidUTF8(data)))
	case errors.Is(serr.Err, jsontext.ErrNonStringName):
		return fmt.Errorf("malformed JSON: an object key at %s is not a string", position(data, serr.ByteOffset))
	}
	return fmt.Errorf("malformed JSON: not valid JSON at %s%s; check for a missing comma, quote or bracket, "+
		"or a character JSON does not allow there", position(data, serr.ByteOffset), inField(serr.JSONPointer))
}

func semanticRefusal(data []byte, serr *json.SemanticError) error {
	if errors.Is(serr.Err, json.ErrUnknownName) {
		return fmt.Errorf("%w %q%s: field names must match exactly, letter case included",
			ErrUnknownField, serr.JSONPointer.LastToken(), inObject(serr.JSONPointer.Parent()))
	}
	var syn *jsontext.SyntacticError
	if errors.As(serr.Err, &syn) {
		return syntaxRefusal(data, syn)
	}
	field := strings.TrimPrefix(string(serr.JSONPointer), "/")
	return &FieldError{Field: field, Err: fieldProblem(serr)}
}

// fieldProblem says why a value does not fit its field. Errors of the
// decoder and the standard library are restated, still wrapped so that a
// caller can tell them apart with errors.As; an error from a field type's
// own decoder (this module's code) is kept as it is written.
func fieldProblem(serr *json.SemanticError) error {
	var b64 base64.CorruptInputError
	var tm *time.ParseError
	switch err := serr.Err; {
	case err == nil:
		return errors.New(wrongType(serr))
	case errors.Is(err, strconv.ErrRange):
		return &restated{"the number is out of range for this field", err}
	case errors.Is(err, strconv.ErrSyntax):
		return &restated{"the value is not of the form this field takes (a whole number where one is expected, a time in RFC 3339 form)", err}
	case errors.As(err, &b64):
		return &restated{"the value is not valid base64", err}
	case errors.As(err, &tm):
		return &restated{"the value is not a time in RFC 3339 form, e.g. 2026-05-01T12:00:00Z", err}
	case looksLikeDecoderText(err.Error()):
		return &restated{"the value does not fit the field", err}
	default:
		return err
	}
}

// restated is a library error told in words a person can act on.
type restated struct {
	msg   string
	cause error
}

func (e *restated) Error() string { return e.msg }
func (e *restated) Unwrap() error { return e.cause }

// looksLikeDecoderText catches what the cases above do not name: the
// decoder's and the standard library's messages carry Go type names and
// package prefixes that mean nothing to the writer of a document.
func looksLikeDecoderText(msg string) bool {
	for _, s := range []string{"json:", "jsontext", "Go ", "go value", "cannot unmarshal", "strconv.", "reflect", "unmarshal"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// wrongType describes a type mismatch without the library's Go type names.
func wrongType(serr *json.SemanticError) string {
	switch serr.JSONKind {
	case 'n':
		return "null is not allowed here"
	case 'f', 't':
		return "a boolean is not allowed here"
	case '"':
		return "a string is not allowed here"
	case '0':
		return "a number is not allowed here"
	case '{':
		return "an object is not allowed here"
	case '[':
		return "an array is not allowed here"
	}
	return "the value does not fit the field"
}

// inObject names the object a key sits in, for a key below the top level.
func inObject(p jsontext.Pointer) string {
	if p == "" {
		return ""
	}
	return fmt.Sprintf(" in %q", strings.TrimPrefix(string(p), "/"))
}

// inField names the value an error sits in, if it is below the top level.
func inField(p jsontext.Pointer) string {
	if p == "" {
		return ""
	}
	return fmt.Sprintf(" (in field %q)", strings.TrimPrefix(string(p), "/"))
}

// position shows a byte offset with its line and column, which is what an
// editor shows.
func position(data []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return fmt.Sprintf("byte %d (line %d, column %d)", offset, line, col)
}

func firstInvalidUTF8(data []byte) int64 {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return int64(i)
		}
		i += n
	}
	return int64(len(data))
}
