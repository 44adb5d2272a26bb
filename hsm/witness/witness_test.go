package witness_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/hsm/witness/witnesstest"
)

// memLog is a log in memory with the appliance's checkpoint format: an
// RFC 6962 tree (x/mod tlog) and a C2SP signed-note checkpoint.
type memLog struct {
	signer note.Signer
	hashes []tlog.Hash
	size   int64
}

func newLog(t testing.TB, skey string) *memLog {
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &memLog{signer: s}
}

func (l *memLog) append(t testing.TB, entries ...string) {
	for _, e := range entries {
		hs, err := tlog.StoredHashes(l.size, []byte(e), l)
		if err != nil {
			t.Fatal(err)
		}
		l.hashes = append(l.hashes, hs...)
		l.size++
	}
}

func (l *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *memLog) ConsistencyProof(old, size int64) (tlog.TreeProof, error) {
	return tlog.ProveTree(size, old, l)
}

func (l *memLog) checkpoint(t testing.TB) []byte {
	h, err := tlog.TreeHash(l.size, l)
	if err != nil {
		t.Fatal(err)
	}
	cp := log.Checkpoint{Origin: l.signer.Name(), Size: uint64(l.size), Hash: h[:]}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

const origin = "custodian/court-a"

func logKeys(t testing.TB) (skey, vkey string) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func twoWitnesses(t testing.TB, vkey string) witness.Policy {
	a := witnesstest.Start(t, "witness.test/a", origin, vkey)
	b := witnesstest.Start(t, "witness.test/b", origin, vkey)
	return witness.Policy{Witnesses: []witness.Witness{a.Ref(), b.Ref()}, Quorum: 2}
}

func cosign(t testing.TB, c *witness.Cosigner, l *memLog, p witness.Policy) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cosigned, _, err := c.Cosign(ctx, l, l.checkpoint(t), l.size, p)
	return cosigned, err
}

// TestTwoLitewitnessesCosign: two real litewitness processes cosign a
// first checkpoint and a later one (with its consistency proof); the
// cosigned checkpoint is stored durably and verifies with quorum 2.
func TestTwoLitewitnessesCosign(t *testing.T) {
	skey, vkey := logKeys(t)
	p := twoWitnesses(t, vkey)
	l := newLog(t, skey)
	data := t.TempDir()
	c, err := witness.NewCosigner(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	for round, n := range []int{3, 5} {
		l.append(t, entries(fmt.Sprintf("round %d", round), n)...)
		signed, err := cosign(t, c, l, p)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cp, names, err := witness.VerifyQuorum(signed, p)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if cp.Size != uint64(l.size) || len(names) != 2 {
			t.Fatalf("round %d: size %d cosigned by %v", round, cp.Size, names)
		}
		stored, err := os.ReadFile(filepath.Join(data, witness.Dir, witness.FileName))
		if err != nil || string(stored) != string(signed) {
			t.Fatalf("round %d: stored %q, %v", round, stored, err)
		}
	}
}

func entries(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s entry %d", prefix, i)
	}
	return out
}

// TestInvariantWitnessesRefuseAFork: a copy of the log taken at 3
// entries and grown into a second history under the same key (a data
// directory restored from a copy) is refused by both witnesses, which
// cosigned the first history, whether it is longer or shorter.
func TestInvariantWitnessesRefuseAFork(t *testing.T) {
	skey, vkey := logKeys(t)
	p := twoWitnesses(t, vkey)
	first, second := newLog(t, skey), newLog(t, skey)
	first.append(t, entries("shared", 3)...)
	second.append(t, entries("shared", 3)...)
	first.append(t, entries("first", 3)...)
	c, _ := witness.NewCosigner(t.TempDir(), nil)
	if _, err := cosign(t, c, first, p); err != nil {
		t.Fatal(err)
	}
	for _, grow := range []int{1, 4} {
		second.append(t, entries(fmt.Sprintf("second %d", grow), grow)...)
		restored, _ := witness.NewCosigner(t.TempDir(), nil)
		if _, err := cosign(t, restored, second, p); !errors.Is(err, witness.ErrRefused) {
			t.Fatalf("second history at %d entries, quorum 2: %v, want a refusal", second.size, err)
		}
		one := p
		one.Quorum = 1 // both must refuse
		_, err := cosign(t, restored, second, one)
		if !errors.Is(err, witness.ErrRefused) {
			t.Fatalf("second history at %d entries: %v, want a refusal", second.size, err)
		}
		if !strings.Contains(err.Error(), "witness.test/a") || !strings.Contains(err.Error(), "witness.test/b") {
			t.Errorf("the refusal does not name both witnesses: %v", err)
		}
		// Smaller than what they cosigned: behind (a monitor's stale
		// copy looks the same); larger: not consistent with it.
		if behind := second.size < first.size; errors.Is(err, witness.ErrBehind) != behind {
			t.Errorf("second history at %d entries, first at %d: ErrBehind is %v", second.size, first.size, !behind)
		}
	}
	// The first history goes on being cosigned.
	first.append(t, "first later")
	if _, err := cosign(t, c, first, p); err != nil {
		t.Fatalf("the first history after the fork: %v", err)
	}
}

// TestInvariantQuorumIsCounted: a checkpoint signed by the log alone, or
// cosigned by fewer witnesses than the quorum, or with a cosignature
// moved to another checkpoint, is refused.
func TestInvariantQuorumIsCounted(t *testing.T) {
	skey, vkey := logKeys(t)
	p := twoWitnesses(t, vkey)
	l := newLog(t, skey)
	l.append(t, entries("a", 2)...)
	signed := l.checkpoint(t)
	if _, _, err := witness.VerifyQuorum(signed, p); !errors.Is(err, witness.ErrNoQuorum) {
		t.Fatalf("log signature alone: %v", err)
	}
	c, _ := witness.NewCosigner(t.TempDir(), nil)
	cosigned, err := cosign(t, c, l, p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(cosigned), "\n")
	oneShort := strings.Join(lines[:len(lines)-2], "") // drop one witness's line
	if _, names, err := witness.VerifyQuorum([]byte(oneShort), p); !errors.Is(err, witness.ErrNoQuorum) || len(names) != 1 {
		t.Fatalf("one of two: %v %v", names, err)
	}
	one := p
	one.Quorum = 1
	if _, _, err := witness.VerifyQuorum([]byte(oneShort), one); err != nil {
		t.Fatalf("one of quorum 1: %v", err)
	}
	// The cosignatures of this tree under another tree's text.
	l.append(t, "more")
	other := string(l.checkpoint(t))
	moved := other + strings.Join(lines[len(lines)-3:], "")
	if _, _, err := witness.VerifyQuorum([]byte(moved), p); !errors.Is(err, witness.ErrNoQuorum) {
		t.Fatalf("moved cosignatures: %v", err)
	}
}

// TestWitnessesThatDoNotAnswerTimeOut: a witness that accepts the
// connection and never answers, and one that is down, make Cosign end
// at its deadline with ErrTimeout, storing nothing.
func TestWitnessesThatDoNotAnswerTimeOut(t *testing.T) {
	skey, vkey := logKeys(t)
	w := witnesstest.Start(t, "witness.test/down", origin, vkey)
	w.Stop()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	quiet := witnesstest.Start(t, "witness.test/quiet", origin, vkey).Ref()
	quiet.URL = "http://" + silent.Addr().String()
	p := witness.Policy{Witnesses: []witness.Witness{w.Ref(), quiet}, Quorum: 1}
	l := newLog(t, skey)
	l.append(t, "x")
	data := t.TempDir()
	c, _ := witness.NewCosigner(data, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, _, err = c.Cosign(ctx, l, l.checkpoint(t), l.size, p)
	if !errors.Is(err, witness.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if _, err := os.Stat(filepath.Join(data, witness.Dir, witness.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a cosigned checkpoint was stored: %v", err)
	}
}

// TestPolicyIsExplicit: bad policies are refused with their cause.
func TestPolicyIsExplicit(t *testing.T) {
	_, vkey := logKeys(t)
	w := witness.Witness{Key: "w.test/a+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", URL: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		p    witness.Policy
		want string
	}{
		{witness.Policy{Quorum: 1}, "want 0 to the 0 witnesses"},
		{witness.Policy{Witnesses: []witness.Witness{{Key: vkey, URL: w.URL}}, Quorum: 1}, "not a cosignature/v1 key"},
		{witness.Policy{Witnesses: []witness.Witness{w}, Quorum: 1}, "does not match its hash"},
		{witness.Policy{Witnesses: []witness.Witness{{Key: "nonsense", URL: w.URL}}}, "not a witness verifier key"},
	} {
		err := tc.p.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
}

func FuzzNewVerifier(f *testing.F) {
	f.Add("w.test/a+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, vkey string) {
		v, err := witness.NewVerifier(vkey)
		if err == nil && v.Name() == "" {
			t.Fatal("a verifier without a name")
		}
	})
}

// FuzzVerifyQuorum: whatever the bytes, a checkpoint is accepted only
// with the quorum's names, and nothing panics.
func FuzzVerifyQuorum(f *testing.F) {
	f.Add([]byte("custodian/court-a\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— w.test/a AAAA\n"))
	f.Add([]byte{})
	s, err := torchwood.NewCosignatureSigner("w.test/a", ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	p := witness.Policy{Witnesses: []witness.Witness{{Key: s.Verifier().String(), URL: "http://127.0.0.1:1"}}, Quorum: 1}
	if signed, err := note.Sign(&note.Note{Text: "custodian/court-a\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s); err == nil {
		f.Add(signed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, names, err := witness.VerifyQuorum(data, p)
		if err == nil && (cp == nil || len(names) < p.Quorum) {
			t.Fatalf("accepted with %v", names)
		}
	})
}
