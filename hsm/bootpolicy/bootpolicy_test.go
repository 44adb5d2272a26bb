package bootpolicy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

func testEvents() []Event {
	return []Event{
		NewEvent(8, KindRootFS, "/", sha256.Sum256([]byte("root"))),
		NewEvent(9, KindBinary, "/usr/bin/custodian", sha256.Sum256([]byte("binary"))),
		NewEvent(11, KindConfig, "/etc/custodian/config.toml", sha256.Sum256([]byte("config"))),
		NewSecurityVersion(11, 2),
		NewEvent(12, KindTrustRoots, "/etc/custodian/trust", sha256.Sum256([]byte("trust"))),
		NewSeparator(8), NewSeparator(9), NewSeparator(11), NewSeparator(12),
	}
}

func testPolicy(t testing.TB) []byte {
	t.Helper()
	p, err := New(testEvents())
	if err != nil {
		t.Fatal(err)
	}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPolicyRoundTrip(t *testing.T) {
	data := testPolicy(t)
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Fatalf("re-encoding changed the policy:\n%s\n%s", data, again)
	}
	if len(p.PCRs) != 4 || len(p.Events) != 9 || p.SecurityVersion != 2 {
		t.Fatalf("parsed %d PCRs and %d events", len(p.PCRs), len(p.Events))
	}
}

// Each edit of a valid policy is refused, with a reason a person can act on.
func TestPolicyRefuses(t *testing.T) {
	valid := string(testPolicy(t))
	p, _ := New(testEvents())
	pcr8 := hex.EncodeToString(p.PCRs[8])
	sep := hex.EncodeToString(p.Events[5].Digest)
	cases := map[string]struct{ from, to, want string }{
		"unknown key":       {`"version": 1,`, `"version": 1, "comment": "x",`, "unknown field"},
		"duplicate key":     {`"version": 1,`, `"version": 1, "version": 1,`, "duplicate key"},
		"version":           {`"version": 1,`, `"version": 2,`, "version 2"},
		"PCR value":         {pcr8, strings.Repeat("ab", 32), "replaying the events"},
		"uppercase hex":     {pcr8, strings.ToUpper(pcr8), "lowercase hex"},
		"PCR 10":            {`"pcr": 11,`, `"pcr": 10,`, "PCR 10 cannot hold"},
		"PCR 16":            {`"pcr": 12,`, `"pcr": 16,`, "PCR 16 cannot hold"},
		"event digest":      {sep, strings.Repeat("00", 32), "digest does not match"},
		"unknown kind":      {`"kind": "config"`, `"kind": "kernel"`, "unknown event kind"},
		"trailing data":     {"\n}\n", "\n}\n{}", "trailing data"},
		"renamed separator": {`"name": "separator"`, `"name": "separator2"`, "fixed separator"},
		"other version":     {`"security_version": 2,`, `"security_version": 3,`, "not the measured version 2"},
		"version 0":         {`"security_version": 2,`, `"security_version": 0,`, "not the measured version 2"},
		"no version":        {`"security_version": 2,`, ``, "not the measured version 2"},
		"version as name":   {`"name": "2"`, `"name": "02"`, "not a decimal version"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(valid, c.from) {
				t.Fatalf("test policy lacks %q", c.from)
			}
			_, err := Parse([]byte(strings.Replace(valid, c.from, c.to, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// A policy whose PCR is measured but not closed by a separator, or
// measured again after it, is refused.
func TestPolicyRequiresSeparators(t *testing.T) {
	events := testEvents()
	if _, err := New(events[:len(events)-1]); err == nil || !strings.Contains(err.Error(), "PCR 12 has none") {
		t.Fatalf("missing separator: %v", err)
	}
	late := append(testEvents(), NewEvent(8, KindRootFS, "/", sha256.Sum256([]byte("late"))))
	if _, err := New(late); err == nil || !strings.Contains(err.Error(), "after its separator") {
		t.Fatalf("event after the separator: %v", err)
	}
	if _, err := New(append(testEvents(), NewSeparator(8))); err == nil {
		t.Fatal("a second separator was accepted")
	}
}

// The security version a share is sealed for must be the one measured at
// boot: exactly one security-version event, before its PCR's separator.
func TestPolicyRequiresOneMeasuredSecurityVersion(t *testing.T) {
	events := testEvents()
	without := append(append([]Event{}, events[:3]...), events[4:]...)
	if _, err := New(without); err == nil || !strings.Contains(err.Error(), "0 security-version events") {
		t.Fatalf("no security-version event: %v", err)
	}
	twice := append(append(append([]Event{}, events[:4]...), NewSecurityVersion(9, 7)), events[4:]...)
	if _, err := New(twice); err == nil || !strings.Contains(err.Error(), "2 security-version events") {
		t.Fatalf("two security-version events: %v", err)
	}
}

func TestLogRoundTripAndReplay(t *testing.T) {
	p, err := New(testEvents())
	if err != nil {
		t.Fatal(err)
	}
	log, err := EncodeLog(p.Events)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyLog(log, p.PCRs); err != nil {
		t.Fatal(err)
	}
	other := p.PCRs.Extend(9, make([]byte, 32))
	if _, err := p.VerifyLog(log, other); err == nil || !strings.Contains(err.Error(), "does not match the PCRs") {
		t.Fatalf("log against other PCRs: %v", err)
	}
	// A log whose content was edited no longer matches its digests.
	edited := bytes.Replace(log, []byte("/usr/bin/custodian"), []byte("/usr/bin/custodiaN"), 1)
	if _, err := ParseLog(edited); err == nil || !strings.Contains(err.Error(), "digest does not match") {
		t.Fatalf("edited log: %v", err)
	}
	// A log of other events does not satisfy this policy.
	short, _ := EncodeLog(p.Events[1:])
	if _, err := p.VerifyLog(short, p.PCRs); err == nil {
		t.Fatal("a log missing the rootfs event verified")
	}
}

// A TLV header claiming 4 GiB is refused before anything allocates it.
func TestLogRefusesHugeLength(t *testing.T) {
	data := make([]byte, 5)
	binary.BigEndian.PutUint32(data[1:], 0xffffffff)
	if _, err := ParseLog(data); err == nil {
		t.Fatal("accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(testPolicy(f))
	f.Add([]byte(`{"version":1,"pcrs":{},"events":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// What parses is self-consistent and survives a round trip.
		if !Replay(p.Events).Equal(p.PCRs) {
			t.Fatal("accepted a policy that does not replay to its PCRs")
		}
		again, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("re-encoded policy does not parse: %v", err)
		}
	})
}

func FuzzParseLog(f *testing.F) {
	log, err := EncodeLog(testEvents())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(log)
	f.Add(log[:len(log)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := ParseLog(data)
		if err != nil {
			return
		}
		again, err := EncodeLog(events)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatal("a log that parses does not re-encode to the same bytes")
		}
	})
}
