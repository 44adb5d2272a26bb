package ledger_test

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestMain lets the test binary double as the process that crashes: with
// CRASH_LEDGER_DIR set it appends until killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CRASH_LEDGER_DIR"); dir != "" {
		os.Exit(appendUntilKilled(dir, os.Getenv("CRASH_TPM")))
	}
	os.Exit(m.Run())
}

// appendUntilKilled appends entries forever (or CRASH_APPENDS of them),
// printing "acked N" after Append returns for entry N. With
// CRASH_BEFORE_INDEX_COMMIT set it kills itself in the second append,
// between the journal's sync and the index's commit.
func appendUntilKilled(dir, spec string) int {
	conn, err := tpm.Open(spec)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	// As custodian serve does at start: swtpm has no resource manager,
	// and a process killed before this one may have left sessions loaded.
	if _, err := tpm.FlushStale(conn); err != nil {
		fmt.Println("error", err)
		return 2
	}
	cfg, err := crashConfig(conn)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	l, err := ledger.Open(dir, cfg)
	if err == nil {
		err = l.Blocked()
	}
	if err != nil {
		fmt.Println("error", err)
		return 3
	}
	// CRASH_APPENDS, when set, ends the run after that many entries.
	stop, _ := strconv.Atoi(os.Getenv("CRASH_APPENDS"))
	for {
		e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal,
			Outcome: ledger.OutcomeRefused, Reason: "crash-test"}
		var i int64
		if len(cfg.Bound) == 0 {
			i, err = l.Append(e, []byte("subject"), []byte("key-"+strconv.FormatInt(l.Size(), 10)))
		} else {
			// A change of the bound directory: one new file per entry.
			e.Kind, e.Outcome, e.Reason = ledger.KindTrust, ledger.OutcomeOK, ""
			path := filepath.Join(cfg.Bound[0].Path, fmt.Sprintf("crl-%d.pem", l.Size()))
			i, err = l.Change("trust", e, []byte(path), func() error { return durable.WriteFile(path, []byte(path), 0o600) })
		}
		if err != nil {
			fmt.Println("error", err)
			return 4
		}
		fmt.Println("acked", i)
		if os.Getenv("CRASH_BEFORE_INDEX_COMMIT") != "" {
			// The next commit dies once its journal record is synced,
			// before ledger.db commits and the TPM counts it.
			*ledger.BeforeIndexCommit = func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		}
		if stop--; stop == 0 {
			return 0
		}
	}
}

// TestInvariantAppendSurvivesKillAtAnyPoint kills an appending process with SIGKILL
// at random moments, 100 times. After each kill the ledger opens unblocked,
// verifies in full, matches the TPM counter, and holds every entry whose
// append was acknowledged.
func TestInvariantAppendSurvivesKillAtAnyPoint(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, conn)
	dir := t.TempDir()
	create(t, d, dir).Close()
	shareKey(t, d)
	// swtpm serves one client at a time: the appender gets it alone.
	conn.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	acked := int64(-1)
	for round := 0; round < 100; round++ {
		// Most rounds die mid-append; one in ten during start-up.
		early := rng.IntN(10) == 0
		delay := time.Duration(rng.IntN(40)) * time.Millisecond
		if got := crashRound(t, dir, sw.Spec(), early, delay); got > acked {
			acked = got
		}
		checkAfterCrash(t, sw, dir, acked, round)
	}
	if acked < 100 {
		t.Fatalf("only %d entries acknowledged over 100 rounds: the kills did not land during appends", acked+1)
	}
	t.Logf("100 kills; %d entries acknowledged", acked+1)
}

// TestInvariantStartupStateIsBoundToTPMChangeSurvivesKill kills a process
// changing a bound directory with SIGKILL at random moments, 60 times.
// After each kill the ledger opens either unblocked, or (killed between
// the file's rename and its entry) blocked with ErrChangeInterrupted until
// the operator's resolve; never anything else. Every acknowledged change's
// file is there, and the ledger verifies against the TPM counter.
func TestInvariantStartupStateIsBoundToTPMChangeSurvivesKill(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, conn)
	dir := t.TempDir()
	bound := filepath.Join(dir, "trust")
	if err := os.Mkdir(bound, 0o700); err != nil {
		t.Fatal(err)
	}
	d.bound = []ledger.BoundDir{{Name: "trust", Path: bound}}
	create(t, d, dir).Close()
	conn.Close()
	shareKey(t, d)
	t.Setenv("CRASH_BOUND_DIR", bound)

	rng := rand.New(rand.NewPCG(3, 4))
	acked, interrupted := int64(-1), 0
	for round := 0; round < 60; round++ {
		delay := time.Duration(rng.IntN(40)) * time.Millisecond
		if got := crashRound(t, dir, sw.Spec(), false, delay); got > acked {
			acked = got
		}
		if resolveInterrupted(t, sw, dir) {
			interrupted++
		}
		checkAfterCrash(t, sw, dir, acked, round)
		for i := int64(1); i <= acked; i++ {
			if _, err := os.Stat(filepath.Join(bound, fmt.Sprintf("crl-%d.pem", i))); err != nil {
				t.Fatalf("round %d: change %d was acknowledged but its file is gone: %v", round, i, err)
			}
		}
	}
	if acked < 60 {
		t.Fatalf("only %d changes acknowledged over 60 rounds: the kills did not land during changes", acked)
	}
	t.Logf("60 kills; %d changes acknowledged; %d left a change for the operator", acked, interrupted)
}

// resolveInterrupted opens the ledger after a kill: it must be unblocked
// or blocked only by an interrupted change, which the operator accepts.
func resolveInterrupted(t *testing.T, sw *tpmtest.Swtpm, dir string) bool {
	t.Helper()
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tpmtest.FlushAll(t, conn) // what the resource manager does for the killed process
	tpmtest.FlushAll(t, conn)
	cfg, err := crashConfig(conn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = l.Blocked()
	if err == nil {
		return false
	}
	if !errors.Is(err, ledger.ErrChangeInterrupted) {
		t.Fatalf("after a kill: %v, want unblocked or ErrChangeInterrupted", err)
	}
	if _, err := l.ResolveRollback(t0.Add(time.Duration(l.Size()) * time.Second)); err != nil {
		t.Fatal(err)
	}
	return true
}

// shareKey hands the device's sealed ledger key to the crashing process,
// which unseals it on the same TPM as the appliance does.
func shareKey(t *testing.T, d *device) {
	t.Setenv("CRASH_KEY_BLOB", hex.EncodeToString(d.key.Sealed.Marshal()))
	t.Setenv("CRASH_KEY_PUB", d.key.Verifier)
}

// crashConfig is the ledger configuration of the crashing process.
func crashConfig(conn transport.TPM) (ledger.Config, error) {
	ek, err := tpm.ReadEK(conn, tpm.EKRSA2048)
	if err != nil {
		return ledger.Config{}, err
	}
	raw, err := hex.DecodeString(os.Getenv("CRASH_KEY_BLOB"))
	if err != nil {
		return ledger.Config{}, err
	}
	blob, err := tpm.ParseBlob(raw)
	if err != nil {
		return ledger.Config{}, err
	}
	key := ledger.SigningKey{Sealed: blob, Verifier: os.Getenv("CRASH_KEY_PUB")}
	signer, stateKey, err := key.Open(conn)
	if err != nil {
		return ledger.Config{}, err
	}
	cfg := ledger.Config{
		Origin: origin, Device: ek.Name(), Signer: signer, StateKey: stateKey,
		Counter: &ledger.TPMCounter{TPM: conn, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
	}
	if dir := os.Getenv("CRASH_BOUND_DIR"); dir != "" {
		cfg.Bound = []ledger.BoundDir{{Name: "trust", Path: dir}}
	}
	return cfg, nil
}

// checkAfterCrash opens the ledger as the restarted appliance would.
func checkAfterCrash(t *testing.T, sw *tpmtest.Swtpm, dir string, acked int64, round int) {
	t.Helper()
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tpmtest.FlushAll(t, conn) // what the resource manager does for the killed process
	counter := tpm.Counter{Index: tpm.DefaultCounterIndex}
	cfg, err := crashConfig(conn)
	if errors.Is(err, tpm2.TPMRCSessionMemory) {
		// swtpm, after many kills mid-command, sometimes reports no room
		// for a session while it lists none to flush. A device that
		// crashed reboots: power-cycle it, measure the same boot again and
		// go on; the ledger's promises are about what survives on disk and
		// in NV, which a reboot keeps.
		held, _ := tpm.LoadedHandles(conn)
		t.Logf("round %d: %v with %d handles loaded; rebooting the TPM as the device would", round, err, len(held))
		sw.PowerCycle(t, conn)
		measureBoot(t, conn)
		cfg, err = crashConfig(conn)
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Blocked(); err != nil {
		t.Fatalf("round %d: blocked after a crash: %v", round, err)
	}
	if err := l.Verify(); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	if l.Size() <= acked {
		t.Fatalf("round %d: entry %d was acknowledged but the ledger has %d", round, acked, l.Size())
	}
	last, err := l.Entry(l.Size() - 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ledger.ParseEntry(last)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := counter.Read(conn); err != nil || v != e.Counter {
		t.Fatalf("round %d: TPM counter %d (%v), newest entry consumed %d", round, v, err, e.Counter)
	}
}

// crashRound starts an appender, kills it after delay, and returns the
// highest index it acknowledged (-1 for none).
func crashRound(t *testing.T, dir, spec string, early bool, delay time.Duration) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRASH_LEDGER_DIR="+dir, "CRASH_TPM="+spec)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	acked := int64(-1)
	var timer <-chan time.Time
	if early {
		timer = time.After(delay)
	}
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				return acked
			}
			if n, found := strings.CutPrefix(line, "acked "); found {
				if acked < 0 && !early {
					timer = time.After(delay)
				}
				acked, _ = strconv.ParseInt(n, 10, 64)
			} else {
				t.Fatalf("appender: %s", line)
			}
		case <-timer:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			timer = nil
		}
	}
}
