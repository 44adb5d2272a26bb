package bootpolicy

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/google/go-eventlog/cel"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/tpm"
)

// Kind says what an event measured.
type Kind uint8

// The kinds measure-boot records. The numbers are part of the event log
// format; never reuse one.
const (
	KindRootFS     Kind = 1 // content digest of the root filesystem tree
	KindBinary     Kind = 2 // SHA-256 of the custodian binary
	KindConfig     Kind = 3 // SHA-256 of the appliance configuration
	KindTrustRoots Kind = 4 // content digest of the court trust roots tree
	// KindSecurityVersion is the image's security version (the manifest's
	// security_version): its name is the version in decimal, its measured
	// value [SecurityVersionMeasured] of it.
	KindSecurityVersion Kind = 5
	KindSeparator       Kind = 255 // end of the boot measurements in this PCR
)

var kindNames = map[Kind]string{
	KindRootFS:          "rootfs",
	KindBinary:          "binary",
	KindConfig:          "config",
	KindTrustRoots:      "trust-roots",
	KindSecurityVersion: "security-version",
	KindSeparator:       "separator",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalJSON writes the kind's name.
func (k Kind) MarshalJSON() ([]byte, error) {
	s, ok := kindNames[k]
	if !ok {
		return nil, fmt.Errorf("unknown event kind %d", k)
	}
	return json.Marshal(s)
}

// UnmarshalJSON accepts only the names of known kinds.
func (k *Kind) UnmarshalJSON(data []byte) error {
	var s string
	if err := strictjson.Decode(data, &s, len(data)); err != nil {
		return err
	}
	for kind, name := range kindNames {
		if name == s {
			*k = kind
			return nil
		}
	}
	return fmt.Errorf("unknown event kind %q", s)
}

// SeparatorName and SeparatorMeasured are the fixed content of every
// separator event. The measured value is a hash of a label no file can be
// confused with, because the record content also carries the kind.
const SeparatorName = "separator"

var SeparatorMeasured = func() Digest {
	d := sha256.Sum256([]byte("custodian measure-boot separator v1"))
	return d[:]
}()

// Event is one measurement: what (Kind, Name), the SHA-256 of what was
// measured (Measured), and the digest extended into PCR (Digest), which is
// the SHA-256 of the event's CEL content.
type Event struct {
	PCR      int    `json:"pcr"`
	Kind     Kind   `json:"kind"`
	Name     string `json:"name"`
	Measured Digest `json:"measured"`
	Digest   Digest `json:"digest"`
}

// NewEvent builds an event and computes its extend digest.
func NewEvent(pcr int, kind Kind, name string, measured [sha256.Size]byte) Event {
	e := Event{PCR: pcr, Kind: kind, Name: name, Measured: measured[:]}
	e.Digest = e.contentDigest()
	return e
}

// NewSeparator builds the separator event for pcr.
func NewSeparator(pcr int) Event {
	return NewEvent(pcr, KindSeparator, SeparatorName, [sha256.Size]byte(SeparatorMeasured))
}

// NewSecurityVersion builds the event that measures the image's security
// version v into pcr.
func NewSecurityVersion(pcr int, v uint64) Event {
	return NewEvent(pcr, KindSecurityVersion, strconv.FormatUint(v, 10), SecurityVersionMeasured(v))
}

// SecurityVersionMeasured is the measured value of security version v: a
// hash of a label and the decimal version, so that no file's digest can
// pass for it.
func SecurityVersionMeasured(v uint64) [sha256.Size]byte {
	return sha256.Sum256([]byte("custodian security version " + strconv.FormatUint(v, 10)))
}

// securityVersion reads a security-version event's version, which must be
// canonical decimal in range, with the measured value it implies.
func (e Event) securityVersion() (uint64, error) {
	v, err := strconv.ParseUint(e.Name, 10, 64)
	if err != nil || strconv.FormatUint(v, 10) != e.Name {
		return 0, errors.New("security-version event's name is not a decimal version")
	}
	if err := tpm.CheckSecurityVersion(v); err != nil {
		return 0, err
	}
	if want := SecurityVersionMeasured(v); !bytes.Equal(e.Measured, want[:]) {
		return 0, errors.New("security-version event's measured value is not its version's")
	}
	return v, nil
}

// Measurable PCRs: 8–15, the ones the Pi's firmware leaves to the OS,
// except 10, which the kernel's IMA extends.
func checkPCR(i int) error {
	if i < 8 || i > 15 || i == 10 {
		return fmt.Errorf("PCR %d cannot hold boot measurements (use 8, 9 or 11 to 15)", i)
	}
	return nil
}

func (e Event) check() error {
	if err := checkPCR(e.PCR); err != nil {
		return err
	}
	if _, ok := kindNames[e.Kind]; !ok {
		return fmt.Errorf("unknown event kind %d", e.Kind)
	}
	if len(e.Name) == 0 || len(e.Name) > maxNameLen || !utf8.ValidString(e.Name) {
		return fmt.Errorf("event name must be 1 to %d bytes of UTF-8", maxNameLen)
	}
	if len(e.Measured) != sha256.Size || len(e.Digest) != sha256.Size {
		return errors.New("measured and digest must be SHA-256 values")
	}
	if e.Kind == KindSeparator && (e.Name != SeparatorName || !bytes.Equal(e.Measured, SeparatorMeasured)) {
		return errors.New("separator event has other content than the fixed separator")
	}
	if e.Kind == KindSecurityVersion {
		if _, err := e.securityVersion(); err != nil {
			return err
		}
	}
	if !bytes.Equal(e.Digest, e.contentDigest()) {
		return errors.New("digest does not match the event's content")
	}
	return nil
}

// ContentType is the CEL content type of custodian events (a TLV type
// outside the ones the CEL draft assigns, as Confidential Space's COS
// events use 80).
const ContentType uint8 = 81

// Content returns the event's CEL record content. Its TLV value is a nested
// TLV whose type is the kind and whose value is the 32-byte measured
// digest followed by the name; the extend digest is the SHA-256 of the
// whole marshalled content TLV.
func (e Event) Content() cel.Content { return content{e} }

type content struct{ e Event }

func (c content) TLV() (cel.TLV, error) {
	inner, err := cel.TLV{Type: uint8(c.e.Kind), Value: append(bytes.Clone(c.e.Measured), c.e.Name...)}.MarshalBinary()
	if err != nil {
		return cel.TLV{}, err
	}
	return cel.TLV{Type: ContentType, Value: inner}, nil
}

func (c content) GenerateDigest(h crypto.Hash) ([]byte, error) {
	t, err := c.TLV()
	if err != nil {
		return nil, err
	}
	b, err := t.MarshalBinary()
	if err != nil {
		return nil, err
	}
	w := h.New()
	w.Write(b)
	return w.Sum(nil), nil
}

func (e Event) contentDigest() []byte {
	d, _ := content{e}.GenerateDigest(crypto.SHA256) // marshalling a TLV cannot fail
	return d
}

// Digest is a SHA-256 value, written as 64 lowercase hex digits.
type Digest []byte

// MarshalJSON writes lowercase hex.
func (d Digest) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(d)) }

// UnmarshalJSON accepts exactly 64 lowercase hex digits.
func (d *Digest) UnmarshalJSON(data []byte) error {
	var s string
	if err := strictjson.Decode(data, &s, len(data)); err != nil {
		return err
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != s {
		return errors.New("digest must be 64 lowercase hex digits (SHA-256)")
	}
	*d = b
	return nil
}

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}
