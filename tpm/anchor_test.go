package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func digestOf(s string) []byte { d := sha256.Sum256([]byte(s)); return d[:] }

func wantAnchor(t *testing.T, conn transport.TPM, want []byte) {
	t.Helper()
	got, err := tpm.ReadAnchor(conn)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("anchor = %x, %v; want %x", got, err, want)
	}
}

// TestInvariantStartupStateIsBoundToTPMAnchorIsWrittenOnce: the anchor,
// once locked, names one ledger key for the TPM's life: anchoring it again
// is a no-op, anchoring another key is refused, the platform cannot write
// it, and neither the owner, the platform, TPM2_Clear nor a power cycle
// removes or unlocks it.
func TestInvariantStartupStateIsBoundToTPMAnchorIsWrittenOnce(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ours, theirs := digestOf("ours"), digestOf("theirs")
		if _, err := tpm.ReadAnchor(conn); !errors.Is(err, tpm.ErrNoAnchor) {
			t.Fatalf("a fresh TPM's anchor: %v, want ErrNoAnchor", err)
		}
		if err := tpm.Anchor(conn, ours); err != nil {
			t.Fatal(err)
		}
		wantAnchor(t, conn, ours)
		if err := tpm.Anchor(conn, ours); err != nil {
			t.Fatalf("anchoring the same key again: %v", err)
		}
		if err := tpm.Anchor(conn, theirs); !errors.Is(err, tpm.ErrAnchorTaken) {
			t.Fatalf("anchoring another key: %v, want ErrAnchorTaken", err)
		}
		if err := tpm.CheckAnchor(conn, theirs); !errors.Is(err, tpm.ErrAnchorTaken) {
			t.Fatalf("checking another key: %v, want ErrAnchorTaken", err)
		}

		platform := tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
		owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
		locked := lockedAnchorName(t)
		index := tpm2.NamedHandle{Handle: tpm.AnchorIndex, Name: locked}
		_, err := tpm2.NVWrite{AuthHandle: platform, NVIndex: index, Data: tpm2.TPM2BMaxNVBuffer{Buffer: theirs}}.Execute(conn)
		if !errors.Is(err, tpm2.TPMRCNVLocked) {
			t.Fatalf("platform write of the locked anchor: %v, want TPM_RC_NV_LOCKED", err)
		}
		for name, auth := range map[string]tpm2.AuthHandle{"platform": platform, "owner": owner} {
			if _, err := (tpm2.NVUndefineSpace{AuthHandle: auth, NVIndex: index}).Execute(conn); err == nil {
				t.Fatalf("NV_UndefineSpace by the %s removed the anchor", name)
			}
		}
		undefineSpecial(t, conn, locked)

		target.Swtpm.PowerCycle(t, conn)
		if _, err := (tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}).Execute(conn); err != nil {
			t.Fatalf("TPM2_Clear: %v", err)
		}
		wantAnchor(t, conn, ours)
		_, err = tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(ownerIndex())}.Execute(conn)
		if !errors.Is(err, tpm2.TPMRCNVDefined) {
			t.Fatalf("owner index at the anchor's handle after TPM2_Clear: %v, want TPM_RC_NV_DEFINED", err)
		}
		if err := tpm.Anchor(conn, theirs); !errors.Is(err, tpm.ErrAnchorTaken) {
			t.Fatalf("anchoring another key after TPM2_Clear: %v, want ErrAnchorTaken", err)
		}
		wantAnchor(t, conn, ours)

		// Hiding the platform's NV until the next reset does not make the
		// anchor pass for absent.
		disablePlatformNV(t, conn)
		if _, err := tpm.ReadAnchor(conn); !errors.Is(err, tpm.ErrPlatformNVDisabled) {
			t.Fatalf("reading with platform NV disabled: %v, want ErrPlatformNVDisabled", err)
		}
		if err := tpm.Anchor(conn, theirs); !errors.Is(err, tpm.ErrPlatformNVDisabled) {
			t.Fatalf("anchoring with platform NV disabled: %v, want ErrPlatformNVDisabled", err)
		}
		target.Swtpm.PowerCycle(t, conn)
		wantAnchor(t, conn, ours)
	})
}

// disablePlatformNV sends TPM2_HierarchyControl(platform, TPM_RH_PLATFORM_NV,
// NO), which go-tpm has no command for.
func disablePlatformNV(t *testing.T, conn transport.TPM) {
	t.Helper()
	cmd := []byte{
		0x80, 0x02, 0, 0, 0, 32, 0, 0, 0x01, 0x21, // ST_SESSIONS, size, TPM_CC_HierarchyControl
		0x40, 0, 0, 0x0C, // TPM_RH_PLATFORM
		0, 0, 0, 9, 0x40, 0, 0, 0x09, 0, 0, 0, 0, 0, // empty password session
		0x40, 0, 0, 0x0D, 0, // enable TPM_RH_PLATFORM_NV: NO
	}
	rsp, err := conn.Send(cmd)
	if err != nil || len(rsp) < 10 || !bytes.Equal(rsp[6:10], []byte{0, 0, 0, 0}) {
		t.Fatalf("TPM2_HierarchyControl: %x, %v", rsp, err)
	}
}

// undefineSpecial tries TPM2_NV_UndefineSpaceSpecial with a policy
// session that ran no command: the anchor's policy is unreachable, so the
// TPM refuses.
func undefineSpecial(t *testing.T, conn transport.TPM, name tpm2.TPM2BName) {
	t.Helper()
	sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession()
	_, err = tpm2.NVUndefineSpaceSpecial{
		NVIndex:  tpm2.AuthHandle{Handle: tpm.AnchorIndex, Name: name, Auth: sess},
		Platform: tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)},
	}.Execute(conn)
	if !errors.Is(err, tpm2.TPMRCPolicyFail) {
		t.Fatalf("NV_UndefineSpaceSpecial of the anchor: %v, want TPM_RC_POLICY_FAIL", err)
	}
}

func lockedAnchorName(t *testing.T) tpm2.TPM2BName {
	t.Helper()
	public := tpm.AnchorTemplate()
	public.Attributes.Written, public.Attributes.WriteLocked = true, true
	name, err := tpm2.NVName(&public)
	if err != nil {
		t.Fatal(err)
	}
	return *name
}

// ownerIndex is what someone with the owner hierarchy can define at the
// anchor's handle: same size, write-once, but deletable by the owner.
func ownerIndex() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: tpm.AnchorIndex,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			OwnerWrite: true, OwnerRead: true, AuthRead: true, WriteDefine: true, NoDA: true, NT: tpm2.TPMNTOrdinary,
		},
		DataSize: tpm.AnchorSize,
	}
}

// TestInvariantStartupStateIsBoundToTPMAnchorOfOtherAttributesIsNotTrusted:
// an index at the anchor's handle that is not the platform's write-once,
// undeletable anchor is never read as one, even when it holds the digest
// and is write-locked, and Anchor does not take it over.
func TestInvariantStartupStateIsBoundToTPMAnchorOfOtherAttributesIsNotTrusted(t *testing.T) {
	deletable := tpm.AnchorTemplate()
	deletable.Attributes.PolicyDelete = false
	deletable.AuthPolicy = tpm2.TPM2BDigest{}
	for name, tc := range map[string]struct {
		auth   tpm2.TPMHandle
		public tpm2.TPMSNVPublic
	}{
		"owner index":              {tpm2.TPMRHOwner, ownerIndex()},
		"deletable platform index": {tpm2.TPMRHPlatform, deletable},
	} {
		t.Run(name, func(t *testing.T) {
			tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
				conn := target.Open(t)
				theirs := digestOf("theirs")
				auth := tpm2.AuthHandle{Handle: tc.auth, Auth: tpm2.PasswordAuth(nil)}
				if _, err := (tpm2.NVDefineSpace{AuthHandle: auth, PublicInfo: tpm2.New2B(tc.public)}).Execute(conn); err != nil {
					t.Fatal(err)
				}
				name, err := tpm2.NVName(&tc.public)
				if err != nil {
					t.Fatal(err)
				}
				index := tpm2.NamedHandle{Handle: tpm.AnchorIndex, Name: *name}
				if _, err := (tpm2.NVWrite{AuthHandle: auth, NVIndex: index, Data: tpm2.TPM2BMaxNVBuffer{Buffer: theirs}}).Execute(conn); err != nil {
					t.Fatal(err)
				}
				written := tc.public
				written.Attributes.Written = true
				name, _ = tpm2.NVName(&written)
				index.Name = *name
				if _, err := (tpm2.NVWriteLock{AuthHandle: auth, NVIndex: index}).Execute(conn); err != nil {
					t.Fatal(err)
				}
				if _, err := tpm.ReadAnchor(conn); !errors.Is(err, tpm.ErrNotAnchor) {
					t.Fatalf("reading it: %v, want ErrNotAnchor", err)
				}
				if err := tpm.CheckAnchor(conn, theirs); !errors.Is(err, tpm.ErrNotAnchor) {
					t.Fatalf("checking its own digest: %v, want ErrNotAnchor", err)
				}
				if err := tpm.Anchor(conn, digestOf("ours")); !errors.Is(err, tpm.ErrNotAnchor) {
					t.Fatalf("anchoring over it: %v, want ErrNotAnchor", err)
				}
			})
		})
	}
}

// TestInvariantStartupStateIsBoundToTPMAnchorResumesAfterACrash: an anchor
// left defined, or written and not locked, reads as no anchor, and the next
// Anchor finishes it (with its own digest: an unlocked anchor binds
// nothing).
func TestInvariantStartupStateIsBoundToTPMAnchorResumesAfterACrash(t *testing.T) {
	for name, leave := range map[string]func(transport.TPM) error{
		"defined":           tpm.DefineAnchorOnly,
		"written, unlocked": func(c transport.TPM) error { return tpm.WriteAnchorUnlocked(c, digestOf("before the crash")) },
	} {
		t.Run(name, func(t *testing.T) {
			tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
				conn := target.Open(t)
				if err := leave(conn); err != nil {
					t.Fatal(err)
				}
				if _, err := tpm.ReadAnchor(conn); !errors.Is(err, tpm.ErrNotAnchor) {
					t.Fatalf("reading an unfinished anchor: %v, want ErrNotAnchor", err)
				}
				target.Swtpm.PowerCycle(t, conn)
				ours := digestOf("ours")
				if err := tpm.Anchor(conn, ours); err != nil {
					t.Fatal(err)
				}
				wantAnchor(t, conn, ours)
			})
		})
	}
}
