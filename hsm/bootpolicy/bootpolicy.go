// Package bootpolicy defines the boot policy of a custodian image: the PCR
// values a device holds after a genuine boot of that image, and the event
// log that explains them. `custodian image measure` writes it as
// policy.json; the ceremony seals shares to its PCRs and attestation
// checks a device's log against its events.
//
// The file is JSON, at most 64 KiB, parsed strictly (unknown or duplicate
// keys are refused):
//
//	{
//	  "version": 1,
//	  "security_version": 3,
//	  "pcrs": {"8": "<64 hex>", ...},
//	  "events": [
//	    {"pcr": 8, "kind": "rootfs", "name": "/", "measured": "<64 hex>", "digest": "<64 hex>"},
//	    ...
//	  ]
//	}
//
// A policy is accepted only if it is consistent with itself: every event's
// digest is the one its kind, name and measured value produce, replaying
// the events from zero gives exactly pcrs, every PCR in pcrs ends with
// exactly one separator event, exactly one security-version event measures
// security_version (1 to tpm.MaxSecurityVersion), and pcrs passes
// [tpm.PCRValues.Check]. The security version is what shares and keys
// sealed to the policy carry: they open only while the device's version
// floor is at most it (package tpm).
// So a policy can be checked by anyone without trusting its author's
// arithmetic; what it must still be trusted for is which image it names.
//
// Each event is one record of the TCG Canonical Event Log that
// measure-boot writes; see [Event.Content] for the record content.
package bootpolicy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/tpm"
)

// Version is the only policy format version.
const Version = 1

// Caps on what an attacker-written policy or log may make us hold.
const (
	maxPolicySize = 64 << 10
	maxEvents     = 64
	maxNameLen    = 1024
)

// Policy is a parsed, self-consistent policy.json.
type Policy struct {
	Version int `json:"version"`
	// Source is empty for a prediction from an image. A policy recorded
	// from a device's verified enrollment quote says so here, as
	// "enrollment:<custodian ID>", and has no events: it pins PCR values
	// that were measured, not explained.
	Source string `json:"source,omitempty"`
	// SecurityVersion is the image's security version, measured at boot
	// (a security-version event) in a predicted policy, and stated by the
	// authority in a recorded one.
	SecurityVersion uint64        `json:"security_version"`
	PCRs            tpm.PCRValues `json:"pcrs"`
	Events          []Event       `json:"events"`
}

// SourceEnrollment prefixes the Source of a policy recorded from an
// enrollment.
const SourceEnrollment = "enrollment:"

// FromMeasurement makes a policy of PCR values measured on a device and
// proven by a verified enrollment quote (`custodian policy
// from-enrollment`), for an image of the given security version. It
// refuses PCRs that could not protect a share.
func FromMeasurement(custodianID string, pcrs tpm.PCRValues, securityVersion uint64) (*Policy, error) {
	p := &Policy{Version: Version, Source: SourceEnrollment + custodianID, SecurityVersion: securityVersion,
		PCRs: pcrs.Clone(), Events: []Event{}}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// New builds a policy from a measured event sequence, computing the PCR
// values by replay and taking the security version from its event, and
// checks it as [Parse] would.
func New(events []Event) (*Policy, error) {
	p := &Policy{Version: Version, PCRs: Replay(events), Events: events}
	for _, e := range events {
		if e.Kind == KindSecurityVersion {
			p.SecurityVersion, _ = e.securityVersion() // check reports a bad one
		}
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// Parse reads policy.json and refuses anything but a canonical,
// self-consistent policy.
func Parse(data []byte) (*Policy, error) {
	var p Policy
	if err := strictjson.Decode(data, &p, maxPolicySize); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Marshal encodes p as indented JSON, the form Parse reads.
func (p *Policy) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := newEncoder(&b)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

var errSeparator = errors.New("policy: every measured PCR must end with exactly one separator event")

func (p *Policy) check() error {
	if p.Version != Version {
		return fmt.Errorf("policy: version %d is not supported (want %d)", p.Version, Version)
	}
	if p.Source != "" {
		return p.checkMeasured()
	}
	if len(p.Events) == 0 || len(p.Events) > maxEvents {
		return fmt.Errorf("policy: %d events, want 1 to %d", len(p.Events), maxEvents)
	}
	for i, e := range p.Events {
		if err := e.check(); err != nil {
			return fmt.Errorf("policy: event %d: %w", i, err)
		}
	}
	if err := checkSeparators(p.Events); err != nil {
		return err
	}
	if err := p.checkSecurityVersion(); err != nil {
		return err
	}
	if err := p.PCRs.Check(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if !Replay(p.Events).Equal(p.PCRs) {
		return errors.New("policy: replaying the events does not give the listed PCR values")
	}
	return nil
}

// checkMeasured checks a policy recorded from an enrollment: no events,
// and only the PCRs measure-boot may use.
func (p *Policy) checkMeasured() error {
	id, ok := strings.CutPrefix(p.Source, SourceEnrollment)
	if !ok || ids.CheckCustodian(id) != nil {
		return fmt.Errorf("policy: unknown source %q", p.Source)
	}
	if len(p.Events) != 0 {
		return errors.New("policy: a policy recorded from an enrollment has no events")
	}
	if err := tpm.CheckSecurityVersion(p.SecurityVersion); err != nil {
		return fmt.Errorf("policy: security_version: %w", err)
	}
	for _, i := range p.PCRs.Indices() {
		if err := checkPCR(i); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
	}
	if err := p.PCRs.Check(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

// checkSecurityVersion requires exactly one security-version event, and
// that it measures the policy's security_version: the version a share is
// sealed for is then the one the device measured at boot.
func (p *Policy) checkSecurityVersion() error {
	var found []uint64
	for _, e := range p.Events {
		if e.Kind == KindSecurityVersion {
			v, err := e.securityVersion()
			if err != nil {
				return fmt.Errorf("policy: %w", err)
			}
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("policy: %d security-version events, want exactly one", len(found))
	}
	if found[0] != p.SecurityVersion {
		return fmt.Errorf("policy: security_version %d is not the measured version %d", p.SecurityVersion, found[0])
	}
	return nil
}

// checkSeparators requires that each PCR the events touch gets exactly one
// separator, as its last event. A PCR that is measured but not closed could
// be extended further by later code and still look like a finished boot.
func checkSeparators(events []Event) error {
	closed := map[int]bool{}
	for _, e := range events {
		if closed[e.PCR] {
			return fmt.Errorf("%w: PCR %d has events after its separator", errSeparator, e.PCR)
		}
		if e.Kind == KindSeparator {
			closed[e.PCR] = true
		}
	}
	for _, e := range events {
		if !closed[e.PCR] {
			return fmt.Errorf("%w: PCR %d has none", errSeparator, e.PCR)
		}
	}
	return nil
}

// Replay returns the PCR values the events produce from all-zero PCRs.
func Replay(events []Event) tpm.PCRValues {
	pcrs := tpm.PCRValues{}
	for _, e := range events {
		pcrs = pcrs.Extend(e.PCR, e.Digest)
	}
	return pcrs
}
