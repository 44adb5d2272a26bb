package ledger_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantAcknowledgedEntryIsOnDisk: a power cut loses what the page
// cache holds, which a kill -9 keeps, so the kill test cannot see a
// missing fsync. This test traces the file system calls of a process that
// appends entries (and, with a bound directory, writes a file and logs the
// change) and requires that when an entry is acknowledged, every write to
// a file of the data directory but ledger.db (the index, rebuilt from the
// journal after a crash) was followed by an fsync or fdatasync of that
// file, every rename by an fsync of its directory, and that ledger.db is
// never written while the journal holds a write not yet synced: the
// journal is durable before the index commits, and before the ack.
func TestInvariantAcknowledgedEntryIsOnDisk(t *testing.T) {
	needStrace(t)
	for _, bound := range []bool{false, true} {
		name := "append"
		if bound {
			name = "change of a bound directory"
		}
		t.Run(name, func(t *testing.T) {
			dir, spec := tracedLedger(t, bound)
			trace := traceAppends(t, dir, spec, 3)
			acked, synced := checkSyncedAtAcks(t, trace, dir)
			if acked != 3 || synced == 0 {
				t.Fatalf("traced %d acknowledgements and %d fsyncs in the data directory; want 3 and some", acked, synced)
			}
		})
	}
}

// TestInvariantOneSyncPerAppend: an append makes exactly one fsync or
// fdatasync (of the journal), whatever the process syncs elsewhere, and
// still is on disk when acknowledged.
func TestInvariantOneSyncPerAppend(t *testing.T) {
	needStrace(t)
	dir, spec := tracedLedger(t, false)
	trace := traceAppends(t, dir, spec, 6)
	if acked, _ := checkSyncedAtAcks(t, trace, dir); acked != 6 {
		t.Fatalf("traced %d acknowledgements, want 6", acked)
	}
	syncs := syncsPerAck(trace)
	if len(syncs) != 6 {
		t.Fatalf("traced %d acknowledgements, want 6", len(syncs))
	}
	// The first append follows the open; each after it is an append alone.
	for i, calls := range syncs[1:] {
		if len(calls) != 1 || calls[0] != filepath.Join(dir, ledger.JournalName) {
			t.Errorf("append %d synced %v; want the journal once", i+1, calls)
		}
	}
}

func needStrace(t *testing.T) {
	t.Helper()
	need.Command(t, "strace", "strace")
	if out, err := exec.Command("strace", "-o", os.DevNull, "true").CombinedOutput(); err != nil {
		need.Missing(t, "strace cannot trace here (ptrace not permitted?): %v %s", err, out)
	}
}

// tracedLedger makes a ledger (with a bound directory, if bound) for an
// appending process to trace, and returns its directory and TPM.
func tracedLedger(t *testing.T, bound bool) (dir, spec string) {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t, conn)
	dir = t.TempDir()
	if bound {
		trust := filepath.Join(dir, "trust")
		if err := os.Mkdir(trust, 0o700); err != nil {
			t.Fatal(err)
		}
		d.bound = []ledger.BoundDir{{Name: "trust", Path: trust}}
		t.Setenv("CRASH_BOUND_DIR", trust)
	}
	create(t, d, dir).Close()
	shareKey(t, d)
	conn.Close()
	return dir, sw.Spec()
}

// syncsPerAck lists, for each acknowledgement in the trace, the files
// fsynced or fdatasynced since the one before it.
func syncsPerAck(trace string) [][]string {
	var out [][]string
	var cur []string
	for _, line := range strings.Split(trace, "\n") {
		m := fdCall.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, " resumed>") {
			continue
		}
		switch {
		case m[1] == "fsync" || m[1] == "fdatasync":
			cur = append(cur, m[2])
		case isAck(m[1], m[2], m[3]):
			out, cur = append(out, cur), nil
		}
	}
	return out
}

func isAck(call, path, rest string) bool {
	return strings.HasPrefix(call, "write") && strings.HasPrefix(path, "pipe:") && strings.HasPrefix(rest, `, "acked `)
}

// traceAppends runs the appending process under strace until it has
// acknowledged n entries, and returns the trace.
func traceAppends(t *testing.T, dir, spec string, n int) string {
	t.Helper()
	log := filepath.Join(t.TempDir(), "strace.log")
	cmd := exec.Command("strace", "-f", "-qq", "-y", "-s", "64", "-o", log,
		"-e", "trace=write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range,rename,renameat,renameat2",
		os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRASH_LEDGER_DIR="+dir, "CRASH_TPM="+spec, "CRASH_APPENDS="+strconv.Itoa(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("appender under strace: %v\n%s", err, out)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

var (
	fdCall  = regexp.MustCompile(`^\d+\s+(\w+)\(\d+<([^>]*)>(.*)$`)
	renamed = regexp.MustCompile(`^\d+\s+rename(?:at2?)?\((?:AT_FDCWD(?:<[^>]*>)?, )?"[^"]*", (?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]*)"`)
)

// checkSyncedAtAcks walks the trace and fails at an acknowledgement that
// leaves a write (but to ledger.db) or rename in dir unsynced, and at a
// write to ledger.db while the journal has one unsynced. It returns how many entries
// were acknowledged and how many fsyncs in dir it saw.
func checkSyncedAtAcks(t *testing.T, trace, dir string) (acked, synced int) {
	t.Helper()
	inDir := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	// The index is written without syncs: the journal makes a commit
	// durable, and a crash leaves an index Open rebuilds.
	index, journal := filepath.Join(dir, ledger.FileName), filepath.Join(dir, ledger.JournalName)
	pending := map[string]string{} // path → what is not yet on disk
	sc := bufio.NewScanner(strings.NewReader(trace))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, " resumed>") {
			continue
		}
		if m := renamed.FindStringSubmatch(line); m != nil && inDir(m[1]) {
			pending[filepath.Dir(m[1])] = "the rename to " + filepath.Base(m[1])
			continue
		}
		m := fdCall.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		call, path, rest := m[1], m[2], m[3]
		switch {
		case (call == "fsync" || call == "fdatasync") && inDir(path):
			delete(pending, path)
			synced++
		case isAck(call, path, rest):
			acked++
			for p, what := range pending {
				t.Errorf("entry %d was acknowledged while %s in %s was not fsynced: a power cut loses it", acked, what, p)
			}
		case (strings.HasPrefix(call, "write") || strings.HasPrefix(call, "pwrite")) && inDir(path) && !strings.HasSuffix(rest, "= -1"):
			if path != index {
				pending[path] = "a write"
			} else if what, ok := pending[journal]; ok {
				t.Errorf("ledger.db was written while %s to the journal was not fdatasynced: the index commits before the journal is durable", what)
				delete(pending, journal) // one report per commit
			}
		}
	}
	return acked, synced
}
