package escrow_test

import (
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
)

// BenchmarkReleaseOneEnvelope measures what a custodian's device does to
// release for one warrant in each mode, the two in turn on the same swtpm
// so that both see the same load: in share mode, unseal the share and
// seal it to the agency ("share-ms"); in scoped mode, check the named
// envelope's seal proof, compute its partial and the batch proof in the
// TPM, check them, and seal them to the agency ("scoped-ms"). x-share is
// scoped over share; *-host-ms is each one's time outside the TPM and
// *-cmds its TPM commands. The warrant's checks and the ledger entry, the
// same in both modes, are not counted.
func BenchmarkReleaseOneEnvelope(b *testing.B) {
	cs, pcrs := fleet(b, 2)
	shareBundles := ceremony(b, cs, pcrs, "2026-11", escrow.ModeShare)
	scopedBundles := ceremony(b, cs, pcrs, "2026-12", escrow.ModeScoped)
	clock := &timedTPM{TPM: cs[0].conn}
	c := &custodian{id: cs[0].id, conn: clock}
	shareBundle, scopedBundle := shareBundles[0], scopedBundles[0]
	to := agency(b).Public()
	env, err := escrow.ParseEnvelope(seal(b, &scopedBundle.Escrow, "alice", "message"))
	if err != nil {
		b.Fatal(err)
	}
	custodian, _ := scopedBundle.Escrow.Custodian(scopedBundle.CustodianID)
	scoped := func() {
		err := escrow.CheckSealProof(env.KeyID, env.Target, env.Enc, env.CiphertextSHA256(), env.Proof)
		if err != nil {
			b.Fatal(err)
		}
		key, err := tpm.ParseScopedKey(scopedBundle.Blob)
		if err != nil {
			b.Fatal(err)
		}
		points := [][]byte{env.Enc}
		batch, err := tpm.PartialsBatch(c.conn, key, points, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := tpm.VerifyBatch(custodian.ProofKey, points, batch); err != nil {
			b.Fatal(err)
		}
		sealBatch(b, c, scopedBundle, to, points, batch)
	}
	var share, scopedTime, shareTPM, scopedTPM time.Duration
	var shareCmds, scopedCmds int
	for b.Loop() {
		t0, tpm0, n0 := time.Now(), clock.spent, clock.cmds
		releaseShare(b, c, shareBundle, to)
		t1, tpm1, n1 := time.Now(), clock.spent, clock.cmds
		scoped()
		share, scopedTime = share+t1.Sub(t0), scopedTime+time.Since(t1)
		shareTPM, scopedTPM = shareTPM+tpm1-tpm0, scopedTPM+clock.spent-tpm1
		shareCmds, scopedCmds = shareCmds+n1-n0, scopedCmds+clock.cmds-n1
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(share), "share-ms")
	b.ReportMetric(ms(scopedTime), "scoped-ms")
	b.ReportMetric(float64(scopedTime)/float64(share), "x-share")
	b.ReportMetric(ms(share-shareTPM), "share-host-ms")
	b.ReportMetric(ms(scopedTime-scopedTPM), "scoped-host-ms")
	b.ReportMetric(float64(shareCmds)/float64(b.N), "share-cmds")
	b.ReportMetric(float64(scopedCmds)/float64(b.N), "scoped-cmds")
}

// timedTPM books the time spent in the TPM and counts its commands.
type timedTPM struct {
	transport.TPM
	spent time.Duration
	cmds  int
}

func (t *timedTPM) Send(cmd []byte) ([]byte, error) {
	start := time.Now()
	rsp, err := t.TPM.Send(cmd)
	t.spent += time.Since(start)
	t.cmds++
	return rsp, err
}

// ceremony runs a 2-of-n ceremony in mode for the custodians and
// provisions every bundle.
func ceremony(b *testing.B, cs []*custodian, pcrs tpm.PCRValues, keyID, mode string) []*escrow.Bundle {
	_, bundles, err := escrow.Ceremony(keyID, 2, pcrs, members(cs), escrow.WithMode(mode))
	if err != nil {
		b.Fatal(err)
	}
	for i, bundle := range bundles {
		if err := escrow.Provision(cs[i].conn, bundle, cs[i].id, cs[i].importKey); err != nil {
			b.Fatal(err)
		}
	}
	return bundles
}
