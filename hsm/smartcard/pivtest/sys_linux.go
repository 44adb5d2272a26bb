package pivtest

import (
	"net"
	"os/exec"
	"syscall"
)

// quickAck asks the kernel to acknowledge the next segments at once
// (TCP_QUICKACK lasts only until the kernel decides otherwise, so it is
// set after every read).
func quickAck(conn net.Conn) {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

// dieWithParent has the kernel kill cmd when the test process dies (a
// timeout panic, a kill), so that no pcscd outlives its test run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
