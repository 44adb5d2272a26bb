// Package witness is the ledger's outside memory: C2SP tlog-witness
// witnesses cosign the appliance's checkpoints, so that one device cannot
// show two histories (a data directory restored from a copy and serving a
// second history) without a witness refusing the second.
//
// Promises:
//
//   - A policy ([Policy]) names witnesses by their C2SP tlog-cosignature
//     verifier keys (cosignature/v1, Ed25519) and a quorum k. Witnesses
//     listed need an explicit quorum; no witnesses: quorum 0, nothing
//     asked. Keys are parsed with torchwood and x/mod note: no signature
//     code here.
//
//   - [VerifyQuorum] accepts a signed checkpoint only when k distinct
//     witnesses (distinct names and keys) of the policy cosigned its
//     text; the log's own signature is checked elsewhere
//     (ledger.VerifyCheckpoint), as it needs the log's key.
//
//   - [Cosigner] submits a checkpoint with its consistency proof to each
//     witness (tlog-witness add-checkpoint), gathers their cosignatures
//     until the quorum or its deadline, and stores the cosigned checkpoint
//     durably beside the ledger before anyone is handed it; cosignatures
//     of one checkpoint gathered for several policies add up in that file.
//     A witness that refuses (it cosigned another history, a larger tree
//     than the log holds, or does not know the log) is named; one merely
//     ahead on the same history is sent the log's newest checkpoint.
package witness

import (
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	"filippo.io/torchwood"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// MaxWitnesses caps the witnesses one policy names.
const MaxWitnesses = 16

// MaxNameLen caps a witness's name: its cosignature line ("— ", the
// name, a space, 104 base64 characters, a newline) then stays under 256
// bytes, so a policy's cosigned checkpoint fits MaxCosignedSize.
const MaxNameLen = 140

// Witness is one witness as the escrow authority names it: its verifier
// key and where the appliance submits checkpoints (its tlog-witness base
// URL, to which "/add-checkpoint" is appended).
type Witness struct {
	Key string `json:"key"`
	URL string `json:"url"`
}

// Policy is the witnesses a checkpoint must be cosigned by: Quorum of
// Witnesses.
type Policy struct {
	Witnesses []Witness
	Quorum    int
}

// Check refuses a policy that could be read two ways: witnesses without a
// quorum, a quorum beyond them, a name or a key listed twice, or one that
// is not a cosignature verifier key.
func (p Policy) Check() error {
	n := len(p.Witnesses)
	switch {
	case n > MaxWitnesses:
		return fmt.Errorf("%d witnesses; at most %d", n, MaxWitnesses)
	case p.Quorum < 0 || p.Quorum > n:
		return fmt.Errorf("witness quorum %d: want 0 to the %d witnesses listed", p.Quorum, n)
	}
	seen, keys := map[string]bool{}, map[string]string{}
	for i, w := range p.Witnesses {
		v, err := NewVerifier(w.Key)
		if err != nil {
			return fmt.Errorf("witness %d: %w", i+1, err)
		}
		if len(v.Name()) > MaxNameLen {
			return fmt.Errorf("the name of witness %d is %d characters; at most %d, so that its cosignature fits the checkpoint every reader accepts", i+1, len(v.Name()), MaxNameLen)
		}
		if seen[v.Name()] {
			return fmt.Errorf("witness %s is listed twice", v.Name())
		}
		seen[v.Name()] = true
		// A cosignature does not sign the witness's name: one key under
		// two names would count twice toward the quorum.
		if other, ok := keys[publicKey(w.Key)]; ok {
			return fmt.Errorf("witnesses %s and %s have the same key: list each witness once", other, v.Name())
		}
		keys[publicKey(w.Key)] = v.Name()
		if err := checkURL(w.URL); err != nil {
			return fmt.Errorf("witness %s: %w", v.Name(), err)
		}
	}
	return nil
}

// publicKey is the key part of a verifier key NewVerifier accepted:
// what follows the name and the key hash. A name holds no '+', but the
// key's base64 may, so the cut is after the second '+', not the last.
func publicKey(vkey string) string {
	_, rest, _ := strings.Cut(vkey, "+")
	_, key, _ := strings.Cut(rest, "+")
	return key
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("the URL %q is not an http or https base URL", raw)
	}
	return nil
}

// NewVerifier parses a C2SP tlog-cosignature verifier key
// ("name+hash+base64(0x04 || Ed25519 key)", what litewitness prints as
// its vkey) into a verifier of cosignature/v1 lines. Torchwood builds
// and checks the verifier; the key must be its canonical spelling.
func NewVerifier(vkey string) (note.Verifier, error) {
	const algCosignatureV1 = 4
	name, rest, ok1 := strings.Cut(vkey, "+")
	_, key64, ok2 := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.DecodeString(key64)
	if !ok1 || !ok2 || err != nil || len(key) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("%q is not a witness verifier key (name+hash+key)", short(vkey))
	}
	if key[0] != algCosignatureV1 {
		return nil, fmt.Errorf("the key of witness %s is not a cosignature/v1 key (C2SP tlog-cosignature)", short(name))
	}
	s, err := torchwood.NewCosignatureSigner(name, publicOnly(key[1:]))
	if err != nil {
		return nil, fmt.Errorf("the witness name %q is not a valid key name", short(name))
	}
	v := s.Verifier()
	if v.String() != vkey {
		return nil, fmt.Errorf("the key of witness %s does not match its hash: copy it again from the witness", short(name))
	}
	return v, nil
}

// publicOnly is an Ed25519 public key as the crypto.Signer torchwood's
// constructor takes; it is only asked for its public half.
type publicOnly ed25519.PublicKey

func (k publicOnly) Public() crypto.PublicKey { return ed25519.PublicKey(k) }
func (publicOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("a witness verifier key does not sign")
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Verifiers returns the policy's witnesses as note verifiers.
func (p Policy) Verifiers() ([]note.Verifier, error) {
	vs := make([]note.Verifier, 0, len(p.Witnesses))
	for _, w := range p.Witnesses {
		v, err := NewVerifier(w.Key)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// ErrNoQuorum: a checkpoint is not cosigned by the quorum of witnesses
// the policy asks for.
var ErrNoQuorum = errors.New("the checkpoint is not cosigned by the witness quorum")

// MaxCosignedSize caps a cosigned checkpoint: the log's signed note and
// one line per witness. It is ledger.MaxCheckpointSize, the cap every
// reader of a served checkpoint applies.
const MaxCosignedSize = 4096 + MaxWitnesses*256

// VerifyQuorum checks that signed carries valid cosignatures of at least
// the policy's quorum of distinct witnesses, and returns the checkpoint
// and the names of the witnesses that cosigned it. A quorum of 0 asks for
// nothing: the checkpoint is only parsed.
func VerifyQuorum(signed []byte, p Policy) (*log.Checkpoint, []string, error) {
	if len(signed) > MaxCosignedSize {
		return nil, nil, fmt.Errorf("%w: the checkpoint is %d bytes", ErrNoQuorum, len(signed))
	}
	vs, err := p.Verifiers()
	if err != nil {
		return nil, nil, err
	}
	var names []string
	var text string
	n, err := note.Open(signed, note.VerifierList(vs...))
	var unverified *note.UnverifiedNoteError
	switch {
	case err == nil:
		text = n.Text
		keys := map[string]bool{} // one witness's key counts once, whatever name it signs under
		for _, s := range n.Sigs {
			k := keyNamed(p, s.Name)
			if !slices.Contains(names, s.Name) && !keys[k] {
				names = append(names, s.Name)
				keys[k] = true
			}
		}
	case errors.As(err, &unverified):
		text = unverified.Note.Text // no witness of the policy signed it
	default:
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return nil, nil, fmt.Errorf("%w: the cosignature of witness %s does not match the checkpoint (altered?)", ErrNoQuorum, invalid.Name)
		}
		return nil, nil, fmt.Errorf("%w: it is not a signed note", ErrNoQuorum)
	}
	var cp log.Checkpoint
	rest, err := cp.Unmarshal([]byte(text))
	if err != nil || len(rest) != 0 || len(cp.Hash) != tlog.HashSize {
		return nil, nil, fmt.Errorf("%w: its text is not a checkpoint (origin, size, root hash)", ErrNoQuorum)
	}
	if len(names) < p.Quorum {
		return nil, names, fmt.Errorf("%w: %d of the %d needed (%s)", ErrNoQuorum, len(names), p.Quorum, cosignedBy(names))
	}
	return &cp, names, nil
}

// keyNamed is the key of the policy's witness called name.
func keyNamed(p Policy, name string) string {
	for _, w := range p.Witnesses {
		if n, _, _ := strings.Cut(w.Key, "+"); n == name {
			return publicKey(w.Key)
		}
	}
	return name
}

func cosignedBy(names []string) string {
	if len(names) == 0 {
		return "no witness cosigned it"
	}
	return "cosigned by " + strings.Join(names, ", ")
}
