package warrant

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// BenchmarkVerify is the appliance's whole check of a P-256-signed warrant.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	p7s := f.sign(b, f.content(b, f.warrant()), f.signer())
	v := f.verifier()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(p7s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloor is what any verifier must spend on the same warrant with
// the standard library alone: the content digest, the ECDSA signature over
// the signed attributes, and the chain to the root. Decoding is left out.
func BenchmarkFloor(b *testing.B) {
	f := newFixture(b)
	floor := floorOf(b, f, f.content(b, f.warrant()))
	b.ReportAllocs()
	for b.Loop() {
		floor()
	}
}

// floorOf returns one run of the floor for content signed by the judge.
func floorOf(b *testing.B, f *fixture, content []byte) func() {
	p7s := f.sign(b, content, f.signer())
	sd, err := decodeSignedData(p7s)
	if err != nil {
		b.Fatal(err)
	}
	si := sd.SignerInfos[0]
	signed := append([]byte{0x31}, si.SignedAttrs.FullBytes[1:]...)
	roots := x509.NewCertPool()
	roots.AddCert(f.root.Cert)
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	pub := f.judge.PublicKey.(*ecdsa.PublicKey)
	return func() {
		_ = sha256.Sum256(content)
		digest := sha256.Sum256(signed)
		if !ecdsa.VerifyASN1(pub, digest[:], si.Signature) {
			b.Fatal("signature")
		}
		if _, err := f.judge.Verify(opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyToFloor runs Verify and the floor one after the other in
// each iteration, so that both see the same load on the machine, and
// reports Verify as a multiple of the floor (x-floor).
func BenchmarkVerifyToFloor(b *testing.B) {
	f := newFixture(b)
	content := f.content(b, f.warrant())
	p7s := f.sign(b, content, f.signer())
	v := f.verifier()
	floor := floorOf(b, f, content)
	var verifyTime, floorTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := v.Verify(p7s); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		floor()
		verifyTime += t1.Sub(t0)
		floorTime += time.Since(t1)
	}
	reportRatio(b, "verify", verifyTime, "floor", floorTime, "x-floor")
}

// reportRatio reports two accumulated times per iteration and a/b.
func reportRatio(b *testing.B, aName string, a time.Duration, bName string, bTime time.Duration, ratio string) {
	n := float64(b.N)
	b.ReportMetric(float64(a.Nanoseconds())/n, "ns-"+aName)
	b.ReportMetric(float64(bTime.Nanoseconds())/n, "ns-"+bName)
	b.ReportMetric(float64(a)/float64(bTime), ratio)
	b.ReportMetric(0, "ns/op") // the sum is not one path's figure
}

// BenchmarkOpenSSLVerify runs openssl cms -verify on the same warrant, one
// process per warrant, as a shell script on the appliance would.
func BenchmarkOpenSSLVerify(b *testing.B) {
	run := openSSLVerify(b, newFixture(b))
	for b.Loop() {
		run()
	}
}

// BenchmarkVerifyToOpenSSL runs openssl cms -verify and Verify on the same
// warrant in each iteration and reports how many times faster Verify is
// (x-faster).
func BenchmarkVerifyToOpenSSL(b *testing.B) {
	f := newFixture(b)
	run := openSSLVerify(b, f)
	p7s := f.sign(b, f.content(b, f.warrant()), f.signer())
	v := f.verifier()
	var verifyTime, sslTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		run()
		t1 := time.Now()
		if _, err := v.Verify(p7s); err != nil {
			b.Fatal(err)
		}
		sslTime += t1.Sub(t0)
		verifyTime += time.Since(t1)
	}
	reportRatio(b, "openssl", sslTime, "verify", verifyTime, "x-faster")
}

// openSSLVerify returns one run of openssl cms -verify on a warrant of f.
func openSSLVerify(b *testing.B, f *fixture) func() {
	if _, err := exec.LookPath("openssl"); err != nil {
		b.Skip("openssl not installed")
	}
	dir := b.TempDir()
	in := filepath.Join(dir, "w.p7s")
	trustFile := filepath.Join(dir, "trust.pem")
	crl := f.root.CRL(b, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour))
	if err := os.WriteFile(in, f.sign(b, f.content(b, f.warrant()), f.signer()), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(trustFile, append(trusttest.PEM(f.root.Cert), trusttest.CRLPEM(crl)...), 0o600); err != nil {
		b.Fatal(err)
	}
	args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", in, "-CAfile", trustFile,
		"-crl_check", "-purpose", "any", "-attime", "1795176000", "-out", os.DevNull}
	return func() {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkParse is the strict JSON decoding and field checks alone,
// including the validation of the ML-KEM recipient key.
func BenchmarkParse(b *testing.B) {
	f := newFixture(b)
	content := f.content(b, f.warrant())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(content, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListHeldPerSubmission reports the heap one parsed list of
// MaxListEntries entries with 300-byte targets holds: what each submission
// with a list keeps while the appliance reads it, and why the appliance
// reads only as many lists at once as its list cap allows (release.API).
func BenchmarkListHeldPerSubmission(b *testing.B) {
	refs := testList(MaxListEntries)
	long := strings.Repeat("x", 300)
	for i := range refs {
		refs[i].Target = long
	}
	file := listFile(b, refs)
	b.ReportMetric(float64(len(file))/(1<<20), "MiB-file")
	refs = nil
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l, err := ReadEnvelopeList(bytes.NewReader(file))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-held")
		runtime.KeepAlive(l)
	}
}
