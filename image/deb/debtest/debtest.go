// Package debtest writes small Debian packages for tests: the ar archive
// with debian-binary, an empty control.tar.gz and a data.tar.gz holding
// the given regular files.
package debtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// Build returns a .deb holding files (absolute path → content).
func Build(tb testing.TB, files map[string]string) []byte {
	tb.Helper()
	var data bytes.Buffer
	z := gzip.NewWriter(&data)
	tw := tar.NewWriter(z)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: "." + name, Typeflag: tar.TypeReg, Size: int64(len(body)), Mode: 0o644}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := z.Close(); err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range [][2]string{{"debian-binary", "2.0\n"}, {"control.tar.gz", ""}, {"data.tar.gz", data.String()}} {
		fmt.Fprintf(&b, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", m[0], "0", "0", "0", "100644", len(m[1]))
		b.WriteString(m[1])
		if len(m[1])%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
