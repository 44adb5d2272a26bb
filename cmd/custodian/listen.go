package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The daemon's listener bounds what an anonymous client can make it hold
// before a single request is read: at most maxConns connections at once
// (more wait in the kernel's accept queue, costing the daemon nothing),
// each TLS handshake finished within handshakeTimeout before net/http sees
// the connection, and failed handshakes counted by kind and logged as one
// line a minute, never one line per connection (the log is on disk).
const (
	maxConns         = 128
	handshakeTimeout = 3 * time.Second
	handshakeReport  = time.Minute
)

// guardedListener is that listener. Accept returns connections whose TLS
// handshake (if any) has completed.
type guardedListener struct {
	inner    net.Listener
	tls      *tls.Config // nil: plain HTTP (serve --insecure-http)
	log      *slog.Logger
	timeout  time.Duration
	slots    chan struct{}
	ready    chan net.Conn
	done     chan struct{}
	errOnce  sync.Once
	err      error // why the accept loop stopped, once done is closed
	mu       sync.Mutex
	failed   map[string]uint64 // failed handshakes by kind since the last report
	closeErr error
	closed   sync.Once
}

func newGuardedListener(inner net.Listener, cfg *tls.Config, log *slog.Logger, conns int, timeout time.Duration) *guardedListener {
	l := &guardedListener{inner: inner, tls: cfg, log: log, timeout: timeout,
		slots: make(chan struct{}, conns), ready: make(chan net.Conn), done: make(chan struct{}),
		failed: map[string]uint64{}}
	go l.acceptLoop()
	return l
}

// Accept implements net.Listener.
func (l *guardedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close implements net.Listener; it logs the failed handshakes not yet reported.
func (l *guardedListener) Close() error {
	l.closed.Do(func() {
		l.closeErr = l.inner.Close()
		l.stop(net.ErrClosed)
		l.report()
	})
	return l.closeErr
}

// Addr implements net.Listener.
func (l *guardedListener) Addr() net.Addr { return l.inner.Addr() }

func (l *guardedListener) stop(err error) {
	l.errOnce.Do(func() { l.err = err; close(l.done) })
}

func (l *guardedListener) acceptLoop() {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			if errors.Is(err, net.ErrClosed) {
				l.stop(err)
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			l.count("accept_error")
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go l.handshake(&slotConn{Conn: c, free: func() { <-l.slots }})
	}
}

func (l *guardedListener) handshake(c *slotConn) {
	var conn net.Conn = c
	if l.tls != nil {
		tc := tls.Server(c, l.tls)
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.count(handshakeFailure(err))
			tc.Close()
			return
		}
		conn = tc
	}
	select {
	case l.ready <- conn:
	case <-l.done:
		conn.Close()
	}
}

func (l *guardedListener) count(kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed[kind]++
}

// Failed returns the failed handshakes counted since the last report.
func (l *guardedListener) Failed() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.failed)
}

// report logs the failed handshakes counted since the last report, as one
// line, if there were any.
func (l *guardedListener) report() {
	l.mu.Lock()
	failed := l.failed
	l.failed = map[string]uint64{}
	l.mu.Unlock()
	var total uint64
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(failed)) {
		total += failed[k]
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, failed[k]))
	}
	if total > 0 {
		l.log.Warn(fmt.Sprintf("%d TLS handshakes failed", total), "reasons", strings.Join(kinds, " "))
	}
}

// reportEvery logs the count each interval until ctx ends.
func (l *guardedListener) reportEvery(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.done:
			return
		case <-tick.C:
			l.report()
		}
	}
}

// handshakeFailure names the kind of a failed handshake, from a short
// fixed list: the map of counts stays small whatever clients send.
func handshakeFailure(err error) string {
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.As(err, &rec):
		return "not_tls"
	case errors.As(err, &alert):
		return "client_alert"
	case strings.Contains(err.Error(), "version"):
		return "version"
	case strings.Contains(err.Error(), "certificate"):
		return "client_certificate"
	}
	return "other"
}

// slotConn gives its listener slot back when closed, once.
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
