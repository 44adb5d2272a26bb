package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/custodian-project/custodian/hsm/durable"
)

// writeNew writes data to a new file at path. It never replaces an existing
// file: outputs here are keys and signed documents, and silently replacing
// one (or a device node named by mistake) loses something that matters.
func writeNew(path string, data []byte, perm os.FileMode) error {
	err := durable.CreateFile(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return withHint(err, "remove it first or choose another --out")
	}
	return err
}

// Caps on what the readers below take in: far above any real file of the
// kind, far below what would exhaust the machine (/dev/zero given by
// mistake).
const (
	maxCertFile    = 4 << 20 // certificates, chains, CRLs, keys
	maxWarrantFile = 4 << 20 // a signed warrant (CMS) or its w.json
)

// readCapped reads path, refusing a file larger than limit bytes before
// reading more of it than that.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, withHint(fmt.Errorf("%s is larger than %d MiB, more than any file of its kind", path, limit>>20), "is it the right file?")
	}
	return data, nil
}

// mustNotExist refuses an output path early, before any work that would be
// lost (such as a PIN prompt and a signature on a card).
func mustNotExist(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return withHint(&fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}, "remove it first or choose another --out")
	}
	return nil
}

// readDocument reads the JSON document a flag names. A file that is not
// JSON at all (a PEM certificate, a key line, a signed warrant, an empty
// file) is named as such with what the flag takes, rather than by a
// decoder's words about its first byte; parse errors name the file.
func readDocument[T any](flag, path, takes string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, err
	}
	if head := bytes.TrimLeft(data, " \t\r\n"); len(head) == 0 || head[0] != '{' {
		return zero, withHint(fmt.Errorf("%s %s is not %s: %s", flag, path, takes, looksLike(head, "it is not JSON")),
			fmt.Sprintf("check that %s names the right file", flag))
	}
	v, err := parse(data)
	if err != nil {
		return zero, withHint(fmt.Errorf("%s %s: %w", flag, path, err), fmt.Sprintf("%s takes %s", flag, takes))
	}
	return v, nil
}

// looksLike says what a file that is not the JSON wanted seems to be.
func looksLike(head []byte, otherwise string) string {
	switch {
	case len(head) == 0:
		return "the file is empty"
	case bytes.HasPrefix(head, []byte("-----BEGIN ")):
		kind, _, _ := bytes.Cut(head[len("-----BEGIN "):], []byte("-----"))
		return fmt.Sprintf("it is a PEM %s", strings.ToLower(string(kind)))
	case bytes.HasPrefix(head, []byte("custodian-recipient-")):
		return "it is an agency public key (agency.pub)"
	case bytes.HasPrefix(head, []byte("CUSTODIAN-IDENTITY-")):
		return "it is an agency identity (agency.key)"
	case head[0] == 0x30:
		return "it is binary DER, such as a signed warrant"
	}
	return otherwise
}

// checkPEMOrDER refuses a file that holds no PEM block of pemType and is
// not DER either, saying what it seems to be: a certificate given where a
// CRL goes, a key where a certificate goes. name is the flag or argument.
// Text before a PEM block is left to the parser.
func checkPEMOrDER(name, path string, data []byte, pemType, takes string) error {
	head := bytes.TrimLeft(data, " \t\r\n")
	if bytes.Contains(data, []byte("-----BEGIN "+pemType+"-----")) || (len(head) > 0 && head[0] == 0x30 && len(head) == len(data)) {
		return nil
	}
	hint := fmt.Sprintf("check that %s names the right file", name)
	switch {
	case pemType == "X509 CRL" && bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")):
		hint = "give the CRL the court's CA published (openssl ca -gencrl); a root certificate goes to custodian trust add-root (or --roots)"
	case pemType == "CERTIFICATE" && bytes.Contains(data, []byte("-----BEGIN X509 CRL-----")):
		hint = "give the certificate; a CRL goes to custodian trust set-crl (or --crl)"
	}
	return withHint(fmt.Errorf("%s %s is not %s: %s", name, path, takes, looksLike(head, "it is neither PEM nor DER")), hint)
}
