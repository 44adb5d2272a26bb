package durable

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Refusals of ReadRegular.
var (
	// ErrNotRegular: a symbolic link, a FIFO, a device, a socket or a
	// directory.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: a regular file over the caller's cap.
	ErrTooLarge = errors.New("larger than any file of its kind")
)

// ReadRegular reads path, which must be a regular file of at most limit
// bytes. It is for files anyone holding the disk can plant: a symbolic
// link at path is not followed (O_NOFOLLOW), a FIFO or device does not
// block the open (O_NONBLOCK) and is refused by the open file's own
// fstat, and no more than limit+1 bytes are read, so a link to
// /dev/zero, a FIFO without a writer or a huge file costs one open, not
// the process.
func ReadRegular(path string, limit int64) ([]byte, error) {
	f, err := OpenRegular(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is %w (over %d bytes)", path, ErrTooLarge, limit)
	}
	return data, nil
}

// OpenRegular opens path with flag (os.O_RDONLY or os.O_RDWR, with
// os.O_CREATE and os.O_EXCL to create it) only if it is a regular file: a
// symbolic link is not followed (O_NOFOLLOW), a FIFO or device neither
// blocks the open (O_NONBLOCK, cleared once the file is checked) nor
// passes the open file's own fstat. ErrNotRegular names what it is.
func OpenRegular(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is %w but a symbolic link", path, ErrNotRegular)
	}
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err == nil && !info.Mode().IsRegular() {
		err = fmt.Errorf("%s is %w but %s", path, ErrNotRegular, FileKind(info.Mode()))
	}
	if err == nil {
		err = syscall.SetNonblock(int(f.Fd()), false)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// FileKind names, for a person, the kind of a file that is not what the
// appliance wrote there: "a named pipe", "a symbolic link", ...
func FileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsRegular():
		return "a regular file"
	}
	return "a special file"
}
