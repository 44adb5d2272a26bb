package update

import "golang.org/x/sys/unix"

// dropCache makes the read-back come from the device, not the page cache
// that still holds what was written: after the sync the cached pages are
// clean, and the kernel drops them.
func dropCache(dev Device, off, n int64) error {
	f, ok := dev.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
