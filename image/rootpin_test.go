package image

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func TestRootPinRoundTrip(t *testing.T) {
	root := bytes.Repeat([]byte("squashfs"), 1024)
	pin := PinRoot(root)
	got, err := ParseRootPin(pin.Marshal())
	if err != nil || got != pin {
		t.Fatalf("ParseRootPin(%q) = %+v, %v", pin.Marshal(), got, err)
	}
	if err := pin.CheckRoot(bytes.NewReader(append(root, make([]byte, 4096)...))); err != nil {
		t.Errorf("a partition with zeros past the root: %v", err)
	}
}

// TestInvariantRootCheckedAgainstItsPin: a root differing from the pinned
// one in any byte, or shorter, is refused with both digests or sizes.
func TestInvariantRootCheckedAgainstItsPin(t *testing.T) {
	root := bytes.Repeat([]byte{7}, 3*RootAlign)
	pin := PinRoot(root)
	changed := bytes.Clone(root)
	changed[len(root)-1] ^= 1
	var mismatch *RootMismatchError
	err := pin.CheckRoot(bytes.NewReader(changed))
	if !errors.As(err, &mismatch) || !strings.Contains(err.Error(), "the boot image pins") {
		t.Errorf("a changed byte: %v", err)
	}
	err = pin.CheckRoot(bytes.NewReader(root[:len(root)-1]))
	if !errors.As(err, &mismatch) || !strings.Contains(err.Error(), "holds 12287 bytes") {
		t.Errorf("a short root: %v", err)
	}
}

func TestParseRootPinRefuses(t *testing.T) {
	good := string(PinRoot([]byte("x")).Marshal())
	sum := strings.Fields(good)[0]
	for name, in := range map[string]string{
		"empty":           "",
		"no newline":      strings.TrimSuffix(good, "\n"),
		"two lines":       good + good,
		"upper-case hex":  strings.ToUpper(sum) + " 1\n",
		"short hex":       sum[:62] + " 1\n",
		"zero size":       sum + " 0\n",
		"negative size":   sum + " -1\n",
		"leading zero":    sum + " 01\n",
		"plus sign":       sum + " +1\n",
		"too large":       sum + " 134221824\n",
		"not 4 KiB":       sum + " 4097\n",
		"two spaces":      sum + "  1\n",
		"trailing field":  sum + " 1 x\n",
		"carriage return": sum + " 1\r\n",
		"not hex":         strings.Repeat("g", 64) + " 1\n",
	} {
		if _, err := ParseRootPin([]byte(in)); err == nil {
			t.Errorf("%s: %q accepted", name, in)
		}
	}
}

func FuzzParseRootPin(f *testing.F) {
	f.Add(PinRoot(make([]byte, RootAlign)).Marshal())
	f.Add([]byte("0 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pin, err := ParseRootPin(data)
		if err != nil {
			return
		}
		if !bytes.Equal(pin.Marshal(), data) {
			t.Fatalf("%q parsed to %+v, which writes %q", data, pin, pin.Marshal())
		}
	})
}

// initramfsWith is a gzip-compressed newc cpio of the given files, in order.
func initramfsWith(t testing.TB, files ...[2]string) []byte {
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	w := cpio.NewWriter(z)
	for _, f := range files {
		if err := w.WriteHeader(&cpio.Header{Name: f[0], Mode: cpio.TypeReg | 0o644, Size: int64(len(f[1]))}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestInitramfsRootPin(t *testing.T) {
	pin := PinRoot(make([]byte, RootAlign))
	other := PinRoot(make([]byte, 2*RootAlign))
	got, err := InitramfsRootPin(initramfsWith(t, [2]string{"init", "binary"}, [2]string{RootPinName, string(pin.Marshal())}))
	if err != nil || got != pin {
		t.Fatalf("got %+v, %v; want %+v", got, err, pin)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"no pin":   {initramfsWith(t, [2]string{"init", "binary"}), "holds no root.sha256"},
		"bad pin":  {initramfsWith(t, [2]string{RootPinName, "x\n"}), "must be one line"},
		"not gzip": {[]byte("070701"), "not gzip"},
		"damaged":  {initramfsWith(t)[:20], "damaged"},
		// The kernel unpacks every archive, and a later entry replaces
		// an earlier one: it would read the second pin.
		"two pins":       {initramfsWith(t, [2]string{RootPinName, string(pin.Marshal())}, [2]string{RootPinName, string(other.Marshal())}), "exactly one"},
		"second archive": {append(initramfsWith(t, [2]string{RootPinName, string(pin.Marshal())}), initramfsWith(t, [2]string{RootPinName, string(other.Marshal())})...), "data after its archive"},
		"NUL in a name":  {initramfsWith(t, [2]string{RootPinName + "\x00x", string(other.Marshal())}, [2]string{RootPinName, string(pin.Marshal())}), "NUL"},
	} {
		if _, err := InitramfsRootPin(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

// FuzzInitramfsRootPin fuzzes the archive itself (gzip is the harness's):
// a pin is returned only when the archive holds its exact bytes.
func FuzzInitramfsRootPin(f *testing.F) {
	gunzip := func(data []byte) []byte {
		z, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			f.Fatal(err)
		}
		out, err := io.ReadAll(z)
		if err != nil {
			f.Fatal(err)
		}
		return out
	}
	f.Add(gunzip(initramfsWith(f, [2]string{"init", "x"}, [2]string{RootPinName, string(PinRoot(make([]byte, RootAlign)).Marshal())})))
	f.Add(gunzip(initramfsWith(f)))
	f.Fuzz(func(t *testing.T, archive []byte) {
		var buf bytes.Buffer
		z := gzip.NewWriter(&buf)
		z.Write(archive)
		z.Close()
		pin, err := InitramfsRootPin(buf.Bytes())
		if err == nil && !bytes.Contains(archive, pin.Marshal()) {
			t.Fatalf("a pin of %d bytes that the archive does not hold", pin.Size)
		}
	})
}
