package release

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/witness"
)

// TestWitnessCode: both phases classify the witnesses' errors alike; only
// a timeout's code depends on the phase.
func TestWitnessCode(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   Code
		advice string
	}{
		{fmt.Errorf("%w: unknown log", witness.ErrRefused), CodeWitnessRefused, "origin and key"},
		{fmt.Errorf("%w: %w", witness.ErrRefused, witness.ErrBehind), CodeWitnessRefused, "restored from a copy"},
		{fmt.Errorf("%w: %w", witness.ErrRefused, witness.ErrConflict), CodeWitnessRefused, "restored from a copy"},
		{witness.ErrTimeout, CodeWitnessTimeout, ""},
		{errors.New("disk"), CodeInternal, ""},
	} {
		code, advice := witnessCode(c.err, CodeWitnessTimeout)
		if code != c.code || (c.advice == "") != (advice == "") || !strings.Contains(advice, c.advice) {
			t.Errorf("%v: %s %q", c.err, code, advice)
		}
	}
	if code, _ := witnessCode(witness.ErrTimeout, CodeWitnessUnreachable); code != CodeWitnessUnreachable {
		t.Errorf("a timeout before the entry: %s", code)
	}
}
