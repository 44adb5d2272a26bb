package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/custodian-project/custodian/firmware/config"
	"github.com/custodian-project/custodian/firmware/console"
	bootmeasure "github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/firmware/rootinit"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// The story's devices: the escrow authority's ceremony block names three
// custodians with a threshold of two; the officer releases from the first
// two.
var (
	storyDevices = []string{"court-a", "court-b", "court-c"}
	releasing    = []string{"court-a", "court-b"}
)

// storyStep is one step of the runbook story: blocks of one role's runbook
// (by their index in runbookPlans), run on each device named (or once, when
// on is empty), or a part of the world no runbook covers (the court's PKI,
// the Pi's boot, files carried between roles), done by do.
type storyStep struct {
	role   string   // the runbook's name without .md; for a do step, what it stands for
	blocks []string // names in runbookPlans
	on     []string
	atPi   bool        // the blocks run at the device: against its TPM and data directory, the daemon stopped
	dir    string      // the working directory, when not the role's own
	subst  [][2]string // this step's own substitutions, made first
	do     func(s *story, device string)
}

// runbookStory is the whole process in the order it happens: the roles'
// runbooks interleave where files go from one role to another, and within
// a runbook its blocks run in the order it gives them.
var runbookStory = slices.Concat([]storyStep{
	{role: "the court", do: (*story).makeCourt},
	{role: "agency", blocks: []string{"keygen"}},
	{role: "officer", blocks: []string{"client key"}},
	{role: "carry", do: carry("officer", "officer.csr", "operator", "officer.csr")},
	{role: "operator", blocks: []string{"boot key", "rootfs court roots", "TLS certificates"}},
	{role: "escrow-authority", blocks: []string{"enroll keygen"}},
	{role: "the Pi boots the approved image", on: storyDevices, do: (*story).boot},
},
	// Each device enrolls in turn: the files of one round trip are named
	// the same for every device.
	eachDevice(
		storyStep{role: "operator", blocks: []string{"enroll request", "base64 -d request.b64"}},
		storyStep{role: "carry", do: carry("operator", "request.json", "escrow-authority", "court-a/request.json")},
		storyStep{role: "escrow-authority", blocks: []string{"enroll challenge"}},
		storyStep{role: "carry", do: carry("escrow-authority", "court-a/challenge.json", "operator", "challenge.json")},
		storyStep{role: "operator", blocks: []string{"enroll answer"}},
		storyStep{role: "carry", do: carry("operator", "enrollment.json", "escrow-authority", "court-a/enrollment.json")},
		storyStep{role: "escrow-authority", blocks: []string{"enroll verify"}},
		storyStep{role: "operator", blocks: []string{"ledger init"}},
	), []storyStep{
		{role: "escrow-authority", blocks: []string{"policy from-enrollment", "update keygen", "ceremony"}},
		{role: "carry", on: storyDevices, do: carry("escrow-authority", "ceremony-2026-11/court-a.bundle.json", "operator", "court-a.bundle.json")},
		{role: "operator", blocks: []string{"provision"}, on: storyDevices},
		{role: "the operator backs up court-c's data directory", on: []string{"court-c"}, do: (*story).backUp},
		// court-a's trust admin works as court-trust-admin.md shows it;
		// court-b's at the console, as operator.md step 10 does.
		{role: "court-trust-admin", blocks: []string{"add-root"}, on: []string{"court-a"}, atPi: true},
		// The court certifies the judge's card and the second authority's,
		// and court-a requires both to sign (a double lock).
		{role: "court-trust-admin", blocks: []string{"judge certificate"}},
		{role: "court-trust-admin", blocks: []string{"judge certificate"}, subst: [][2]string{{"judge.csr", "second.csr"}, {"judge.pem", "second.pem"}}},
		{role: "the cards get their certificates", do: (*story).certifyCards},
		{role: "the court's intermediate CAs and their CRLs", do: (*story).intermediates},
		{role: "court-trust-admin", blocks: []string{"root CRL", "judges' CA CRL", "issuing CA CRL", "set-policy", "trust list"}, on: []string{"court-a"}, atPi: true},
		{role: "carry", do: carry("court-trust-admin", "court-root.pem", "operator", "court-root.pem")},
		{role: "carry", do: carry("court-trust-admin", "court-root.crl.pem", "operator", "court-root.crl.pem")},
		{role: "operator", blocks: []string{"trust store at the console"}, on: []string{"court-b", "court-c"}},
		{role: "operator", blocks: []string{"ledger verify", "trust list"}, on: releasing},
		// court-c's card is restored from its backup, which misses the
		// trust entries: its ledger is blocked until the operator resolves it.
		{role: "the operator restores court-c's data directory", on: []string{"court-c"}, do: (*story).restore},
		{role: "operator", blocks: []string{"trust list", "resolve-rollback"}, on: []string{"court-c"}},
		{role: "court-c's ledger verifies again", on: []string{"court-c"}, do: (*story).ledgerVerifies},
		{role: "the auditor keeps a first checkpoint", do: (*story).firstCheckpoint},
		{role: "the data partition gets the TLS files; the init starts the daemon", on: releasing, do: (*story).startServe},
		{role: "the messaging provider gets the escrow key and a message", do: (*story).toProvider},
		{role: "agency", blocks: []string{"seal"}, dir: "messaging-provider"},
		{role: "the messaging provider's envelopes", do: (*story).envelopes},
		{role: "judge", blocks: []string{"warrant new", "warrant show", "find the key", "sign", "co-sign", "show and verify", "openssl cms"}, subst: [][2]string{{"<their label>", "second"}}},
		{role: "judge.md's summary is the story's warrant", do: (*story).judgeSummary},
		{role: "carry", do: carry("judge", "w2.p7s", "court-trust-admin", "w.p7s")},
		{role: "court-trust-admin", blocks: []string{"warrant verify"}, on: []string{"court-a"}, atPi: true},
		{role: "carry", do: (*story).toOfficer},
		{role: "officer", blocks: []string{"release"}, on: releasing},
		{role: "carry", do: (*story).toAgency},
		{role: "agency", blocks: []string{"open", "open a directory"}},
		{role: "carry", do: (*story).toAuditor},
		{role: "auditor", blocks: []string{"checkpoint over TLS", "ledger export", "ledger list over TLS", "report", "attest over TLS"}},
		// The sealing is over: the court opens court-a's release entry
		// with the salt its officer's client kept, and the auditor checks
		// the opening against the court's root.
		{role: "the court has the appliance's verifier key", do: (*story).toCourt},
		{role: "officer", blocks: []string{"reveal"}, on: []string{"court-a"}},
		{role: "carry", do: (*story).openingToAuditor},
		{role: "auditor", blocks: []string{"verify-opening", "report with openings"}},
		// The monitor follows both releasing appliances from a state
		// directory the auditor owns; cron and the service poll again.
		{role: "auditor", blocks: []string{"monitor", "monitor from cron", "monitor as a service"}, subst: monitorPaths},
		{role: "the auditor's monitor kept what it verified", do: (*story).monitored},
		{role: "auditor", blocks: []string{"on the device", "attest on the device"}, on: []string{"court-a"}, atPi: true},
		{role: "auditor", blocks: []string{"attest verify"}},
		{role: "the auditor's checkout of the repository", do: (*story).checkout},
		{role: "auditor", blocks: []string{"checkproof"}},
		// The first update: the authority approves the new image, each
		// device reseals to it, boots it and raises its floor.
		{role: "the operator measures the new image", do: (*story).newImage},
		{role: "escrow-authority", blocks: []string{"update sign"}},
		{role: "carry", do: carry("escrow-authority", "update.note", "operator", "update.note")},
		{role: "operator", blocks: []string{"reseal --update"}, on: releasing},
		{role: "the Pi boots the new image", on: releasing, do: (*story).bootNewImage},
		{role: "operator", blocks: []string{"reseal --finish", "floor raise"}, on: releasing},
		// court-c is retired: the authority withdraws its trust, and the
		// device's records no longer vouch for it.
		{role: "escrow-authority", blocks: []string{"enroll verify --refuse"}, on: []string{"court-c"}},
		{role: "court-c's records withdraw it", on: []string{"court-c"}, do: (*story).withdrawn},
	})

// eachDevice is steps on one device after the other, all of them on each.
func eachDevice(steps ...storyStep) []storyStep {
	var all []storyStep
	for _, id := range storyDevices {
		for _, st := range steps {
			st.on = []string{id}
			all = append(all, st)
		}
	}
	return all
}

// story is one run of runbookStory: a working directory per role (its
// machine), the devices on swtpm, and the substitutions that put this
// machine's names where the runbooks name a real site's.
type story struct {
	t       *testing.T // the running step
	top     *testing.T // what lives for the whole story: swtpm, daemons
	root    string
	now     time.Time
	devices map[string]*storyDevice
	token   *softhsmtest.Token // the judge's card
	second  *softhsmtest.Token // the second authority's card
	court   *trusttest.CA
	vars    map[string][]string // per role: the shell variables its blocks set
}

// storyDevice is one appliance: its swtpm, data directory and daemon.
type storyDevice struct {
	id    string
	sw    *tpmtest.Swtpm
	data  string
	port  int
	serve *exec.Cmd
	log   *syncBuffer
	args  []string // the daemon's command line
	want  bool     // the init runs the daemon
}

// substitutions are every change the story makes to a runbook's text: this
// machine's address for the appliance's, SoftHSM2 for the judge's card,
// the swtpm CAs for the TPM vendors', today for the example's dates.
func (s *story) substitutions(device string) [][2]string {
	if device == "" {
		device = "court-a"
	}
	port := fmt.Sprint(s.devices[device].port)
	return [][2]string{
		{"custodian-a.court.example:8443", "localhost:" + port},
		{"custodian-b.court.example:8443", fmt.Sprintf("localhost:%d", s.devices["court-b"].port)},
		{"custodian-a.court.example", "localhost"},
		{"court-a", device},
		{"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", softhsmtest.Module},
		{"<token label>", s.token.Label},
		{"2026-11-20T11:00:00Z", s.now.Add(-time.Hour).Format(time.RFC3339)},
		{"2026-11-27T12:00:00Z", s.now.Add(6 * 24 * time.Hour).Format(time.RFC3339)},
		// swtpm's EK certificates come from its own CA, not a TPM vendor's.
		{"custodian enroll verify ", "custodian enroll verify --ek-roots ek-cas.pem "},
		{"custodian policy from-enrollment ", "custodian policy from-enrollment --ek-roots ek-cas.pem "},
		{"custodian ceremony ", "custodian ceremony --ek-roots ek-cas.pem "},
		{"custodian attest verify ", "custodian attest verify --ek-roots ek-cas.pem "},
		// The story's ledgers are shorter than the example's 44 entries.
		{"--index 7 ", "--index 3 "},
		{"--from 40 ", "--from 1 "},
		{" --to 43", " --to 3"},
		// The boot event log is at /run/custodian/boot.cel on the appliance.
		{"custodian attest --nonce ", "custodian attest --event-log " + s.devices[device].eventLog() + " --nonce "},
	}
}

func (s *story) dir(role string) string {
	d := filepath.Join(s.root, role)
	if err := os.MkdirAll(d, 0o700); err != nil {
		s.t.Fatal(err)
	}
	return d
}

// TestRunbooks runs every role's runbook, block by block as its text says,
// in one story from an empty swtpm to an opened envelope and an audited
// ledger (runbookStory; what is not run here is in runbookPlans, with why).
func TestRunbooks(t *testing.T) {
	tpmtest.RequireSwtpm(t)
	need.Command(t, "openssl", "openssl")
	need.Command(t, "pkcs11-tool", "opensc")
	s := &story{t: t, top: t, root: t.TempDir(), now: time.Now().UTC().Truncate(time.Second),
		devices: map[string]*storyDevice{}, vars: map[string][]string{}}
	s.token = softhsmtest.New(t, "judge")
	t.Setenv("CUSTODIAN_PIN", s.token.PIN)
	for _, id := range storyDevices {
		s.devices[id] = &storyDevice{id: id, port: freePort(t)}
	}
	plans := runbookPlanBlocks(t)
	for doc, blocks := range plans {
		// A block added or removed moves the others: the story would run
		// the wrong ones. (A changed block runs, and shows how it fails.)
		if len(blocks) != len(runbookPlans[doc]) {
			t.Fatalf("%s has %d command blocks, runbookPlans %d: update runbookPlans first", doc, len(blocks), len(runbookPlans[doc]))
		}
	}
	for i, st := range runbookStory {
		name := fmt.Sprintf("%02d-%s", i, strings.ReplaceAll(st.role, " ", "_"))
		ok := t.Run(name, func(t *testing.T) {
			s.t = t
			on := st.on
			if len(on) == 0 {
				on = []string{""}
			}
			for _, dev := range on {
				if st.do != nil {
					st.do(s, dev)
					continue
				}
				for _, name := range st.blocks {
					i := planIndex(st.doc(), name)
					if i < 0 || i >= len(plans[st.doc()]) {
						t.Fatalf("%s has no block %q", st.doc(), name)
					}
					s.runBlock(st, plans[st.doc()][i], dev)
				}
			}
		})
		if !ok {
			t.Fatalf("the story stops at step %s", name)
		}
	}
	s.t = t
	s.checkOpened()
}

func (st storyStep) doc() string { return st.role + ".md" }

// runBlock runs one block on device dev: a console block through the
// appliance's console, a shell block with sh -e in the role's directory.
func (s *story) runBlock(st storyStep, b runbookBlock, dev string) {
	t := s.t
	t.Helper()
	text := b.Text
	if b.Host == "systemd" {
		text = instantiate(text)
	}
	for _, r := range append(st.subst, s.substitutions(dev)...) {
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	dir := s.dir(st.role)
	if st.dir != "" {
		dir = s.dir(st.dir)
	}
	t.Logf("%s on %q:\n%s", b, dev, text)
	if b.Console {
		s.console(s.devices[dev], text)
		return
	}
	if b.Host != "" {
		text = hostCommand(t, b, text)
	}
	d := s.devices[dev]
	if dev == "" {
		d = s.devices["court-a"]
	}
	bin := s.binDir(st.role, d, st.atPi)
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if st.atPi {
		env = append(env, "CUSTODIAN_DATA_DIR="+d.data)
		d.Stop()
		defer d.Start()
	}
	prelude := strings.Join(s.vars[st.role], "\n") + "\n"
	// No runbook command waits for more than a press; one that does (a
	// prompt on a terminal the test does not have) is stopped.
	ctx, cancel := context.WithTimeout(context.Background(), blockLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", prelude+text)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second // a stopped block's children may hold its output open
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pressed, stopped := false, false
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v\n%s", b, err, out)
			}
			if b.Host == "systemd" && !stopped {
				t.Fatalf("%s: the service exited by itself:\n%s", b, out)
			}
			t.Logf("%s", out)
			// A runbook's command as written must not need a warning.
			if strings.Contains(out.String(), "warning: ") {
				t.Errorf("%s warns:\n%s", b, out)
			}
			s.vars[st.role] = append(s.vars[st.role], assignments(text)...)
			return
		case <-time.After(50 * time.Millisecond):
		}
		if !pressed && strings.Contains(out.String(), "press the button on the custodian") {
			// The officer reads the appliance's screen, then presses.
			mustCLI(t, "--data-dir", d.data, "button", "press")
			pressed = true
		}
		// systemctl stop once the service reported on every appliance (it
		// keeps what it verified and exits 0), or at its first warning,
		// which fails the block.
		if b.Host == "systemd" && !stopped && (polled(text, out.String()) || strings.Contains(out.String(), "warning: ")) {
			cmd.Process.Signal(syscall.SIGTERM)
			stopped = true
		}
	}
}

// monitorPaths put the monitor's files in the auditor's directory: its
// state, its configuration, and the binary on PATH.
var monitorPaths = [][2]string{
	{"/usr/local/bin/custodian", "custodian"},
	{"/var/lib/custodian-monitor", "custodian-monitor"},
	{"/etc/custodian-monitor/", ""},
}

var (
	cronLineRE = regexp.MustCompile(`^(?:\S+\s+){6}(\S.*)$`)
	instanceRE = regexp.MustCompile(`systemctl enable --now \S+@(\S+)`)
)

// hostCommand is the command a host file runs, as a shell would run it:
// each cron.d line's command (after the five time fields and the user),
// or a systemd unit's ExecStart (continued lines joined), which runs as a
// service until runBlock stops it.
func hostCommand(t *testing.T, b runbookBlock, text string) string {
	t.Helper()
	var cmds []string
	switch b.Host {
	case "crontab":
		for _, line := range strings.Split(text, "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			m := cronLineRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: %q is not a cron.d line (five time fields, a user, a command)", b, line)
			}
			cmds = append(cmds, m[1])
		}
	case "systemd":
		for _, line := range strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n") {
			if c, ok := strings.CutPrefix(line, "ExecStart="); ok {
				cmds = append(cmds, "exec "+c) // the signal that stops it reaches the command
			}
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("%s runs no command", b)
	}
	return strings.Join(cmds, "\n") + "\n"
}

// instantiate is a systemd template unit as systemd runs it: %i is the
// instance its "systemctl enable --now NAME@INSTANCE" line names.
func instantiate(unit string) string {
	if m := instanceRE.FindStringSubmatch(unit); m != nil {
		return strings.ReplaceAll(unit, "%i", m[1])
	}
	return unit
}

// polled: a monitor service has reported on each appliance it follows.
func polled(cmd, out string) bool {
	return strings.Count(out, " entries, ") >= strings.Count(cmd, "--appliance ")
}

// blockLimit bounds one block's run.
const blockLimit = 3 * time.Minute

var assignmentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=\S*$`)

// assignments are the lines of text that set a shell variable, for the
// role's later blocks: a runbook is read as one shell session.
func assignments(text string) []string {
	var vars []string
	for _, line := range strings.Split(text, "\n") {
		if assignmentRE.MatchString(line) {
			vars = append(vars, line)
		}
	}
	return vars
}

// binDir is the directory put first on a role's PATH: custodian (and
// bin/custodian, for the operator's build host) is the binary under test;
// at the device it also names the device's TPM, which the appliance's
// console adds to every command.
func (s *story) binDir(role string, d *storyDevice, atPi bool) string {
	if !atPi {
		dir := filepath.Join(s.dir(role), "bin")
		if _, err := os.Lstat(filepath.Join(dir, "custodian")); err != nil {
			os.MkdirAll(dir, 0o755)
			if err := os.Symlink(binary, filepath.Join(dir, "custodian")); err != nil {
				s.t.Fatal(err)
			}
		}
		return dir
	}
	dir := filepath.Join(s.root, "at-"+d.id)
	os.MkdirAll(dir, 0o755)
	script := fmt.Sprintf("#!/bin/sh\nexec %s --tpm %s \"$@\"\n", binary, d.sw.Spec())
	if err := os.WriteFile(filepath.Join(dir, "custodian"), []byte(script), 0o755); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

// console runs a console block's lines through the appliance's own console
// (firmware/console) on d: each "custodian> " line is sent as typed; put
// sends the file of that name from the operator's directory, and get
// writes NAME.b64 (the lines it prints) and NAME there. Lines after a
// command are its example output, not input: each must match what the
// console printed for it (shownOutput).
func (s *story) console(d *storyDevice, text string) {
	t := s.t
	t.Helper()
	op := s.dir("operator")
	transfer := filepath.Join(d.data, "transfer")
	if err := os.MkdirAll(transfer, 0o700); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	var lines []string
	shown := make(map[int][]string) // the example output under line i
	putData := false                // the doc's base64 lines of a put, up to "."
	for _, line := range strings.Split(text, "\n") {
		cmd, ok := strings.CutPrefix(line, console.Prompt)
		if !ok {
			if putData {
				putData = line != "."
			} else if line != "" && len(lines) > 0 {
				shown[len(lines)-1] = append(shown[len(lines)-1], line)
			}
			continue
		}
		lines = append(lines, cmd)
		in.WriteString(cmd + "\n")
		putData = strings.HasPrefix(cmd, "put ")
		if name, ok := strings.CutPrefix(cmd, "put "); ok {
			data, err := os.ReadFile(filepath.Join(op, name))
			if err != nil {
				t.Fatalf("put %s: %v", name, err)
			}
			enc := base64.StdEncoding.EncodeToString(data)
			for len(enc) > 76 {
				in.WriteString(enc[:76] + "\n")
				enc = enc[76:]
			}
			in.WriteString(enc + "\n.\n")
		}
	}
	var out bytes.Buffer
	c := &console.Console{In: &in, Out: &out, Files: &console.Transfer{Dir: transfer, UID: -1, GID: -1},
		Runner: execRunner{}, Daemon: d, DataDir: d.data, TPM: d.sw.Spec(),
		Commands: append([]string{"button"}, console.DefaultCommands...)}
	if err := c.Serve(context.Background()); err != io.EOF && err != nil {
		t.Fatalf("console: %v\n%s", err, out.String())
	}
	t.Logf("console of %s:\n%s", d.id, out.String())
	if strings.Contains(out.String(), "warning: ") {
		t.Errorf("console lines warn:\n%s", out.String())
	}
	// One answer per line sent: what follows each prompt, up to its exit line.
	answers := strings.Split(out.String(), console.Prompt)[1:]
	for i, cmd := range lines {
		if i >= len(answers) || !strings.HasSuffix(answers[i], "[exit 0]\n") {
			t.Fatalf("console line %q failed", cmd)
		}
		for _, want := range shown[i] {
			if !shownOutput(want).MatchString(answers[i]) {
				t.Errorf("console line %q printed\n%s\nnot the runbook's %q", cmd, answers[i], want)
			}
		}
		if name, ok := strings.CutPrefix(cmd, "get "); ok {
			b64 := strings.TrimSuffix(answers[i], ".\n[exit 0]\n")
			stem := strings.TrimSuffix(name, filepath.Ext(name))
			writeFile(t, filepath.Join(op, stem+".b64"), []byte(b64))
			data, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(b64, "\n", ""))
			if err != nil {
				t.Fatalf("get %s: %v", name, err)
			}
			writeFile(t, filepath.Join(op, name), data)
		}
	}
}

// shownOutput matches a line of a runbook's example output: "…" (or
// "...") stands for anything, and every number for any number, since the
// example's counts and sizes are not this run's.
func shownOutput(line string) *regexp.Regexp {
	pat, last := "(?m)^", 0
	for _, m := range wildcardRE.FindAllStringIndex(line, -1) {
		pat += regexp.QuoteMeta(line[last:m[0]])
		if c := line[m[0]]; c >= '0' && c <= '9' {
			pat += "[0-9]+"
		} else {
			pat += ".*"
		}
		last = m[1]
	}
	return regexp.MustCompile(pat + regexp.QuoteMeta(line[last:]) + "$")
}

var wildcardRE = regexp.MustCompile(`…|\.\.\.|[0-9]+`)

// execRunner runs the console's commands as the appliance's init does,
// without its sandbox.
type execRunner struct{}

func (execRunner) Run(ctx context.Context, c console.Command) (int, error) {
	cmd := exec.CommandContext(ctx, binary, c.Args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = c.Dir, c.Out, c.Out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// Stop, Start and Status make a device's daemon the console's.
func (d *storyDevice) Stop() error {
	d.stopServe()
	return nil
}

func (d *storyDevice) Start() {
	if d.want {
		d.startServe()
	}
}

func (d *storyDevice) Status() string {
	if d.serve != nil {
		return "running"
	}
	return "stopped"
}

func (d *storyDevice) stopServe() {
	if d.serve == nil {
		return
	}
	d.serve.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.serve.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.serve.Process.Kill()
		<-done
	}
	d.serve = nil
}

// serveArgs is the daemon's command line as the init builds it from the
// operator's config.toml (operator.md, step 2), with this machine's
// address, the simulated button and a file for a display.
func (d *storyDevice) serveArgs(t *testing.T) []string {
	c, err := config.Parse(operatorConfig(t))
	if err != nil {
		t.Fatalf("operator.md's config.toml: %v", err)
	}
	c.Serve.Listen = fmt.Sprintf("127.0.0.1:%d", d.port)
	c.Serve.Button, c.Serve.LED = "sim", ""
	c.Serve.Display = filepath.Join(d.data, "..", d.id+".display.txt")
	return append(rootinit.ServeArgs(c, d.data, d.sw.Spec()), "--event-log", d.eventLog())
}

// eventLog is the boot event log, /run/custodian/boot.cel on the appliance.
func (d *storyDevice) eventLogDir() string { return filepath.Join(d.data, "..", "run") }
func (d *storyDevice) eventLog() string    { return filepath.Join(d.eventLogDir(), bootmeasure.LogFile) }

// startServe starts the daemon and waits until it serves or gives up; a
// daemon that did not start shows in its log, which the story checks.
func (d *storyDevice) startServe() {
	d.log = &syncBuffer{}
	cmd := exec.Command(binary, d.args...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(d.log, "starting the daemon: %v\n", err)
		return
	}
	d.serve = cmd
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.log.String(), "serving on") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// operatorConfig is the config.toml of operator.md, step 2.
func operatorConfig(t *testing.T) []byte {
	data, err := os.ReadFile("../docs/operator.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "```toml\n")
	toml, _, _ := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("operator.md shows no config.toml")
	}
	return []byte(toml)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// carry gives a file from one role to another ("court-a" in the names is
// the device the step is on).
func carry(from, fromName, to, toName string) func(s *story, device string) {
	return func(s *story, device string) {
		src, dst := fromName, toName
		if device != "" {
			src = strings.ReplaceAll(src, "court-a", device)
			dst = strings.ReplaceAll(dst, "court-a", device)
		}
		s.give(from, src, to, dst)
	}
}

func (s *story) give(from, fromName, to, toName string) {
	data, err := os.ReadFile(filepath.Join(s.dir(from), fromName))
	if err != nil {
		s.t.Fatalf("%s has no %s for %s: %v", from, fromName, to, err)
	}
	dst := filepath.Join(s.dir(to), toName)
	writeFile(s.t, dst, data)
	// A key file keeps its mode: the client refuses one others can read.
	if fi, err := os.Stat(filepath.Join(s.dir(from), fromName)); err == nil {
		os.Chmod(dst, fi.Mode().Perm())
	}
}

// makeCourt is the court's PKI, which no runbook here makes: its root CA
// and CRL, and the judge's card (SoftHSM2) with a key under OpenSC's name
// for PIV slot 9c and the card's certificate request.
func (s *story) makeCourt(string) {
	t := s.t
	s.court = trusttest.NewRoot(t, "District Court Root", s.now.Add(-time.Hour))
	key, err := x509.MarshalPKCS8PrivateKey(s.court.Key)
	if err != nil {
		t.Fatal(err)
	}
	root := trusttest.PEM(s.court.Cert)
	crl := trusttest.CRLPEM(s.court.CRL(t, s.now.Add(-time.Hour), s.now.Add(7*24*time.Hour)))
	admin := s.dir("court-trust-admin")
	writeFile(t, filepath.Join(admin, "court-root.pem"), root)
	writeFile(t, filepath.Join(admin, "court-root.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
	writeFile(t, filepath.Join(admin, "court-root.crl.pem"), crl)
	judge := s.dir("judge")
	writeFile(t, filepath.Join(judge, "court-root.pem"), root)
	writeFile(t, filepath.Join(judge, "court-root.crl.pem"), crl)
	writeFile(t, filepath.Join(judge, "court-root-and-crl.pem"), append(append([]byte{}, root...), crl...))
	writeFile(t, filepath.Join(s.dir("operator"), "court-a-root.pem"), root)

	// The second authority's card is a second token beside the judge's.
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "second",
		"--pin", s.token.PIN, "--so-pin", "13579").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	s.second = &softhsmtest.Token{Dir: s.token.Dir, Label: "second", PIN: s.token.PIN}
	s.cardRequest(s.token, "Judge Ada Lovelace", filepath.Join(admin, "judge.csr"))
	s.cardRequest(s.second, "Justice Bea Second", filepath.Join(admin, "second.csr"))
}

// cardRequest puts a key on a card where OpenSC shows PIV slot 9c's, and
// writes the card's certificate request for name.
func (s *story) cardRequest(card *softhsmtest.Token, name, path string) {
	key := trusttest.ECKeyP256(s.t)
	card.ImportKey(s.t, key, "SIGN key", "02")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		s.t.Fatal(err)
	}
	writeFile(s.t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
}

// certifyCards writes the certificates the court issued
// (court-trust-admin.md, "What judges' certificates must carry") to the
// judge's card and the second authority's.
func (s *story) certifyCards(string) {
	s.certifyCard(s.token, "judge.pem")
	s.certifyCard(s.second, "second.pem")
}

func (s *story) certifyCard(card *softhsmtest.Token, name string) {
	data, err := os.ReadFile(filepath.Join(s.dir("court-trust-admin"), name))
	if err != nil {
		s.t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		s.t.Fatal("judge.pem holds no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		s.t.Fatal(err)
	}
	card.WriteCertificate(s.t, cert, "Certificate for Digital Signature", "02")
}

// boot is the Pi coming up on the approved image: a TPM (swtpm, with its
// own EK CA, which the escrow authority and auditors are given in place of
// the vendors' roots) whose early init measured the image.
func (s *story) boot(id string) {
	t := s.t
	d := s.devices[id]
	d.sw = tpmtest.StartSwtpm(s.top)
	d.data = filepath.Join(s.root, "devices", id, "data")
	if err := os.MkdirAll(d.data, 0o700); err != nil {
		t.Fatal(err)
	}
	s.top.Cleanup(d.stopServe)
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	// What the early init measures, with its boot event log.
	if _, err := bootmeasure.Boot(conn, imageSpec(1), imageRoot(s.t), d.eventLogDir()); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	for _, role := range []string{"escrow-authority", "auditor"} {
		for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
			data, err := os.ReadFile(filepath.Join(d.sw.Dir, "ca", name))
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(s.dir(role), "ek-cas.pem"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(data)
			f.Close()
		}
	}
}

// firstCheckpoint is a checkpoint an auditor kept from an earlier visit,
// for auditor.md's ledger verify --old.
func (s *story) firstCheckpoint(string) {
	d := s.devices["court-a"]
	out := mustCLI(s.t, "--tpm", d.sw.Spec(), "--data-dir", d.data, "ledger", "checkpoint")
	writeFile(s.t, filepath.Join(s.dir("auditor"), "checkpoint-2026-11-01.txt"), []byte(out))
}

// startServe does what operator.md step 5 does on the card (skipped here:
// it needs an SD card) and what the init does at boot: the TLS files of
// step 4 go to the data directory's tls/, and the daemon starts.
func (s *story) startServe(id string) {
	d := s.devices[id]
	op := s.dir("operator")
	for _, name := range []string{"server.pem", "server.key", "officer-ca.pem"} {
		data, err := os.ReadFile(filepath.Join(op, name))
		if err != nil {
			s.t.Fatal(err)
		}
		writeFile(s.t, filepath.Join(d.data, "tls", name), data)
		if name == "server.key" {
			os.Chmod(filepath.Join(d.data, "tls", name), 0o600)
		}
	}
	if missing := rootinit.Missing(d.data); len(missing) > 0 {
		s.t.Fatalf("%s lacks %v", id, missing)
	}
	writeFile(s.t, filepath.Join(d.data, "..", id+".display.txt"), nil)
	d.args, d.want = d.serveArgs(s.t), true
	d.startServe()
	if !strings.Contains(d.log.String(), "serving on") {
		s.t.Fatalf("the daemon of %s did not start:\n%s", id, d.log)
	}
}

// envelopes are what the messaging provider holds for the warrant: the
// agency.md example's message.env (alice-1.env) and a second one.
func (s *story) envelopes(string) {
	p := s.dir("messaging-provider")
	writeFile(s.t, filepath.Join(p, "carol.txt"), []byte("carol's message\n"))
	cmd := exec.Command(binary, "escrow", "seal", "--escrow", "escrow-2026-11.pub.json", "--target", "carol@example.org",
		"--in", "carol.txt", "--out", "carol-1.env")
	cmd.Dir = p
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("escrow seal: %v\n%s", err, out)
	}
	s.give("messaging-provider", "message.env", "judge", "alice-1.env")
	s.give("messaging-provider", "carol-1.env", "judge", "carol-1.env")
	s.give("agency", "agency.pub", "judge", "agency.pub")
	s.give("messaging-provider", "message.env", "agency", "message.env")
	s.give("messaging-provider", "message.env", "agency", "envelopes/alice-1.env")
	s.give("messaging-provider", "carol-1.env", "agency", "envelopes/carol-1.env")
}

// toOfficer: the operator's step 4 made the officer's certificate from
// the officer's request; the judge hands over the warrant.
func (s *story) toOfficer(string) {
	for _, name := range []string{"server-ca.pem", "officer.pem"} {
		s.give("operator", name, "officer", name)
	}
	s.give("judge", "w2.p7s", "officer", "w.p7s")
}

func (s *story) toAgency(string) {
	for _, id := range releasing {
		s.give("officer", id+".release.json", "agency", id+".release.json")
	}
	s.give("escrow-authority", "ceremony-2026-11/escrow-2026-11.pub.json", "agency", "escrow-2026-11.pub.json")
}

func (s *story) toAuditor(string) {
	s.give("operator", "server-ca.pem", "auditor", "server-ca.pem")
	data, err := os.ReadFile(filepath.Join(s.devices["court-a"].data, "ledger-key.pub"))
	if err != nil {
		s.t.Fatal(err)
	}
	writeFile(s.t, filepath.Join(s.dir("auditor"), "ledger-key.pub"), data)
	// The verifier keys the operators published, for the monitor.
	for _, id := range releasing {
		data, err := os.ReadFile(filepath.Join(s.devices[id].data, "ledger-key.pub"))
		if err != nil {
			s.t.Fatal(err)
		}
		writeFile(s.t, filepath.Join(s.dir("auditor"), strings.Replace(id, "court", "custodian", 1)+".ledger-key.pub"), data)
	}
	// What the escrow authority publishes: no challenge secret.
	s.give("escrow-authority", "court-a/enrollment.json", "auditor", "court-a.enrollment.json")
	s.give("escrow-authority", "court-a/court-a.record", "auditor", "court-a.record")
	s.give("escrow-authority", "authority.pub", "auditor", "authority.pub")
	s.give("escrow-authority", "policy.json", "auditor", "policy.json")
}

// toCourt: the court pins court-a's verifier key as its operator
// published it.
func (s *story) toCourt(string) {
	data, err := os.ReadFile(filepath.Join(s.devices["court-a"].data, "ledger-key.pub"))
	if err != nil {
		s.t.Fatal(err)
	}
	writeFile(s.t, filepath.Join(s.dir("officer"), "ledger-key.pub"), data)
}

// openingToAuditor: the court publishes its opening, its root and a CRL.
func (s *story) openingToAuditor(string) {
	s.give("officer", "court-a.opening.json", "auditor", "court-a.opening.json")
	s.give("court-trust-admin", "court-root.pem", "auditor", "court-root.pem")
	s.give("court-trust-admin", "court-root.crl.pem", "auditor", "court-root.crl.pem")
}

// checkOpened: what the agency opened is what was sealed.
func (s *story) checkOpened() {
	for _, c := range [][2]string{
		{"agency/message.txt", "messaging-provider/message.txt"},
		{"agency/plaintexts/alice-1", "messaging-provider/message.txt"},
		{"agency/plaintexts/carol-1", "messaging-provider/carol.txt"},
	} {
		got, err1 := os.ReadFile(filepath.Join(s.root, c[0]))
		want, err2 := os.ReadFile(filepath.Join(s.root, c[1]))
		if err1 != nil || err2 != nil || len(want) == 0 || !bytes.Equal(got, want) {
			s.t.Errorf("%s is %q, %s is %q (%v, %v)", c[0], got, c[1], want, err1, err2)
		}
	}
}

func (s *story) toProvider(string) {
	s.give("escrow-authority", "ceremony-2026-11/escrow-2026-11.pub.json", "messaging-provider", "escrow-2026-11.pub.json")
	writeFile(s.t, filepath.Join(s.dir("messaging-provider"), "message.txt"), []byte("alice's message\n"))
}

// checkout is what auditor.md's go run needs: the repository's module and
// docs/examples, here linked into the auditor's directory.
func (s *story) checkout(string) {
	repo, err := filepath.Abs("..")
	if err != nil {
		s.t.Fatal(err)
	}
	for _, name := range []string{"go.mod", "go.sum", "docs"} {
		if err := os.Symlink(filepath.Join(repo, name), filepath.Join(s.dir("auditor"), name)); err != nil {
			s.t.Fatal(err)
		}
	}
}

// imageRoot is the story's image: the root filesystem operator.md builds,
// with its config.toml; imageSpec measures it at a security version.
func imageRoot(t *testing.T) fstest.MapFS { return measuretest.Root(string(operatorConfig(t))) }

func imageSpec(securityVersion uint64) bootmeasure.Spec {
	spec := bootmeasure.DefaultSpec()
	spec.SecurityVersion = securityVersion
	return spec
}

// newImage is operator.md step 12's image measure of the new image (which
// needs an image, skipImage): the same root at security version 2, an
// image that fixes a flaw.
func (s *story) newImage(string) {
	policy, err := imageSpec(2).Predict(imageRoot(s.t), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	data, err := policy.Marshal()
	if err != nil {
		s.t.Fatal(err)
	}
	writeFile(s.t, filepath.Join(s.dir("escrow-authority"), "new-policy.json"), data)
}

// bootNewImage is update apply's reboot into the new slot: the TPM powers
// off and on, and the early init measures the new image.
func (s *story) bootNewImage(id string) {
	d := s.devices[id]
	d.stopServe()
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	d.sw.PowerCycle(s.t, conn)
	// /run is a tmpfs: a reboot empties it.
	if err := os.RemoveAll(d.eventLogDir()); err != nil {
		s.t.Fatal(err)
	}
	if _, err := bootmeasure.Boot(conn, imageSpec(2), imageRoot(s.t), d.eventLogDir()); err != nil {
		s.t.Fatal(err)
	}
	conn.Close()
	d.startServe()
	if !strings.Contains(d.log.String(), "serving on") {
		s.t.Fatalf("the daemon of %s did not start on the new image:\n%s", id, d.log)
	}
}

// backUp and restore are what operator.md step 8 tells the operator to do
// with the card in the build host: copy partition 6, and put a copy back.
func (s *story) backUp(id string) {
	d := s.devices[id]
	if out, err := exec.Command("cp", "-a", d.data, d.data+".backup").CombinedOutput(); err != nil {
		s.t.Fatalf("backup: %v\n%s", err, out)
	}
}

func (s *story) restore(id string) {
	d := s.devices[id]
	if err := os.RemoveAll(d.data); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(d.data+".backup", d.data); err != nil {
		s.t.Fatal(err)
	}
	code, _, errOut := cli(s.t, "--tpm", d.sw.Spec(), "--data-dir", d.data, "ledger", "verify")
	if code == 0 || !strings.Contains(errOut, "ledger blocked") {
		s.t.Fatalf("the restored ledger is not blocked: exit %d\n%s", code, errOut)
	}
}

// judgeSummary: the targets and envelopes judge.md's summary of warrant
// new shows are those of the warrant the story's judge wrote from the
// envelopes agency.md's sender sealed, so the runbooks tell one story.
func (s *story) judgeSummary(string) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "judge.md"))
	if err != nil {
		s.t.Fatal(err)
	}
	out := mustCLI(s.t, "warrant", "show", filepath.Join(s.dir("judge"), "w.json"))
	n := 0
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "Target:") || strings.HasPrefix(line, "Envelopes:") {
			n++
			if !strings.Contains(out, line+"\n") {
				s.t.Errorf("judge.md shows %q; the story's warrant shows:\n%s", line, out)
			}
		}
	}
	if n == 0 {
		s.t.Error("judge.md shows no Target: or Envelopes: line of a warrant")
	}
}

func (s *story) ledgerVerifies(id string) {
	d := s.devices[id]
	out := mustCLI(s.t, "--tpm", d.sw.Spec(), "--data-dir", d.data, "ledger", "verify")
	if !strings.Contains(out, "verifies") {
		s.t.Fatalf("ledger verify: %s", out)
	}
}

// intermediates are the CAs of court-trust-admin.md section 2's other
// cases: a judges' CA under the root, and a policy CA with an issuing CA
// under it, each with its CRL.
func (s *story) intermediates(string) {
	admin := s.dir("court-trust-admin")
	from, until := s.now.Add(-time.Hour), s.now.Add(7*24*time.Hour)
	judges := s.court.Intermediate(s.t, "District Court Judges CA", from)
	policy := s.court.Intermediate(s.t, "District Court Policy CA", from)
	issuing := policy.Intermediate(s.t, "District Court Issuing CA", from)
	for name, ca := range map[string]*trusttest.CA{"judges-ca": judges, "policy-ca": policy, "issuing-ca": issuing} {
		writeFile(s.t, filepath.Join(admin, name+".pem"), trusttest.PEM(ca.Cert))
		writeFile(s.t, filepath.Join(admin, name+".crl.pem"), trusttest.CRLPEM(ca.CRL(s.t, from, until)))
	}
}

// withdrawn: with its newer refusal, a device's records no longer
// vouch for it; without the refusal they still do.
func (s *story) withdrawn(id string) {
	dir := s.dir("escrow-authority")
	verify := func(records ...string) (int, string) {
		args := []string{"enroll", "verify", "--ek-roots", "ek-cas.pem", "--in", id + "/enrollment.json", "--authority-key", "authority.pub"}
		for _, r := range records {
			args = append(args, "--record", id+"/"+r)
		}
		cmd := exec.Command(binary, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			s.t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := verify(id + ".record"); code != 0 {
		s.t.Fatalf("%s's first record does not verify alone: exit %d\n%s", id, code, out)
	}
	code, out := verify(id+".record", id+".2.record")
	if code == 0 || !strings.Contains(out, "refused this enrollment") || !strings.Contains(out, "withdrawn") {
		s.t.Fatalf("%s's records with the refusal: exit %d\n%s", id, code, out)
	}
}

// monitored: the monitor's --entries file holds each releasing
// appliance's ledger once, entry 0 up to the tree its state file (mode
// 0600, as auditor.md says) keeps, with the story's release in it.
func (s *story) monitored(string) {
	dir := filepath.Join(s.dir("auditor"), "custodian-monitor")
	data, err := os.ReadFile(filepath.Join(dir, "entries.jsonl"))
	if err != nil {
		s.t.Fatal(err)
	}
	seen := map[string][]int64{}
	kinds := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e struct {
			Origin string `json:"origin"`
			Index  int64  `json:"index"`
			Kind   string `json:"kind"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			s.t.Fatalf("entries.jsonl: %v: %q", err, line)
		}
		seen[e.Origin] = append(seen[e.Origin], e.Index)
		kinds[e.Origin] = append(kinds[e.Origin], e.Kind)
	}
	for _, id := range releasing {
		var st struct {
			Checkpoint string `json:"checkpoint"`
		}
		state := filepath.Join(dir, "custodian_"+id+".json")
		raw, err := os.ReadFile(state)
		if err != nil {
			s.t.Fatal(err)
		}
		if fi, err := os.Stat(state); err != nil {
			s.t.Fatal(err)
		} else if fi.Mode().Perm() != 0o600 {
			s.t.Errorf("%s has mode %v, want 0600", state, fi.Mode().Perm())
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			s.t.Fatal(err)
		}
		var origin string
		var size int64
		if _, err := fmt.Sscanf(st.Checkpoint, "%s\n%d\n", &origin, &size); err != nil || origin != "custodian/"+id {
			s.t.Fatalf("%s's state keeps checkpoint %q (%v)", id, st.Checkpoint, err)
		}
		got := seen[origin]
		want := make([]int64, size)
		for i := range want {
			want[i] = int64(i)
		}
		if !slices.Equal(got, want) {
			s.t.Errorf("the monitor wrote entries %v of %s, whose verified tree has %d", got, origin, size)
		}
		if !slices.Contains(kinds[origin], "release") {
			s.t.Errorf("the monitor wrote no release entry of %s: %v", origin, kinds[origin])
		}
	}
	// The cron line keeps stdout in a report file: its poll, nothing new.
	report, err := os.ReadFile(filepath.Join(dir, "report.log"))
	if err != nil || !strings.Contains(string(report), "custodian/court-a: ") || !strings.Contains(string(report), "none new") {
		s.t.Errorf("the cron line's report.log: %q (%v)", report, err)
	}
}
