package tests

import (
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/release"
)

// plantLegacy makes releases/<id>/ and plants name in it: a FIFO when
// target is "", else a symbolic link to target.
func plantLegacy(t *testing.T, data, id, name, target string) {
	t.Helper()
	dir := filepath.Join(data, release.Dir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	var err error
	if target == "" {
		err = syscall.Mkfifo(path, 0o600)
	} else {
		err = os.Symlink(target, path)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestInvariantPlantedLegacyFilesNeverStopTheDaemon: files of the old
// layout (releases/<id>/request.json and packages) are read at every
// start and for GET of a request or package with no note. Planted as a
// FIFO without a writer or as a link to /dev/zero, they neither block
// the start nor grow the daemon's memory: the daemon serves, the records
// are set aside as unmatched, and the GETs answer not_found at once.
func TestInvariantPlantedLegacyFilesNeverStopTheDaemon(t *testing.T) {
	now := time.Now().UTC()
	d, _ := readyDevice(t, now, "2026-11")
	const fifoRecord, zeroRecord = "0123456789abcdef0123456789abcdef", "1123456789abcdef0123456789abcdef"
	plantLegacy(t, d.data, fifoRecord, "request.json", "")
	plantLegacy(t, d.data, zeroRecord, "request.json", "/dev/zero")

	child, cl := startChild(t, d, "") // fails after childStartLimit if the start blocks
	defer func() { child.Process.Kill(); child.Wait() }()
	for _, id := range []string{fifoRecord, zeroRecord} {
		if _, err := os.Lstat(filepath.Join(d.data, release.Dir, id+".unmatched", "request.json")); err != nil {
			t.Errorf("planted record %s was not set aside: %v", id, err)
		}
	}

	// Planted while the daemon runs: read only by the GETs' fallback.
	const fifoGet, zeroGet = "2123456789abcdef0123456789abcdef", "3123456789abcdef0123456789abcdef"
	plantLegacy(t, d.data, fifoGet, "request.json", "")
	plantLegacy(t, d.data, fifoGet, "2026-11.release.json", "")
	plantLegacy(t, d.data, zeroGet, "request.json", "/dev/zero")
	plantLegacy(t, d.data, zeroGet, "2026-11.release.json", "/dev/zero")
	hc := *cl.http
	hc.Timeout = 30 * time.Second // a hang guard: an answer comes at once
	for _, id := range []string{fifoGet, zeroGet} {
		for _, path := range []string{"/v1/requests/" + id, "/v1/requests/" + id + "/packages/2026-11"} {
			resp, err := hc.Get(cl.base + path)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
			}
		}
	}
}
