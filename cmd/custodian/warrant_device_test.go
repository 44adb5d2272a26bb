package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// heldBundle stores, in a new data directory, court-a's bundle of a key
// ID in mode, as provision would.
func heldBundle(t *testing.T, keyID, mode string) string {
	t.Helper()
	members := []escrow.Member{
		{ID: "court-a", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)},
		{ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}
	_, bundles, err := escrow.Ceremony(keyID, 2, tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, members, escrow.WithMode(mode))
	if err != nil {
		t.Fatal(err)
	}
	data, err := bundles[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, appliance.BundleDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, appliance.BundleDir, keyID+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInvariantWarrantVerifyChecksEnvelopesAgainstEachKeyIDsMode: on a
// device, warrant verify refuses what the daemon refuses for the
// envelopes (release.CheckEnvelopes, read without the TPM): a scoped key
// ID with no envelopes named (no_envelopes); it passes a share-mode key
// ID without envelopes; and a warrant that names a list it was not given
// is reported as not checked, never as fitting.
func TestInvariantWarrantVerifyChecksEnvelopesAgainstEachKeyIDsMode(t *testing.T) {
	w := &warrant.Warrant{KeyIDs: []string{"2026-11"}, Targets: []string{"alice@example.org"}}

	d := deviceVerdict{}
	d.checkEnvelopes(heldBundle(t, "2026-11", escrow.ModeScoped), "court-a", w, nil)
	if d.refused == nil || d.code != string(release.CodeNoEnvelopes) || d.envChecked {
		t.Errorf("scoped key ID, no envelopes: refused %v, code %q, checked %v", d.refused, d.code, d.envChecked)
	}
	if err := verdictError("court-a", &d); err == nil || !strings.Contains(err.Error(), "warrant refused on this device (no_envelopes)") || len(hintsOf(err)) == 0 {
		t.Errorf("scoped key ID, no envelopes: %v", err)
	}

	d = deviceVerdict{}
	d.checkEnvelopes(heldBundle(t, "2026-11", escrow.ModeShare), "court-a", w, nil)
	if d.refused != nil || !d.envChecked || verdictError("court-a", &d) != nil {
		t.Errorf("share-mode key ID, no envelopes: refused %v, checked %v", d.refused, d.envChecked)
	}

	listed := *w
	listed.EnvelopeList = &warrant.ListDigest{Count: 1, TreeHash: bytes.Repeat([]byte{7}, 32)}
	d = deviceVerdict{}
	d.checkEnvelopes(heldBundle(t, "2026-11", escrow.ModeScoped), "court-a", &listed, nil)
	err := verdictError("court-a", &d)
	var coded interface{ ExitCode() int }
	if d.envChecked || len(d.notChecked) != 1 || err == nil || !strings.Contains(err.Error(), "not checked: the envelopes against each key ID's mode") ||
		!errors.As(err, &coded) || coded.ExitCode() != 3 {
		t.Errorf("list warrant without --envelope-list: checked %v, not checked %q, %v", d.envChecked, d.notChecked, err)
	}
}
