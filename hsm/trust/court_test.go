package trust_test

import (
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// TestInvariantRootBoundToOneCourt: a root key is pinned for one court and
// a court has one root key, so a warrant's court names exactly one replay
// namespace.
func TestInvariantRootBoundToOneCourt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := trusttest.NewRoot(t, "Court A Root", now)
	b := trusttest.NewRoot(t, "Court B Root", now)
	if _, err := s.AddRoot(trusttest.PEM(a.Cert), "Court A"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRoot(trusttest.PEM(a.Cert), "Court A"); err != nil {
		t.Fatalf("pinning the same root for the same court again: %v", err)
	}
	// The same key re-issued in a new certificate keeps its court.
	renewed := &trusttest.CA{Cert: selfSign(t, a, "Court A Root 2"), Key: a.Key}
	for name, tc := range map[string]struct {
		cert  *x509.Certificate
		court string
	}{
		"same root for another court":          {a.Cert, "Court B"},
		"same key re-issued for another court": {renewed.Cert, "Court B"},
		"another root for the same court":      {b.Cert, "Court A"},
		"no court":                             {b.Cert, ""},
		"court with a line break":              {b.Cert, "Court\nB"},
		"court with trailing space":            {b.Cert, "Court B "},
	} {
		if _, err := s.AddRoot(trusttest.PEM(tc.cert), tc.court); err == nil {
			t.Errorf("%s: pinned", name)
		}
	}
	if _, err := s.AddRoot(trusttest.PEM(renewed.Cert), "Court A"); err != nil {
		t.Fatalf("re-issued root of the same key: %v", err)
	}
	if _, err := s.AddRoot(trusttest.PEM(b.Cert), "Court B"); err != nil {
		t.Fatal(err)
	}
	again, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Roots()) != 3 || again.CourtOf(a.Cert) != "Court A" || again.CourtOf(renewed.Cert) != "Court A" || again.CourtOf(b.Cert) != "Court B" {
		t.Fatalf("reloaded roots %+v", again.Roots())
	}
	if trust.RootKeyID(a.Cert) != trust.RootKeyID(renewed.Cert) || trust.RootKeyID(a.Cert) == trust.RootKeyID(b.Cert) {
		t.Fatal("RootKeyID does not name the key")
	}
}

func selfSign(t *testing.T, ca *trusttest.CA, name string) *x509.Certificate {
	t.Helper()
	return trusttest.NewRootWithKey(t, name, now, ca.Key)
}

func b64(c *x509.Certificate) string { return base64.StdEncoding.EncodeToString(c.Raw) }

// TestInvariantOldTrustStoreRefused: a store whose roots were pinned
// without a court, or whose policy predates the format, opens with advice,
// never half-read.
func TestInvariantOldTrustStoreRefused(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	old := t.TempDir()
	if err := os.MkdirAll(filepath.Join(old, "roots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "roots", "abc.pem"), trusttest.PEM(root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Open(old); err == nil || !strings.Contains(err.Error(), "--court") {
		t.Fatalf("old roots: %v", err)
	}
	oldPolicy := t.TempDir()
	if err := os.WriteFile(filepath.Join(oldPolicy, "policy.json"), []byte(`{"signers":1,"ekus":["1.3.6.1.5.5.7.3.4"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Open(oldPolicy); err == nil || !strings.Contains(err.Error(), "older version") {
		t.Fatalf("old policy: %v", err)
	}
}

// TestRootFilesStrict: a root file is exactly one version-1 object named by
// its certificate's hash; anything else in roots/ refuses the store.
func TestRootFilesStrict(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	dir := t.TempDir()
	s, _ := trust.Open(dir)
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "roots", "*.json"))
	if len(files) != 1 {
		t.Fatalf("%d root files", len(files))
	}
	good, _ := os.ReadFile(files[0])
	other := trusttest.NewRoot(t, "Other Root", now)
	otherFile := strings.Replace(string(good), b64(root.Cert), b64(other.Cert), 1)
	for name, edit := range map[string]func() error{
		"unknown field": func() error {
			return os.WriteFile(files[0], []byte(strings.Replace(string(good), "{", `{"x":1,`, 1)), 0o644)
		},
		"version 2": func() error {
			return os.WriteFile(files[0], []byte(strings.Replace(string(good), `"version": 1`, `"version": 2`, 1)), 0o644)
		},
		"empty court": func() error {
			return os.WriteFile(files[0], []byte(strings.Replace(string(good), `"Court"`, `""`, 1)), 0o644)
		},
		"another certificate": func() error { return os.WriteFile(files[0], []byte(otherFile), 0o644) },
		"stray file":          func() error { return os.WriteFile(filepath.Join(dir, "roots", "notes.txt"), nil, 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			defer os.Remove(filepath.Join(dir, "roots", "notes.txt"))
			if err := edit(); err != nil {
				t.Fatal(err)
			}
			if _, err := trust.Open(dir); err == nil {
				t.Fatal("opened")
			}
			if err := os.WriteFile(files[0], good, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A temporary file of an interrupted write is left alone.
	if err := os.WriteFile(filepath.Join(dir, "roots", ".x.json.tmp1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Open(dir); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyFileDefaults: a version-1 policy without EKUs means the
// default signing purposes, never any purpose.
func TestPolicyFileDefaults(t *testing.T) {
	dir := t.TempDir()
	for _, doc := range []string{`{"version":1,"signers":2}`, `{"version":1,"signers":2,"ekus":[]}`} {
		if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := trust.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if p := s.Policy(); p.Signers != 2 || strings.Join(p.EKUs, ",") != strings.Join(trust.DefaultEKUs(), ",") {
			t.Fatalf("%s read as %+v", doc, p)
		}
	}
}

// TestInvariantRootNameConstraintsEvaluable: a root whose name constraints
// Go would skip is not pinned, critical or not.
func TestInvariantRootNameConstraintsEvaluable(t *testing.T) {
	for _, critical := range []bool{false, true} {
		root := trusttest.NewRoot(t, "Constrained Root", now, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, trusttest.DirectoryNameConstraint(t, critical, c.Subject))
		})
		if _, err := trust.New().AddRoot(trusttest.PEM(root.Cert), "Court"); err == nil || !strings.Contains(err.Error(), "directoryName") {
			t.Errorf("critical %v: %v", critical, err)
		}
	}
	root := trusttest.NewRoot(t, "DNS Constrained Root", now, func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"court.example"} })
	if _, err := trust.New().AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
}

// FuzzRootFile feeds the root file parser through Open: it never panics,
// and whatever it accepts is a pinned root with a court.
func FuzzRootFile(f *testing.F) {
	root := trusttest.NewRoot(f, "Court Root", now)
	dir := f.TempDir()
	s, _ := trust.Open(dir)
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		f.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "roots", "*.json"))
	good, _ := os.ReadFile(files[0])
	f.Add(good)
	f.Add([]byte(`{"version":1,"court":"C","certificate":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, "roots"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "roots", filepath.Base(files[0])), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := trust.Open(d)
		if err != nil {
			return
		}
		if len(s.Roots()) != 1 || s.Roots()[0].Court == "" || !s.Roots()[0].Cert.Equal(root.Cert) {
			t.Fatalf("accepted %q as %+v", data, s.Roots())
		}
	})
}

// TestInvariantPinnedRootsAreApart: a root that issued, or was issued by, a
// root pinned for another court is refused, in either order, with what to
// do instead; with both pinned, a judge under the lower root would chain
// to both courts. A store that holds such roots from before still opens:
// the verifier refuses the signers that chain to two courts
// (warrant.TestInvariantSignerChainsToOneCourt).
func TestInvariantPinnedRootsAreApart(t *testing.T) {
	a := trusttest.NewRoot(t, "Court A Root", now)
	caB := a.Intermediate(t, "Court B CA", now)
	other := trusttest.NewRoot(t, "Court C Root", now)
	for name, order := range map[string][2]*x509.Certificate{
		"lower root after the upper": {a.Cert, caB.Cert},
		"upper root after the lower": {caB.Cert, a.Cert},
	} {
		dir := filepath.Join(t.TempDir(), "trust")
		s, err := trust.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddRoot(trusttest.PEM(other.Cert), "Court C"); err != nil {
			t.Fatalf("%s: an unrelated root: %v", name, err)
		}
		if _, err := s.AddRoot(trusttest.PEM(order[0]), "Court 1"); err != nil {
			t.Fatalf("%s: first root: %v", name, err)
		}
		_, err = s.AddRoot(trusttest.PEM(order[1]), "Court 2")
		if err == nil || !strings.Contains(err.Error(), "pin only the top root") || !strings.Contains(err.Error(), `"Court 1"`) {
			t.Errorf("%s: pinned, or refused without saying why: %v", name, err)
		}
		if again, err := trust.Open(dir); err != nil || len(again.Roots()) != 2 {
			t.Errorf("%s: the refused root reached the store: %v", name, err)
		}
	}

	// A store pinned before the check still opens.
	dir := filepath.Join(t.TempDir(), "trust")
	trusttest.PinUnchecked(t, dir, a.Cert, "Court A")
	trusttest.PinUnchecked(t, dir, caB.Cert, "Court B")
	s, err := trust.Open(dir)
	if err != nil || s.CourtOf(a.Cert) != "Court A" || s.CourtOf(caB.Cert) != "Court B" {
		t.Fatalf("a store with roots that issued one another: %v", err)
	}
}
