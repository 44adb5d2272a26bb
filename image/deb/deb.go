// Package deb reads files out of a Debian binary package (.deb) without
// dpkg: the ar archive, its data.tar (xz, zstd, gzip or plain), and the
// regular files the caller names.
//
// It is strict, since a package is input from outside the build: the ar
// archive must be a Debian package (debian-binary "2.x" first, members of
// bounded size, names without slashes), every tar entry's name must stay
// inside the package (no "..", no absolute names after "./"), and the
// sizes read are capped ([Limits]). Only regular files are returned: a
// wanted path that is a symlink or a hard link is refused with its target
// named, so the manifest names the file itself rather than the builder
// following links.
//
// The caller checks the package's digest before calling [Extract] (the
// image builder does, against the manifest's pin): the xz decoder sizes
// its dictionary from the stream's header, so an unpinned package could
// make it allocate up to that size.
package deb

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Limits bound what one package may make the reader read.
type Limits struct {
	Member  int64 // bytes of one ar member (the compressed data.tar)
	Tar     int64 // bytes of the decompressed data.tar
	File    int64 // bytes of one extracted file
	Entries int   // tar entries
}

// DefaultLimits fit a Debian kernel package (60 MB, 400 MB unpacked).
var DefaultLimits = Limits{Member: 1 << 30, Tar: 4 << 30, File: 256 << 20, Entries: 100000}

const (
	arMagic      = "!<arch>\n"
	arHeaderSize = 60
)

// Extract reads the package from r and returns the regular files at the
// wanted paths (absolute paths as installed, e.g. "/boot/vmlinuz-…"). A
// wanted path the package lacks is an error.
func Extract(r io.Reader, want []string, lim Limits) (map[string][]byte, error) {
	wanted := map[string]bool{}
	for _, w := range want {
		clean, err := cleanName(w)
		if err != nil || !strings.HasPrefix(w, "/") {
			return nil, fmt.Errorf("path %q: name an absolute path inside the package, like /boot/vmlinuz", w)
		}
		wanted[clean] = true
	}
	data, comp, err := dataMember(bufio.NewReader(r), lim)
	if err != nil {
		return nil, err
	}
	tr, closeFn, err := decompress(data, comp)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	files, err := readTar(io.LimitReader(tr, lim.Tar+1), wanted, lim)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		c, _ := cleanName(w)
		if _, ok := files[c]; !ok {
			return nil, fmt.Errorf("%s is not in the package (dpkg-deb -c lists what it holds)", w)
		}
	}
	out := map[string][]byte{}
	for _, w := range want {
		c, _ := cleanName(w)
		out[w] = files[c]
	}
	return out, nil
}

// dataMember reads the ar archive up to its data.tar member and returns
// that member's reader and compression suffix.
func dataMember(r *bufio.Reader, lim Limits) (io.Reader, string, error) {
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != arMagic {
		return nil, "", errors.New("not a Debian package: no ar archive header")
	}
	for i := 0; ; i++ {
		name, size, err := arHeader(r, lim)
		if err == io.EOF {
			return nil, "", errors.New("not a Debian package: no data.tar member")
		}
		if err != nil {
			return nil, "", err
		}
		body := io.LimitReader(r, size)
		switch {
		case i == 0:
			if name != "debian-binary" {
				return nil, "", errors.New("not a Debian package: the first member is not debian-binary")
			}
			v, err := io.ReadAll(io.LimitReader(body, 16))
			if err != nil || size > 16 || !bytes.HasPrefix(v, []byte("2.")) || !bytes.HasSuffix(v, []byte("\n")) {
				return nil, "", errors.New("not a Debian package of format 2.x")
			}
		case strings.HasPrefix(name, "data.tar"):
			return body, strings.TrimPrefix(name, "data.tar"), nil
		default:
			if _, err := io.Copy(io.Discard, body); err != nil {
				return nil, "", errors.New("the package is truncated")
			}
		}
		if size%2 == 1 { // members are padded to an even offset
			if _, err := r.ReadByte(); err != nil {
				return nil, "", errors.New("the package is truncated")
			}
		}
	}
}

// arHeader reads one member header: its name and size.
func arHeader(r io.Reader, lim Limits) (string, int64, error) {
	var h [arHeaderSize]byte
	n, err := io.ReadFull(r, h[:])
	if n == 0 && err == io.EOF {
		return "", 0, io.EOF
	}
	if err != nil {
		return "", 0, errors.New("the package is truncated")
	}
	if string(h[58:60]) != "`\n" {
		return "", 0, errors.New("not a Debian package: a damaged ar member header")
	}
	name := strings.TrimSuffix(strings.TrimRight(string(h[:16]), " "), "/")
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return "", 0, fmt.Errorf("not a Debian package: member name %q", name)
	}
	size, err := strconv.ParseInt(strings.TrimRight(string(h[48:58]), " "), 10, 64)
	if err != nil || size < 0 {
		return "", 0, errors.New("not a Debian package: a member size is not a number")
	}
	if size > lim.Member {
		return "", 0, fmt.Errorf("package member %s is %d bytes, over the limit of %d", name, size, lim.Member)
	}
	return name, size, nil
}

// decompress opens data.tar by its suffix.
func decompress(r io.Reader, suffix string) (io.Reader, func(), error) {
	switch suffix {
	case "":
		return r, func() {}, nil
	case ".gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, errors.New("data.tar.gz is not gzip data")
		}
		return z, func() { z.Close() }, nil
	case ".xz":
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, errors.New("data.tar.xz is not xz data")
		}
		return z, func() {}, nil
	case ".zst":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, nil, errors.New("data.tar.zst cannot be read as zstd data")
		}
		return z, z.Close, nil
	}
	return nil, nil, fmt.Errorf("data.tar%s: unknown compression (xz, zst, gz or none are read)", suffix)
}

// readTar walks the whole tar (checking every name) and keeps the wanted
// regular files.
func readTar(r io.Reader, wanted map[string]bool, lim Limits) (map[string][]byte, error) {
	tr := tar.NewReader(r)
	files := map[string][]byte{}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("data.tar is damaged or larger than the limit of %d bytes", lim.Tar)
		}
		if n >= lim.Entries {
			return nil, fmt.Errorf("data.tar has more than %d entries", lim.Entries)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, fmt.Errorf("data.tar: %w", err)
		}
		if !wanted[name] {
			continue
		}
		if _, dup := files[name]; dup {
			return nil, fmt.Errorf("/%s is in the package twice", name)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
		case tar.TypeSymlink, tar.TypeLink:
			return nil, fmt.Errorf("/%s is a link to %s in the package: name the file it points to", name, hdr.Linkname)
		default:
			return nil, fmt.Errorf("/%s is not a regular file in the package", name)
		}
		if hdr.Size > lim.File {
			return nil, fmt.Errorf("/%s is %d bytes, over the limit of %d", name, hdr.Size, lim.File)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("/%s: data.tar is damaged or larger than the limit of %d bytes", name, lim.Tar)
		}
		files[name] = data
	}
}

// cleanName turns a tar or wanted name ("./usr/lib/x", "/usr/lib/x") into
// "usr/lib/x", refusing names that would leave the package's root.
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	if n == "." {
		n = ""
	}
	n = strings.TrimPrefix(n, "/")
	if n == "" {
		return ".", nil
	}
	for _, part := range strings.Split(strings.TrimSuffix(n, "/"), "/") {
		if part == ".." || part == "." || part == "" || strings.ContainsRune(part, 0) {
			return "", fmt.Errorf("entry %q leaves the package's root or is not a clean path", name)
		}
	}
	return path.Clean(n), nil
}
