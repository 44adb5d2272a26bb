// Package smartcard signs with a key on a PKCS#11 token, such as a judge's
// PIV smartcard through OpenSC's opensc-pkcs11.so, or SoftHSM2 in tests.
//
// Contract:
//   - Keys are named by PKCS#11 URIs (RFC 7512) with the path attributes
//     token, serial, manufacturer, model, object, id and type (which must be
//     "private" when given). The URI must name the key by object label or id.
//     A PIN or module inside the URI is refused: the PIN comes from the
//     environment (CUSTODIAN_PIN) or a terminal prompt, never from argv, and
//     the module is a separate argument.
//   - Exactly one private key must match across the module's tokens;
//     several matches are an error, never a guess.
//   - The key never leaves the token. Sign asks the token for a raw
//     ECDSA, RSA PKCS #1 v1.5 or RSA-PSS signature over a digest; keys
//     marked CKA_ALWAYS_AUTHENTICATE (PIV slot 9c) get the PIN again for
//     each signature, as PKCS#11 requires.
//   - A PIN the token refuses is reported as ErrWrongPIN (the card counted
//     a failed try; the error says when one is left) or ErrPINLocked, so
//     that nobody keeps guessing at a card that locks itself.
//   - Signing needs cgo (the PKCS#11 module is a C library); builds without
//     cgo return ErrNoCgo from Open.
package smartcard

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"golang.org/x/term"
)

// ErrNoCgo is returned by Open in builds without cgo.
var ErrNoCgo = errors.New("smartcard signing needs a cgo build of custodian (CGO_ENABLED=1)")

// ErrWrongPIN and ErrPINLocked are in the chain of the error Open or Sign
// returns when the token refuses the PIN.
var (
	ErrWrongPIN  = errors.New("wrong PIN, the card counted a failed try")
	ErrPINLocked = errors.New("the PIN is locked after too many wrong tries")
)

// URI is a parsed pkcs11: URI. Empty fields match anything.
type URI struct {
	Token        string
	Serial       string
	Manufacturer string
	Model        string
	Object       string // CKA_LABEL of the key
	ID           []byte // CKA_ID of the key
}

// ParseURI reads an RFC 7512 PKCS#11 URI naming a private key.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return u, errors.New("key must be a pkcs11: URI, such as pkcs11:token=judge;object=judge-key")
	}
	path, query, _ := strings.Cut(rest, "?")
	if query != "" {
		return u, errors.New("pkcs11 URI query attributes (pin-value, module-path, ...) are refused: the PIN comes from CUSTODIAN_PIN or the prompt, the module from --module")
	}
	seen := make(map[string]bool)
	for _, attr := range strings.Split(path, ";") {
		if attr == "" {
			continue
		}
		name, raw, ok := strings.Cut(attr, "=")
		if !ok {
			return u, fmt.Errorf("pkcs11 URI attribute %q has no value", attr)
		}
		if seen[name] {
			return u, fmt.Errorf("pkcs11 URI repeats attribute %q", name)
		}
		seen[name] = true
		value, err := url.PathUnescape(raw)
		if err != nil {
			return u, fmt.Errorf("pkcs11 URI attribute %q is not percent-encoded correctly", name)
		}
		if err := u.set(name, value); err != nil {
			return u, err
		}
	}
	if u.Object == "" && u.ID == nil {
		return u, errors.New("pkcs11 URI must name the key with object= or id=")
	}
	return u, nil
}

func (u *URI) set(name, value string) error {
	switch name {
	case "token":
		u.Token = value
	case "serial":
		u.Serial = value
	case "manufacturer":
		u.Manufacturer = value
	case "model":
		u.Model = value
	case "object":
		u.Object = value
	case "id":
		u.ID = []byte(value)
	case "type":
		if value != "private" {
			return fmt.Errorf("pkcs11 URI type=%s: the signing key is type=private", value)
		}
	case "pin-value", "pin-source":
		return errors.New("a PIN in the pkcs11 URI is refused: set CUSTODIAN_PIN or type it at the prompt")
	default:
		return fmt.Errorf("pkcs11 URI attribute %q is not supported", name)
	}
	return nil
}

// PINEnv is the environment variable that may hold the token PIN.
const PINEnv = "CUSTODIAN_PIN"

// ReadPIN returns the PIN from CUSTODIAN_PIN, which it then removes from
// the environment so no child process inherits it, or else asks on the
// controlling terminal without echo.
func ReadPIN(prompt string) (string, error) {
	if pin, ok := os.LookupEnv(PINEnv); ok {
		os.Unsetenv(PINEnv)
		if pin == "" {
			return "", errors.New("CUSTODIAN_PIN is empty")
		}
		return pin, nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", errors.New("no PIN: set CUSTODIAN_PIN or run on a terminal to be asked")
	}
	defer tty.Close()
	fmt.Fprint(tty, prompt)
	pin, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return "", fmt.Errorf("reading the PIN: %w", err)
	}
	if len(pin) == 0 {
		return "", errors.New("empty PIN")
	}
	return string(pin), nil
}
