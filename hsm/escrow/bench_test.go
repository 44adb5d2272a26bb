package escrow

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
)

// benchMembers makes n custodians with RSA-2048 EKs that belong to no TPM.
func benchMembers(b *testing.B, n int) []Member {
	b.Helper()
	ms := make([]Member, n)
	for i := range ms {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		ek, err := tpm.NewEK(&key.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		ms[i] = Member{ID: fmt.Sprintf("court-%d", i), EK: ek}
	}
	return ms
}

var benchPCRs = tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32), 9: bytes.Repeat([]byte{2}, 32)}

// BenchmarkCeremony measures a whole ceremony (split, commit, seal to each
// EK) beside the floor of the same circl operations alone.
func BenchmarkCeremony(b *testing.B) {
	for _, n := range []int{5, 20, 100} {
		ms := benchMembers(b, n)
		t := n/2 + 1
		b.Run(fmt.Sprintf("ceremony/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := Ceremony("2026-11", t, benchPCRs, ms); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("circl-floor/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				ss := secretsharing.New(rand.Reader, uint(t-1), g.RandomScalar(rand.Reader))
				_ = ss.Share(uint(n))
				_ = ss.CommitSecret()
			}
		})
	}
}

// BenchmarkRecover measures recovery from threshold release packages
// (HPKE open, Feldman check of each share, interpolation, public key
// check) beside the floor of circl's Verify and Recover alone.
func BenchmarkRecover(b *testing.B) {
	agency, err := recipient.Generate("")
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	for _, t := range []int{3, 20} {
		n := t
		secret := g.RandomScalar(rand.Reader)
		ss := secretsharing.New(rand.Reader, uint(t-1), secret)
		shares := ss.Share(uint(n))
		pub := &Public{Version: Version, KeyID: "2026-11", Mode: ModeShare, Threshold: t, PCRs: benchPCRs}
		for _, c := range ss.CommitSecret() {
			data, _ := c.MarshalBinary()
			pub.Commitments = append(pub.Commitments, data)
		}
		pub.PublicKey = pub.Commitments[0]
		var releases []*Release
		for i, s := range shares {
			id := fmt.Sprintf("court-%d", i)
			pub.Custodians = append(pub.Custodians, Custodian{ID: id, Index: i + 1, EKName: []byte(id)})
			value, _ := s.Value.MarshalBinary()
			r, err := SealShare(agency.Public(), digest[:], id, "2026-11", i+1, value)
			if err != nil {
				b.Fatal(err)
			}
			releases = append(releases, r)
		}
		b.Run(fmt.Sprintf("recover/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				if _, err := Recover(agency, pub, releases); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("circl-floor/t=%d", t), func(b *testing.B) {
			commit := ss.CommitSecret()
			for b.Loop() {
				for _, s := range shares {
					if !secretsharing.Verify(uint(t-1), s, commit) {
						b.Fatal("share does not verify")
					}
				}
				if _, err := secretsharing.Recover(uint(t-1), shares); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
