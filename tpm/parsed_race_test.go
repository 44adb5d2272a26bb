package tpm_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestParsedBlobsSharedAcrossGoroutines: blobs parsed from the same bytes
// by goroutines at once (the daemon's request and a status or update
// reading the same bundle), each changing its own copy, never see another's
// change, and (under -race) share nothing they write.
func TestParsedBlobsSharedAcrossGoroutines(t *testing.T) {
	ek := tpmtest.RandomImportKey(t)
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32), 9: bytes.Repeat([]byte{2}, 32)}
	blob, err := tpm.Seal(ek, pcrs, testVersion, []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	data := blob.Marshal()
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				b, err := tpm.ParseBlob(data)
				if err != nil {
					errs <- err.Error()
					return
				}
				if !b.PCRs.Equal(pcrs) || b.Version != testVersion || !bytes.Equal(b.Marshal(), data) {
					errs <- "a parse saw another caller's change"
					return
				}
				b.PCRs[8][0] = byte(g)
				b.PCRs[10] = make([]byte, 32)
				b.Version = uint64(g)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
