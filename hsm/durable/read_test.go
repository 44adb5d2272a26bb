package durable

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestInvariantReadRegularRefusesPlantedFiles: a FIFO without a writer,
// a link (to /dev/zero, or to a regular file), a directory and a file
// over the cap are refused at once, without blocking and without reading
// past the cap; a regular file within it is read.
func TestInvariantReadRegularRefusesPlantedFiles(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(path("ok"), []byte("1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"zero": "/dev/zero", "link": path("ok")} {
		if err := os.Symlink(target, path(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(path("dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]error{"fifo": ErrNotRegular, "zero": ErrNotRegular, "link": ErrNotRegular, "dir": ErrNotRegular} {
		done := make(chan error, 1)
		go func() { _, err := ReadRegular(path(name), 4); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, want) {
				t.Errorf("%s: %v, want %v", name, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadRegular blocked", name)
		}
	}
	if _, err := ReadRegular(path("ok"), 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a 4-byte file under a 3-byte cap: %v", err)
	}
	if data, err := ReadRegular(path("ok"), 4); err != nil || string(data) != "1234" {
		t.Errorf("a regular file within its cap: %q %v", data, err)
	}
}
