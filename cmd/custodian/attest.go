package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/release"
)

// defaultEventLog is where measure-boot leaves the boot's event log.
const defaultEventLog = "/run/custodian/boot.cel"

func newAttestCommand(g *globals) *cobra.Command {
	var nonceHex, out, eventLog, pcrList, server string
	var network clientTLS
	cmd := &cobra.Command{
		Use:   "attest [--server URL] --nonce HEX --out att.json",
		Short: "Quote this device's boot state and ledger checkpoint for a verifier's nonce",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nonce, err := parseNonce(nonceHex)
			if err != nil {
				return err
			}
			pcrs, err := parsePCRList(pcrList)
			if err != nil {
				return err
			}
			if server != "" {
				data, err := g.fetchAttestation(cmd.Context(), server, network, nonce)
				if err != nil {
					return err
				}
				if err := durable.WriteFile(out, data, 0o644); err != nil {
					return err
				}
				g.printf("attestation from %s for nonce %s written to %s\n", server, nonceHex, out)
				return nil
			}
			log, err := os.ReadFile(eventLog)
			if err != nil {
				return withHint(err, "measure-boot writes the log at boot; pass --event-log where it is")
			}
			return g.withAppliance(func(a *appliance.Appliance, t transport.TPM) error {
				att, err := createAttestation(a, t, nonce, pcrs, log)
				if err != nil {
					return err
				}
				data, err := json.MarshalIndent(att, "", "  ")
				if err != nil {
					return err
				}
				if err := durable.WriteFile(out, append(data, '\n'), 0o644); err != nil {
					return err
				}
				g.printf("attestation of %s for nonce %s written to %s\n", a.ID, nonceHex, out)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&nonceHex, "nonce", "", "the verifier's nonce, hex (8 to 64 bytes)")
	f.StringVar(&out, "out", "", "file to write the attestation to")
	f.StringVar(&eventLog, "event-log", defaultEventLog, "the boot event log (TCG CEL) measure-boot wrote")
	f.StringVar(&pcrList, "pcrs", "8,9,11,12", "PCRs to quote (the policy's)")
	f.StringVar(&server, "server", "", "ask a running appliance (custodian serve) instead of this device's TPM")
	network.register(cmd, false)
	_ = cmd.MarkFlagRequired("nonce")
	_ = cmd.MarkFlagRequired("out")
	cmd.AddCommand(newAttestVerifyCommand(g))
	return cmd
}

func createAttestation(a *appliance.Appliance, t transport.TPM, nonce []byte, pcrs []int, log []byte) (*attest.Attestation, error) {
	if a.SignerErr != nil {
		return nil, keyHint(a.SignerErr)
	}
	checkpoint, err := a.Ledger.Checkpoint()
	if err != nil {
		return nil, err
	}
	return attest.Create(t, a.ID, nonce, pcrs, log, string(checkpoint), time.Now())
}

// attester answers the API's attestation requests. The boot's event log is
// read once: it does not change after measure-boot.
func attester(a *appliance.Appliance, t transport.TPM, eventLog, pcrList string) (func([]byte) (any, error), error) {
	pcrs, err := parsePCRList(pcrList)
	if err != nil {
		return nil, err
	}
	log, err := os.ReadFile(eventLog)
	if err != nil {
		return nil, err
	}
	return func(nonce []byte) (any, error) {
		return createAttestation(a, t, nonce, pcrs, log)
	}, nil
}

// fetchAttestation asks a running appliance for an attestation.
func (g *globals) fetchAttestation(ctx context.Context, server string, network clientTLS, nonce []byte) ([]byte, error) {
	c, err := g.apiClient(server, network)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(map[string]string{"nonce": hex.EncodeToString(nonce)})
	if err != nil {
		return nil, err
	}
	var data []byte
	if err := c.attest(ctx, body, &data); err != nil {
		return nil, attestHint(err)
	}
	if _, err := attest.Parse(data); err != nil {
		return nil, fmt.Errorf("the custodian's answer: %w", err)
	}
	return data, nil
}

// attest asks for an attestation, and again each second for up to a
// minute while the appliance answers attest_busy (an attestation runs, or
// a warrant awaits its press or is released) or rate_limited.
func (c *apiClient) attest(ctx context.Context, body []byte, data *[]byte) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.do(ctx, http.MethodPost, "/v1/attest", body, data)
		var e *apiError
		if !errors.As(err, &e) || (e.code != release.CodeAttestBusy && e.code != release.CodeRateLimited) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// attestHint says what to do about a refused attestation.
func attestHint(err error) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	switch e.code {
	case release.CodeAttestBusy:
		return withHint(err, "the appliance's TPM stayed busy for a minute (a warrant awaiting its press, or a release); ask again later")
	case release.CodeAttestFailed:
		return withHint(err, "the appliance's TPM could not quote; its operator finds the cause in the daemon's log")
	}
	return err
}

func parseNonce(s string) ([]byte, error) {
	n, err := hex.DecodeString(s)
	if err != nil || len(n) < attest.MinNonce || len(n) > attest.MaxNonce {
		return nil, badUsage(fmt.Errorf("--nonce: want %d to %d bytes in hex", attest.MinNonce, attest.MaxNonce))
	}
	return n, nil
}

func newAttestVerifyCommand(g *globals) *cobra.Command {
	var enrollmentPath, policyPath, nonceHex, in, ledgerKey string
	var checks enrollmentChecks
	cmd := &cobra.Command{
		Use:   "verify --enrollment E --policy P --nonce HEX --in att.json",
		Short: "Check an attestation against the enrollment, the approved policy and your nonce",
		Long: `Verify checks an attestation against the custodian's enrollment, the approved
policy.json and the nonce you sent. The enrollment's attestation key is
trusted either with the escrow authority's challenge secret (--secret, the
authority's own check) or, by anyone else, with the record the authority
published for the custodian (--record, each of them) and the authority's
verifier key (--authority-key). The custodian's ledger key (--ledger-key) is
required: the attestation must carry a checkpoint signed by that key, whose
name is custodian/<id>.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nonce, err := parseNonce(nonceHex)
			if err != nil {
				return err
			}
			e, err := readEnrollment("--enrollment", enrollmentPath)
			if err != nil {
				return err
			}
			if _, err := checks.verify(e); err != nil {
				return err
			}
			policy, err := readPolicy(policyPath)
			if err != nil {
				return err
			}
			att, err := readDocument("--in", in, "an attestation (from custodian attest)", attest.Parse)
			if err != nil {
				return err
			}
			key, err := readKeyArg("ledger-key", ledgerKey)
			if err != nil {
				return err
			}
			if err := checkVerifierKey("ledger-key", key); err != nil {
				return err
			}
			r, err := att.Verify(attest.Expect{Enrollment: e, Policy: policy, Nonce: nonce, LedgerKey: key})
			if err != nil {
				return err
			}
			g.printf("attestation of %s verifies: the approved image (%d boot events checked), ledger checkpoint of %d entries signed by its key\n",
				att.CustodianID, r.LogEvents, r.LedgerSize)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&enrollmentPath, "enrollment", "", "the custodian's enrollment")
	f.StringVar(&policyPath, "policy", "", "the approved policy.json")
	f.StringVar(&nonceHex, "nonce", "", "the nonce you sent, hex")
	f.StringVar(&in, "in", "", "the attestation")
	f.StringVar(&ledgerKey, "ledger-key", "", "the custodian's checkpoint verifier key (named custodian/<id>), or a file holding it (ledger-key.pub)")
	checks.register(cmd)
	checks.registerRecord(cmd)
	// The ledger key is required: the quote covers the checkpoint but not
	// the custodian ID, so only a checkpoint signed by custodian/<id>'s
	// ledger key ties the attestation to that custodian's running ledger
	// (a TPM cleared and taken elsewhere still quotes with the same AK).
	for _, name := range []string{"enrollment", "policy", "nonce", "in", "ledger-key"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
