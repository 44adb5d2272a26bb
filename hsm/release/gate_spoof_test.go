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

// propertiesAnswer passes commands to a TPM, but answers every
// TPM2_GetCapability of TPM properties with body: a TPM (or whatever
// sits between the daemon and it) that answers other properties than
// asked, in another order, or a damaged list.
type propertiesAnswer struct {
	transport.TPM
	body []byte // TPML_TAGGED_TPM_PROPERTY and what follows, after moreData and the capability
}

func (p propertiesAnswer) Send(cmd []byte) ([]byte, error) {
	if _, ok := tpmtest.PropertiesAsked(cmd); ok {
		rsp := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
		rsp = binary.BigEndian.AppendUint32(rsp, uint32(10+1+4+len(p.body)))
		rsp = binary.BigEndian.AppendUint32(rsp, 0) // TPM_RC_SUCCESS
		rsp = append(rsp, 0)                        // moreData: NO
		rsp = binary.BigEndian.AppendUint32(rsp, uint32(tpm2.TPMCapTPMProperties))
		return append(rsp, p.body...), nil
	}
	return p.TPM.Send(cmd)
}

// properties encodes a TPML_TAGGED_TPM_PROPERTY of pairs (property,
// value), claiming count entries.
func properties(count uint32, pairs ...uint32) []byte {
	out := binary.BigEndian.AppendUint32(nil, count)
	for _, v := range pairs {
		out = binary.BigEndian.AppendUint32(out, v)
	}
	return out
}

// TestCheckRoomSpoofedAnswers: checkRoom takes each count from its own
// property whatever order the TPM lists them in, and a list that lacks
// one, names only other properties or is damaged is an error that says
// the TPM did not answer — never a panic, never room, and in words an
// officer reads (the daemon shows it as the refusal's message).
func TestCheckRoomSpoofedAnswers(t *testing.T) {
	conn := tpmtest.StartSwtpm(t).Open(t)
	loaded, transient := uint32(tpm2.TPMPTHRLoadedAvail), uint32(tpm2.TPMPTHRTransientAvail)
	for _, tc := range []struct {
		name string
		body []byte
		fits bool   // the answer gives room
		want string // else a substring of the error ("": any error)
		room bool   // the error is errNoRoom
	}{
		{"out of order, room", properties(2, transient, 3, loaded, 3), true, "", false},
		{"out of order, objects taken", properties(2, transient, 1, loaded, 3), false, "transient object slot", true},
		{"out of order, sessions taken", properties(2, transient, 3, loaded, 1), false, "session slot", true},
		{"other properties only", properties(1, 0x100, 9), false, "does not report how many slots it has free", false},
		{"empty list", properties(0), false, "does not report how many slots it has free", false},
		{"count beyond the list", properties(2, loaded, 3), false, "", false},
		{"list cut inside a pair", append(properties(1), 0, 0, 2), false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRoom(propertiesAnswer{conn, tc.body})
			switch {
			case tc.fits && err != nil:
				t.Fatalf("room: %v", err)
			case !tc.fits && err == nil:
				t.Fatal("an answer without room, or damaged, gave room")
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errNoRoom) != tc.room):
				t.Fatalf("got %v, want an error naming %q (no room: %v)", err, tc.want, tc.room)
			}
			// What the officer reads (the refusal's message): no decoder text.
			if err != nil && (strings.Contains(err.Error(), "tpm2.") || strings.Contains(err.Error(), "struct of type")) {
				t.Errorf("the refusal's message shows the decoder's text: %v", err)
			}
			if err != nil && !errors.Is(err, errNoRoom) && !strings.Contains(err.Error(), "free object and session slots") {
				t.Errorf("%v does not say what was asked", err)
			}
		})
	}
}
