package release

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// onePropertyAtATime passes commands to a TPM that answers a
// TPM2_GetCapability of TPM properties with at most one property, as a
// TPM may (moreData).
type onePropertyAtATime struct{ transport.TPM }

func (o onePropertyAtATime) Send(cmd []byte) ([]byte, error) {
	if _, ok := tpmtest.PropertiesAsked(cmd); ok {
		binary.BigEndian.PutUint32(cmd[tpmtest.PropertyCountAt:], 1)
	}
	return o.TPM.Send(cmd)
}

// TestCheckRoomReadsObjectsAndSessions: checkRoom asks the TPM for its
// free transient object and session slots in one command, reads each
// count from its own property — sessions held elsewhere refuse the
// release as short of sessions, objects held as short of objects — and
// still reads both from a TPM that answers one property per command.
func TestCheckRoomReadsObjectsAndSessions(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	conn := sw.Open(t)
	for _, tc := range []struct {
		name     string
		via      transport.TPM
		commands int
	}{
		{"one command", conn, 1},
		{"one property per answer", onePropertyAtATime{conn}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &tpmtest.Recorder{TPM: tc.via}
			if err := checkRoom(rec); err != nil {
				t.Fatalf("an idle TPM: %v", err)
			}
			if n := rec.Count(); n != tc.commands {
				t.Errorf("%d TPM commands, want %d", n, tc.commands)
			}
			// Sessions taken: one free, two needed.
			var closers []func() error
			for range 2 {
				_, closeSession, err := tpm2.HMACSession(conn, tpm2.TPMAlgSHA256, 16)
				if err != nil {
					t.Fatal(err)
				}
				closers = append(closers, closeSession)
			}
			err := checkRoom(rec)
			for _, c := range closers {
				c()
			}
			if !errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "session slot") {
				t.Fatalf("two of three sessions held: %v, want too few session slots", err)
			}
			// Transient objects taken: two free of three, enough; then one.
			var handles []tpm2.TPMHandle
			defer func() {
				for _, h := range handles {
					tpm2.FlushContext{FlushHandle: h}.Execute(conn)
				}
			}()
			for i := range 2 {
				rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHNull, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(conn)
				if err != nil {
					t.Fatal(err)
				}
				handles = append(handles, rsp.ObjectHandle)
				err = checkRoom(rec)
				switch {
				case i == 0 && err != nil:
					t.Fatalf("one of three objects held: %v", err)
				case i == 1 && (!errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "transient object slot")):
					t.Fatalf("two of three objects held: %v, want too few transient object slots", err)
				}
			}
		})
	}
}
