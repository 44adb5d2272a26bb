package enrollment_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// signRecord signs r with key, as the authority does.
func signRecord(t *testing.T, r *enrollment.Record, key string) []byte {
	t.Helper()
	signed, err := r.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestEnrollmentRecordStandsInForSecret: the authority verifies with its
// secret and signs a record; anyone with the record and the authority's
// verifier key then finds the AK bound, without the secret.
func TestEnrollmentRecordStandsInForSecret(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		e, secret := enrollWithChallenge(t, target.Open(t), "court-a")
		roots := target.Swtpm.EKRoots(t)
		v, err := e.Verify(enrollment.VerifyOptions{Secret: secret, EKRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		private, verifier, err := enrollment.NewRecordKey("")
		if err != nil {
			t.Fatal(err)
		}
		rec, err := enrollment.VerifiedRecord(e, v, now, terms(1))
		if err != nil {
			t.Fatal(err)
		}
		opened, err := enrollment.OpenRecord(signRecord(t, rec, private), verifier)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Verify(enrollment.VerifyOptions{Records: []*enrollment.Record{opened}, EKRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		if !got.AKBound || !got.EKCertified {
			t.Fatalf("with the record: AK bound %v, EK certified %v", got.AKBound, got.EKCertified)
		}
		// A record vouches for what the authority checked itself: none is
		// written on the word of another record.
		if _, err := enrollment.VerifiedRecord(e, got, now, terms(2)); !errors.Is(err, enrollment.ErrAKUnbound) {
			t.Fatalf("a record written on another record: %v", err)
		}
		if opened.CustodianID != "court-a" || opened.Verdict != enrollment.VerdictVerified || !opened.Time.Equal(now.UTC().Truncate(time.Second)) {
			t.Fatalf("record: %+v", opened)
		}
		// Without the secret and without a record, nothing is bound.
		if _, err := e.Verify(enrollment.VerifyOptions{EKRoots: roots}); !errors.Is(err, enrollment.ErrAKUnbound) {
			t.Fatalf("no secret, no record: %v", err)
		}
		// An AK the authority did not prove gets no verified record.
		unbound, err := e.Verify(enrollment.VerifyOptions{EKRoots: roots, AllowUnboundAK: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enrollment.VerifiedRecord(e, unbound, now, terms(1)); !errors.Is(err, enrollment.ErrAKUnbound) {
			t.Fatalf("a record for an unproven AK: %v", err)
		}
	})
}

// TestInvariantEnrollmentRecordRefusals: a record stands in for the
// secret only if it is signed by the pinned key, unaltered, verified, and
// names this enrollment's custodian, EK, AK and import key. Each refusal
// has its own error.
func TestInvariantEnrollmentRecordRefusals(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		e, secret := enrollWithChallenge(t, target.Open(t), "court-a")
		roots := target.Swtpm.EKRoots(t)
		v, err := e.Verify(enrollment.VerifyOptions{Secret: secret, EKRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		private, verifier, _ := enrollment.NewRecordKey("authority")
		otherPrivate, _, _ := enrollment.NewRecordKey("authority")
		good, _ := enrollment.VerifiedRecord(e, v, now, terms(1))
		signed := signRecord(t, good, private)

		otherName := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{7}, 32)...)
		edited := func(f func(r *enrollment.Record)) []byte {
			r := *good
			f(&r)
			return signRecord(t, &r, private)
		}
		refused, err := enrollment.RefusedRecord(e, enrollment.ReasonAKUnbound, now, terms(2))
		if err != nil {
			t.Fatal(err)
		}
		cases := map[string]struct {
			signed []byte
			want   error
			says   string
		}{
			"signed by another key": {signRecord(t, good, otherPrivate), enrollment.ErrRecordWrongKey, "not signed by the escrow authority's key"},
			"text altered":          {bytes.Replace(signed, []byte("ek-certified yes"), []byte("ek-certified no"), 1), enrollment.ErrRecordTampered, "altered"},
			"signature altered":     {flipSignature(t, signed), enrollment.ErrRecordTampered, "altered"},
			"not a note":            {[]byte("custodian enrollment record v1\n"), enrollment.ErrRecordMalformed, "not an enrollment record"},
			"another custodian": {edited(func(r *enrollment.Record) { r.CustodianID = "court-b" }),
				enrollment.ErrRecordMismatch, "for custodian court-b"},
			"another EK":         {edited(func(r *enrollment.Record) { r.EKName = otherName }), enrollment.ErrRecordMismatch, "another endorsement key"},
			"another AK":         {edited(func(r *enrollment.Record) { r.AKName = otherName }), enrollment.ErrRecordMismatch, "another attestation key"},
			"another import key": {edited(func(r *enrollment.Record) { r.ImportKeyName = otherName }), enrollment.ErrRecordMismatch, "another import key"},
			"refused verdict":    {signRecord(t, refused, private), enrollment.ErrRecordRefused, "ak-unbound"},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				rec, err := enrollment.OpenRecord(c.signed, verifier)
				if err == nil {
					_, err = e.Verify(enrollment.VerifyOptions{Records: []*enrollment.Record{rec}, EKRoots: roots})
				}
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
					t.Fatalf("got %v, want %v saying %q", err, c.want, c.says)
				}
			})
		}
	})
}

// terms are a record's terms: serial, and 90 days of validity.
func terms(serial uint64) enrollment.Terms {
	return enrollment.Terms{Serial: serial, NotAfter: now.Add(90 * 24 * time.Hour)}
}

// TestInvariantRecordsAreWithdrawnAndExpire: of the records a verifier
// holds, the newest of the TPM stands. A refusal of the same keys with the
// same or a higher serial withdraws an older verified record; a newer
// verified record reinstates the device; a record for another TPM says
// nothing about this one; and a verified record past its not-after
// vouches for nothing.
func TestInvariantRecordsAreWithdrawnAndExpire(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		e, secret := enrollWithChallenge(t, target.Open(t), "court-a")
		roots := target.Swtpm.EKRoots(t)
		v, err := e.Verify(enrollment.VerifyOptions{Secret: secret, EKRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		record := func(verdict string, serial uint64) *enrollment.Record {
			var r *enrollment.Record
			var err error
			if verdict == enrollment.VerdictVerified {
				r, err = enrollment.VerifiedRecord(e, v, now, terms(serial))
			} else {
				r, err = enrollment.RefusedRecord(e, enrollment.ReasonWithdrawn, now, terms(serial))
			}
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		verified1, verified3 := record(enrollment.VerdictVerified, 1), record(enrollment.VerdictVerified, 3)
		refused1, refused2 := record(enrollment.VerdictRefused, 1), record(enrollment.VerdictRefused, 2)
		otherTPM := *refused2
		otherTPM.EKName = append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{7}, 32)...)
		otherTPM.Serial = 9
		for name, c := range map[string]struct {
			records []*enrollment.Record
			at      time.Time
			want    error
		}{
			"verified alone":                 {[]*enrollment.Record{verified1}, time.Time{}, nil},
			"newer refusal":                  {[]*enrollment.Record{verified1, refused2}, time.Time{}, enrollment.ErrRecordRefused},
			"newer refusal, given first":     {[]*enrollment.Record{refused2, verified1}, time.Time{}, enrollment.ErrRecordRefused},
			"refusal of the same serial":     {[]*enrollment.Record{verified1, refused1}, time.Time{}, enrollment.ErrRecordRefused},
			"verified after the refusal":     {[]*enrollment.Record{verified1, refused2, verified3}, time.Time{}, nil},
			"refusal of another TPM":         {[]*enrollment.Record{verified1, &otherTPM}, time.Time{}, nil},
			"expired":                        {[]*enrollment.Record{verified1}, verified1.NotAfter.Add(time.Second), enrollment.ErrRecordExpired},
			"expired, an older one is valid": {[]*enrollment.Record{verified3, verified1}, verified3.NotAfter.Add(time.Second), enrollment.ErrRecordExpired},
		} {
			_, err := e.Verify(enrollment.VerifyOptions{Records: c.records, EKRoots: roots, Now: c.at})
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Errorf("%s: got %v, want %v", name, err, c.want)
			}
		}
		if _, err := enrollment.VerifiedRecord(e, v, now, enrollment.Terms{Serial: 0, NotAfter: now.Add(time.Hour)}); err == nil {
			t.Error("a record with serial 0 was made")
		}
		if _, err := enrollment.VerifiedRecord(e, v, now, enrollment.Terms{Serial: 1, NotAfter: now.Add(-time.Hour)}); err == nil {
			t.Error("a record already expired was made")
		}
	})
}

// flipSignature changes one bit of a signed note's signature (after its
// 4-byte key hash), keeping the note well-formed.
func flipSignature(t *testing.T, signed []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(signed, []byte(" "))
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(signed[i+1:])))
	if err != nil || len(sig) < 10 {
		t.Fatalf("no signature: %v", err)
	}
	sig[9] ^= 1
	return append(bytes.Clone(signed[:i+1]), base64.StdEncoding.EncodeToString(sig)+"\n"...)
}

func TestParseRecordRefusesMalformed(t *testing.T) {
	name := "000b" + strings.Repeat("ab", 32)
	valid := "custodian enrollment record v2\ncustodian court-a\nserial 1\nek " + name + "\nak " + name + "\nimport-key " + name +
		"\nek-certified yes\nverdict verified\nreason -\ntime 2026-11-25T12:00:00Z\nnot-after 2027-02-23T12:00:00Z\n"
	if _, err := enrollment.ParseRecord([]byte(valid)); err != nil {
		t.Fatalf("the valid record: %v", err)
	}
	for change, from := range map[string]string{
		"custodian Court-A\n":            "custodian court-a\n",
		"ek " + name[4:] + "\n":          "ek " + name + "\n",
		"ek-certified maybe\n":           "ek-certified yes\n",
		"verdict ok\n":                   "verdict verified\n",
		"reason ak-unbound\n":            "reason -\n",
		"time 2026-11-25T12:00Z":         "time 2026-11-25T12:00:00Z",
		"time 2026-11-25T13:00:00+01:00": "time 2026-11-25T12:00:00Z",
		"kind x\ncustodian":              "custodian",
		"v1\n":                           "v2\n",
		"serial 0\n":                     "serial 1\n",
		"serial 01\n":                    "serial 1\n",
		"serial -1\n":                    "serial 1\n",
		"not-after 2027-02-23\n":         "not-after 2027-02-23T12:00:00Z\n",
		"\n\n":                           "Z\n",
		"EK ":                            "ek ",
	} {
		bad := strings.Replace(valid, from, change, 1)
		if _, err := enrollment.ParseRecord([]byte(bad)); !errors.Is(err, enrollment.ErrRecordMalformed) {
			t.Errorf("%q parsed: %v", change, err)
		}
	}
	refused := strings.Replace(strings.Replace(valid, "verdict verified", "verdict refused", 1), "reason -", "reason because", 1)
	if _, err := enrollment.ParseRecord([]byte(refused)); err == nil {
		t.Error("a refusal with an unknown reason parsed")
	}
}

func FuzzParseRecord(f *testing.F) {
	name := "000b" + strings.Repeat("ab", 32)
	f.Add([]byte("custodian enrollment record v2\ncustodian court-a\nserial 1\nek " + name + "\nak " + name + "\nimport-key " + name +
		"\nek-certified yes\nverdict verified\nreason -\ntime 2026-11-25T12:00:00Z\nnot-after 2027-02-23T12:00:00Z\n"))
	f.Add([]byte("custodian enrollment record v2\ncustodian a\nserial 2\nek \nak \nimport-key \nek-certified no\nverdict refused\nreason withdrawn\ntime 2026-11-25T12:00:00Z\nnot-after 2026-11-26T12:00:00Z\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := enrollment.ParseRecord(data)
		if err != nil {
			return
		}
		// One canonical form: what parses re-encodes to the same bytes.
		again, err := r.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted a non-canonical record: %q, re-encoded %q, %v", data, again, err)
		}
		if r.Verdict == enrollment.VerdictVerified && r.Reason != "" {
			t.Fatalf("a verified record with a reason: %q", data)
		}
	})
}

func FuzzOpenRecord(f *testing.F) {
	private, verifier, err := enrollment.NewRecordKey("authority")
	if err != nil {
		f.Fatal(err)
	}
	name := append([]byte{0, 0x0b}, make([]byte, 32)...)
	r := &enrollment.Record{CustodianID: "court-a", Serial: 1, EKName: name, AKName: name, ImportKeyName: name,
		Verdict: enrollment.VerdictVerified, Time: time.Unix(1764072000, 0).UTC(), NotAfter: time.Unix(1771848000, 0).UTC()}
	signed, err := r.Sign(private)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add([]byte("not a note"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := enrollment.OpenRecord(data, verifier)
		if err != nil {
			if !errors.Is(err, enrollment.ErrRecordWrongKey) && !errors.Is(err, enrollment.ErrRecordTampered) && !errors.Is(err, enrollment.ErrRecordMalformed) {
				t.Fatalf("an unclassified refusal: %v", err)
			}
			return
		}
		if _, err := rec.Marshal(); err != nil {
			t.Fatalf("opened a record that does not encode: %v", err)
		}
	})
}
