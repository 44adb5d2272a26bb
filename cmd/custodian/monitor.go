package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/release"
)

// custodian monitor is the public's watch on appliances: it follows each
// one's ledger as a C2SP tlog-tiles log, proves every checkpoint it is
// served consistent with every one it saw before, and raises the alarm
// when an appliance shows two histories, shrinks its ledger, or serves a
// checkpoint its pinned key did not sign. What it has verified stays on
// disk, so a restart (or the next cron run) picks up where it stopped.

// finding is what a poll found wrong; each is its own exit status, the
// more serious the higher, so that the status of a run over several
// appliances is the worst one.
type finding int

const (
	findUnreachable  finding = 3 + iota // 3: the server or network failed; says nothing about the log
	findBadTiles                        // 4: tiles or bundles that are not the signed tree, or a signed tree no ledger can be
	findBadSignature                    // 5: a checkpoint the pinned key did not sign, or of another log
	findRollback                        // 6: no longer raised (a smaller signed tree proves nothing: see findStale); a state that latched it can be cleared
	findSplitView                       // 7: two signed trees that cannot both be one history
	findStale                           // 8: a signed tree smaller than one seen: a stale copy, or a rollback
)

var findingNames = map[finding]string{
	findUnreachable:  "unreachable",
	findBadTiles:     "bad tiles",
	findBadSignature: "bad signature",
	findRollback:     "rollback",
	findSplitView:    "split view",
	findStale:        "stale or rolled back",
}

// severity orders findings for a run's exit status, the worst last. A
// stale tree is worse than silence but proves nothing, so it ranks below
// what the tiles or signatures show.
var severity = []finding{findUnreachable, findStale, findBadTiles, findBadSignature, findRollback, findSplitView}

func (f finding) rank() int { return slices.Index(severity, f) }

// passing reports whether a finding may pass by itself: the next poll
// looks again. The others stop a service: a person must look.
func (f finding) passing() bool { return f == findUnreachable || f == findStale }

// monitorAlarm is one finding on one appliance, as the report says it.
type monitorAlarm struct {
	Kind     string   `json:"kind"` // a findingNames value
	Origin   string   `json:"origin"`
	Message  string   `json:"message"`
	Evidence []string `json:"evidence,omitempty"` // files in the state directory
}

// finding is the alarm's kind, or 0 for a kind this version does not know.
func (a *monitorAlarm) finding() finding {
	for f, name := range findingNames {
		if name == a.Kind {
			return f
		}
	}
	return 0
}

func (a *monitorAlarm) Error() string {
	s := fmt.Sprintf("%s: %s: %s", a.Origin, a.Kind, a.Message)
	for _, e := range a.Evidence {
		s += "\n  evidence: " + e
	}
	return s
}

// monitorFailed is a run's outcome when anything was found: every alarm,
// and the exit status of the worst.
type monitorFailed struct {
	alarms []*monitorAlarm
}

func (m *monitorFailed) Error() string {
	lines := make([]string, len(m.alarms))
	for i, a := range m.alarms {
		lines[i] = a.Error()
	}
	return strings.Join(lines, "\n")
}

func (m *monitorFailed) ExitCode() int {
	worst := findUnreachable
	for _, a := range m.alarms {
		if a.finding().rank() > worst.rank() {
			worst = a.finding()
		}
	}
	return int(worst)
}

// hint says what to do about the worst finding.
func (m *monitorFailed) hint() error {
	switch finding(m.ExitCode()) {
	case findSplitView, findRollback:
		return withHint(m, "keep the evidence files: they are what the appliance signed (docs/auditor.md, Monitoring, says which of them anyone can check); publish them and tell its keeper and the other custodians",
			"the monitor reports this appliance until you run it once with --clear-alarm ORIGIN, which keeps the last checkpoint it verified and follows on from there")
	case findStale:
		return withHint(m, "a stale cache or mirror serves an old checkpoint, or the appliance went back; the monitor kept the newer one and polls again. If it lasts, compare with other monitors and ask the appliance's keeper")
	case findBadSignature:
		return withHint(m, "check --verifier-key against the appliance's published ledger-key.pub and --appliance against its address; if both are right, someone else answers for the appliance")
	case findBadTiles:
		return withHint(m, "the server's tiles do not match the checkpoint it signed; nothing of them was accepted: tell the appliance's keeper or the mirror's")
	}
	return withHint(m, "the appliance or the network did not answer; the monitor tries again at the next poll")
}

type monitorFlags struct {
	appliances []string
	keys       []string
	stateDir   string
	entries    string
	interval   time.Duration
	retries    int
	once       bool
	clear      []string
	escrow     string
	network    clientTLS
}

func newMonitorCommand(g *globals) *cobra.Command {
	var m monitorFlags
	cmd := &cobra.Command{
		Use:   "monitor --appliance URL --verifier-key KEY [--appliance URL --verifier-key KEY ...] --state DIR",
		Short: "Follow appliances' public ledgers and raise the alarm on a split view, a smaller tree or a bad signature",
		Long: `Follow one or more appliances' ledgers, served as C2SP tlog-tiles logs, and
prove every checkpoint consistent with every one seen before. New entries are
printed one a line (and with --entries appended as JSON lines). The verified
state is kept in --state, one file per appliance.

Exit status: 0 all verified; 1 the monitor could not run (bad flags, --state in
use or not writable); 3 an appliance did not answer (--once); 4 its tiles or
entry bundles are not the tree its checkpoint signs, or are withheld; 5 a
checkpoint that does not verify with the pinned key; 7 a split view (two signed
trees that are not one history, or with --escrow a checkpoint its witnesses
refuse, having cosigned another history), kept in --state as evidence and
reported until --clear-alarm; 8 a signed tree smaller than one seen (a stale copy or a
rollback: not proof, the newer checkpoint is kept and followed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return m.run(cmd.Context(), g)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&m.appliances, "appliance", nil, "an appliance's address (its ledger is at /v1/tlog/), or the URL of a static copy written by ledger export (ending in /); repeat for several")
	fl.StringArrayVar(&m.keys, "verifier-key", nil, "the appliance's pinned checkpoint verifier key, or a file holding it (ledger-key.pub); one per --appliance, in the same order")
	fl.StringVar(&m.stateDir, "state", "", "the directory where the verified checkpoints and any evidence are kept (created 0700)")
	fl.StringVar(&m.entries, "entries", "", "also append each new entry as a JSON line to this file")
	fl.DurationVar(&m.interval, "interval", 5*time.Minute, "how often to poll each appliance")
	fl.IntVar(&m.retries, "retries", 3, "how many times to try again, with growing waits, when an appliance does not answer")
	fl.BoolVar(&m.once, "once", false, "poll each appliance once and exit (for cron)")
	fl.StringArrayVar(&m.clear, "clear-alarm", nil, "forget the alarm raised for this log (its origin, custodian/ID) once its evidence is kept; the last checkpoint verified stays, and the log is followed on from it")
	fl.StringVar(&m.escrow, "escrow", "", "an escrow file (escrow-K.pub.json) whose witnesses are asked whether each served checkpoint extends what they cosigned")
	m.network.register(cmd, false)
	fl.Lookup("ca").Usage = "trust only this CA certificate (PEM; it may hold several) for the appliances' TLS certificates, not the system's roots"
	fl.Lookup("insecure-http").Usage = "allow an http:// --appliance (a test daemon, or a static copy on a closed network): nothing is protected on the way"
	for _, f := range []string{"appliance", "verifier-key", "state"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func (m *monitorFlags) run(ctx context.Context, g *globals) error {
	followers, closeAll, err := m.open(g)
	if err != nil {
		return err
	}
	defer closeAll()
	if m.once {
		return m.round(ctx, followers)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		err := m.round(ctx, followers)
		if ctx.Err() != nil {
			return nil // stopped (SIGTERM, ^C): what was verified is kept
		}
		var failed *monitorFailed
		if err != nil && (!errors.As(err, &failed) || !finding(failed.ExitCode()).passing()) {
			return err
		}
		if err != nil { // only findings that may pass: said, and polled again next time
			fmt.Fprintf(g.stderr, "custodian: warning: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.interval):
		}
	}
}

// round polls every appliance once and collects what was found.
func (m *monitorFlags) round(ctx context.Context, followers []*follower) error {
	var failed monitorFailed
	var other error // the first error that is no finding (a full disk): the other appliances are still polled
	errs := make([]error, len(followers))
	var wg sync.WaitGroup
	for i, f := range followers { // at once: one slow or huge appliance does not hold the others
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.pollPatiently(ctx, m.retries)
		}()
	}
	wg.Wait()
	for i, f := range followers {
		if err := errs[i]; err != nil {
			var a *monitorAlarm
			if !errors.As(err, &a) {
				other = cmp.Or(other, fmt.Errorf("%s: %w", f.url, err))
				continue
			}
			failed.alarms = append(failed.alarms, a)
		}
	}
	if failed.alarms == nil {
		return other
	}
	if other != nil { // the findings decide the exit status; the error is still said
		fmt.Fprintf(followers[0].g.stderr, "custodian: error: %v\n", other)
	}
	return failed.hint()
}

// open checks the flags and loads each appliance's state.
func (m *monitorFlags) open(g *globals) ([]*follower, func(), error) {
	if len(m.appliances) != len(m.keys) {
		return nil, nil, withHint(fmt.Errorf("%d --appliance and %d --verifier-key: each appliance needs its key", len(m.appliances), len(m.keys)),
			"give --verifier-key right after each --appliance, in the same order")
	}
	if m.interval < time.Second {
		return nil, nil, withHint(fmt.Errorf("--interval %s is too short", m.interval), "poll at most once a second; appliances serve checkpoints cached for 5 s")
	}
	if m.retries < 0 {
		return nil, nil, badUsage(errors.New("--retries cannot be negative"))
	}
	if err := os.MkdirAll(m.stateDir, 0o700); err != nil {
		return nil, nil, err
	}
	unlock, err := lockState(m.stateDir)
	if err != nil {
		return nil, nil, err
	}
	out, err := openEntryLog(m.entries)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	closeAll := func() { out.close(); unlock() }
	var followers []*follower
	names := map[string]string{}
	var mu sync.Mutex
	for i, raw := range m.appliances {
		f, err := m.follower(g, raw, m.keys[i], out, &mu)
		if err == nil && names[f.name] != "" {
			err = withHint(fmt.Errorf("--appliance %s and %s are the same log (%s)", names[f.name], raw, f.st.Origin), "follow each appliance once")
		}
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		names[f.name] = raw
		followers = append(followers, f)
	}
	if err := clearAlarms(g, followers, m.clear); err != nil {
		closeAll()
		return nil, nil, err
	}
	return followers, closeAll, nil
}

// clearAlarms forgets the alarms of the logs named by --clear-alarm. The
// checkpoint last verified stays: a log cleared is followed on from it,
// never afresh, so the same split view is found again if it is still
// served.
func clearAlarms(g *globals, followers []*follower, origins []string) error {
	for _, origin := range origins {
		i := slices.IndexFunc(followers, func(f *follower) bool { return f.st.Origin == origin })
		if i < 0 {
			return withHint(fmt.Errorf("--clear-alarm %s: no --appliance of this run follows that log", origin),
				"give the origin the alarm names (custodian/ID), with the --appliance and --verifier-key of that appliance")
		}
		f := followers[i]
		if f.st.Alarm == nil {
			continue
		}
		f.st.Alarm = nil
		if err := f.save(); err != nil {
			return err
		}
		fmt.Fprintf(g.stderr, "custodian: %s: alarm cleared; following on from the checkpoint verified before\n", origin)
	}
	return nil
}

// lockState keeps a second monitor off the same --state: two would each
// move the state on from what they saw, and report entries twice.
func lockState(dir string) (unlock func(), err error) {
	return lockFile(filepath.Join(dir, lockName), "--state "+dir, func(holder string) error {
		return withHint(fmt.Errorf("--state %s is in use by %s", dir, holder), "run one monitor per state directory; give another --state to run a second")
	})
}

// follower builds the follower of one --appliance.
func (m *monitorFlags) follower(g *globals, raw, keyFlag string, out *entryLog, mu *sync.Mutex) (*follower, error) {
	key, err := readKeyArg("verifier-key", keyFlag)
	if err == nil {
		err = checkVerifierKey("verifier-key", key)
	}
	if err != nil {
		return nil, err
	}
	base, prefix, err := tlogURL("appliance", raw)
	if err != nil {
		return nil, err
	}
	c, err := g.client(base, m.network, appliancePeer)
	if err != nil {
		return nil, err
	}
	c.pace = newPacer() // below the appliance's per-client rate, which it shares with other readers
	f, err := loadFollower(g, m.stateDir, raw, key, c, prefix, out, mu)
	if err != nil {
		return nil, err
	}
	f.witnesses, err = newWitnessCheck(m.escrow, m.stateDir, f.name)
	return f, err
}

// tlogURL splits a log's URL, given with --flag, into the server (its
// scheme and host) and the log's path on it: /v1/tlog/ for an appliance's
// address, the path itself for a static copy.
func tlogURL(flag, raw string) (base *url.URL, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, "", withHint(fmt.Errorf("bad --%s %q", flag, raw), "give an address such as https://custodian-a:8443, or a static copy's URL ending in /")
	}
	if err := credentialsInURL("--"+flag, u, "which is never sent: a ledger is public", "serve a static copy without a password"); err != nil {
		return nil, "", err
	}
	prefix = u.Path
	switch {
	case prefix == "" || prefix == "/":
		prefix = release.TlogPrefix
	case !strings.HasSuffix(prefix, "/"):
		return nil, "", withHint(fmt.Errorf("--%s %s: a static copy's URL ends in /", flag, raw), "give the directory that holds checkpoint and tile/")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, prefix, nil
}
