package layout

import (
	"strings"
	"testing"
)

func TestSlotsArePairsApart(t *testing.T) {
	seen := map[int]string{}
	for _, s := range []Slot{SlotA, SlotB} {
		for _, n := range []int{s.BootPartition(), s.RootPartition()} {
			if prev, ok := seen[n]; ok {
				t.Fatalf("partition %d is in slot %s and %s", n, prev, s)
			}
			seen[n] = s.String()
		}
		if s.Other() == s || s.Other().Other() != s {
			t.Fatalf("slot %s: Other is not an involution", s)
		}
		got, err := SlotOfBootPartition(s.BootPartition())
		if err != nil || got != s {
			t.Fatalf("SlotOfBootPartition(%d) = %v, %v; want %s", s.BootPartition(), got, err, s)
		}
	}
	for _, n := range []int{AutobootPartition, DataPartition, 0, 7} {
		if _, ok := seen[n]; ok {
			t.Fatalf("partition %d is both in a slot and outside", n)
		}
		if _, err := SlotOfBootPartition(n); err == nil {
			t.Fatalf("SlotOfBootPartition(%d) accepted a partition that boots no slot", n)
		}
	}
}

func TestPartitionNamesAreDistinct(t *testing.T) {
	names := map[string]bool{}
	for n := 1; n <= PartitionCount; n++ {
		name := PartitionName(n)
		if name == "" || names[name] {
			t.Fatalf("partition %d: name %q missing or repeated", n, name)
		}
		names[name] = true
	}
	if PartitionName(PartitionCount+1) != "" {
		t.Fatal("a partition past the table has a name")
	}
}

func TestAutobootTriesTheOtherSlotOnce(t *testing.T) {
	got := string(Autoboot(SlotB))
	all, try, ok := strings.Cut(got, "[tryboot]")
	if !ok {
		t.Fatalf("no [tryboot] section:\n%s", got)
	}
	if !strings.Contains(all, "boot_partition=3\n") || !strings.Contains(try, "boot_partition=2\n") {
		t.Fatalf("slot B active should boot 3 and try 2:\n%s", got)
	}
	if !strings.Contains(all, "tryboot_a_b=1\n") {
		t.Fatalf("tryboot_a_b missing:\n%s", got)
	}
}

// update commit rewrites autoboot.txt in place with one sector write: the
// texts for both slots must have the same length and fit one sector.
func TestAutobootTextsFitOneSector(t *testing.T) {
	a, b := Autoboot(SlotA), Autoboot(SlotB)
	if len(a) != len(b) || len(a) > 512 {
		t.Fatalf("autoboot.txt is %d bytes for slot A and %d for slot B; want equal lengths within one 512-byte sector", len(a), len(b))
	}
}
