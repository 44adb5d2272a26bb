package tests

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/ledger/ledgertest"
	"github.com/custodian-project/custodian/hsm/release"
)

// growLedger appends refusals until the ledger holds n entries.
func growLedger(t testing.TB, r *rig, n int64) {
	t.Helper()
	for r.a.Ledger.Size() < n {
		e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: string(release.CodeNoPress), KeyID: "2026-11"}
		if _, err := r.a.Ledger.Append(e, []byte("a warrant"), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// followCheckpoint fetches the tlog checkpoint as an outside client does:
// x/mod's note against the pinned verifier key, torchwood's parser.
func followCheckpoint(t *testing.T, f *torchwood.TileFetcher, vkey string) torchwood.Checkpoint {
	t.Helper()
	signed, err := f.ReadEndpoint(context.Background(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatalf("the checkpoint does not verify: %v", err)
	}
	cp, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil || cp.Origin != v.Name() {
		t.Fatalf("checkpoint %q: %v", n.Text, err)
	}
	return cp
}

// TestTilesFollowedByIndependentClient: torchwood's tlog client, with
// x/mod's note and tlog, follows the daemon's /v1/tlog/ without a client
// certificate: it verifies the checkpoint signature, fetches entries with
// their inclusion proofs (computed from the tiles and checked against the
// signed tree), and proves the tree of a later checkpoint consistent with
// the earlier one across a full tile. None of this project's code checks.
func TestTilesFollowedByIndependentClient(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	auditor := r.srv.Client() // trusts the server; presents no certificate
	f, err := torchwood.NewTileFetcher(r.srv.URL+release.TlogPrefix, torchwood.WithHTTPClient(auditor))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	growLedger(t, r, 100)
	old := followCheckpoint(t, f, r.a.VerifierKey)
	if old.N != 100 {
		t.Fatalf("checkpoint size %d", old.N)
	}
	c, err := torchwood.NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int64{0, 1, 57, 99} {
		entry, proof, err := c.Entry(ctx, old.Tree, i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if err := tlog.CheckRecord(proof, old.N, old.Hash, i, tlog.RecordHash(entry)); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if want, _ := r.a.Ledger.Entry(i); !bytes.Equal(entry, want) {
			t.Fatalf("entry %d is not the ledger's", i)
		}
	}

	growLedger(t, r, 300) // a full tile, a partial one, a level-1 tile
	now := followCheckpoint(t, f, r.a.VerifierKey)
	hashes := torchwood.TileHashReaderWithContext(ctx, now.Tree, f)
	proof, err := tlog.ProveTree(now.N, old.N, hashes)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(proof, now.N, now.Hash, old.N, old.Hash); err != nil {
		t.Fatalf("the later checkpoint is not consistent with the earlier one: %v", err)
	}
	// A different old tree must not pass: the check can fail.
	forged := old.Hash
	forged[0] ^= 1
	if tlog.CheckTree(proof, now.N, now.Hash, old.N, forged) == nil {
		t.Fatal("a forged old tree passed the consistency check")
	}
	for _, i := range []int64{0, 255, 256, 299} {
		entry, _, err := c.Entry(ctx, now.Tree, i)
		if want, _ := r.a.Ledger.Entry(i); err != nil || !bytes.Equal(entry, want) {
			t.Fatalf("entry %d in the later tree: %v", i, err)
		}
	}
	var seen int64
	for i, entry := range c.Entries(ctx, now.Tree, 0) {
		if want, _ := r.a.Ledger.Entry(i); !bytes.Equal(entry, want) {
			t.Fatalf("entry %d from the bundles is not the ledger's", i)
		}
		seen++
	}
	if c.Err() != nil || seen < 256 {
		t.Fatalf("followed %d entries: %v", seen, c.Err())
	}

	// Caching as C2SP tlog-tiles says.
	for path, want := range map[string]string{
		"checkpoint":            "public, max-age=5",
		"tile/0/000":            "public, max-age=31536000, immutable",
		"tile/entries/001.p/44": "public, max-age=31536000, immutable",
		"tile/1/000.p/1":        "public, max-age=31536000, immutable",
	} {
		resp, err := auditor.Get(r.srv.URL + release.TlogPrefix + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != want {
			t.Errorf("%s: %d, Cache-Control %q, want %q", path, resp.StatusCode, resp.Header.Get("Cache-Control"), want)
		}
	}
}

// TestTilesExportIsWhatIsServed: ledger export writes, file for file, the
// bytes the daemon serves at the same paths under /v1/tlog/.
func TestTilesExportIsWhatIsServed(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 260)
	out := filepath.Join(t.TempDir(), "log")
	st, err := r.a.Ledger.Export(out)
	if err != nil {
		t.Fatal(err)
	}
	// Two full tiles (hashes, entries), two partial ones, a level-1
	// partial tile, the checkpoint.
	if st.Size != 260 || st.Written != 6 {
		t.Fatalf("export: %+v", st)
	}
	files := ledgertest.ReadTree(t, out)
	for rel, data := range files {
		code, served := r.c.get(t, release.TlogPrefix+rel)
		if code != http.StatusOK || !bytes.Equal(data, served) {
			t.Errorf("%s: served %d, %d bytes; exported %d bytes", rel, code, len(served), len(data))
		}
	}
	if len(files) != st.Written {
		t.Fatalf("compared %d files, exported %d", len(files), st.Written)
	}

	// Entry bundles come gzip-compressed to a client that asks, and as
	// they are to one that does not; both are the exported bytes.
	want, err := os.ReadFile(filepath.Join(out, "tile", "entries", "000"))
	if err != nil {
		t.Fatal(err)
	}
	raw := r.srv.Client().Transport.(*http.Transport).Clone()
	raw.DisableCompression = true // the body as sent
	for accept, encoding := range map[string]string{"gzip": "gzip", "br, gzip;q=0": "", "": ""} {
		req, _ := http.NewRequest(http.MethodGet, r.srv.URL+release.TlogPrefix+"tile/entries/000", nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := raw.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body := io.Reader(resp.Body)
		if encoding == "gzip" {
			if body, err = gzip.NewReader(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		got, err := io.ReadAll(body)
		resp.Body.Close()
		if err != nil || resp.Header.Get("Content-Encoding") != encoding || resp.Header.Get("Vary") != "Accept-Encoding" || !bytes.Equal(got, want) {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, Vary %q, %d bytes (want %d): %v",
				accept, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"), len(got), len(want), err)
		}
	}
}

// TestTileRoutesRefuseBadPaths: a path that is not a tile's is a bad
// request, a tile past the tree is not found, each with its code and a
// message; none reads more than a tile or changes the ledger.
func TestTileRoutesRefuseBadPaths(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 10)
	size := r.a.Ledger.Size()
	huge := "x009/x223/x372/x036/x854/x775/807"
	for path, want := range map[string]int{
		"tile/0/000.p/10":                 http.StatusOK,
		"tile/entries/000.p/10":           http.StatusOK,
		"tile/0/000.p/11":                 http.StatusNotFound,
		"tile/0/000":                      http.StatusNotFound,
		"tile/entries/001.p/1":            http.StatusNotFound,
		"tile/1/000.p/1":                  http.StatusNotFound,
		"tile/63/" + huge:                 http.StatusNotFound,
		"tile/entries/" + huge + ".p/255": http.StatusNotFound,
		"tile/0/0001":                     http.StatusBadRequest,
		"tile/0/x000/000":                 http.StatusBadRequest,
		"tile/64/000":                     http.StatusBadRequest,
		"tile/data/000":                   http.StatusBadRequest,
		"tile/8/0/000":                    http.StatusBadRequest,
		"tile/entries/000.p/0":            http.StatusBadRequest,
		"tile/entries/000.p/256":          http.StatusBadRequest,
		"tile/0/" + strings.Repeat("x999/", 400) + "999": http.StatusBadRequest,
		"tile/": http.StatusBadRequest,
	} {
		resp, err := r.srv.Client().Get(r.srv.URL + release.TlogPrefix + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d: %s", path, resp.StatusCode, want, body)
			continue
		}
		if want == http.StatusOK {
			continue
		}
		var eb release.ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Fatalf("%s: %v %s", path, err, body)
		}
		code, hint := release.CodeBadRequest, "tile/<L>/<N>[.p/<W>]"
		if want == http.StatusNotFound {
			code, hint = release.CodeNotFound, "fetch /v1/tlog/checkpoint first"
		}
		if eb.Error.Code != code || !strings.Contains(eb.Error.Message, hint) || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %+v, Cache-Control %q", path, eb, resp.Header.Get("Cache-Control"))
		}
	}
	resp, err := r.srv.Client().Post(r.srv.URL+release.TlogPrefix+"tile/0/000.p/10", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST a tile: %d", resp.StatusCode)
	}
	if r.a.Ledger.Size() != size {
		t.Fatalf("reading tiles changed the ledger: %d entries, was %d", r.a.Ledger.Size(), size)
	}
}

// TestInvariantServerExportWritesOnlyWhatTheCheckpointSigns: ledger export
// --server mirrors a running appliance into the same files as the local
// export; a server that alters an entry bundle or a hash tile is refused,
// and no checkpoint is written for it.
func TestInvariantServerExportWritesOnlyWhatTheCheckpointSigns(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 300)
	api := (&release.API{Daemon: r.daemon, Limit: release.NewLimiter(1e6, 1e6)}).Handler()
	// flip serves the API, with one byte of the tile at path changed.
	flip := func(path string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			req.Header.Del("Accept-Encoding")
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			body := rec.Body.Bytes()
			if req.URL.Path == release.TlogPrefix+path {
				body[len(body)-1] ^= 1
			}
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
	export := func(h http.Handler, dir string) (int, string, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		return cli(t, "ledger", "export", dir, "--server", srv.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey)
	}

	mirror, local := filepath.Join(t.TempDir(), "mirror"), filepath.Join(t.TempDir(), "local")
	if code, out, errOut := export(api, mirror); code != 0 || !strings.Contains(out, "exported the ledger of custodian/court-a (size 300)") {
		t.Fatalf("export --server: exit %d, %q %q", code, out, errOut)
	}
	if _, err := r.a.Ledger.Export(local); err != nil {
		t.Fatal(err)
	}
	a, b := ledgertest.ReadTree(t, mirror), ledgertest.ReadTree(t, local)
	if len(a) != 6 || len(a) != len(b) {
		t.Fatalf("the mirror has %d files, the local export %d", len(a), len(b))
	}
	for p := range b {
		if !bytes.Equal(a[p], b[p]) {
			t.Errorf("%s differs between the mirror and the local export", p)
		}
	}

	for path, want := range map[string]string{
		"tile/entries/001.p/44": "entry 299 of the server's tile/entries/001.p/44 is not in the tree its checkpoint signs",
		"tile/0/000":            "the server's hash tiles are not the tree its checkpoint signs",
	} {
		dir := filepath.Join(t.TempDir(), "forged")
		code, _, errOut := export(flip(path), dir)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("%s altered: exit %d, %q", path, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "checkpoint")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s altered: a checkpoint was written (%v)", path, err)
		}
	}
}
