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
// a file of the data directory was followed by an fsync or fdatasync of
// that file, and every rename by an fsync of its directory.
func TestInvariantAcknowledgedEntryIsOnDisk(t *testing.T) {
	need.Command(t, "strace", "strace")
	if out, err := exec.Command("strace", "-o", os.DevNull, "true").CombinedOutput(); err != nil {
		need.Missing(t, "strace cannot trace here (ptrace not permitted?): %v %s", err, out)
	}
	for _, bound := range []bool{false, true} {
		name := "append"
		if bound {
			name = "change of a bound directory"
		}
		t.Run(name, func(t *testing.T) {
			sw := tpmtest.StartSwtpm(t)
			conn, err := tpm.Open(sw.Spec())
			if err != nil {
				t.Fatal(err)
			}
			d := newDevice(t, conn)
			dir := t.TempDir()
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
			trace := traceAppends(t, dir, sw.Spec(), 3)
			acked, synced := checkSyncedAtAcks(t, trace, dir)
			if acked != 3 || synced == 0 {
				t.Fatalf("traced %d acknowledgements and %d fsyncs in the data directory; want 3 and some", acked, synced)
			}
		})
	}
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
// leaves a write or rename in dir unsynced. It returns how many entries
// were acknowledged and how many fsyncs in dir it saw.
func checkSyncedAtAcks(t *testing.T, trace, dir string) (acked, synced int) {
	t.Helper()
	inDir := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
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
		case strings.HasPrefix(call, "write") || strings.HasPrefix(call, "pwrite"):
			if strings.HasPrefix(path, "pipe:") && strings.HasPrefix(rest, `, "acked `) {
				acked++
				for p, what := range pending {
					t.Errorf("entry %d was acknowledged while %s in %s was not fsynced: a power cut loses it", acked, what, p)
				}
			} else if inDir(path) && !strings.HasSuffix(rest, "= -1") {
				pending[path] = "a write"
			}
		}
	}
	return acked, synced
}
