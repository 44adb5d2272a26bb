package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"unicode/utf8"
)

// jsonKinds are the JSON documents custodian writes, each told apart by
// top-level fields only it has: a file of one kind given where another
// goes is named as what it is, rather than by the strict decoder's words
// about an unknown field.
var jsonKinds = []struct {
	name   string
	fields []string
}{
	{"a share bundle (CUSTODIAN.bundle.json, from custodian ceremony)", []string{"blob", "escrow"}},
	{"an escrow file (escrow-K.pub.json, from custodian ceremony)", []string{"commitments", "public_key", "threshold"}},
	{"a release package (from custodian release)", []string{"warrant_digest", "recipient"}},
	{"a boot policy (policy.json, from custodian image measure)", []string{"security_version", "pcrs"}},
	{"an enrollment (enrollment.json, from custodian enroll)", []string{"ek", "import_key"}},
	{"an attestation (from custodian attest)", []string{"nonce", "pcrs", "custodian_id"}},
	{"a warrant document (w.json, from custodian warrant new)", []string{"serial", "docket", "targets"}},
}

// jsonKind names the kind of custodian JSON document data is, or "".
func jsonKind(data []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return ""
	}
	for _, k := range jsonKinds {
		all := true
		for _, f := range k.fields {
			if _, ok := top[f]; !ok {
				all = false
				break
			}
		}
		if all {
			return k.name
		}
	}
	return ""
}

// namingOtherKinds wraps a parser for the readDocument of kind takes: a
// document of another kind custodian writes is refused as that kind.
func namingOtherKinds[T any](takes string, parse func([]byte) (T, error)) func([]byte) (T, error) {
	return func(data []byte) (T, error) {
		v, err := parse(data)
		if err != nil {
			if kind := jsonKind(data); kind != "" && kind != takes {
				return v, errors.New("it is " + kind + ", not " + takes)
			}
		}
		return v, err
	}
}

// readKnownDocument is readDocument for one of custodian's own kinds.
func readKnownDocument[T any](flag, path, takes string, parse func([]byte) (T, error)) (T, error) {
	return readDocument(flag, path, takes, namingOtherKinds(takes, parse))
}

// notText says what data seems to be when it is not a text file of its
// own kind (a manifest, say): JSON, named by its kind when custodian wrote
// it, PEM, a key line or binary. "" for other text.
func notText(data []byte) string {
	head := bytes.TrimLeft(data, " \t\r\n")
	switch {
	case len(head) > 0 && head[0] == '{':
		if kind := jsonKind(data); kind != "" {
			return "it is " + kind
		}
		return "it is JSON"
	case !utf8.Valid(head):
		return looksLike(head, "it is a binary file")
	case len(head) > 0 && head[0] != '0' && looksLike(head, "") != "": // '0' (0x30) begins DER in binary, not text
		return looksLike(head, "")
	}
	return ""
}

// fileKind says what the file at path seems to be, or otherwise when it
// is text of no kind custodian knows or cannot be read.
func fileKind(path, otherwise string) string {
	f, err := os.Open(path)
	if err != nil {
		return otherwise
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	if n == 0 {
		return "the file is empty"
	}
	if kind := notText(head[:n]); kind != "" && kind != "it is a binary file" {
		return kind
	}
	return otherwise
}
