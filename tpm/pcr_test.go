package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func TestPredictedExtendEqualsTPM(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		before, err := tpm.ReadPCRs(conn, 8, 11)
		if err != nil {
			t.Fatal(err)
		}
		predicted := before
		for k, event := range []string{"root filesystem", "binary", "config", "trust roots"} {
			i := 8 + 3*(k%2)
			d := sha256.Sum256([]byte(event))
			predicted = predicted.Extend(i, d[:])
			if err := tpm.ExtendPCR(conn, i, d[:]); err != nil {
				t.Fatal(err)
			}
		}
		after, err := tpm.ReadPCRs(conn, 8, 11)
		if err != nil {
			t.Fatal(err)
		}
		if !after.Equal(predicted) {
			t.Fatalf("TPM has %x, prediction %x", after, predicted)
		}
		if after.Equal(before) {
			t.Fatal("extends changed nothing")
		}
	})
}

func TestReadPCRsBeyondOneCommand(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		all := make([]int, 24)
		for i := range all {
			all[i] = i
		}
		got, err := tpm.ReadPCRs(conn, all...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 24 {
			t.Fatalf("read %d PCRs, want 24", len(got))
		}
		if _, err := tpm.ReadPCRs(conn, 24); err == nil {
			t.Fatal("read PCR 24")
		}
	})
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	need.Command(t, name, "tpm2-tools")
}

// tpm2Tool runs a tpm2-tools command against a swtpm.
func tpm2Tool(t *testing.T, sw *tpmtest.Swtpm, args ...string) []byte {
	t.Helper()
	out, err := runTool(sw, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}

func runTool(sw *tpmtest.Swtpm, args ...string) ([]byte, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI())
	return cmd.CombinedOutput()
}

// TestPCRsAndPolicyAgreeWithTPM2Tools cross-checks our PCR reads and our
// offline PolicyPCR digest with tpm2-tools on the same swtpm.
func TestPCRsAndPolicyAgreeWithTPM2Tools(t *testing.T) {
	requireTool(t, "tpm2_pcrread")
	sw := tpmtest.StartSwtpm(t)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	pcrs := bootedState(t, conn)
	ourPolicy, err := pcrs.PolicyDigest()
	if err != nil {
		t.Fatal(err)
	}
	// swtpm serves one client at a time: hand it over to tpm2-tools.
	conn.Close()

	dir := t.TempDir()
	valuesFile := filepath.Join(dir, "pcrs.bin")
	tpm2Tool(t, sw, "tpm2_pcrread", "sha256:8,9", "-o", valuesFile)
	theirs, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	if ours := append(bytes.Clone(pcrs[8]), pcrs[9]...); !bytes.Equal(ours, theirs) {
		t.Fatalf("PCR 8,9: ours %x, tpm2_pcrread %x", ours, theirs)
	}

	policyFile := filepath.Join(dir, "policy.digest")
	tpm2Tool(t, sw, "tpm2_createpolicy", "--policy-pcr", "-l", "sha256:8,9",
		"-f", valuesFile, "-L", policyFile)
	theirPolicy, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ourPolicy, theirPolicy) {
		t.Fatalf("policy digest: ours %x, tpm2_createpolicy %x", ourPolicy, theirPolicy)
	}
}

// TestBlobSurvivesRebootOnlyWithSameMeasurements power-cycles swtpm: the
// blob opens again after the same measurements are replayed, and not after
// a different one.
func TestBlobSurvivesRebootOnlyWithSameMeasurements(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s := secret(t)
		blob := sealAndReparse(t, ek, pcrs, s)

		target.Swtpm.PowerCycle(t, conn)
		if _, err := tpm.Unseal(conn, blob); err == nil {
			t.Fatal("opened right after a reboot, before anything was measured")
		}
		target.Swtpm.PowerCycle(t, conn)
		if replayed := bootedState(t, conn); !replayed.Equal(pcrs) {
			t.Fatal("replaying the same measurements gave other PCR values")
		}
		got, err := tpm.Unseal(conn, blob)
		if err != nil || !bytes.Equal(got, s) {
			t.Fatalf("after replaying the same boot: %v", err)
		}

		target.Swtpm.PowerCycle(t, conn)
		measure(t, conn, 8, "root filesystem")
		measure(t, conn, 9, "a different custodian binary")
		if _, err := tpm.Unseal(conn, blob); err != tpm.ErrPCRMismatch {
			t.Fatalf("after a different boot: got %v, want ErrPCRMismatch", err)
		}
	})
}
