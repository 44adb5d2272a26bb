package update

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image/layout"
)

// proc writes a fake /proc: files by path, and returns its root.
func proc(t *testing.T, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func cell(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func TestRunningSlot(t *testing.T) {
	cases := []struct {
		name  string
		files map[string][]byte
		want  Boot
	}{
		{"Pi, slot A", map[string][]byte{dtPartition: cell(2), dtTryboot: cell(0), "cmdline": []byte("custodian.boot_partition=3\n")},
			Boot{Slot: layout.SlotA, Pi: true}},
		{"Pi, tryboot of slot B", map[string][]byte{dtPartition: cell(3), dtTryboot: cell(1)},
			Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}},
		{"command line", map[string][]byte{"cmdline": []byte("console=ttyAMA0 custodian.boot_partition=3 panic=-1\n")},
			Boot{Slot: layout.SlotB}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := RunningSlot(proc(t, c.files))
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestRunningSlotRefusals(t *testing.T) {
	cases := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"data partition", map[string][]byte{dtPartition: cell(6)}, "not a boot partition"},
		{"short cell", map[string][]byte{dtPartition: {0, 2}}, "not 4"},
		{"Pi firmware without a tryboot cell", map[string][]byte{dtPartition: cell(3)}, "running slot is unknown"},
		{"tryboot 2", map[string][]byte{dtPartition: cell(2), dtTryboot: cell(2)}, "tryboot flag"},
		{"no report", map[string][]byte{"cmdline": []byte("console=ttyAMA0\n")}, "cannot tell which slot"},
		{"twice", map[string][]byte{"cmdline": []byte("custodian.boot_partition=2 custodian.boot_partition=3")}, "more than once"},
		{"not a number", map[string][]byte{"cmdline": []byte("custodian.boot_partition=+2")}, "not a partition number"},
		{"autoboot partition", map[string][]byte{"cmdline": []byte("custodian.boot_partition=1")}, "not a boot partition"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := RunningSlot(proc(t, c.files))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyAMA0 custodian.boot_partition=3 panic=-1")
	f.Add("custodian.boot_partition=02")
	f.Fuzz(func(t *testing.T, cmdline string) {
		n, err := parseCmdline(cmdline)
		if err != nil {
			return
		}
		if n < 1 || n > layout.PartitionCount || !strings.Contains(cmdline, cmdlineParam) {
			t.Fatalf("accepted %d from %q", n, cmdline)
		}
	})
}

func FuzzParseCell(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, err := parseCell(raw)
		if (err == nil) != (len(raw) == 4) || (err == nil && cell(n) == nil) {
			t.Fatalf("parseCell(%x) = %d, %v", raw, n, err)
		}
	})
}
