package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"periph.io/x/conn/v3/gpio"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

type serveFlags struct {
	listen, button, led, display string
	network                      serverTLS
	window, witnessTimeout       time.Duration
	eventLog, attestPCRs         string
}

func newServeCommand(g *globals) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --tls-cert FILE --tls-key FILE [--client-ca FILE] --button gpio:GPIO17|sim [--led gpio:GPIO27] [--display PATH]",
		Short: "Run the appliance daemon: verify warrants, show them, release a share after a button press",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.serve(ctx, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "address to serve the API on, e.g. 0.0.0.0:8443 or 127.0.0.1:0")
	fl.StringVar(&f.button, "button", "", "approval button: gpio:NAME (e.g. gpio:GPIO17) or sim (custodian button press; demo and tests only)")
	fl.StringVar(&f.led, "led", "", "LED that blinks while a warrant awaits approval: gpio:NAME")
	fl.StringVar(&f.display, "display", "", "where the summary is shown (default: the console; /dev/tty1 on the Pi)")
	f.network.register(cmd)
	fl.DurationVar(&f.window, "window", release.DefaultWindow, "how long the officer has to press the button")
	fl.DurationVar(&f.witnessTimeout, "witness-timeout", release.DefaultWitnessTimeout, "how long a release waits for its escrow file's witness quorum each time: before the summary and after the press (witness_unreachable then, the warrant not spent), and after its entry (witness_timeout); 2s to 5m")
	fl.StringVar(&f.eventLog, "event-log", defaultEventLog, "the boot event log measure-boot wrote, for attestation")
	fl.StringVar(&f.attestPCRs, "attest-pcrs", "8,9,11,12", "PCRs an attestation quotes (the policy's)")
	_ = cmd.MarkFlagRequired("listen")
	_ = cmd.MarkFlagRequired("button")
	return cmd
}

// The range of --witness-timeout: a release waits this long for its
// witness quorum after its entry, and nothing else is released meanwhile.
// The hint and the flag's help write them as "2s" and "5m".
const (
	minWitnessTimeout = 2 * time.Second
	maxWitnessTimeout = 5 * time.Minute
)

func (g *globals) serve(ctx context.Context, f serveFlags) error {
	if f.window < 5*time.Second || f.window > 10*time.Minute {
		return withHint(fmt.Errorf("approval window %s out of range", f.window), "use --window between 5s and 10m")
	}
	if f.witnessTimeout < minWitnessTimeout || f.witnessTimeout > maxWitnessTimeout {
		return withHint(fmt.Errorf("witness timeout %s out of range", f.witnessTimeout), "use --witness-timeout between 2s and 5m: shorter refuses or parks releases whose witnesses are only slow, longer keeps the device busy for one silent witness")
	}
	tlsCfg, officers, err := f.network.load(time.Now())
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(g.stderr, nil))

	btn, closeButton, err := g.openButton(f.button)
	if err != nil {
		return err
	}
	defer closeButton()
	var led gpio.PinOut
	if f.led != "" {
		sim, name, err := button.ParseSpec(f.led)
		if err != nil || sim {
			return withHint(fmt.Errorf("unknown LED %q", f.led), "use --led gpio:NAME, or leave it out")
		}
		if led, err = button.OpenPin(name); err != nil {
			return err
		}
	}
	display := g.stdout
	if f.display != "" {
		file, err := os.OpenFile(f.display, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return withHint(fmt.Errorf("--display: %w", err), "the display is a terminal device such as /dev/tty1, or a file that exists")
		}
		defer file.Close()
		display = file
	}
	if tlsCfg == nil {
		log.Warn("serving " + plainHTTPWarning)
		display = plainHTTPDisplay{display}
		fmt.Fprintf(display, "custodian: serving without TLS\n")
	}

	conn, err := g.openTPM()
	if err != nil {
		return err
	}
	defer conn.Close()
	// Holding the data directory's lock, the daemon is the TPM's only
	// user: what is loaded now was left by a process that died.
	if n, err := tpm.FlushStale(conn); err != nil {
		return err
	} else if n > 0 {
		log.Warn("flushed TPM objects and sessions left by an earlier process", "count", n)
	}
	t := release.Serialize(conn)
	a, err := g.openAppliance(t)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Ledger.Blocked(); errors.Is(err, ledger.ErrForeignLedgerKey) {
		log.Error("the ledger key is not the one this TPM anchored at ledger init: every warrant will be refused; restore the device's own data directory", "err", err)
	} else {
		if err != nil {
			log.Error("the ledger is blocked: every warrant will be refused until an operator runs custodian ledger resolve-rollback", "err", err)
		}
		if a.SignerErr != nil {
			log.Error("the ledger key does not unseal: this is not the approved image; every warrant will be refused", "err", a.SignerErr)
		}
	}

	d, err := release.New(release.Config{Appliance: a, TPM: t, Button: btn, LED: led, Display: display,
		Window: f.window, WitnessTimeout: f.witnessTimeout, Log: log})
	if err != nil {
		return err
	}
	closeDaemon := sync.OnceFunc(d.Close)
	defer closeDaemon()
	api := &release.API{Daemon: d, Officers: officers}
	if api.Attest, err = attester(a, t, f.eventLog, f.attestPCRs); err != nil {
		log.Warn("attestation is unavailable", "err", err)
	}
	if tlsCfg != nil && officers == nil {
		log.Warn("no --client-ca: anyone who reaches this daemon may submit warrants (each still needs the court's signatures and the press)")
	}
	srv := api.Server(tlsCfg)
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn) // in the daemon's log format
	tcp, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	ln := newGuardedListener(tcp, tlsCfg, log, maxConns, handshakeTimeout)
	defer ln.Close()
	go ln.reportEvery(ctx, handshakeReport)
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	g.printf("custodian %s serving on %s://%s%s\n", a.ID, scheme, ln.Addr(), officerNote(officers))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// The daemon stops first, while the server still answers: a request
	// awaiting the press is refused (shutting_down, logged), and the
	// officer's client polling it reads that refusal. Only then does the
	// server stop, giving those answers a short grace to be written.
	closeDaemon()
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shutdownGrace is how long a stopping daemon lets answers in flight be
// written (the refusal of a pending request among them).
const shutdownGrace = 2 * time.Second

func officerNote(officers *x509.CertPool) string {
	if officers == nil {
		return ""
	}
	return " (warrants only from court officers' client certificates)"
}

// plainHTTPDisplay repeats the plain-HTTP warning after everything the
// display shows, so the officer reading a summary sees it beside it.
type plainHTTPDisplay struct{ w io.Writer }

func (d plainHTTPDisplay) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if err == nil {
		_, err = fmt.Fprintf(d.w, "WARNING: %s\n", plainHTTPWarning)
	}
	return n, err
}

func (g *globals) openButton(spec string) (button.Button, func(), error) {
	sim, name, err := button.ParseSpec(spec)
	if err != nil {
		return nil, nil, err
	}
	if sim {
		s, err := button.ListenSim(filepath.Join(g.dataDir, button.SimSocket))
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintln(g.stderr, "warning: simulated button: anyone who can run custodian button press as this user approves releases")
		return s, func() { s.Close() }, nil
	}
	pin, err := button.OpenPin(name)
	if err != nil {
		return nil, nil, withHint(err, "the custodian user needs access to /dev/gpiochip0 (the systemd unit allows it)")
	}
	b, err := button.NewGPIO(pin)
	if err != nil {
		return nil, nil, err
	}
	return b, func() {}, nil
}

func newButtonCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "button",
		Short: "The simulated approval button (serve --button sim)",
	}
	var hold time.Duration
	press := &cobra.Command{
		Use:   "press [--hold DURATION]",
		Short: "Press the simulated button of the daemon using this --data-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hold < 0 || hold > time.Hour {
				return badUsage(errors.New("--hold must be between 0 and 1h"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), hold+10*time.Second)
			defer cancel()
			if err := button.Press(ctx, filepath.Join(g.dataDir, button.SimSocket), hold); err != nil {
				if errors.Is(err, fs.ErrPermission) {
					return withHint(err, "this user may not use the button socket: run as the user custodian serve runs as (root on the device), e.g. sudo custodian button press")
				}
				return withHint(err, "start custodian serve --button sim with the same --data-dir")
			}
			g.printf("pressed\n")
			return nil
		},
	}
	press.Flags().DurationVar(&hold, "hold", 200*time.Millisecond, "how long the button is held down")
	cmd.AddCommand(press)
	return cmd
}
