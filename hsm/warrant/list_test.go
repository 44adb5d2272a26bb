package warrant

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// testList is a list of n distinct envelopes over two key IDs and two
// targets.
func testList(n int) []EnvelopeRef {
	refs := make([]EnvelopeRef, n)
	for i := range refs {
		refs[i] = EnvelopeRef{KeyID: []string{"2026-11", "2026-12"}[i%2], Target: []string{"+15550100", "alice@example.org"}[i%3%2],
			Enc: testEnc(i), CiphertextSHA256: bytes.Repeat([]byte{byte(i)}, 32), Proof: bytes.Repeat([]byte{byte(i >> 8), byte(i)}, 32)}
	}
	return refs
}

func listFile(t testing.TB, refs []EnvelopeRef) []byte {
	t.Helper()
	l, err := ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := l.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestEnvelopeListRoundTripAndProofs(t *testing.T) {
	refs := testList(1000)
	inline, err := ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	data := listFile(t, refs)
	if !strings.HasPrefix(string(data), "custodian envelope list v1 1000\n{\"key_id\":\"2026-11\"") {
		t.Fatalf("list file begins %q", data[:80])
	}
	read, err := ReadEnvelopeList(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if read.TreeHash != inline.TreeHash || read.Count() != 1000 {
		t.Fatalf("the file's tree hash %v (%d) is not the inline list's %v", read.TreeHash, read.Count(), inline.TreeHash)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")[1:]
	for _, i := range []int{0, 1, 499, 999} {
		p, err := read.Prove(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, 1000, read.TreeHash, int64(i), tlog.RecordHash([]byte(lines[i]))); err != nil {
			t.Fatalf("entry %d does not prove against the tree hash: %v", i, err)
		}
		if err := tlog.CheckRecord(p, 1000, read.TreeHash, int64(i), tlog.RecordHash([]byte(lines[(i+1)%1000]))); err == nil {
			t.Fatalf("entry %d's proof holds for another entry", i)
		}
	}
	if got := read.For("2026-12"); len(got) != 500 || got[0].KeyID != "2026-12" {
		t.Fatalf("For: %d", len(got))
	}
}

// TestEnvelopeListRefusals: each way a list goes wrong has its own reason.
func TestEnvelopeListRefusals(t *testing.T) {
	refs := testList(10)
	good := listFile(t, refs)
	lines := strings.SplitAfter(string(good), "\n")
	dup := append([]EnvelopeRef{}, refs...)
	dup[7] = dup[3]
	cases := []struct {
		name string
		data string
		want Reason
	}{
		{"cut off mid-entry", string(good[:len(good)-20]), ReasonListTruncated},
		{"entries missing", strings.Join(lines[:8], ""), ReasonListTruncated},
		{"no final line break", strings.TrimSuffix(string(good), "\n"), ReasonListTruncated},
		{"empty", "", ReasonListTruncated},
		{"duplicate", strings.Join(append(append([]string{lines[0]}, lines[1:8]...), lines[2], lines[9], lines[10]), ""), ReasonListDuplicate},
		{"more than the header says", string(good) + lines[3], ReasonListMalformed},
		{"count too large", fmt.Sprintf("custodian envelope list v1 %d\n", MaxListEntries+1) + strings.Join(lines[1:], ""), ReasonListTooLarge},
		{"count zero", "custodian envelope list v1 0\n", ReasonListMalformed},
		{"count with a sign", "custodian envelope list v1 +10\n" + strings.Join(lines[1:], ""), ReasonListMalformed},
		{"other header", "custodian envelope list v2 10\n" + strings.Join(lines[1:], ""), ReasonListMalformed},
		{"not canonical", lines[0] + strings.Replace(lines[1], `{"key_id"`, `{ "key_id"`, 1) + strings.Join(lines[2:], ""), ReasonListMalformed},
		{"unknown field", lines[0] + strings.Replace(lines[1], `{"key_id"`, `{"x":1,"key_id"`, 1) + strings.Join(lines[2:], ""), ReasonListMalformed},
		{"line too long", lines[0] + strings.Repeat("x", maxListLine+10) + "\n" + strings.Join(lines[2:], ""), ReasonListMalformed},
		{"not a point", lines[0] + strings.Replace(lines[1], `"enc":"B`, `"enc":"A`, 1) + strings.Join(lines[2:], ""), ReasonListMalformed},
	}
	for _, c := range cases {
		_, err := ReadEnvelopeList(strings.NewReader(c.data))
		if got := ReasonOf(err); got != c.want {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.want)
		}
	}
	if _, err := ListOf(dup); ReasonOf(err) != ReasonListDuplicate {
		t.Errorf("an inline duplicate: %v", err)
	}
}

// TestEnvelopeListOversizedBytes: a list over MaxListBytes is refused as
// too large once the cap is read, not after reading all of it.
func TestEnvelopeListOversizedBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("makes a 64 MiB list")
	}
	long := strings.Repeat("target ", 570) + "end" // about 4 KiB, within the text rules
	r := &endlessList{next: func(i int) EnvelopeRef {
		return EnvelopeRef{KeyID: "2026-11", Target: long, Enc: testEnc(i)}
	}}
	_, err := ReadEnvelopeList(r)
	if ReasonOf(err) != ReasonListTooLarge {
		t.Fatalf("a list over %d bytes: %v", MaxListBytes, err)
	}
	if r.read > MaxListBytes+(1<<20) {
		t.Fatalf("read %d bytes before refusing", r.read)
	}
}

// endlessList is a list file claiming the most entries, made as it is read.
type endlessList struct {
	next func(int) EnvelopeRef
	buf  []byte
	n    int
	read int
}

func (r *endlessList) Read(p []byte) (int, error) {
	if r.n == 0 {
		r.buf = fmt.Appendf(nil, "custodian envelope list v1 %d\n", MaxListEntries)
	}
	for len(r.buf) < len(p) {
		line, _ := entryLine(r.next(r.n))
		r.buf = append(append(r.buf, line...), '\n')
		r.n++
	}
	k := copy(p, r.buf)
	r.buf = r.buf[k:]
	r.read += k
	return k, nil
}

// FuzzReadEnvelopeList feeds the list parser. Whatever it accepts must
// write back to the same bytes (one encoding per list) with the same tree
// hash; every refusal has a reason.
func FuzzReadEnvelopeList(f *testing.F) {
	good := listFile(f, testList(3))
	f.Add(good)
	f.Add(good[:len(good)-5])
	f.Add([]byte("custodian envelope list v1 1\n{}\n"))
	f.Add([]byte("custodian envelope list v1 100001\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ReadEnvelopeList(bytes.NewReader(data))
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		var b bytes.Buffer
		if _, err := l.WriteTo(&b); err != nil || !bytes.Equal(b.Bytes(), data) {
			t.Fatalf("an accepted list writes back differently: %v", err)
		}
		again, err := ListOf(l.Entries)
		if err != nil || again.TreeHash != l.TreeHash {
			t.Fatalf("the same entries hash differently: %v", err)
		}
	})
}

// TestWarrantChecksItsList: a warrant that names a list takes exactly that
// list, whose entries are all for its key IDs and targets; an inline list
// and a detached one are the same list to the caller.
func TestWarrantChecksItsList(t *testing.T) {
	fx := newFixture(t)
	refs := testList(20)
	list, err := ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	w := fx.warrant()
	w.KeyIDs = []string{"2026-11", "2026-12"}
	d := list.Digest()
	w.EnvelopeList = &d
	parsed, err := Parse(fx.content(t, w), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parsed.List(list); err != nil || got.TreeHash != list.TreeHash {
		t.Fatalf("its own list: %v", err)
	}
	inline := fx.warrant()
	inline.KeyIDs = w.KeyIDs
	inline.Envelopes = refs
	if got, err := inline.List(nil); err != nil || got.TreeHash != list.TreeHash {
		t.Fatalf("the same envelopes inline hash differently: %v", err)
	}
	other, _ := ListOf(refs[:19])
	narrow := *parsed
	narrow.KeyIDs = []string{"2026-11"}
	fewTargets := *parsed
	fewTargets.Targets = []string{"alice@example.org"}
	cases := []struct {
		name string
		w    *Warrant
		l    *EnvelopeList
		want Reason
	}{
		{"another list", parsed, other, ReasonListMismatch},
		{"no list", parsed, nil, ReasonListMissing},
		{"a list for a warrant without one", fx.warrant(), list, ReasonListUnexpected},
		{"another key ID", &narrow, list, ReasonListKeyID},
		{"another target", &fewTargets, list, ReasonListTarget},
	}
	for _, c := range cases {
		if _, err := c.w.List(c.l); ReasonOf(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}
	both := *w
	both.Envelopes = refs[:1]
	if _, err := both.Marshal(0); ReasonOf(err) != ReasonBadEnvelope {
		t.Errorf("inline and a list together: %v", err)
	}
	if s := SummaryWithList(parsed, list, nil); !strings.Contains(s, "Envelopes:  20 (") || !strings.Contains(s, "List:       20 entries, tree hash") {
		t.Errorf("summary:\n%s", s)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 100000: "100,000", 1234567: "1,234,567"} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q", n, got)
		}
	}
}

// BenchmarkReadEnvelopeList measures parsing a list file of 10,000
// entries (strict JSON, canonical form, point check, duplicates, tree
// hash), per entry.
func BenchmarkReadEnvelopeList(b *testing.B) {
	const n = 10_000
	data := listFile(b, testList(n))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ReadEnvelopeList(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}
