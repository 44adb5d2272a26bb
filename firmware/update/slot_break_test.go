package update

import (
	"testing"
)

// A Pi firmware that reports the boot partition but no tryboot cell
// leaves unknown whether this boot is the one-shot tryboot. RunningSlot
// takes it for an ordinary boot, so update apply during the trial of an
// update writes over the slot the firmware falls back to (the committed
// one), and update commit refuses for ever ("not a tryboot"). Want: no
// slot without the tryboot cell beside the partition cell.
func TestRunningSlotWithoutTrybootCellIsUnknown_break(t *testing.T) {
	got, err := RunningSlot(proc(t, map[string][]byte{dtPartition: cell(3)}))
	if err == nil {
		t.Fatalf("the firmware said nothing about tryboot and RunningSlot answered %+v: update apply would write slot %s, which may be the fallback", got, got.Slot.Other())
	}
}
