package ledger_test

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

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

// appendUntilKilled appends entries forever, printing "acked N" after
// Append returns for entry N.
func appendUntilKilled(dir, spec string) int {
	conn, err := tpm.Open(spec)
	if err != nil {
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
	for {
		e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal,
			Outcome: ledger.OutcomeRefused, Reason: "crash-test"}
		i, err := l.Append(e, []byte("subject"), []byte("key-"+strconv.FormatInt(l.Size(), 10)))
		if err != nil {
			fmt.Println("error", err)
			return 4
		}
		fmt.Println("acked", i)
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
		Counter: ledger.TPMCounter{TPM: conn, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
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
