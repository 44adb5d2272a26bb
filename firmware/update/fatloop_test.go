package update

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image/layout"
)

// fatLoopEnv makes the test binary, run again as a child, open the image
// file it names and report.
const fatLoopEnv = "CUSTODIAN_TEST_FATLOOP_IMAGE"

// An image whose FAT chains a file's cluster to itself (one changed FAT
// entry in slot A's boot partition) is refused as damaged by OpenImage,
// which update apply runs on an image from outside. go-diskfs follows
// cluster chains without a bound, so without imagefs's check of the FAT it
// would grow memory without end: the child runs under a 5 s test timeout
// and a 2 GB address-space limit so the machine is safe either way.
func TestOpenImageRefusesFATClusterLoop(t *testing.T) {
	if file := os.Getenv(fatLoopEnv); file != "" {
		data := readAll(t, file)
		_, err := openImage(data)
		if err == nil || !strings.Contains(err.Error(), "the file system is damaged") {
			t.Fatalf("an image with a FAT cluster loop: %v, want the file system is damaged", err)
		}
		return
	}
	b := buildImage(t)
	img := bytes.Clone(b.img)
	tab, err := ReadTable(bytesAt(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Partitions[layout.SlotA.BootPartition()]
	loopCluster(t, img[p.Start:p.Start+p.Size], "BOOT    SIG")
	file := b.imageFile(t)
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `ulimit -v 2000000; exec "$0" -test.run '^TestOpenImageRefusesFATClusterLoop$' -test.timeout 5s -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), fatLoopEnv+"="+file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		reason := "it ran out of memory"
		if strings.Contains(string(out), "test timed out") {
			reason = "it did not return within 5 s"
		}
		t.Fatalf("OpenImage on an image with a FAT cluster loop: %s (%v); want a refusal (the file system is damaged)\n%s", reason, err, evidence(out))
	}
}

// evidence is the child's lines that say where it was stuck.
func evidence(out []byte) string {
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "out of memory") || strings.Contains(l, "test timed out") || strings.Contains(l, "getClusterList") || strings.Contains(l, "OpenImage") || strings.Contains(l, "hashFile") || strings.Contains(l, "squashfs.(") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// loopCluster points the FAT16 entry of the file with the 8.3 name short
// (in the root directory) at its own first cluster, in every FAT copy.
func loopCluster(t *testing.T, fat []byte, short string) {
	t.Helper()
	le := binary.LittleEndian
	bps := int(le.Uint16(fat[11:]))
	reserved, nfats := int(le.Uint16(fat[14:])), int(fat[16])
	rootEntries, fatSectors := int(le.Uint16(fat[17:])), int(le.Uint16(fat[22:]))
	if bps != SectorSize || fatSectors == 0 || rootEntries == 0 {
		t.Fatalf("slot A's boot partition is not FAT16 (bytes/sector %d, FAT sectors %d)", bps, fatSectors)
	}
	root := (reserved + nfats*fatSectors) * bps
	for i := 0; i < rootEntries; i++ {
		e := fat[root+32*i : root+32*i+32]
		if string(e[:11]) != short {
			continue
		}
		cluster := le.Uint16(e[26:])
		for f := 0; f < nfats; f++ {
			le.PutUint16(fat[(reserved+f*fatSectors)*bps+2*int(cluster):], cluster)
		}
		return
	}
	t.Fatalf("no %q in the root directory", short)
}
