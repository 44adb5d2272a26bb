// Package witnesstest runs real C2SP tlog-witness witnesses for tests:
// litewitness from filippo.io/torchwood (the version in go.mod), built
// from the module cache once per version and kept in the project's cache
// ($CUSTODIAN_CACHE, or custodian in the user's cache directory), each
// instance with its own ssh-agent holding its key. Both commands are
// tools of go.mod, so `go mod download` fetches all they need and go.sum
// pins it.
package witnesstest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/custodian-project/custodian/hsm/witness"
)

// Witness is one running litewitness.
type Witness struct {
	Name string
	Key  string // its cosignature verifier key
	URL  string
	db   string
	ctl  string
	cmd  *exec.Cmd
	args []string // litewitness's, to restart it
	logf *os.File
	t    testing.TB
}

// Ref is the witness as an escrow file names it.
func (w *Witness) Ref() witness.Witness { return witness.Witness{Key: w.Key, URL: w.URL} }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries returns the directory holding litewitness and witnessctl of the
// torchwood version go.mod requires (both are go.mod tools), building them
// on first use.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binDir, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("building litewitness: %v", buildErr)
	}
	return binDir
}

func build() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "filippo.io/torchwood").Output()
	if err != nil {
		return "", fmt.Errorf("go list filippo.io/torchwood: %w", err)
	}
	version := strings.TrimSpace(string(out))
	dir := filepath.Join(cacheDir(), "torchwood-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"litewitness", "witnessctl"} {
		bin := filepath.Join(dir, name)
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		// A tool of go.mod: its version and every dependency are pinned
		// and checked by this module's go.sum.
		tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "filippo.io/torchwood/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", name, err, out)
		}
		if err := os.Rename(tmp, bin); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// cacheDir is the project's cache, as the appliance example's scripts
// use it: $CUSTODIAN_CACHE, or custodian in the user's cache directory.
func cacheDir() string {
	if dir := os.Getenv("CUSTODIAN_CACHE"); dir != "" {
		return dir
	}
	home, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "custodian")
	}
	return filepath.Join(home, "custodian")
}

// Start runs a litewitness named name that knows the log origin under
// the note verifier key logKey. It stops at the test's end.
func Start(t testing.TB, name, origin, logKey string) *Witness {
	t.Helper()
	bin := Binaries(t)
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	sock := startAgent(t, dir, priv)
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	w := &Witness{Name: name, Key: signer.Verifier().String(), db: filepath.Join(dir, "litewitness.db"), ctl: filepath.Join(bin, "witnessctl"), t: t}
	// litewitness makes its database; the log is added once it exists.
	addr := freeAddr(t)
	w.URL = "http://" + addr
	w.args = []string{"-db", w.db, "-name", name,
		"-key", ssh.FingerprintSHA256(sshPub), "-ssh-agent", sock, "-listen", addr}
	logf, err := os.Create(filepath.Join(dir, "litewitness.log"))
	if err != nil {
		t.Fatal(err)
	}
	w.logf = logf
	t.Cleanup(func() { w.Stop(); logf.Close() })
	w.run()
	w.ctlRun("add-log", "-origin", origin)
	w.ctlRun("add-key", "-origin", origin, "-key", logKey)
	return w
}

// run starts litewitness and waits until it answers.
func (w *Witness) run() {
	w.t.Helper()
	w.cmd = exec.Command(filepath.Join(filepath.Dir(w.ctl), "litewitness"), w.args...)
	w.cmd.Stdout, w.cmd.Stderr = w.logf, w.logf
	if err := w.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	waitHTTP(w.t, w.URL, w.logf.Name())
}

// Restart starts a stopped witness again, with its database (what it
// cosigned), key and address: a witness back after an outage.
func (w *Witness) Restart() {
	w.t.Helper()
	w.Stop()
	w.run()
}

// Stop ends the witness process (a witness that no longer answers).
func (w *Witness) Stop() {
	if w.cmd.Process != nil && w.cmd.ProcessState == nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
	}
}

func (w *Witness) ctlRun(args ...string) {
	w.t.Helper()
	args = append(args[:1:1], append([]string{"-db", w.db}, args[1:]...)...)
	if out, err := exec.Command(w.ctl, args...).CombinedOutput(); err != nil {
		w.t.Fatalf("witnessctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startAgent runs a dedicated ssh-agent in dir holding key, as
// litewitness's README has it.
func startAgent(t testing.TB, dir string, key ed25519.PrivateKey) string {
	t.Helper()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Skipf("ssh-agent does not run here (%v): litewitness needs one for its key", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not open %s: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer conn.Close()
	if err := agent.NewClient(conn).Add(agent.AddedKey{PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	return sock
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHTTP(t testing.TB, base, logPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("litewitness did not start at %s:\n%s", base, tail(logPath))
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
