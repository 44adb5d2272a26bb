package enrollment_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/internal/strictjson/strictjsontest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

var now = time.Now()

// enrollWithChallenge runs the whole exchange: the device enrolls, the
// verifier challenges, the device answers. The enrollment travels as JSON.
func enrollWithChallenge(t *testing.T, conn transport.TPM, id string) (*enrollment.Enrollment, []byte) {
	t.Helper()
	first, err := enrollment.Create(conn, id, tpm.EKRSA2048, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	challenge, secret, err := enrollment.NewChallenge(roundTrip(t, first))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(challenge)
	challenge, err = enrollment.ParseChallenge(data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := enrollment.Create(conn, id, tpm.EKRSA2048, challenge, now)
	if err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, e), secret
}

func roundTrip(t *testing.T, e *enrollment.Enrollment) *enrollment.Enrollment {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := enrollment.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func TestEnrollmentOnSwtpmVerifiesStrictly(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		e, secret := enrollWithChallenge(t, conn, "court-a")
		if e.EK.Certificate == nil {
			t.Fatal("swtpm's EK certificate was not read from NV")
		}
		v, err := e.Verify(enrollment.VerifyOptions{Secret: secret, EKRoots: target.Swtpm.EKRoots(t)})
		if err != nil {
			t.Fatal(err)
		}
		if !v.EKCertified || !v.AKBound {
			t.Fatalf("certified %v, bound %v", v.EKCertified, v.AKBound)
		}

		// swtpm's test CA is not a TPM vendor: the built-in roots refuse it.
		if _, err := e.Verify(enrollment.VerifyOptions{Secret: secret}); err == nil {
			t.Fatal("a swtpm EK certificate chained to the built-in vendor roots")
		}
	})
}

func TestEnrollmentRefusals(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		e, secret := enrollWithChallenge(t, conn, "court-b")
		lenient := enrollment.VerifyOptions{Secret: secret, AllowUncertifiedEK: true}
		if target.Swtpm != nil {
			lenient.EKRoots = target.Swtpm.EKRoots(t)
		}
		if _, err := e.Verify(lenient); err != nil {
			t.Fatal(err)
		}

		otherSecret := bytes.Clone(secret)
		otherSecret[0] ^= 1
		cases := map[string]struct {
			mutate func(e *enrollment.Enrollment, o *enrollment.VerifyOptions)
			want   error
		}{
			"no challenge secret": {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) { o.Secret = nil }, enrollment.ErrAKUnbound},
			"wrong secret":        {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) { o.Secret = otherSecret }, enrollment.ErrAKUnbound},
			"not activated":       {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) { e.Activated = false }, enrollment.ErrAKUnbound},
			"renamed custodian":   {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) { e.CustodianID = "court-z" }, enrollment.ErrAKUnbound},
			"altered PCR": {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) {
				e.PCRs = e.PCRs.Extend(8, make([]byte, 32))
			}, tpm.ErrQuoteMismatch},
			"altered quote": {func(e *enrollment.Enrollment, o *enrollment.VerifyOptions) {
				e.Quote.Attest = bytes.Clone(e.Quote.Attest)
				e.Quote.Attest[len(e.Quote.Attest)-1] ^= 1
			}, tpm.ErrQuoteMismatch},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				copy := *roundTrip(t, e)
				opts := lenient
				c.mutate(&copy, &opts)
				if _, err := copy.Verify(opts); !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
			})
		}

		t.Run("challenge for another custodian", func(t *testing.T) {
			challenge, _, err := enrollment.NewChallenge(e)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := enrollment.Create(conn, "court-c", tpm.EKRSA2048, challenge, now); err == nil {
				t.Fatal("answered a challenge addressed to another custodian")
			}
		})
		t.Run("challenge for another TPM", func(t *testing.T) {
			other := *e
			other.EK.PublicKey = tpmtest.RandomEK(t).MarshalPKIX()
			challenge, _, err := enrollment.NewChallenge(&other)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := enrollment.Create(conn, e.CustodianID, tpm.EKRSA2048, challenge, now); err == nil {
				t.Fatal("answered a challenge made for another TPM")
			}
		})
		t.Run("no EK certificate", func(t *testing.T) {
			copy := *roundTrip(t, e)
			copy.EK.Certificate = nil
			opts := lenient
			opts.AllowUncertifiedEK = false
			if _, err := copy.Verify(opts); !errors.Is(err, enrollment.ErrEKUncertified) {
				t.Fatalf("got %v, want ErrEKUncertified", err)
			}
		})
	})
}

func TestParseRefusesMalformed(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":          ``,
		"unknown field":  `{"version":2,"extra":true}`,
		"duplicate key":  `{"version":2,"version":2}`,
		"wrong version":  `{"version":3}`,
		"version 1":      `{"version":1}`,
		"bad PCR index":  `{"version":2,"pcrs":{"08":"` + zeros + `"}}`,
		"bad PCR value":  `{"version":2,"pcrs":{"8":"00"}}`,
		"trailing data":  `{"version":2} {}`,
		"not an object":  `[1]`,
		"bad base64 key": `{"version":2,"ak":"!!"}`,
	} {
		if _, err := enrollment.Parse([]byte(doc)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"custodian_id":"a","pcrs":{"8":"` + zeros + `"}}`))
	f.Add([]byte(`{"version":1,"ek":{"kind":"rsa-2048","public_key":"AAAA"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := enrollment.Parse(data)
		if err != nil {
			return
		}
		if e.Version != enrollment.Version {
			t.Fatalf("accepted version %d", e.Version)
		}
		strictjsontest.Accepted(t, data, e, enrollment.Parse)
		// Whatever parses must verify or fail cleanly, never panic.
		_, _ = e.Verify(enrollment.VerifyOptions{AllowUnboundAK: true, AllowUncertifiedEK: true})
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add([]byte(`{"version":1,"custodian_id":"a","credential":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := enrollment.ParseChallenge(data); err == nil {
			strictjsontest.Accepted(t, data, c, enrollment.ParseChallenge)
		}
	})
}
