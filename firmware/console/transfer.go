package console

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxTransfer caps a file get sends: bundles, enrollments, certificates
// and attestations are kilobytes.
const MaxTransfer = 8 << 20

// MaxPut caps a file put receives: the update file (image build
// --update-out) is tens of MiB; put holds it in memory while it arrives
// (about 2.4 times its size with the base64 text), which a Pi with 1 GiB
// affords at this cap.
const MaxPut = 128 << 20

// DefaultKeepFree is what put leaves free on the data partition, for the
// ledger and the sealed files to go on growing.
const DefaultKeepFree = 16 << 20

// Transfer is the directory put writes and get reads. The console runs as
// root while the directory belongs to the daemon's user, so every file is
// opened relative to the directory without following a symbolic link: a
// link planted there cannot turn a put into a write elsewhere.
type Transfer struct {
	Dir string
	// UID and GID own what put writes (the daemon's user); -1 leaves the
	// writer's own.
	UID, GID int
	// KeepFree is what put leaves free on the file system (0:
	// DefaultKeepFree).
	KeepFree int64
}

// Put stores data as NAME, replacing it atomically, and refuses when the
// file system would keep less than t.KeepFree free after it.
func (t *Transfer) Put(name string, data []byte) error {
	dir, err := t.open()
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := t.checkRoom(dir, name, int64(len(data))); err != nil {
		return err
	}
	tmp := ".put-" + name
	_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = writeAll(f, data, t.UID, t.GID)
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
	}
	if err != nil {
		_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return dir.Sync()
}

// checkRoom refuses a file of size bytes that would leave less than
// KeepFree free on the transfer directory's file system (the data
// partition, which also holds the ledger).
func (t *Transfer) checkRoom(dir *os.File, name string, size int64) error {
	keep := t.KeepFree
	if keep == 0 {
		keep = DefaultKeepFree
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &st); err != nil {
		return fmt.Errorf("the transfer directory: %w", err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if size > free-keep {
		return fmt.Errorf("no room for transfer/%s (%d MiB) on the data partition: %d MiB free, and %d MiB stay free for the ledger; remove files no longer needed from transfer/, or send the update file (image build --update-out), not the whole image",
			name, (size+(1<<20)-1)>>20, free>>20, keep>>20)
	}
	return nil
}

func writeAll(f *os.File, data []byte, uid, gid int) error {
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// Get reads NAME, a regular file of at most MaxTransfer bytes.
func (t *Transfer) Get(name string) ([]byte, error) {
	dir, err := t.open()
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("transfer/%s is a symbolic link; only plain files are sent", name)
	}
	if err != nil {
		return nil, fmt.Errorf("transfer/%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("transfer/%s is not a plain file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxTransfer+1))
	if err == nil && len(data) > MaxTransfer {
		err = fmt.Errorf("transfer/%s is larger than %d bytes", name, MaxTransfer)
	}
	return data, err
}

func (t *Transfer) open() (*os.File, error) {
	fd, err := unix.Open(t.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the transfer directory %s: %w", t.Dir, err)
	}
	return os.NewFile(uintptr(fd), t.Dir), nil
}

func (c *Console) put(in *bufio.Reader, args []string) int {
	name, bad := c.name("put", args)
	// The data lines follow even when the name is bad: read them to the
	// "." line, so the next line is read as a command again.
	data, err := readBase64(in, MaxPut)
	if bad != 0 {
		return bad
	}
	if err != nil {
		return c.exit(ExitFailed, err.Error())
	}
	if err := c.Files.Put(name, data); err != nil {
		return c.exit(ExitFailed, err.Error())
	}
	fmt.Fprintf(c.Out, "stored transfer/%s (%d bytes)\n", name, len(data))
	return ExitOK
}

func (c *Console) get(args []string) int {
	name, bad := c.name("get", args)
	if bad != 0 {
		return bad
	}
	data, err := c.Files.Get(name)
	if err != nil {
		return c.exit(ExitFailed, err.Error())
	}
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		fmt.Fprintln(c.Out, enc[:76])
		enc = enc[76:]
	}
	if enc != "" {
		fmt.Fprintln(c.Out, enc)
	}
	fmt.Fprintln(c.Out, ".")
	return ExitOK
}

func (c *Console) name(cmd string, args []string) (string, int) {
	if len(args) != 1 {
		return "", c.exit(ExitRefused, "usage: "+cmd+" NAME")
	}
	if !ValidName(args[0]) {
		return "", c.exit(ExitRefused, fmt.Sprintf("%q is not a transfer file name: letters, digits, . _ - (at most 64), not starting with a dot", args[0]))
	}
	return args[0], 0
}

// readBase64 reads base64 lines up to a line ".", and decodes them: at
// most limit bytes.
func readBase64(in *bufio.Reader, limit int) ([]byte, error) {
	var b strings.Builder
	var tooLarge, badLine bool
	for {
		line, err := readLine(in)
		if errors.Is(err, errTooLong) {
			badLine = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("the input ended before the line \".\"")
		}
		if line == "." {
			break
		}
		if b.Len()+len(line) > base64.StdEncoding.EncodedLen(limit) {
			tooLarge = true
			continue
		}
		b.WriteString(strings.TrimSpace(line))
	}
	switch {
	case badLine:
		return nil, errors.New("a base64 line is too long; send lines of at most 76 characters (base64 -w 76)")
	case tooLarge:
		return nil, fmt.Errorf("the file is larger than %d bytes", limit)
	}
	data, err := base64.StdEncoding.DecodeString(b.String())
	if err != nil {
		return nil, errors.New("the data is not base64 (standard alphabet, with padding)")
	}
	// The text's cap rounds up to whole base64 quanta: the bytes decide.
	if len(data) > limit {
		return nil, fmt.Errorf("the file is larger than %d bytes", limit)
	}
	return data, nil
}
