package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
)

func TestUpdateKeygenAndSign(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "update.key"), filepath.Join(dir, "update.pub")
	mustRun(t, "update", "keygen", "--name", "authority", "--out", key, "--pub", pub)
	if info, err := os.Stat(key); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", info, err)
	}
	policy, err := bootpolicy.FromMeasurement("court-a", tpm.PCRValues{8: bytes.Repeat([]byte{9}, 32)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := policy.Marshal()
	policyFile := filepath.Join(dir, "policy.json")
	os.WriteFile(policyFile, data, 0o644)
	note := filepath.Join(dir, "update.note")
	mustRun(t, "update", "sign", "--key", key, "--policy", policyFile, "--out", note)

	public, _ := os.ReadFile(pub)
	signed, _ := os.ReadFile(note)
	verifier, approvalKey, err := escrow.ParseUpdatePublic(string(public))
	if err != nil || approvalKey == nil {
		t.Fatalf("update.pub: %v, approval key %x", err, approvalKey)
	}
	p := &escrow.Public{KeyID: "2026-11", UpdateKey: verifier}
	got, approval, err := p.OpenUpdate(signed)
	if err != nil || !got.PCRs.Equal(policy.PCRs) || approval != nil {
		t.Fatalf("the signed update does not open with the verifier key, or gave an approval to a file without an approval key: %v", err)
	}
	p.Mode, p.ApprovalKey = escrow.ModeScoped, approvalKey
	if got, approval, err = p.OpenUpdate(signed); err != nil || approval == nil {
		t.Fatalf("the update's approval: %v", err)
	}
	if p.CheckApproval(tpm.PCRValues{8: bytes.Repeat([]byte{7}, 32)}, 1, approval) == nil {
		t.Fatal("the approval of one policy's PCRs also approves others")
	}
	if p.CheckApproval(policy.PCRs, 2, approval) == nil {
		t.Fatal("the approval of one security version also approves another")
	}
	code, _, errOut := custodian(t, "reseal")
	if code == 0 || !strings.Contains(errOut, "--update FILE or --finish") {
		t.Fatalf("reseal without a mode: %d %q", code, errOut)
	}
}

// update apply and commit refuse on a machine whose firmware reports no
// boot slot, before opening the image or any disk.
func TestUpdateApplyRefusesWithoutABootSlot(t *testing.T) {
	if cmdline, err := os.ReadFile("/proc/cmdline"); err != nil || strings.Contains(string(cmdline), "custodian.boot_partition=") {
		t.Skip("this machine reports a boot slot")
	}
	if _, err := os.Stat("/proc/device-tree/chosen/bootloader/partition"); err == nil {
		t.Skip("this machine is a Pi with a boot slot")
	}
	for _, args := range [][]string{
		{"update", "apply", "--image", filepath.Join(t.TempDir(), "missing.img")},
		{"update", "commit"},
	} {
		code, _, errOut := custodian(t, args...)
		if code == 0 || !strings.Contains(errOut, "cannot tell which slot is running") {
			t.Fatalf("%v: %d %q", args, code, errOut)
		}
	}
}
