package earlyinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/image/layout"
)

func TestParseOrder(t *testing.T) {
	files, err := ParseOrder([]byte("tpm_tis_core.ko.xz\n\nsquashfs.ko.xz\ntpm-tis.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tpm_tis_core.ko.xz", "squashfs.ko.xz", "tpm-tis.ko"}; !slices.Equal(files, want) {
		t.Errorf("files %q, want %q", files, want)
	}
	refused := map[string]string{
		"path":           "kernel/drivers/tpm.ko\n",
		"dotdot":         "../tpm.ko\n",
		"leading dot":    ".tpm.ko\n",
		"suffix":         "tpm.so\n",
		"no suffix":      "tpm\n",
		"space":          "tpm .ko\n",
		"twice":          "tpm_tis.ko\ntpm_tis.ko.xz\n",
		"twice dashed":   "tpm-tis.ko\ntpm_tis.ko\n",
		"comment":        "# modules\n",
		"carriage ret":   "tpm.ko\r\n",
		"too large":      strings.Repeat("a.ko\n", maxOrderSize/5+1),
		"too many":       manyModules(maxOrderModules + 1),
		"bz2 compressed": "tpm.ko.bz2\n",
	}
	for name, order := range refused {
		if _, err := ParseOrder([]byte(order)); err == nil {
			t.Errorf("%s: %q accepted", name, order)
		}
	}
}

func manyModules(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "m%d.ko\n", i)
	}
	return b.String()
}

func TestModuleName(t *testing.T) {
	for file, want := range map[string]string{
		"tpm_tis_core.ko.xz": "tpm_tis_core",
		"tpm-tis.ko":         "tpm_tis",
		"squashfs.ko.zst":    "squashfs",
	} {
		if got := ModuleName(file); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", file, got, want)
		}
	}
	if Compressed("a.ko") || !Compressed("a.ko.xz") {
		t.Error("Compressed is wrong about .ko or .ko.xz")
	}
}

// Modules load in order; present ones are skipped, and the first failure
// stops the loading and names the module.
func TestLoadModules(t *testing.T) {
	dir, sys := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "order"), "tpm_tis_core.ko.xz\nsquashfs.ko.xz\ntpm_tis.ko\nbuiltin.ko.xz\n")
	if err := os.Mkdir(filepath.Join(sys, "builtin"), 0o755); err != nil {
		t.Fatal(err)
	}
	var calls []string
	load := func(path string, compressed bool) error {
		calls = append(calls, filepath.Base(path)+map[bool]string{true: " compressed", false: ""}[compressed])
		if filepath.Base(path) == "squashfs.ko.xz" {
			return ErrModuleExists
		}
		return nil
	}
	loaded, present, err := LoadModules(dir, sys, load)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tpm_tis_core.ko.xz compressed", "squashfs.ko.xz compressed", "tpm_tis.ko"}; !slices.Equal(calls, want) {
		t.Errorf("loads %q, want %q", calls, want)
	}
	if !slices.Equal(loaded, []string{"tpm_tis_core", "tpm_tis"}) || !slices.Equal(present, []string{"squashfs", "builtin"}) {
		t.Errorf("loaded %q present %q", loaded, present)
	}

	calls = nil
	broken := errors.New("exec format error")
	_, _, err = LoadModules(dir, sys, func(path string, c bool) error {
		calls = append(calls, filepath.Base(path))
		return broken
	})
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "tpm_tis_core.ko.xz") || len(calls) != 1 {
		t.Errorf("a failed load: %v after %q", err, calls)
	}

	if l, p, err := LoadModules(t.TempDir(), sys, load); err != nil || l != nil || p != nil {
		t.Errorf("no order file: %v %v %v", l, p, err)
	}
}

func TestRTCTime(t *testing.T) {
	got, err := RTCTime{Sec: 29, Min: 22, Hour: 9, Mday: 3, Mon: 11, Year: 126}.Time()
	if want := time.Date(2026, 12, 3, 9, 22, 29, 0, time.UTC); err != nil || !got.Equal(want) {
		t.Errorf("Time() = %v, %v; want %v", got, err, want)
	}
	leap, err := RTCTime{Mday: 29, Mon: 1, Year: 128}.Time()
	if err != nil || leap.Month() != time.February || leap.Day() != 29 {
		t.Errorf("29 February 2028: %v %v", leap, err)
	}
	for name, r := range map[string]RTCTime{
		"31 February":   {Mday: 31, Mon: 1, Year: 126},
		"29 Feb 2027":   {Mday: 29, Mon: 1, Year: 127},
		"month 12":      {Mday: 1, Mon: 12, Year: 126},
		"day 0":         {Mday: 0, Mon: 0, Year: 126},
		"hour 24":       {Hour: 24, Mday: 1, Year: 126},
		"minute 60":     {Min: 60, Mday: 1, Year: 126},
		"second 60":     {Sec: 60, Mday: 1, Year: 126},
		"negative":      {Sec: -1, Mday: 1, Year: 126},
		"before 1970":   {Mday: 1, Year: 69},
		"uninitialised": {},
	} {
		if tm, err := r.Time(); err == nil {
			t.Errorf("%s: read as %v", name, tm)
		}
	}
}

func TestCheckClock(t *testing.T) {
	built := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	if err := CheckClock(built.Add(time.Hour), built); err != nil {
		t.Errorf("a time after the build: %v", err)
	}
	if err := CheckClock(built, built); err != nil {
		t.Errorf("the build time itself: %v", err)
	}
	for _, bad := range []time.Time{built.Add(-time.Second), time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), latestSaneTime} {
		if err := CheckClock(bad, built); !errors.Is(err, ErrClockInsane) {
			t.Errorf("%v accepted: %v", bad, err)
		}
	}
}

// An RTC far ahead of the image's build does not boot: its time would go
// onto the first ledger entry, and every later entry and resolve would
// refuse a corrected clock as "behind the newest ledger entry" (the
// ledger cannot be made anew once its anchor is locked): one boot on a
// rewritten RTC would end the device. The bound is ClockHorizonYears
// after the manifest's source_date_epoch.
func TestInvariantClockFarAheadOfTheImageDoesNotBoot(t *testing.T) {
	built := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, ahead := range []time.Time{time.Date(2099, 12, 31, 0, 0, 0, 0, time.UTC), ClockHorizon(built), built.AddDate(ClockHorizonYears, 0, 1)} {
		err := CheckClock(ahead, built)
		if !errors.Is(err, ErrClockInsane) || !strings.Contains(err.Error(), "after this image was built") {
			t.Errorf("an RTC at %s boots an image built %s: %v", ahead.Format(time.DateOnly), built.Format(time.DateOnly), err)
		}
	}
	if err := CheckClock(ClockHorizon(built).Add(-time.Second), built); err != nil {
		t.Errorf("the last second before the horizon: %v", err)
	}
}

func TestBootSlot(t *testing.T) {
	cases := []struct {
		name     string
		dt       []byte // nil: no device tree node
		cmdline  string
		slot     layout.Slot
		src      BootSource
		errorSay string
	}{
		{"firmware A", []byte{0, 0, 0, 2}, "console=ttyAMA0", layout.SlotA, FromFirmware, ""},
		{"firmware B beats cmdline", []byte{0, 0, 0, 3}, "custodian.boot_partition=2", layout.SlotB, FromFirmware, ""},
		{"cmdline B", nil, "console=ttyAMA0 custodian.boot_partition=3 panic=-1\n", layout.SlotB, FromCmdline, ""},
		{"firmware not a slot", []byte{0, 0, 0, 4}, "", 0, "", "not a boot partition"},
		{"firmware short", []byte{0, 2}, "", 0, "", "not a 32-bit number"},
		{"firmware little-endian", []byte{2, 0, 0, 0}, "", 0, "", "not a boot partition"},
		{"neither", nil, "console=ttyAMA0", 0, "", "custodian.boot_partition=N"},
		{"cmdline twice", nil, "custodian.boot_partition=2 custodian.boot_partition=3", 0, "", "more than once"},
		{"cmdline not a number", nil, "custodian.boot_partition=two", 0, "", "not a partition number"},
		{"cmdline leading zero", nil, "custodian.boot_partition=02", 0, "", "not a partition number"},
		{"cmdline autoboot", nil, "custodian.boot_partition=1", 0, "", "not a boot partition"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proc := t.TempDir()
			write(t, filepath.Join(proc, "cmdline"), tc.cmdline)
			if tc.dt != nil {
				write(t, filepath.Join(proc, "device-tree/chosen/bootloader/partition"), string(tc.dt))
			}
			slot, _, src, err := BootSlot(proc)
			if tc.errorSay != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errorSay) {
					t.Fatalf("error %v, want one saying %q", err, tc.errorSay)
				}
				return
			}
			if err != nil || slot != tc.slot || src != tc.src {
				t.Fatalf("slot %v from %q, %v; want %v from %q", slot, src, err, tc.slot, tc.src)
			}
		})
	}
}

// A fake /sys/class/block: an SD card with the appliance's partitions, a
// disk without GPT names, and devices without a uevent.
func fakeSysBlock(t *testing.T, extra map[string]string) string {
	sys := t.TempDir()
	devs := map[string]string{
		"mmcblk0":   "MAJOR=179\nMINOR=0\nDEVNAME=mmcblk0\nDEVTYPE=disk\n",
		"loop0":     "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n",
		"sda1":      "MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nPARTN=1\n",
		"mmcblk0p1": "DEVNAME=mmcblk0p1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=custodian-autoboot\n",
	}
	for n := 2; n <= layout.PartitionCount; n++ {
		dev := "mmcblk0p" + string(rune('0'+n))
		devs[dev] = "MAJOR=179\nDEVNAME=" + dev + "\nDEVTYPE=partition\nPARTN=" + string(rune('0'+n)) + "\nPARTNAME=" + layout.PartitionName(n) + "\n"
	}
	for k, v := range extra {
		devs[k] = v
	}
	for dev, uevent := range devs {
		write(t, filepath.Join(sys, dev, "uevent"), uevent)
	}
	if err := os.Mkdir(filepath.Join(sys, "ram0"), 0o755); err != nil {
		t.Fatal(err)
	}
	return sys
}

func TestFindPartition(t *testing.T) {
	parts, err := Partitions(fakeSysBlock(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	for n, dev := range map[int]string{layout.SlotA.RootPartition(): "mmcblk0p4", layout.SlotB.RootPartition(): "mmcblk0p5", layout.DataPartition: "mmcblk0p6"} {
		p, err := FindPartition(parts, n)
		if err != nil || p.Dev != dev || p.Number != n {
			t.Errorf("partition %d: %+v, %v; want %s", n, p, err, dev)
		}
	}

	second := map[string]string{"sdb4": "DEVNAME=sdb4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=custodian-root-a\n"}
	parts, _ = Partitions(fakeSysBlock(t, second))
	if _, err := FindPartition(parts, 4); err == nil || !strings.Contains(err.Error(), "both named custodian-root-a") {
		t.Errorf("a second disk's root partition: %v", err)
	}
	renumbered := map[string]string{"mmcblk0p6": "DEVNAME=mmcblk0p6\nDEVTYPE=partition\nPARTN=7\nPARTNAME=custodian-data\n"}
	parts, _ = Partitions(fakeSysBlock(t, renumbered))
	if _, err := FindPartition(parts, layout.DataPartition); err == nil || !strings.Contains(err.Error(), "is number 7") {
		t.Errorf("a data partition at the wrong number: %v", err)
	}
	unnamed := map[string]string{"mmcblk0p5": "DEVNAME=mmcblk0p5\nDEVTYPE=partition\nPARTN=5\n"}
	parts, _ = Partitions(fakeSysBlock(t, unnamed))
	if _, err := FindPartition(parts, 5); err == nil || !strings.Contains(err.Error(), "no partition is named custodian-root-b") {
		t.Errorf("no root B: %v", err)
	}
	// A device name that would leave /dev is never a partition.
	sneaky := map[string]string{"mmcblk0p4": "DEVNAME=../sda\nDEVTYPE=partition\nPARTN=4\nPARTNAME=custodian-root-a\n"}
	parts, _ = Partitions(fakeSysBlock(t, sneaky))
	if p, err := FindPartition(parts, 4); err == nil {
		t.Errorf("device name with a path accepted: %+v", p)
	}
}

func TestPrintFailure(t *testing.T) {
	var b strings.Builder
	PrintFailure(&b, fail("mounting the root of slot A (/dev/vda4)", errors.New("invalid argument"), "the squashfs module"))
	want := "custodian-init: FAILED: mounting the root of slot A (/dev/vda4): invalid argument\ncustodian-init: check: the squashfs module\ncustodian-init: halted"
	if !strings.HasPrefix(b.String(), want) {
		t.Errorf("printed\n%s\nwant it to start\n%s", b.String(), want)
	}
}

func write(t *testing.T, file, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Whatever ParseOrder accepts is a list of distinct plain module files.
func FuzzParseOrder(f *testing.F) {
	f.Add([]byte("tpm_tis_core.ko.xz\nsquashfs.ko.xz\ntpm_tis.ko\n"))
	f.Add([]byte("../x.ko\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := ParseOrder(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, file := range files {
			if filepath.Base(file) != file || strings.HasPrefix(file, ".") || !strings.Contains(file, ".ko") || seen[ModuleName(file)] {
				t.Fatalf("accepted %q in %q", file, files)
			}
			seen[ModuleName(file)] = true
		}
	})
}

// A uevent file yields a partition only with a plain device name.
func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("DEVNAME=mmcblk0p4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=custodian-root-a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, ok := parseUevent(data)
		if ok && (p.Dev == "" || strings.Contains(p.Dev, "/") || strings.HasPrefix(p.Dev, ".") || p.Name == "") {
			t.Fatalf("accepted %+v", p)
		}
	})
}
