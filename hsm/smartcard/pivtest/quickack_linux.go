package pivtest

import (
	"net"
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
