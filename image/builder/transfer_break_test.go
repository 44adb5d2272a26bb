package builder

import (
	"os"
	"testing"

	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
)

// docs/operator.md step 12: the operator sends the new image to the
// device with the console's put, which writes it into the data directory's
// transfer/ on the data partition, and update apply reads it from there.
// An image of the default layout is larger than the whole data partition
// of a device installed from the same manifest (it holds that data
// partition and both slots), so the runbook's update cannot be followed:
// put runs out of space on the partition that holds the ledger.
func TestUpdateImageFitsTheDataPartition_break(t *testing.T) {
	img := build(t, imagetest.Write(t), nil)
	info, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	data := partitions(t, img)[layout.DataPartition-1]
	dataBytes := data.size * 512
	if info.Size() >= dataBytes {
		t.Errorf("the image update apply reads is %d MiB; the data partition it must be put on is %d MiB in all (before the ledger, the file system's own use, and a copy in flight)",
			info.Size()>>20, dataBytes>>20)
	}
}
