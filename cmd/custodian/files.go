package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/durable"
)

// writeNew writes data to a new file at path, which the flag named flag
// (without its dashes) gave. It never replaces an existing file: outputs
// here are keys and signed documents, and silently replacing one (or a
// device node named by mistake) loses something that matters.
func writeNew(flag, path string, data []byte, perm os.FileMode) error {
	err := durable.CreateFile(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return existsHint(flag, err)
	}
	return err
}

// existsHint is the advice for an output file, given by flag, that exists.
func existsHint(flag string, err error) error {
	return withHint(err, "remove it first or choose another --"+flag)
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

// mustNotExist refuses an output path, given by flag, early: before any
// work that would be lost (such as a PIN prompt and a signature on a card).
func mustNotExist(flag, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return existsHint(flag, &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist})
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
	case bytes.HasPrefix(head, []byte("custodian enrollment record")):
		return "it is an enrollment record (from custodian enroll verify --record-out)"
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

// maxKeyFileSize caps a key or record file read from a flag: each is a
// line or a few of text, and the path may name /dev/zero or a huge file.
const maxKeyFileSize = 16 << 10

// readFlagFile reads the regular file a flag names, at most limit bytes.
// Every error names the flag, so the user knows which argument to fix.
func readFlagFile(flag, path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, withHint(fmt.Errorf("--%s: %w", flag, err), "check the path given to --"+flag)
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return nil, notRegular(flag, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("--%s: %s is longer than %d bytes; it is not what the flag takes", flag, path, limit)
	}
	return data, nil
}

func notRegular(flag, path string) error {
	return withHint(fmt.Errorf("--%s: %s is not a regular file", flag, path), "--"+flag+" takes a file: check the path")
}

// readKeyArg reads a flag that takes a signed-note key or a file holding
// one: the file when the argument names an existing regular file, else the
// argument itself. (Any other rule, such as "contains '+'", misreads paths
// like keys+2026/authority.pub or custodian/ledger-key.pub.)
func readKeyArg(flag, arg string) (string, error) {
	if arg == "" {
		return "", nil
	}
	if info, err := os.Stat(arg); err == nil {
		if !info.Mode().IsRegular() {
			return "", notRegular(flag, arg)
		}
		data, err := readFlagFile(flag, arg, maxKeyFileSize)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(data)), nil
	}
	return strings.TrimSpace(arg), nil
}

// checkVerifierKey says what is wrong with a verifier key given to flag:
// a private key (which must never leave its owner), or not a key at all.
func checkVerifierKey(flag, key string) error {
	if _, err := note.NewVerifier(key); err == nil {
		return nil
	}
	if strings.HasPrefix(key, "PRIVATE+KEY+") {
		return withHint(fmt.Errorf("--%s: this is a private signing key, not a verifier key", flag),
			"give the published verifier key (the .pub file); keep the private key where it was and tell its owner it was copied")
	}
	return withHint(fmt.Errorf("--%s: neither a signed-note verifier key nor a file holding one", flag),
		"give the published verifier key, name+hash+key, or the file it is in")
}
