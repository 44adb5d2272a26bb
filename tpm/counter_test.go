package tpm_test

import (
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func TestCounterOnlyGoesUp(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		c := tpm.Counter{Index: tpm.DefaultCounterIndex}
		if _, err := c.Read(conn); !errors.Is(err, tpm.ErrNoCounter) {
			t.Fatalf("reading an undefined counter: got %v, want ErrNoCounter", err)
		}
		first, err := c.Create(conn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { undefine(t, conn, c.Index) })
		if _, err := c.Create(conn); err == nil {
			t.Fatal("defined the same counter twice")
		}
		next, err := c.Increment(conn)
		if err != nil {
			t.Fatal(err)
		}
		read, err := c.Read(conn)
		if err != nil {
			t.Fatal(err)
		}
		if next != first+1 || read != next {
			t.Fatalf("first %d, after increment %d, read %d", first, next, read)
		}
		if err := c.Bump(conn); err != nil {
			t.Fatal(err)
		}
		if bumped, err := c.Read(conn); err != nil || bumped != read+1 {
			t.Fatalf("after a bump from %d: %d, %v", read, bumped, err)
		}
	})
}

func TestCounterSurvivesReboot(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		c := tpm.Counter{Index: tpm.DefaultCounterIndex}
		if _, err := c.Create(conn); err != nil {
			t.Fatal(err)
		}
		want, err := c.Increment(conn)
		if err != nil {
			t.Fatal(err)
		}
		target.Swtpm.PowerCycle(t, conn)
		got, err := c.Read(conn)
		if err != nil || got != want {
			t.Fatalf("after reboot: %d, %v; want %d", got, err, want)
		}
	})
}

// TestCounterRefusesImpostorIndex defines an ordinary writable NV area at
// the counter's index: it must not be taken for the counter, since its
// value could be written back to any number.
func TestCounterRefusesImpostorIndex(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		_, err := tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
				NVIndex: tpm.DefaultCounterIndex, NameAlg: tpm2.TPMAlgSHA256,
				Attributes: tpm2.TPMANV{NT: tpm2.TPMNTOrdinary, AuthRead: true, AuthWrite: true, NoDA: true},
				DataSize:   8,
			}),
		}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { undefine(t, conn, tpm.DefaultCounterIndex) })
		c := tpm.Counter{Index: tpm.DefaultCounterIndex}
		if _, err := c.Read(conn); err == nil {
			t.Fatal("read an ordinary NV area as the counter")
		}
		if _, err := c.Increment(conn); err == nil {
			t.Fatal("incremented an ordinary NV area as the counter")
		}
		if err := c.Bump(conn); err == nil {
			t.Fatal("bumped an ordinary NV area as the counter")
		}
	})
}

// undefine removes an NV index so a hardware TPM is left as found.
func undefine(t testing.TB, conn interface{ Send([]byte) ([]byte, error) }, index tpm2.TPMHandle) {
	rsp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(conn)
	if err != nil {
		return
	}
	_, err = tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: index, Name: rsp.NVName},
	}.Execute(conn)
	if err != nil {
		t.Errorf("undefining %#x: %v", uint32(index), err)
	}
}
