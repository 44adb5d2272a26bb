package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeDaemon records stops and starts; running tells whether it runs.
type fakeDaemon struct {
	running bool
	events  []string
}

func (d *fakeDaemon) Stop() error { d.running = false; d.events = append(d.events, "stop"); return nil }
func (d *fakeDaemon) Start()      { d.running = true; d.events = append(d.events, "start") }
func (d *fakeDaemon) Status() string {
	return map[bool]string{true: "running", false: "stopped"}[d.running]
}

// fakeRunner records each command with the daemon's state while it ran,
// prints a line, and returns the status queued for it.
type fakeRunner struct {
	daemon   *fakeDaemon
	ran      []Command
	daemonOn []bool
	status   int
	end      string // what the output ends with
}

func (r *fakeRunner) Run(_ context.Context, c Command) (int, error) {
	r.ran = append(r.ran, c)
	r.daemonOn = append(r.daemonOn, r.daemon.running)
	io.WriteString(c.Out, "ran "+strings.Join(c.Args, " ")+r.end)
	return r.status, nil
}

type fixture struct {
	console *Console
	runner  *fakeRunner
	daemon  *fakeDaemon
	dir     string
}

func newFixture(t *testing.T) *fixture {
	dir := filepath.Join(t.TempDir(), "transfer")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{running: true}
	r := &fakeRunner{daemon: d, end: "\n"}
	c := &Console{
		Files: &Transfer{Dir: dir, UID: -1, GID: -1}, Runner: r, Daemon: d,
		DataDir: "/var/lib/custodian", TPM: "/dev/tpmrm0", Commands: DefaultCommands,
	}
	return &fixture{c, r, d, dir}
}

// session feeds input to the console and returns everything it printed.
func (f *fixture) session(t *testing.T, input string) string {
	t.Helper()
	var out bytes.Buffer
	f.console.In, f.console.Out = strings.NewReader(input), &out
	if err := f.console.Serve(context.Background()); err != io.EOF {
		t.Fatalf("Serve ended with %v, want the end of input", err)
	}
	return out.String()
}

func base64Lines(data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\n"
}

// put then get returns the same bytes, through a real pipe, and the
// transcript is exactly the protocol.
func TestPutGetRoundTrip(t *testing.T) {
	f := newFixture(t)
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	lines := base64Lines(data)

	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	f.console.In, f.console.Out = inR, outW
	go func() {
		io.WriteString(inW, "put bundle.json\n"+lines+".\nget bundle.json\n")
		inW.Close()
	}()
	done := make(chan error, 1)
	go func() { err := f.console.Serve(context.Background()); outW.Close(); done <- err }()
	got, err := io.ReadAll(outR)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("Serve: %v", err)
	}
	want := "custodian> stored transfer/bundle.json (1000 bytes)\n[exit 0]\n" +
		"custodian> " + lines + ".\n[exit 0]\ncustodian> "
	if string(got) != want {
		t.Fatalf("transcript\n%q\nwant\n%q", got, want)
	}
	stored, err := os.ReadFile(filepath.Join(f.dir, "bundle.json"))
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored file differs: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(f.dir, "bundle.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("stored with mode %v, want 0600", fi.Mode().Perm())
	}
	if len(f.runner.ran) != 0 || len(f.daemon.events) != 0 {
		t.Error("put or get ran a command or touched the daemon")
	}
}

func TestPutEmptyAndCRLF(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, "put empty\r\n.\r\nput crlf\r\n"+strings.ReplaceAll(base64Lines([]byte("hello")), "\n", "\r\n")+".\r\n")
	if strings.Count(out, "[exit 0]") != 2 {
		t.Fatalf("transcript %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "crlf")); string(b) != "hello" {
		t.Errorf("crlf: %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "empty")); err != nil || len(b) != 0 {
		t.Errorf("empty: %q %v", b, err)
	}
}

// A bad name is refused, its data lines are still consumed, and the
// console goes on with the next command.
func TestNameRules(t *testing.T) {
	for _, name := range []string{".hidden", "a/b", "..", "../x", strings.Repeat("a", 65), "a b", "ä", ""} {
		f := newFixture(t)
		out := f.session(t, "put "+name+"\naGVsbG8=\n.\nget "+name+"\nstatus\n")
		if strings.Count(out, "[exit 2]") != 2 || !strings.HasSuffix(out, "daemon: running\n[exit 0]\ncustodian> ") {
			t.Errorf("name %q: transcript %q", name, out)
		}
		if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
			t.Errorf("name %q wrote %v", name, entries)
		}
	}
	for _, name := range []string{"a", "bundle-court-a.json", "A_b.c-d", strings.Repeat("x", 64), "-x"} {
		if !ValidName(name) {
			t.Errorf("%q refused", name)
		}
	}
}

func TestPutRefusesBadData(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, "put x\nnot base64!\n.\nput y\n"+strings.Repeat("A", maxLine+10)+"\n.\n")
	if strings.Count(out, "[exit 1]") != 2 || !strings.Contains(out, "not base64") || !strings.Contains(out, "too long") {
		t.Fatalf("transcript %q", out)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
		t.Errorf("bad data left %v", entries)
	}
}

// A symbolic link in the transfer directory is never followed: get refuses
// it and put replaces the link, not its target.
func TestTransferSymlinks(t *testing.T) {
	f := newFixture(t)
	target := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(f.dir, "link")); err != nil {
		t.Fatal(err)
	}
	out := f.session(t, "get link\nput link\naGVsbG8=\n.\n")
	if !strings.Contains(out, "symbolic link") || !strings.Contains(out, "[exit 1]\ncustodian> stored transfer/link (5 bytes)\n[exit 0]") {
		t.Fatalf("transcript %q", out)
	}
	if b, _ := os.ReadFile(target); string(b) != "secret" {
		t.Errorf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(f.dir, "link")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("link not replaced by a file: %v %v", fi, err)
	}
}

func TestAllowlist(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, "sh\nserve --listen 0.0.0.0:1\ndemo\n/usr/bin/custodian enroll\nbutton press\n")
	if strings.Count(out, "[exit 2]") != 5 || !strings.Contains(out, `"sh" is not a console command`) {
		t.Fatalf("transcript %q", out)
	}
	if len(f.runner.ran) != 0 {
		t.Errorf("ran %v", f.runner.ran)
	}
	f.console.Commands = append(slices.Clone(DefaultCommands), "button")
	out = f.session(t, "button press\n")
	if len(f.runner.ran) != 1 || !strings.HasSuffix(out, "[exit 0]\ncustodian> ") {
		t.Errorf("button press with the simulated button: %q", out)
	}
}

func TestFixedFlagsRefused(t *testing.T) {
	for _, line := range []string{
		"enroll --data-dir /tmp/x --id a",
		"enroll --data-dir=/tmp/x --id a",
		"ledger verify --tpm swtpm:10.0.0.1:2321",
		"ledger verify --tpm=sim",
		"trust list --tpm",
	} {
		f := newFixture(t)
		out := f.session(t, line+"\n")
		if !strings.Contains(out, "is fixed on the console") || !strings.HasSuffix(out, "[exit 2]\ncustodian> ") {
			t.Errorf("%q: transcript %q", line, out)
		}
		if len(f.runner.ran) != 0 || len(f.daemon.events) != 0 {
			t.Errorf("%q ran or stopped the daemon", line)
		}
	}
}

// Subcommands run with the fixed flags first, in the transfer directory;
// the exit line carries their status; the daemon is off while one that
// opens the TPM or ledger runs, and on again after; update runs as root.
func TestRunSubcommands(t *testing.T) {
	f := newFixture(t)
	f.console.Commands = append(slices.Clone(DefaultCommands), "button")
	f.runner.status = 3
	out := f.session(t, "enroll --id court-a --out enrollment.json\n\nwarrant show --in w.p7s\nbutton press\nupdate apply --image x\n")
	want := "custodian> ran --data-dir /var/lib/custodian --tpm /dev/tpmrm0 enroll --id court-a --out enrollment.json\n[exit 3]\n" +
		"custodian> custodian> ran --data-dir /var/lib/custodian --tpm /dev/tpmrm0 warrant show --in w.p7s\n[exit 3]\n" +
		"custodian> ran --data-dir /var/lib/custodian --tpm /dev/tpmrm0 button press\n[exit 3]\n" +
		"custodian> ran --data-dir /var/lib/custodian --tpm /dev/tpmrm0 update apply --image x\n[exit 3]\ncustodian> "
	if out != want {
		t.Fatalf("transcript\n%q\nwant\n%q", out, want)
	}
	if want := []bool{false, true, true, false}; !slices.Equal(f.runner.daemonOn, want) {
		t.Errorf("daemon running during the commands: %v, want %v", f.runner.daemonOn, want)
	}
	if want := []string{"stop", "start", "stop", "start"}; !slices.Equal(f.daemon.events, want) {
		t.Errorf("daemon events %v, want %v", f.daemon.events, want)
	}
	for i, c := range f.runner.ran {
		if c.Dir != f.dir {
			t.Errorf("command %d ran in %s", i, c.Dir)
		}
		if c.Root != (c.Args[4] == "update") {
			t.Errorf("command %v: root %v", c.Args, c.Root)
		}
	}
	if !f.daemon.running {
		t.Error("the daemon was left stopped")
	}
}

func TestReadLineTooLong(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, strings.Repeat("x", maxLine+1)+"\nstatus\n")
	if !strings.HasPrefix(out, "custodian> custodian: error: the line is too long") || !strings.HasSuffix(out, "daemon: running\n[exit 0]\ncustodian> ") {
		t.Fatalf("transcript %q", out)
	}
}

// Any input keeps the protocol: every prompt but the last is answered by
// exactly one exit line or an empty command, nothing runs that the
// allowlist does not name, and the fixed flags are never overridden.
func FuzzConsole(f *testing.F) {
	f.Add("put a\naGVsbG8=\n.\nget a\nenroll --id x\n")
	f.Add("ledger verify --tpm=sim\nsh -c x\n\n\r\n")
	f.Add("put .x\n")
	f.Add("trust add-root r.pem --court \"District Court\"\nenroll --id=\"a b\" \"\"\nledger \"verify\n")
	f.Add("update apply --image a.img --no-reboot\nupdate apply --image=../x\nupdate sign --out x\nupdate commit\n")
	f.Fuzz(func(t *testing.T, input string) {
		fx := newFixture(t)
		fx.console.Commands = []string{"enroll", "ledger", "update"}
		var out bytes.Buffer
		fx.console.In, fx.console.Out = strings.NewReader(input), &out
		_ = fx.console.Serve(context.Background())
		for _, c := range fx.runner.ran {
			if len(c.Args) < 5 || c.Args[0] != "--data-dir" || c.Args[2] != "--tpm" || !slices.Contains(fx.console.Commands, c.Args[4]) {
				t.Fatalf("ran %q", c.Args)
			}
			for _, a := range c.Args[4:] {
				if fixedFlag(a) {
					t.Fatalf("ran %q with a fixed flag", c.Args)
				}
			}
			words := c.Args[4:]
			if hasPrefix(words, []string{"update", "sign"}) || hasPrefix(words, []string{"update", "keygen"}) {
				t.Fatalf("ran the authority's offline step %q", c.Args)
			}
			if c.Root && !hasPrefix(words, []string{"update", "apply"}) && !hasPrefix(words, []string{"update", "commit"}) {
				t.Fatalf("ran %q as root", c.Args)
			}
			for i, a := range words {
				name, ok := strings.CutPrefix(a, "--image=")
				if !ok && a == "--image" && i+1 < len(words) {
					name, ok = words[i+1], true
				}
				if ok && c.Root && !ValidName(name) {
					t.Fatalf("ran %q as root with an image outside transfer/", c.Args)
				}
			}
		}
		if fx.daemon.events != nil && fx.daemon.events[len(fx.daemon.events)-1] != "start" {
			t.Fatalf("daemon left stopped: %v", fx.daemon.events)
		}
		if !strings.HasSuffix(out.String(), Prompt) && !strings.Contains(input, "put ") {
			t.Fatalf("the session did not end at a prompt: %q", out.String())
		}
	})
}

// Output without a final newline still leaves the exit line on its own.
func TestExitLineStartsALine(t *testing.T) {
	f := newFixture(t)
	f.runner.end = ""
	out := f.session(t, "trust list\n")
	if want := "custodian> ran --data-dir /var/lib/custodian --tpm /dev/tpmrm0 trust list\n[exit 0]\ncustodian> "; out != want {
		t.Errorf("transcript %q, want %q", out, want)
	}
}

// put refuses a file the data partition has no room for (beside what it
// keeps free for the ledger), says what to do, writes nothing, and the
// console goes on.
func TestPutRefusesWithoutRoom(t *testing.T) {
	f := newFixture(t)
	f.console.Files.KeepFree = 1 << 60 // more than any file system here has free
	out := f.session(t, "put update.img\naGVsbG8=\n.\nstatus\n")
	if !strings.Contains(out, "no room for transfer/update.img") || !strings.Contains(out, "--update-out") ||
		!strings.Contains(out, "[exit 1]") || !strings.HasSuffix(out, "daemon: running\n[exit 0]\ncustodian> ") {
		t.Fatalf("transcript %q", out)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
		t.Errorf("a refused put left %v", entries)
	}
}

// Only update apply and update commit run as root, and only in the forms
// the runbook gives: apply's image is a file of transfer/, the disk the
// device's own. update sign and update keygen, the escrow authority's
// offline steps, whose --out would write wherever root can (the data
// directory's lock, /run/custodian/boot.cel), are refused; every other
// line runs sandboxed.
func TestConsoleRunsOnlyApplyAndCommitAsRoot(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, "update sign --key update.key --policy policy.json --out ../.lock\n"+
		"update keygen --out /run/custodian/k --pub /dev/p\n"+
		"update apply --image ../.lock\n"+
		"update apply --image=/dev/mmcblk0\n"+
		"update apply --image new.img --disk /dev/sda\n"+
		"update apply --no-reboot\n"+
		"update commit --disk /dev/sda\n"+
		"update apply --image new.img --no-reboot\n"+
		"update apply --image=new.img\n"+
		"update commit\n"+
		"update --help\n"+
		"trust list\n")
	if got := strings.Count(out, "[exit 2]"); got != 7 {
		t.Errorf("%d lines refused, want 7:\n%s", got, out)
	}
	for _, want := range []string{"update sign is the escrow authority's offline step", "update keygen is the escrow authority's offline step", "not a path", "only --image NAME and --no-reboot"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	wantRoot := []bool{true, true, true, false, false}
	if len(f.runner.ran) != len(wantRoot) {
		t.Fatalf("ran %d commands, want %d:\n%s", len(f.runner.ran), len(wantRoot), out)
	}
	for i, c := range f.runner.ran {
		if c.Root != wantRoot[i] {
			t.Errorf("%q: root %v, want %v", c.Args[4:], c.Root, wantRoot[i])
		}
	}
}

// The update runbook (docs/operator.md, step 12) sends the update file
// through put: tens of MiB, far over what get sends back. put takes it.
func TestPutTakesAFileOverGetsCap(t *testing.T) {
	f := newFixture(t)
	img := make([]byte, MaxTransfer+3)
	out := f.session(t, "put custodian-2.update\n"+base64Lines(img)+".\n")
	if !strings.Contains(out, "stored transfer/custodian-2.update") {
		t.Errorf("put of an update-sized file: %q", out[max(0, len(out)-300):])
	}
}

// put's cap is on the bytes, not on the base64 text (whose length rounds
// up to whole quanta): one byte over is refused.
func TestPutRefusesOneByteOverItsCap(t *testing.T) {
	for _, n := range []int{10, 11} {
		text := base64Lines(make([]byte, n)) + ".\n"
		_, err := readBase64(bufio.NewReader(strings.NewReader(text)), 10)
		if (err == nil) != (n <= 10) {
			t.Errorf("%d bytes under a cap of 10: %v", n, err)
		}
	}
}

// A double-quoted word keeps its spaces, as a runbook's court name needs;
// the quotes are not passed on, and a quote never closed runs nothing.
func TestQuotedWords(t *testing.T) {
	f := newFixture(t)
	out := f.session(t, `trust add-root court-root.pem --court "District Court of Testing"`+"\n"+
		`trust add-root r.pem --court="A  B" ""`+"\n"+
		`trust add-root r.pem --court "District Court`+"\n")
	want := [][]string{
		{"--data-dir", "/var/lib/custodian", "--tpm", "/dev/tpmrm0", "trust", "add-root", "court-root.pem", "--court", "District Court of Testing"},
		{"--data-dir", "/var/lib/custodian", "--tpm", "/dev/tpmrm0", "trust", "add-root", "r.pem", "--court=A  B", ""},
	}
	if len(f.runner.ran) != len(want) {
		t.Fatalf("ran %d commands, want %d:\n%s", len(f.runner.ran), len(want), out)
	}
	for i, c := range f.runner.ran {
		if !slices.Equal(c.Args, want[i]) {
			t.Errorf("ran %q, want %q", c.Args, want[i])
		}
	}
	if !strings.HasSuffix(out, "custodian: error: a double quote is not closed: quote a word with spaces as \"…\" (there are no escapes)\n[exit 2]\ncustodian> ") {
		t.Errorf("an open quote: transcript %q", out)
	}
}

func TestSplitWords(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
	}{
		{"", nil},
		{"  ledger\tverify  ", []string{"ledger", "verify"}},
		{`a"b c"d`, []string{"ab cd"}},
		{`""`, []string{""}},
		{`x "" y`, []string{"x", "", "y"}},
	} {
		got, err := splitWords(c.line)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", c.line, got, err, c.want)
		}
	}
	if _, err := splitWords(`a "b`); err == nil {
		t.Error("an open quote was accepted")
	}
}
