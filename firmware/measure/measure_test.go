package measure

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func testRoot() fstest.MapFS {
	return fstest.MapFS{
		"usr/bin/custodian":           {Data: []byte("binary"), Mode: 0o755},
		"etc/custodian/config.toml":   {Data: []byte("config"), Mode: 0o644},
		"etc/custodian/trust/a.pem":   {Data: []byte("root a"), Mode: 0o644},
		"etc/custodian/trust/b.pem":   {Data: []byte("root b"), Mode: 0o644},
		"usr/lib/custodian/README.md": {Data: []byte("other"), Mode: 0o644},
	}
}

func mustDigest(t *testing.T, root fs.FS) [32]byte {
	t.Helper()
	d, err := TreeDigest(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The tree digest changes with every property it covers.
func TestTreeDigestCovers(t *testing.T) {
	base := mustDigest(t, testRoot())
	edits := map[string]func(fstest.MapFS){
		"content": func(m fstest.MapFS) { m["etc/custodian/trust/a.pem"].Data = []byte("root A") },
		"mode":    func(m fstest.MapFS) { m["usr/bin/custodian"].Mode = fs.ModeSetuid | 0o755 },
		"perm":    func(m fstest.MapFS) { m["etc/custodian/config.toml"].Mode = 0o640 },
		"rename": func(m fstest.MapFS) {
			m["etc/custodian/trust/c.pem"] = m["etc/custodian/trust/b.pem"]
			delete(m, "etc/custodian/trust/b.pem")
		},
		"new file":  func(m fstest.MapFS) { m["etc/extra"] = &fstest.MapFile{Data: nil, Mode: 0o644} },
		"empty dir": func(m fstest.MapFS) { m["var"] = &fstest.MapFile{Mode: fs.ModeDir | 0o755} },
		"move bytes": func(m fstest.MapFS) {
			m["usr/bin/custodian"].Data = []byte("binar")
			m["etc/custodian/config.toml"].Data = []byte("yconfig")
		},
	}
	for name, edit := range edits {
		root := testRoot()
		edit(root)
		if mustDigest(t, root) == base {
			t.Errorf("%s: digest unchanged", name)
		}
	}
	if mustDigest(t, testRoot()) != base {
		t.Fatal("digest is not deterministic")
	}
}

// Symlink targets count, and a symlink is not followed.
func TestTreeDigestSymlinks(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	before := mustDigest(t, os.DirFS(dir))
	os.Remove(filepath.Join(dir, "link"))
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, os.DirFS(dir)) == before {
		t.Fatal("changing a symlink target did not change the digest")
	}
	// The binary may not be a symlink: its digest would be the target's.
	s := DefaultSpec()
	s.Binary = "link"
	if _, err := fileDigest(os.DirFS(dir), s.Binary); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlink binary: %v", err)
	}
}

func TestSpecCheck(t *testing.T) {
	s := DefaultSpec()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	s.SeparatorPCRs = []int{8, 9, 11}
	if err := s.Check(); !errors.Is(err, ErrUncoveredPCR) {
		t.Fatalf("uncovered PCR 12: %v", err)
	}
	s = DefaultSpec()
	s.SeparatorPCRs = []int{8, 9, 11, 12, 12}
	if err := s.Check(); err == nil {
		t.Fatal("a separator PCR listed twice was accepted")
	}
}

// Events gives the documented order: the five measurements, then the
// separators in ascending PCR order, and a consistent policy.
func TestEventsOrder(t *testing.T) {
	p, err := DefaultSpec().Predict(testRoot(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range p.Events {
		kinds = append(kinds, e.Kind.String()+"@"+strconv.Itoa(e.PCR))
	}
	want := "rootfs@8 binary@9 config@11 security-version@11 trust-roots@12 separator@8 separator@9 separator@11 separator@12"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
}

// Boot on every TPM the tests reach: PCRs equal the prediction, the log
// verifies, a second run is refused, and a missing file extends nothing.
func TestBoot(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		root := testRoot()
		s := DefaultSpec()
		policy, err := s.Predict(root, nil)
		if err != nil {
			t.Fatal(err)
		}
		broken := testRoot()
		delete(broken, "etc/custodian/config.toml")
		if _, err := Boot(conn, s, broken, t.TempDir()); err == nil {
			t.Fatal("measured a root without its configuration")
		}
		runDir := t.TempDir()
		events, err := Boot(conn, s, root, runDir)
		if err != nil {
			t.Fatal(err)
		}
		pcrs, err := tpm.ReadPCRs(conn, s.PCRs()...)
		if err != nil {
			t.Fatal(err)
		}
		if !pcrs.Equal(policy.PCRs) || len(events) != len(policy.Events) {
			t.Fatal("PCRs differ from the prediction")
		}
		log, err := os.ReadFile(filepath.Join(runDir, LogFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := policy.VerifyLog(log, pcrs); err != nil {
			t.Fatal(err)
		}
		if _, err := Boot(conn, s, root, runDir); !errors.Is(err, ErrAlreadyMeasured) {
			t.Fatalf("second run: %v", err)
		}
		if _, err := Boot(conn, s, root, t.TempDir()); !errors.Is(err, ErrAlreadyMeasured) {
			t.Fatalf("second run with a fresh run dir: %v", err)
		}
		if again, _ := tpm.ReadPCRs(conn, s.PCRs()...); !again.Equal(pcrs) {
			t.Fatal("a refused run changed the PCRs")
		}
	})
}

// A tree whose regular files hold more than MaxTreeBytes is refused from
// their sizes, before anything is hashed (a sparse file costs no disk).
func TestTreeDigestCapsTheBytesItHashes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "small"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "sparse")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxTreeBytes); err != nil {
		t.Skipf("no sparse file here: %v", err)
	}
	_, err := TreeDigest(os.DirFS(dir), nil)
	if err == nil || !strings.Contains(err.Error(), "the most a root may hold") {
		t.Fatalf("a tree of %d bytes: %v, want a refusal naming the cap", MaxTreeBytes+1, err)
	}
}
