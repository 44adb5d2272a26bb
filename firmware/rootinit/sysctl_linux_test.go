package rootinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The root init closes user namespaces (and the rest of its list) before
// it starts anything. The tunables are files in a directory standing in
// for /proc/sys: the test must not change the machine it runs on.
func TestInvariantRootInitClosesUserNamespaces(t *testing.T) {
	dir := t.TempDir()
	ns := filepath.Join(dir, "user", "max_user_namespaces")
	ptrace := filepath.Join(dir, "kernel", "yama", "ptrace_scope")
	for _, f := range []string{ns, ptrace} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("63429\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	notes, err := hardenKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 0 {
		t.Errorf("notes for absent tunables: %q", notes)
	}
	for f, want := range map[string]string{ns: "0\n", ptrace: "3\n"} {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	for _, s := range sysctls {
		if _, err := os.Stat(filepath.Join(dir, s.name)); err == nil && s.name != "user/max_user_namespaces" && s.name != "kernel/yama/ptrace_scope" {
			t.Errorf("%s created although the kernel lacks it", s.name)
		}
	}
}

// A required tunable that cannot be written stops the boot.
func TestRootInitRefusesToRunWithUserNamespacesOpen(t *testing.T) {
	dir := t.TempDir()
	// A directory in place of the file: the write fails.
	if err := os.MkdirAll(filepath.Join(dir, "user", "max_user_namespaces"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := hardenKernel(dir)
	if err == nil || !strings.Contains(err.Error(), "max_user_namespaces") {
		t.Fatalf("err = %v, want a refusal naming max_user_namespaces", err)
	}
}
