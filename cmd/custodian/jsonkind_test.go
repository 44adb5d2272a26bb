package main

import (
	"errors"
	"strings"
	"testing"
)

// FuzzJSONKind: naming a file's kind never panics, never says a document
// that parses is of another kind, and only names kinds custodian writes.
func FuzzJSONKind(f *testing.F) {
	for _, seed := range []string{
		`{"blob": "", "escrow": {}}`, `{"serial": "S", "docket": "D", "targets": []}`, `{"security_version": 1, "pcrs": {}}`,
		`{"commitments": [], "public_key": "", "threshold": 2}`, "-----BEGIN CERTIFICATE-----\n", "custodian-recipient-v1:x:y", "\x30\x82", "",
		"version = 1\n", "0 = 1\n",
	} {
		f.Add([]byte(seed))
	}
	const takes = "a share bundle (CUSTODIAN.bundle.json, from custodian ceremony)"
	f.Fuzz(func(t *testing.T, data []byte) {
		if kind := jsonKind(data); kind != "" {
			known := false
			for _, k := range jsonKinds {
				known = known || k.name == kind
			}
			if !known {
				t.Fatalf("jsonKind named %q", kind)
			}
		}
		_ = notText(data)
		ok := func([]byte) (int, error) { return 1, nil }
		if v, err := namingOtherKinds(takes, ok)(data); err != nil || v != 1 {
			t.Fatalf("a document that parses was refused: %v", err)
		}
		bad := func([]byte) (int, error) { return 0, errors.New("bad") }
		if _, err := namingOtherKinds(takes, bad)(data); err == nil || strings.Contains(err.Error(), "it is "+takes+",") {
			t.Fatalf("a document of the kind wanted was named as another: %v", err)
		}
	})
}

// TestJSONKindNamesEachKind: each kind custodian writes is told apart by
// its fields, and a JSON document of no known kind is not named.
func TestJSONKindNamesEachKind(t *testing.T) {
	for doc, want := range map[string]string{
		`{"version":1,"custodian_id":"a","index":1,"blob":"","escrow":{}}`:          "a share bundle",
		`{"version":1,"key_id":"k","commitments":[],"public_key":"","threshold":2}`: "an escrow file",
		`{"version":1,"warrant_digest":"","recipient":"r"}`:                         "a release package",
		`{"version":1,"security_version":1,"pcrs":{},"events":[]}`:                  "a boot policy",
		`{"version":1,"custodian_id":"a","ek":{},"import_key":{}}`:                  "an enrollment",
		`{"serial":"S","docket":"D","targets":["t"]}`:                               "a warrant document",
		`{"something":"else"}`: "",
	} {
		if got := jsonKind([]byte(doc)); !strings.HasPrefix(got, want) || (want == "" && got != "") {
			t.Errorf("%s: named %q, want %q", doc, got, want)
		}
	}
}
