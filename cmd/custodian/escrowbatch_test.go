package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// scopedBatch is a 2-of-3 scoped key ID made in software (court-a, court-b,
// court-c), its escrow file, the agency's key files, and a directory of
// envelopes with their messages.
type scopedBatch struct {
	dir, escrowFile, identity, envDir string
	pub                               *escrow.Public
	shares                            [][]byte
	agency                            *recipient.Identity
	names                             []string // envelope files, sorted
	messages, encs                    map[string][]byte
}

func newScopedBatch(t *testing.T, count int) *scopedBatch {
	t.Helper()
	dir := t.TempDir()
	s := &scopedBatch{dir: dir, escrowFile: filepath.Join(dir, "escrow.pub.json"), identity: filepath.Join(dir, "agency.key"),
		envDir: filepath.Join(dir, "envelopes"), messages: map[string][]byte{}, encs: map[string][]byte{}}
	ss := secretsharing.New(rand.Reader, 1, group.P256.RandomNonZeroScalar(rand.Reader))
	pub := &escrow.Public{Version: escrow.Version, KeyID: "2026-12", Mode: escrow.ModeScoped, Threshold: 2,
		PCRs: tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, SecurityVersion: 1}
	for _, c := range ss.CommitSecret() {
		b, _ := c.MarshalBinary()
		pub.Commitments = append(pub.Commitments, b)
	}
	pub.PublicKey = pub.Commitments[0]
	for i, share := range ss.Share(3) {
		v, _ := share.Value.MarshalBinary()
		proofKey, err := tpm.ProofKey(v)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("court-%c", 'a'+i)
		ek := sha256.Sum256([]byte(id))
		pub.Custodians = append(pub.Custodians, escrow.Custodian{ID: id, Index: i + 1, EKName: ek[:], ImportKeyName: ek[:], ProofKey: proofKey})
		s.shares = append(s.shares, v)
	}
	data, err := pub.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if s.pub, err = escrow.ParsePublic(data); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.escrowFile, data, 0o644)
	mustRun(t, "agency", "keygen", "--kem", "x25519", "--out", s.identity, "--pub", filepath.Join(dir, "agency.pub"))
	idData, _ := os.ReadFile(s.identity)
	if s.agency, err = recipient.ParseIdentity(strings.TrimSpace(string(idData))); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(s.envDir, 0o700)
	for i := range count {
		name := fmt.Sprintf("msg-%03d", i)
		s.messages[name] = fmt.Appendf(nil, "message %d", i)
		env, err := escrow.Seal(s.pub, "alice@example.org", s.messages[name])
		if err != nil {
			t.Fatal(err)
		}
		parsed, _ := escrow.ParseEnvelope(env)
		s.encs[name] = parsed.Enc
		s.names = append(s.names, name)
		os.WriteFile(filepath.Join(s.envDir, name+".env"), env, 0o600)
	}
	return s
}

// release writes custodian i's package with a partial of every envelope
// and one proof; for the envelope named liar, the partial is the wrong
// point R, proved with the custodian's share as a lying TPM host would
// have it proved.
func (s *scopedBatch) release(t *testing.T, i int, liar string) string {
	t.Helper()
	points := make([][]byte, len(s.names))
	for k, name := range s.names {
		points[k] = s.encs[name]
	}
	batch := tpmtest.SoftwareBatch(t, s.shares[i], points, func(k int, p []byte) []byte {
		if s.names[k] == liar {
			return points[k]
		}
		return p
	})
	sealed, err := escrow.NewPartialsBatch(points, batch)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	c := s.pub.Custodians[i]
	r, err := escrow.SealPartials(s.agency.Public(), digest[:], c.ID, s.pub.KeyID, c.Index, sealed)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := r.Marshal()
	path := filepath.Join(s.dir, c.ID+".release.json")
	os.WriteFile(path, data, 0o600)
	return path
}

func (s *scopedBatch) openArgs(releases ...string) []string {
	args := []string{"escrow", "open", "--identity", s.identity, "--escrow", s.escrowFile}
	for _, r := range releases {
		args = append(args, "--release", r)
	}
	return args
}

// TestEscrowOpenManyEnvelopesNamesEachFailure: a directory of envelopes,
// one of them forged out of another's key, opens into --out-dir, with
// court-b's batch holding one wrong partial. Its batch fails its proof, so
// court-b is named once, as a bad release: with three releases every
// envelope opens from the others; with two none does. The forged one is
// refused for its seal proof; every other plaintext is exactly its
// message; outcomes come in file-name order; --json prints nothing but
// the report; the exit status says not everything opened.
func TestEscrowOpenManyEnvelopesNamesEachFailure(t *testing.T) {
	s := newScopedBatch(t, 24)
	const liar = "msg-007"
	forged := escrowtest.Forgeries(t, mustRead(t, filepath.Join(s.envDir, "msg-003.env")), mustRead(t, filepath.Join(s.envDir, "msg-004.env")))[0]
	os.WriteFile(filepath.Join(s.envDir, "msg-010a.env"), forged.Envelope, 0o600)
	os.WriteFile(filepath.Join(s.envDir, "notes.txt"), []byte("not an envelope file"), 0o600)
	a, b, c := s.release(t, 0, ""), s.release(t, 1, liar), s.release(t, 2, "")

	out := filepath.Join(s.dir, "plain")
	code, stdout, stderr := custodian(t, append(s.openArgs(a, b, c), "--json", "--in-dir", s.envDir, "--out-dir", out, "--workers", "3")...)
	var report batchReport
	if code == 0 || json.Unmarshal([]byte(stdout), &report) != nil {
		t.Fatalf("exit %d, stdout not one JSON report:\n%s\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "progress") || !strings.Contains(stderr, "1 of 25 envelopes did not open") {
		t.Fatalf("stderr in --json mode:\n%s", stderr)
	}
	if report.Envelopes != 25 || report.Opened != 24 || report.Failed != 1 || len(report.Outcomes) != 25 ||
		len(report.BadReleases) != 1 || !strings.Contains(report.BadReleases["court-b"], "none of the package's 24 partials is used") {
		t.Fatalf("report: %+v", report)
	}
	want := append(append([]string{}, s.names[:11]...), append([]string{"msg-010a"}, s.names[11:]...)...)
	for i, o := range report.Outcomes {
		name := strings.TrimSuffix(filepath.Base(o.In), ".env")
		if name != want[i] {
			t.Fatalf("outcome %d is %s, want %s", i, name, want[i])
		}
		switch name {
		case "msg-010a":
			if o.Opened || !strings.Contains(o.Error, "seal") || fileExists(filepath.Join(out, name)) {
				t.Errorf("forged envelope: %+v", o)
			}
		default:
			if !o.Opened || o.BadPartials != nil || o.Target != "alice@example.org" {
				t.Errorf("%s: %+v", name, o)
			}
		}
		if o.Opened && !bytes.Equal(mustRead(t, o.Out), s.messages[name]) {
			t.Errorf("%s: the plaintext is not its message", name)
		}
	}

	out2 := filepath.Join(s.dir, "plain2")
	code, stdout, stderr = custodian(t, append(s.openArgs(a, b), "--in-dir", s.envDir, "--out-dir", out2)...)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code == 0 || !strings.Contains(stdout, "opened 0 of 25 envelopes (key ID 2026-12)") || len(lines) != 28 ||
		!strings.Contains(lines[0], "warning: bad release from court-b: the batch of partial decryptions does not match its proof: none of the package's 24 partials is used") ||
		!strings.Contains(lines[0], "(for every envelope)") ||
		!strings.Contains(lines[1], "msg-000.env: not opened: not enough valid partials") ||
		!strings.Contains(lines[12], "msg-010a.env: not opened: the envelope does not prove it was sealed honestly") ||
		strings.Contains(stderr, "bad partial from") || !strings.Contains(stderr, "25 of 25 envelopes did not open") {
		t.Fatalf("two releases: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if fileExists(filepath.Join(out2, liar)) || fileExists(filepath.Join(out2, "msg-008")) {
		t.Fatal("two releases: plaintexts in the output directory")
	}
}

// TestEscrowOpenManyRefusesBadFlagsBeforeWork: outputs that would clash
// or overwrite, and flag combinations that mean nothing, are refused
// before any envelope is opened.
func TestEscrowOpenManyRefusesBadFlagsBeforeWork(t *testing.T) {
	s := newScopedBatch(t, 2)
	a, b := s.release(t, 0, ""), s.release(t, 1, "")
	env0, env1 := filepath.Join(s.envDir, "msg-000.env"), filepath.Join(s.envDir, "msg-001.env")
	other := filepath.Join(s.dir, "other")
	os.Mkdir(other, 0o700)
	os.WriteFile(filepath.Join(other, "msg-000.env"), mustRead(t, env0), 0o600)
	full := filepath.Join(s.dir, "full")
	os.Mkdir(full, 0o700)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o600)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"--out with two --in":   {[]string{"--in", env0, "--in", env1, "--out", filepath.Join(s.dir, "p")}, "--out takes exactly one --in"},
		"--out and --out-dir":   {[]string{"--in", env0, "--out", filepath.Join(s.dir, "p"), "--out-dir", filepath.Join(s.dir, "d")}, "either --out"},
		"neither":               {[]string{"--in", env0}, "either --out"},
		"no envelopes":          {[]string{"--out-dir", filepath.Join(s.dir, "d")}, "no envelopes to open"},
		"same name twice":       {[]string{"--in", env0, "--in", filepath.Join(other, "msg-000.env"), "--out-dir", filepath.Join(s.dir, "d")}, "would both open into msg-000"},
		"non-empty --out-dir":   {[]string{"--in-dir", s.envDir, "--out-dir", full}, "is not empty"},
		"missing --in-dir":      {[]string{"--in-dir", filepath.Join(s.dir, "none"), "--out-dir", filepath.Join(s.dir, "d")}, "no such file"},
		"envelope named '.env'": {[]string{"--in", filepath.Join(s.dir, ".env"), "--out-dir", filepath.Join(s.dir, "d")}, "gives no name"},
	} {
		code, _, stderr := custodian(t, append(s.openArgs(a, b), c.args...)...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, %s", name, code, stderr)
		}
	}
	if fileExists(filepath.Join(s.dir, "d")) || fileExists(filepath.Join(s.dir, "p")) {
		t.Fatal("a refused command left output behind")
	}
	out := filepath.Join(s.dir, "ok")
	mustRun(t, append(s.openArgs(a, b), "--in", env1, "--in", env0, "--out-dir", out)...)
	if !bytes.Equal(mustRead(t, filepath.Join(out, "msg-001")), s.messages["msg-001"]) {
		t.Fatal("--in twice: wrong plaintext")
	}
}

// TestProgressBarOnATerminalLinesOtherwiseNothingInJSON drives the
// progress display with a clock that advances a second per envelope.
func TestProgressBarOnATerminalLinesOtherwiseNothingInJSON(t *testing.T) {
	for _, mode := range []string{"tty", "plain", "json"} {
		var w bytes.Buffer
		clock := time.Unix(0, 0)
		p := &progress{w: &w, tty: mode == "tty", off: mode == "json", total: 12, now: func() time.Time { return clock }, start: clock, last: clock}
		for i := 1; i <= 12; i++ {
			clock = clock.Add(time.Second)
			if i == 6 {
				p.println("msg-006.env: not opened")
			}
			p.update(i, min(i/6, 1))
		}
		p.finish()
		got := w.String()
		switch mode {
		case "tty":
			if strings.Count(got, "\r\x1b[K[") != 12 || !strings.Contains(got, "\r\x1b[Kmsg-006.env: not opened\n") ||
				!strings.Contains(got, "[##############################] 12 of 12 envelopes, 1 not opened, 1/s\n") {
				t.Errorf("tty: %q", got)
			}
		case "plain":
			want := "progress: 5 of 12 envelopes, 1/s\nmsg-006.env: not opened\nprogress: 10 of 12 envelopes, 1 not opened, 1/s\n"
			if got != want {
				t.Errorf("plain: %q, want %q", got, want)
			}
		case "json":
			if got != "" {
				t.Errorf("json: %q", got)
			}
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
