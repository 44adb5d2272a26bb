package bootpolicy

import (
	"bytes"
	"testing"

	"github.com/custodian-project/custodian/tpm"
)

func TestPolicyFromMeasurement(t *testing.T) {
	v := bytes.Repeat([]byte{3}, 32)
	p, err := FromMeasurement("court-a", tpm.PCRValues{8: v, 9: v}, 3)
	if err != nil {
		t.Fatal(err)
	}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil || !again.PCRs.Equal(p.PCRs) || again.Source != "enrollment:court-a" || again.SecurityVersion != 3 {
		t.Fatalf("round trip: %v\n%s", err, data)
	}
	for name, pcrs := range map[string]tpm.PCRValues{
		"PCR 10 (IMA)":   {10: v},
		"PCR 0":          {0: v},
		"never extended": {8: make([]byte, 32)},
		"empty":          {},
	} {
		if _, err := FromMeasurement("court-a", pcrs, 3); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := FromMeasurement("court-a", tpm.PCRValues{8: v}, 0); err == nil {
		t.Error("security version 0 accepted")
	}
	if _, err := FromMeasurement("Court A", tpm.PCRValues{8: v}, 3); err == nil {
		t.Error("bad custodian ID accepted")
	}
	withEvents := bytes.Replace(data, []byte(`"events": []`), []byte(`"events": [{"pcr": 8, "kind": "separator", "name": "separator", "measured": "00", "digest": "00"}]`), 1)
	if _, err := Parse(withEvents); err == nil {
		t.Error("a measured policy with events parsed")
	}
}
