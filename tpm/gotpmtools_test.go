package tpm_test

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm-tools/server"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// goTPMToolsImport seals s to the TPM's RSA EK and PCRs with go-tpm-tools'
// server.CreateImportBlob and opens it with its client API, sending every
// command through bus. It is the baseline our Unseal is measured against.
func goTPMToolsImport(t testing.TB, bus *tpmtest.Recorder, pcrs tpm.PCRValues, s []byte) []byte {
	t.Helper()
	rw := bus.ReadWriter()
	ek, err := client.EndorsementKeyRSA(rw)
	if err != nil {
		t.Fatal(err)
	}
	defer ek.Close()
	proto := &pb.PCRs{Hash: pb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{}}
	for i, v := range pcrs {
		proto.Pcrs[uint32(i)] = v
	}
	blob, err := server.CreateImportBlob(ek.PublicKey(), s, proto)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ek.Import(blob)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestBusRecorderCatchesUnencryptedImport shows that the bus invariant's
// test can fail: go-tpm-tools' client imports and unseals without
// parameter encryption, and the recorder finds the secret on the bus.
func TestBusRecorderCatchesUnencryptedImport(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		pcrs := bootedState(t, conn)
		s := secret(t)
		bus := &tpmtest.Recorder{TPM: conn}
		if got := goTPMToolsImport(t, bus, pcrs, s); !bytes.Equal(got, s) {
			t.Fatal("go-tpm-tools import returned another secret")
		}
		if !bus.Seen(s) {
			t.Fatal("the recorder did not see the secret that go-tpm-tools sends in the clear")
		}
		t.Logf("go-tpm-tools import+unseal: %d TPM commands, secret visible on the bus", bus.Count())
	})
}
