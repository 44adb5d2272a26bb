package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// BenchmarkTornTailCheck: deciding what a 4 MiB tail after the last whole
// record is costs about one read of it, whether it is an honest torn
// write (zeros) or crafted (a record header every 16 bytes, each running
// to the file's end, none whole). Reported as the ratio crafted/honest,
// both measured in this run; the check once hashed the rest of the file
// per header.
func BenchmarkTornTailCheck(b *testing.B) {
	var head bytes.Buffer
	if _, _, err := writeRecord(&head, record{kind: kindTx, seq: 1, ops: []op{{code: opBucket, bucket: bucketMeta}}}); err != nil {
		b.Fatal(err)
	}
	const tail = 4 << 20
	end := head.Len() + tail
	honest := append(bytes.Clone(head.Bytes()), make([]byte, tail)...)
	crafted := append(bytes.Clone(head.Bytes()), 'X')
	for len(crafted)+16 <= end {
		p := len(crafted)
		crafted = append(crafted, journalMagic...)
		crafted = binary.BigEndian.AppendUint64(crafted, uint64(end-p-frameHeader-32))
		crafted = append(crafted, "pad!"...)
	}
	crafted = append(crafted, make([]byte, end-len(crafted))...)

	decide := func(data []byte) (time.Duration, error) {
		start := time.Now()
		s := &scanner{f: bytes.NewReader(data), end: int64(len(data))}
		for {
			if _, err := s.next(); err != nil {
				return time.Since(start), err
			}
		}
	}
	var h, c time.Duration
	for b.Loop() {
		dh, err := decide(honest)
		if !errors.Is(err, errTorn) {
			b.Fatalf("an honest torn tail: %v", err)
		}
		dc, err := decide(crafted)
		if !errors.Is(err, ErrJournalDamaged) {
			b.Fatalf("a crafted tail: %v", err)
		}
		h, c = h+dh, c+dc
	}
	b.ReportMetric(float64(c)/float64(h), "crafted/honest")
}
