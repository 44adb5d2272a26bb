package recipient

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/tests/need"
)

func TestRoundTrip(t *testing.T) {
	for kem := range kems {
		t.Run(kem, func(t *testing.T) {
			id, err := Generate(kem)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ParsePublicKey(id.Public().String() + "\n")
			if err != nil {
				t.Fatal(err)
			}
			id2, err := ParseIdentity(id.String())
			if err != nil {
				t.Fatal(err)
			}
			info := []byte("warrant digest|custodian|key id|1")
			sealed, err := pub.Seal(info, []byte("share"))
			if err != nil {
				t.Fatal(err)
			}
			pt, err := id2.Open(info, sealed)
			if err != nil || !bytes.Equal(pt, []byte("share")) {
				t.Fatalf("open: %q %v", pt, err)
			}
			if _, err := id2.Open([]byte("other context"), sealed); err == nil {
				t.Fatal("opened under a different info")
			}
			other, _ := Generate(kem)
			if _, err := other.Open(info, sealed); err == nil {
				t.Fatal("opened with another identity")
			}
		})
	}
}

func TestDefaultIsHybrid(t *testing.T) {
	id, err := Generate("")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id.Public().String(), "custodian-recipient-v1:mlkem768x25519:") {
		t.Fatalf("default key %q is not ML-KEM-768+X25519", id.Public())
	}
}

func TestParseRefuses(t *testing.T) {
	id, _ := Generate("x25519")
	good := id.Public().String()
	cases := map[string]string{
		"empty":           "",
		"wrong prefix":    strings.Replace(good, "custodian-recipient-v1", "custodian-recipient-v2", 1),
		"identity":        id.String(),
		"unknown kem":     strings.Replace(good, "x25519", "x448", 1),
		"padded":          good + "=",
		"short key":       good[:len(good)-4],
		"inner space":     strings.Replace(good, ":", ": ", 1),
		"two lines":       good + "\n" + good,
		"crlf":            good + "\r\n",
		"standard base64": strings.Replace(good, good[len(good)-43:], strings.Repeat("+", 43), 1),
	}
	for name, in := range cases {
		if _, err := ParsePublicKey(in); err == nil {
			t.Errorf("%s: parsed %q", name, in)
		}
	}
}

// FuzzParsePublicKey: whatever parses must print back as the same line.
func FuzzParsePublicKey(f *testing.F) {
	for _, kem := range []string{"mlkem768x25519", "x25519"} {
		id, err := Generate(kem)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(id.Public().String())
	}
	f.Add("custodian-recipient-v1:x25519:")
	f.Fuzz(func(t *testing.T, s string) {
		pk, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		if pk.String() != strings.TrimSuffix(s, "\n") {
			t.Fatalf("parsed %q but prints %q", s, pk.String())
		}
	})
}

// TestInvariantFingerprintIsTheWholeSHA256: the fingerprint is the whole
// SHA-256 of the key's one-line form, as sha256sum computes it, in 16
// groups of four hex digits (a 128-bit prefix lets whoever makes the
// agency's key find two keys sharing it in 2^64 work); two keys have two
// fingerprints.
func TestInvariantFingerprintIsTheWholeSHA256(t *testing.T) {
	need.Command(t, "sha256sum", "coreutils")
	seen := map[string]bool{}
	for range 2 {
		id, err := Generate("")
		if err != nil {
			t.Fatal(err)
		}
		pub := id.Public()
		cmd := exec.Command("sha256sum")
		cmd.Stdin = strings.NewReader(pub.String())
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		sum := strings.Fields(string(out))[0]
		fp := pub.Fingerprint()
		if strings.ReplaceAll(fp, " ", "") != sum || !regexp.MustCompile(`^([0-9a-f]{4} ){15}[0-9a-f]{4}$`).MatchString(fp) {
			t.Errorf("fingerprint %q, sha256sum %s", fp, sum)
		}
		if seen[fp] {
			t.Errorf("two keys share fingerprint %s", fp)
		}
		seen[fp] = true
	}
}

// TestParsedKeyIsReusedOnlyForTheSameLine: the second parse of a line is
// the first one's key, and a line that differs in one character is never
// answered from the cache: it is refused or parsed on its own.
func TestParsedKeyIsReusedOnlyForTheSameLine(t *testing.T) {
	id, err := Generate("")
	if err != nil {
		t.Fatal(err)
	}
	line := id.Public().String()
	first, err := ParsePublicKey(line)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParsePublicKey(line)
	if err != nil || again != first {
		t.Fatalf("second parse gave %p (%v), want the first key %p", again, err, first)
	}
	flip := "A"
	if strings.HasSuffix(line, "A") {
		flip = "B"
	}
	changed := line[:len(line)-1] + flip
	if p, err := ParsePublicKey(changed); err == nil && (p == first || p.String() != changed) {
		t.Fatalf("a changed line parsed to %v", p)
	}
	if _, err := ParsePublicKey(line + " "); err == nil {
		t.Fatal("a line with a trailing space parsed")
	}
}
