package measure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/tpm"
)

// Files measure-boot writes in its run directory (/run/custodian on the
// device, a tmpfs that every boot starts empty).
const (
	MarkerFile = "measured"
	LogFile    = "boot.cel"
	// ConfigFile is a read-only copy of the configuration whose bytes were
	// measured: the root init reads this copy and nothing else, so the
	// configuration it runs with is the one PCR 11 holds, whatever is
	// mounted over the root's paths later.
	ConfigFile = "config.toml"
)

// ErrAlreadyMeasured is returned by [Boot] when this boot was measured
// already (or its PCRs were extended by someone else).
var ErrAlreadyMeasured = errors.New("this boot was already measured")

// Boot measures root into the TPM and writes the Canonical Event Log to
// runDir/boot.cel. It measures everything before it extends anything, so
// a missing file leaves the PCRs untouched (and the device unable to
// unseal, which is the safe failure). It returns the events extended.
func Boot(t transport.TPM, s Spec, root fs.FS, runDir string) ([]bootpolicy.Event, error) {
	events, err := s.Events(root, nil)
	if err != nil {
		return nil, err
	}
	if err := claimBoot(runDir); err != nil {
		return nil, err
	}
	if err := requireFreshPCRs(t, s.PCRs()); err != nil {
		return nil, err
	}
	log, err := bootpolicy.Record(events, func(pcr int, digest []byte) error { return tpm.ExtendPCR(t, pcr, digest) })
	if err != nil {
		return nil, err
	}
	if err := durable.WriteFile(filepath.Join(runDir, LogFile), log, 0o644); err != nil {
		return nil, fmt.Errorf("writing the boot event log: %w", err)
	}
	if err := keepConfig(root, s, events, runDir); err != nil {
		return nil, err
	}
	return events, checkReplay(t, s, events)
}

// keepConfig writes runDir/ConfigFile, mode 0444, with the configuration's
// bytes, after checking they are the bytes the config event measured.
func keepConfig(root fs.FS, s Spec, events []bootpolicy.Event, runDir string) error {
	data, err := fs.ReadFile(root, s.Config)
	if err != nil {
		return fmt.Errorf("keeping the measured configuration: %w", err)
	}
	sum := sha256.Sum256(data)
	i := slices.IndexFunc(events, func(e bootpolicy.Event) bool { return e.Kind == bootpolicy.KindConfig })
	if i < 0 || !bytes.Equal(events[i].Measured, sum[:]) {
		return fmt.Errorf("keeping the measured configuration: /%s changed after it was measured", s.Config)
	}
	if err := durable.WriteFile(filepath.Join(runDir, ConfigFile), data, 0o444); err != nil {
		return fmt.Errorf("keeping the measured configuration: %w", err)
	}
	return nil
}

// claimBoot creates the marker with O_EXCL: of two runs in one boot, or two
// at once, only one gets past here.
func claimBoot(runDir string) error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(runDir, MarkerFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s exists", ErrAlreadyMeasured, filepath.Join(runDir, MarkerFile))
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// requireFreshPCRs refuses to extend PCRs that already hold a value: they
// start at zero on every boot, so a non-zero one was extended in this boot.
func requireFreshPCRs(t transport.TPM, pcrs []int) error {
	cur, err := tpm.ReadPCRs(t, pcrs...)
	if err != nil {
		return err
	}
	for _, i := range pcrs {
		if !bytes.Equal(cur[i], make([]byte, len(cur[i]))) {
			return fmt.Errorf("%w: PCR %d is not zero", ErrAlreadyMeasured, i)
		}
	}
	return nil
}

// checkReplay reads the PCRs back: if another process extended one of them
// meanwhile, say so now rather than at the first unseal.
func checkReplay(t transport.TPM, s Spec, events []bootpolicy.Event) error {
	got, err := tpm.ReadPCRs(t, s.PCRs()...)
	if err != nil {
		return err
	}
	if !got.Equal(bootpolicy.Replay(events)) {
		return errors.New("the PCRs differ from the measurements just extended: something else extended them at the same time")
	}
	return nil
}
