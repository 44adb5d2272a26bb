package image

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// RootPinName is the file in the initramfs that pins the root filesystem
// of the same slot: its size and SHA-256. The initramfs is inside the
// signed boot.img, so the pin is as trusted as the kernel; the early init
// checks the root's bytes against it before the kernel parses any of them.
const RootPinName = "root.sha256"

// MaxRootBytes bounds a pinned root. The early init holds the whole root
// in memory for as long as the device runs (there is no swap to give it
// back to), beside an update held in memory while it is applied; a Pi
// with 1 GiB must keep room for both and the daemon.
const MaxRootBytes = 128 << 20

// RootAlign is what a pinned root's size is a multiple of: the builder
// pads the squashfs to 4 KiB, and a loop device serves whole sectors.
const RootAlign = 4096

// RootPin is the size and SHA-256 of a root filesystem image.
type RootPin struct {
	Size   int64
	SHA256 [sha256.Size]byte
}

// PinRoot pins the root filesystem image root.
func PinRoot(root []byte) RootPin {
	return RootPin{Size: int64(len(root)), SHA256: sha256.Sum256(root)}
}

// Marshal writes the pin as one line, "<hex sha256> <size>\n".
func (p RootPin) Marshal() []byte {
	return []byte(hex.EncodeToString(p.SHA256[:]) + " " + strconv.FormatInt(p.Size, 10) + "\n")
}

// ParseRootPin reads what Marshal wrote, and nothing else.
func ParseRootPin(data []byte) (RootPin, error) {
	line, ok := bytes.CutSuffix(data, []byte("\n"))
	sum, size, two := strings.Cut(string(line), " ")
	if !ok || !two || bytes.ContainsAny(line, "\n\r\t") {
		return RootPin{}, errors.New("the root pin must be one line: the SHA-256 in hex, a space, the size in bytes")
	}
	var p RootPin
	if len(sum) != 2*sha256.Size || strings.ToLower(sum) != sum {
		return RootPin{}, errors.New("the root pin's SHA-256 must be 64 lower-case hex digits")
	}
	if _, err := hex.Decode(p.SHA256[:], []byte(sum)); err != nil {
		return RootPin{}, errors.New("the root pin's SHA-256 must be 64 lower-case hex digits")
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n <= 0 || n > MaxRootBytes || n%RootAlign != 0 || strconv.FormatInt(n, 10) != size {
		return RootPin{}, fmt.Errorf("the root pin's size must be a decimal number of bytes, a multiple of %d up to %d", RootAlign, MaxRootBytes)
	}
	p.Size = n
	return p, nil
}

// RootMismatchError is a root whose bytes are not the pinned ones.
type RootMismatchError struct {
	Want, Got RootPin
}

func (e *RootMismatchError) Error() string {
	if e.Got.Size < e.Want.Size {
		return fmt.Sprintf("the root partition holds %d bytes, the boot image pins a root of %d", e.Got.Size, e.Want.Size)
	}
	return fmt.Sprintf("the root's SHA-256 is %x, the boot image pins %x", e.Got.SHA256, e.Want.SHA256)
}

// CheckRoot reads the pinned root's bytes from r (a partition may be
// larger than its root: only p.Size bytes count) and refuses them unless
// they hash to the pin.
func (p RootPin) CheckRoot(r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, p.Size))
	if err != nil {
		return fmt.Errorf("reading the root: %w", err)
	}
	got := RootPin{Size: n}
	h.Sum(got.SHA256[:0])
	if got != p {
		return &RootMismatchError{Want: p, Got: got}
	}
	return nil
}

// maxInitramfsBytes bounds what InitramfsRootPin decompresses.
const maxInitramfsBytes = 1 << 30

// InitramfsRootPin reads the root pin out of an initramfs as the image
// builder writes it (one gzip-compressed newc cpio archive), so that an
// image whose root is not its boot image's is refused before it is
// written anywhere. The kernel unpacks every archive it finds and a later
// entry of a name replaces an earlier one, so anything that could make it
// read another pin than this one is refused: a second root.sha256, one
// that is not a regular file, a name with a NUL, data after the archive,
// and a damaged gzip stream (its checksum is read).
func InitramfsRootPin(initramfs []byte) (RootPin, error) {
	z, err := gzip.NewReader(bytes.NewReader(initramfs))
	if err != nil {
		return RootPin{}, fmt.Errorf("the initramfs is not gzip-compressed: %w", err)
	}
	stream := io.LimitReader(z, maxInitramfsBytes)
	var pin []byte
	found := 0
	r := cpio.NewReader(stream)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return RootPin{}, fmt.Errorf("the initramfs is damaged (%v)", err)
		}
		if strings.ContainsRune(h.Name, 0) {
			return RootPin{}, errors.New("the initramfs has a file name with a NUL in it, which the kernel would read as another name")
		}
		if h.Name != RootPinName {
			continue
		}
		if found++; found > 1 || !h.Mode.IsRegular() {
			return RootPin{}, fmt.Errorf("the initramfs must hold exactly one %s, a regular file", RootPinName)
		}
		if pin, err = io.ReadAll(io.LimitReader(r, 256)); err != nil {
			return RootPin{}, fmt.Errorf("the initramfs is damaged (%v)", err)
		}
	}
	// After the trailer only padding may follow; reading to the end also
	// checks the gzip stream's CRC and length.
	if n, err := zeros(stream); err != nil {
		return RootPin{}, fmt.Errorf("the initramfs is damaged (%v)", err)
	} else if n > 0 {
		return RootPin{}, errors.New("the initramfs has data after its archive, which the kernel would unpack too")
	}
	if found == 0 {
		return RootPin{}, fmt.Errorf("the initramfs holds no %s: the image was built by an older custodian image build; rebuild it", RootPinName)
	}
	return ParseRootPin(pin)
}

// zeros reads r to its end and counts the bytes that are not zero.
func zeros(r io.Reader) (int, error) {
	buf := make([]byte, 32<<10)
	other := 0
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				other++
			}
		}
		if errors.Is(err, io.EOF) {
			return other, nil
		}
		if err != nil {
			return other, err
		}
	}
}
