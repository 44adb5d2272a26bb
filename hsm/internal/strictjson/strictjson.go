// Package strictjson decodes JSON documents that an attacker may have
// written. It accepts one canonical shape and refuses everything else:
// documents over a size cap, unknown fields, duplicate keys at any depth,
// and trailing data after the top-level value. encoding/json alone accepts
// duplicate keys (last wins), which would let two parsers of the same
// signed document disagree about what it says.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The refusals a caller may want to tell apart. Every other refusal is a
// malformed document.
var (
	// ErrTooLarge is returned for a document over the caller's size cap.
	ErrTooLarge = errors.New("document too large")
	// ErrDuplicateKey is returned for a key that appears twice in one object.
	ErrDuplicateKey = errors.New("malformed JSON: duplicate key")
	// ErrUnknownField is returned for an object field the target type lacks.
	ErrUnknownField = errors.New("malformed JSON: unknown field")
	// ErrTrailingData is returned for anything after the top-level value.
	ErrTrailingData = errors.New("malformed JSON: trailing data after the document")
)

// Decode parses data into v, which must be a pointer. It refuses data longer
// than maxSize bytes, unknown object fields, duplicate keys and anything
// after the top-level value other than white space.
func Decode(data []byte, v any, maxSize int) error {
	if len(data) > maxSize {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(data), maxSize)
	}
	if err := checkNoDuplicateKeys(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// encoding/json reports an unknown field only through its message.
		if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%w %s", ErrUnknownField, msg)
		}
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}

// checkNoDuplicateKeys walks every object in data and refuses a key that
// appears twice in the same object.
func checkNoDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walkValue(dec, 0); err != nil {
		return err
	}
	return nil
}

// maxDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxDepth = 64

func walkValue(dec *json.Decoder, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("malformed JSON: nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, depth)
	case json.Delim('['):
		for dec.More() {
			if err := walkValue(dec, depth+1); err != nil {
				return err
			}
		}
		return closeToken(dec)
	}
	return nil
}

func walkObject(dec *json.Decoder, depth int) error {
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("malformed JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("malformed JSON: object key is not a string")
		}
		if seen[key] {
			return fmt.Errorf("%w %q", ErrDuplicateKey, key)
		}
		seen[key] = true
		if err := walkValue(dec, depth+1); err != nil {
			return err
		}
	}
	return closeToken(dec)
}

// closeToken consumes the ']' or '}' that ends the current value.
func closeToken(dec *json.Decoder) error {
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	return nil
}
