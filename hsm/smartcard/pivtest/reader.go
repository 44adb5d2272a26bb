package pivtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/tests/need"
)

// Module is OpenSC's PKCS#11 module on Debian amd64.
const Module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// vpcdDriver is the vsmartcard pcscd driver (Debian vsmartcard-vpcd).
const vpcdDriver = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

// Slots is how many virtual readers one vpcd driver offers: it listens on
// its port for the first card and on the next port for the second.
const Slots = 2

// SocketEnv is the environment variable that points libpcsclite (and so
// OpenSC, and any custodian process started with it) at a pcscd socket.
const SocketEnv = "PCSCLITE_CSOCK_NAME"

// socketDir is this process's pcscd directory. libpcsclite reads
// SocketEnv once per process and keeps it, so every daemon this process
// starts uses the same path; the daemons run one after another.
var socketDir = sync.OnceValues(func() (string, error) {
	return os.MkdirTemp("", "custodian-pcscd-")
})

// Reader is a private pcscd, started for one test, with the vpcd virtual
// reader driver: cards are inserted by connecting them to its ports.
type Reader struct {
	port int
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error

	mu    sync.Mutex
	conns map[int]net.Conn
}

// StartReader starts pcscd in a private mount namespace (pcscd 1.9 always
// puts its socket at /run/pcscd/pcscd.comm; the namespace binds a
// directory of this process over /run), points SocketEnv and OPENSC_CONF
// at it for the rest of the test, and stops it when the test ends. The
// system's pcscd, if any, is neither used nor disturbed. A test that uses
// it cannot run in parallel with others (it sets the environment), and one
// process runs one reader at a time. Without pcscd,
// vpcd, OpenSC, unshare or cgo the test ends through need.Missing.
func StartReader(t testing.TB) *Reader {
	t.Helper()
	if err := smartcard.Supported(); err != nil {
		need.Missing(t, "%v", err)
	}
	pcscd, err := exec.LookPath("pcscd")
	if err != nil {
		pcscd = "/usr/sbin/pcscd" // not on a user's PATH
	}
	if _, err := os.Stat(pcscd); err != nil {
		need.Missing(t, "pcscd not installed (Debian package pcscd; make test installs it)")
	}
	need.Command(t, "unshare", "util-linux")
	for path, pkg := range map[string]string{vpcdDriver: "vsmartcard-vpcd", Module: "opensc-pkcs11"} {
		if _, err := os.Stat(path); err != nil {
			need.Missing(t, "%s missing (Debian package %s; make test installs it)", path, pkg)
		}
	}
	dir, err := socketDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := t.TempDir()
	r := &Reader{port: freePorts(t), log: new(bytes.Buffer), done: make(chan error, 1), conns: make(map[int]net.Conn)}
	// DEVICENAME /dev/null:PORT makes vpcd listen on PORT (and PORT+1).
	readerConf := fmt.Sprintf("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x%X\nLIBPATH %s\nCHANNELID 0x%X\n", r.port, vpcdDriver, r.port)
	if err := os.WriteFile(filepath.Join(conf, "vpcd"), []byte(readerConf), 0o644); err != nil {
		t.Fatal(err)
	}
	// OpenSC's defaults, not the machine's opensc.conf.
	openscConf := filepath.Join(t.TempDir(), "opensc.conf")
	if err := os.WriteFile(openscConf, []byte("app default {\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command("unshare", "--mount", "--map-root-user", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /run && exec "$1" --foreground --error --config "$2"`, dir, pcscd, conf)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	dieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting pcscd: %v", err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() { r.stop(t, dir) })

	socket := filepath.Join(dir, "pcscd", "pcscd.comm")
	t.Setenv(SocketEnv, socket)
	t.Setenv("OPENSC_CONF", openscConf)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return r
		}
		select {
		case err := <-r.done:
			r.done <- err
			if bytes.Contains(r.log.Bytes(), []byte("unshare")) {
				need.Missing(t, "cannot run pcscd in a private mount namespace: %v\n%s", err, r.log)
			}
			t.Fatalf("pcscd exited: %v\n%s", err, r.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pcscd made no socket at %s\n%s", socket, r.log)
		}
	}
}

// freePorts finds a port p where p and p+1 are free, below the ephemeral
// range so that no outgoing connection takes them meanwhile.
func freePorts(t testing.TB) int {
	t.Helper()
	for range 50 {
		p := 20000 + 2*rand.IntN(5000)
		var ls []net.Listener
		for i := range Slots {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == Slots {
			return p
		}
	}
	t.Fatal("no free pair of TCP ports for the virtual reader")
	return 0
}

func (r *Reader) stop(t testing.TB, dir string) {
	r.mu.Lock()
	for slot, c := range r.conns {
		c.Close()
		delete(r.conns, slot)
	}
	r.mu.Unlock()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
	if t.Failed() {
		t.Logf("pcscd output:\n%s", r.log)
	}
	os.RemoveAll(dir)
}

// Insert puts card into the reader's slot (0 or 1) and returns once pcscd
// has powered it up. The card stays in until the test's end.
func (r *Reader) Insert(t testing.TB, slot int, card *Card) {
	t.Helper()
	if slot < 0 || slot >= Slots {
		t.Fatalf("no slot %d", slot)
	}
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port+slot))); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connecting the card to the virtual reader: %v\n%s", err, r.log)
		}
	}
	r.mu.Lock()
	if old := r.conns[slot]; old != nil {
		old.Close()
	}
	r.conns[slot] = conn
	r.mu.Unlock()
	powered := make(chan struct{})
	go serve(conn, card, powered)
	select {
	case <-powered:
	case <-time.After(10 * time.Second):
		t.Fatalf("pcscd did not power the card up\n%s", r.log)
	}
}

// vpcd's control messages: one byte, where a command APDU has four or more.
const (
	ctrlOff   = 0
	ctrlOn    = 1
	ctrlReset = 2
	ctrlATR   = 4
)

// serve answers vpcd's messages on conn until it closes: each message,
// both ways, is a two-byte big-endian length and that many bytes.
func serve(conn net.Conn, card *Card, powered chan<- struct{}) error {
	defer conn.Close()
	var once sync.Once
	for {
		msg, err := readMessage(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		var reply []byte
		if len(msg) == 1 {
			switch msg[0] {
			case ctrlOff, ctrlOn, ctrlReset:
				card.Reset()
				if msg[0] != ctrlOff {
					once.Do(func() { close(powered) })
				}
				continue
			case ctrlATR:
				reply = ATR
			default:
				continue
			}
		} else {
			reply = card.Transmit(msg)
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(reply)))
		if _, err := conn.Write(append(out, reply...)); err != nil {
			return err
		}
	}
}

func readMessage(conn net.Conn) ([]byte, error) {
	var size [2]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	// vpcd writes a message's length and body in two sends, and Nagle's
	// algorithm holds the body until the length is acknowledged: without
	// an ACK at once, every APDU waits out the delayed-ACK timer (~40 ms).
	quickAck(conn)
	msg := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(conn, msg); err != nil {
		return nil, err
	}
	return msg, nil
}
