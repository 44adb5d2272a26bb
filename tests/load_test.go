package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
)

// rssKiB reads a field (VmRSS, VmHWM) of a process's status in KiB.
func rssKiB(t testing.TB, pid int, field string) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no %s", field)
	return 0
}

// TestLoadThousandConcurrentInvalidSubmissions floods the daemon (the real
// binary) with 1,000 concurrent invalid submissions from ten loopback
// addresses, while an officer's valid release goes through from another.
// The daemon stays up, its memory stays bounded, and the release succeeds.
func TestLoadThousandConcurrentInvalidSubmissions(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	dir := t.TempDir()
	agencyPub := filepath.Join(dir, "agency.pub")
	os.WriteFile(agencyPub, []byte(agency.Public().String()+"\n"), 0o644)
	p7s := filepath.Join(dir, "w.p7s")
	os.WriteFile(p7s, c.sign(t, "W-load", agency.Public(), []string{"court-a"}, []string{"2026-11"}, time.Now().UTC()), 0o644)

	dm := startDaemon(t, d)
	pid := dm.cmd.Process.Pid
	time.Sleep(200 * time.Millisecond)
	idle := rssKiB(t, pid, "VmRSS")
	var before map[string]any
	dm.client.getJSON(t, "/v1/health", &before)

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[string]int{}
	)
	junk := make([]byte, 2048)
	rand.Read(junk)
	huge := bytes.Repeat([]byte{0x30}, 200<<10)
	start := time.Now()
	for i := range 1000 {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%10))}
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext, DisableKeepAlives: true,
			TLSClientConfig: dm.client.http.Transport.(*http.Transport).TLSClientConfig}
		hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
		body := junk
		if i%10 == 0 {
			body = huge
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Post(dm.client.base+"/v1/warrants", "application/pkcs7-mime", bytes.NewReader(body))
			key := "transport error"
			if len(body) > release.MaxBody {
				// The daemon answers 413 and closes without reading the
				// rest; the client may see the reset first.
				key = "oversized: connection closed"
			}
			if err == nil {
				var eb release.ErrorBody
				if json := readAll(resp); json != nil {
					_ = jsonUnmarshal(json, &eb)
				}
				key = fmt.Sprintf("%d %s", resp.StatusCode, eb.Error.Code)
			}
			mu.Lock()
			codes[key]++
			mu.Unlock()
		}()
	}

	// The officer's release, during the flood.
	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, filepath.Join(dir, "release.json"))
	released := time.Since(start)
	wg.Wait()
	flood := time.Since(start)
	if code != 0 {
		t.Fatalf("the valid release during the load failed: %d\n%s%s", code, stdout, stderr)
	}
	peak := rssKiB(t, pid, "VmHWM")
	var health map[string]any
	dm.client.getJSON(t, "/v1/health", &health)
	if health["ok"] != true {
		t.Fatalf("health after the load: %v", health)
	}
	for k := range codes {
		if strings.HasPrefix(k, "5") || k == "transport error" {
			t.Errorf("%d responses: %s", codes[k], k)
		}
	}
	t.Logf("1000 invalid submissions in %v (valid release done after %v): %v; daemon RSS idle %d KiB, peak %d KiB; ledger %v entries",
		flood.Round(time.Millisecond), released.Round(time.Millisecond), codes, idle, peak, health["ledger_size"])
	// Only the officer's release wrote an entry (and consumed an NV
	// increment); the flood is counted for the next unverified entry.
	if health["ledger_size"].(float64) != before["ledger_size"].(float64)+1 {
		t.Errorf("the ledger grew from %v to %v entries: the flood was logged entry by entry", before["ledger_size"], health["ledger_size"])
	}
	if peak > 200<<10 {
		t.Errorf("peak RSS %d KiB: memory is not bounded", peak)
	}
}
