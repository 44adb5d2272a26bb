package tpm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm-tools/server"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// Benchmarks compare each operation with go-tpm-tools' equivalent in the
// same run, and report TPM commands per operation ("cmds/op").

func BenchmarkSealToRemoteEK(b *testing.B) {
	ek := tpmtest.RandomImportKey(b)
	pcrs := tpm.PCRValues{8: make([]byte, 32), 9: make([]byte, 32)}
	pcrs[8][0], pcrs[9][0] = 1, 2
	s := secret(b)
	b.Run("ours", func(b *testing.B) {
		for b.Loop() {
			if _, err := tpm.Seal(ek, pcrs, testVersion, s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-tpm-tools", func(b *testing.B) {
		proto := pcrProto(pcrs)
		for b.Loop() {
			if _, err := server.CreateImportBlob(ek.PublicKey(), s, proto); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func pcrProto(pcrs tpm.PCRValues) *pb.PCRs {
	proto := &pb.PCRs{Hash: pb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{}}
	for i, v := range pcrs {
		proto.Pcrs[uint32(i)] = v
	}
	return proto
}

// benchTargets opens the simulator and a swtpm for a benchmark.
func benchTargets(b *testing.B, f func(b *testing.B, conn transport.TPM)) {
	b.Run("sim", func(b *testing.B) {
		conn, err := tpm.Open("sim")
		if err != nil {
			b.Skip(err)
		}
		defer conn.Close()
		f(b, conn)
	})
	b.Run("swtpm", func(b *testing.B) {
		f(b, tpmtest.StartSwtpm(b).Open(b))
	})
}

func BenchmarkImportUnseal(b *testing.B) {
	benchTargets(b, func(b *testing.B, conn transport.TPM) {
		ek, pcrs := bootedDevice(b, conn)
		s := secret(b)
		b.Run("ours", func(b *testing.B) { benchUnseal(b, conn, ek, pcrs, s) })
		b.Run("floor-term", func(b *testing.B) { benchFloorTerm(b, conn) })
		b.Run("ours-ecc-ek", func(b *testing.B) {
			eccEK := provisionKind(b, conn, tpm.EKECCP256)
			benchUnseal(b, conn, eccEK, pcrs, s)
		})
		b.Run("go-tpm-tools", func(b *testing.B) {
			bus := &tpmtest.Recorder{TPM: conn}
			gtEK, err := client.EndorsementKeyRSA(bus.ReadWriter())
			if err != nil {
				b.Fatal(err)
			}
			defer gtEK.Close()
			blob, err := server.CreateImportBlob(gtEK.PublicKey(), s, pcrProto(pcrs))
			if err != nil {
				b.Fatal(err)
			}
			bus.Reset()
			for b.Loop() {
				if _, err := gtEK.Import(blob); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
		})
	})
}

// BenchmarkImportUnsealCold measures go-tpm-tools' import as its API is
// used per call: the EK is created, used and flushed each time.
func BenchmarkImportUnsealCold(b *testing.B) {
	benchTargets(b, func(b *testing.B, conn transport.TPM) {
		pcrs := bootedState(b, conn)
		s := secret(b)
		bus := &tpmtest.Recorder{TPM: conn}
		var blob *pb.ImportBlob
		for b.Loop() {
			gtEK, err := client.EndorsementKeyRSA(bus.ReadWriter())
			if err != nil {
				b.Fatal(err)
			}
			if blob == nil {
				if blob, err = server.CreateImportBlob(gtEK.PublicKey(), s, pcrProto(pcrs)); err != nil {
					b.Fatal(err)
				}
			}
			_, err = gtEK.Import(blob)
			gtEK.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
	})
}

func benchUnseal(b *testing.B, conn transport.TPM, ek *tpm.ImportKey, pcrs tpm.PCRValues, s []byte) {
	blob, err := tpm.Seal(ek, pcrs, testVersion, s)
	if err != nil {
		b.Fatal(err)
	}
	bus := &tpmtest.Recorder{TPM: conn}
	for b.Loop() {
		if _, err := tpm.Unseal(bus, blob); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
}

// benchFloorTerm measures what the version floor adds to each unseal (and
// to each gate of a scoped key): one PolicyNV in a policy session.
func benchFloorTerm(b *testing.B, conn transport.TPM) {
	sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer closeSession()
	bus := &tpmtest.Recorder{TPM: conn}
	for b.Loop() {
		if err := tpm.PolicyFloor(bus, sess, testVersion); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
}

func BenchmarkQuote(b *testing.B) {
	benchTargets(b, func(b *testing.B, conn transport.TPM) {
		bootedState(b, conn)
		n := nonce(b)
		b.Run("ours", func(b *testing.B) {
			bus := &tpmtest.Recorder{TPM: conn}
			for b.Loop() {
				ak, err := tpm.LoadAK(bus)
				if err != nil {
					b.Fatal(err)
				}
				_, _, err = ak.Quote([]int{8, 9}, n)
				ak.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
		})
		b.Run("go-tpm-tools", func(b *testing.B) {
			bus := &tpmtest.Recorder{TPM: conn}
			sel := legacy.PCRSelection{Hash: legacy.AlgSHA256, PCRs: []int{8, 9}}
			for b.Loop() {
				ak, err := client.AttestationKeyECC(bus.ReadWriter())
				if err != nil {
					b.Fatal(err)
				}
				_, err = ak.Quote(sel, n)
				ak.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bus.Count())/float64(b.N), "cmds/op")
		})
	})
}

// BenchmarkScopedPartial measures scoped releases beside the share-mode
// release's TPM step (import + unseal) in the same run: one envelope per
// call (cold: session, both imports and loads, one partial and its proof)
// and sixteen per call, whose marginal cost is a warm partial. Metrics
// split each call by command: zgen-ms (PolicyPCR, PolicyCommandCode,
// ECDH_ZGen), proof-ms (the policies, Commit and Sign), setup-ms (the
// rest).
func BenchmarkScopedPartial(b *testing.B) {
	benchTargets(b, func(b *testing.B, conn transport.TPM) {
		ek, pcrs := bootedDevice(b, conn)
		b.Run("share-unseal", func(b *testing.B) { benchUnseal(b, conn, ek, pcrs, secret(b)) })
		s, key, _ := scopedShare(b, ek, pcrs)
		approver, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		approvable, err := tpm.SealScoped(ek, pcrs, testVersion, s, &approver.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		approval := approve(b, approver, pcrs)
		for _, n := range []int{1, 16} {
			points := make([][]byte, n)
			for i := range points {
				points[i] = randomPoint(b)
			}
			b.Run(fmt.Sprintf("partials=%d", n), func(b *testing.B) { benchPartials(b, conn, key, points, nil) })
			b.Run(fmt.Sprintf("approved/partials=%d", n), func(b *testing.B) { benchPartials(b, conn, approvable, points, approval) })
		}
	})
}

// benchPartials measures Partials, split by commandClock.
func benchPartials(b *testing.B, conn transport.TPM, key *tpm.ScopedKey, points [][]byte, approval *tpm.Approval) {
	clock := &commandClock{TPM: conn}
	for b.Loop() {
		if _, err := tpm.Partials(clock, key, points, approval); err != nil {
			b.Fatal(err)
		}
	}
	clock.report(b)
}

// commandClock is a transport that times each command and books a policy
// command's time to the command it authorizes (the next non-policy one).
type commandClock struct {
	TPM      transport.TPM
	pending  time.Duration
	booked   map[string]time.Duration
	cmds     int
	nvWrites int
}

func (c *commandClock) Send(cmd []byte) ([]byte, error) {
	start := time.Now()
	rsp, err := c.TPM.Send(cmd)
	d := time.Since(start)
	c.cmds++
	if c.booked == nil {
		c.booked = map[string]time.Duration{}
	}
	cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
	c.nvWrites += nvWrites(map[tpm2.TPMCC]int{cc: 1})
	switch cc {
	case tpm2.TPMCCPolicyPCR, tpm2.TPMCCPolicyNV, tpm2.TPMCCPolicyCommandCode, tpm2.TPMCCPolicyOR, tpm2.TPMCCPolicySecret, tpm2.TPMCCPolicyAuthorize:
		c.pending += d
		return rsp, err
	case tpm2.TPMCCECDHZGen:
		c.booked["zgen-ms"] += d + c.pending
	case tpm2.TPMCCCommit, tpm2.TPMCCSign:
		c.booked["proof-ms"] += d + c.pending
	default:
		c.booked["setup-ms"] += d + c.pending
	}
	c.pending = 0
	return rsp, err
}

func (c *commandClock) report(b *testing.B) {
	for name, d := range c.booked {
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), name)
	}
	b.ReportMetric(float64(c.cmds)/float64(b.N), "cmds/op")
	b.ReportMetric(float64(c.nvWrites)/float64(b.N), "nv-writes/op")
}

// tpmTime is the TPM time booked so far.
func (c *commandClock) tpmTime() time.Duration {
	var d time.Duration
	for _, v := range c.booked {
		d += v
	}
	return d + c.pending
}

// BenchmarkScopedBatch measures PartialsBatch for 1, 100 and 10,000
// envelopes beside the bare floor of an envelope, measured in the same
// iteration: the key's per-use policy and one ECDH_ZGen on a loaded key
// (tpm.ZGenFloor, setup not counted). ms/env is the batch's whole call
// per envelope (setup and the one proof included), floor-ms/env the
// floor's, x-floor their ratio; host-ms/env is the batch's time outside
// the TPM (blinds, unblinding, weights, combination). Also per request:
// TPM commands, commands per envelope, NV writes. For per-envelope
// proofs (tpm.Partials, up to 100), the same figures.
// 10,000 takes about 30 s per iteration on swtpm: run with -benchtime=1x.
func BenchmarkScopedBatch(b *testing.B) {
	benchTargets(b, func(b *testing.B, conn transport.TPM) {
		ek, pcrs := bootedDevice(b, conn)
		_, key, proofKey := scopedShare(b, ek, pcrs)
		for _, n := range []int{1, 100, 10000} {
			points := randomPoints(b, n)
			b.Run(fmt.Sprintf("batch/n=%d", n), func(b *testing.B) { benchBatch(b, conn, key, proofKey, points) })
			if n <= 100 {
				b.Run(fmt.Sprintf("per-envelope-proofs/n=%d", n), func(b *testing.B) {
					clock := &commandClock{TPM: conn}
					for b.Loop() {
						if _, err := tpm.Partials(clock, key, points, nil); err != nil {
							b.Fatal(err)
						}
					}
					clock.report(b)
					b.ReportMetric(float64(clock.cmds)/float64(b.N*n), "cmds/env")
				})
			}
		}
	})
}

func benchBatch(b *testing.B, conn transport.TPM, key *tpm.ScopedKey, proofKey []byte, points [][]byte) {
	clock := &commandClock{TPM: conn}
	var batch, floor, host time.Duration
	runBatch := func() {
		before := clock.tpmTime()
		start := time.Now()
		got, err := tpm.PartialsBatch(clock, key, points, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		batch += took
		host += took - (clock.tpmTime() - before)
		if err := tpm.VerifyBatch(proofKey, points, got); err != nil {
			b.Fatal(err)
		}
	}
	runFloor := func() {
		d, err := tpm.ZGenFloor(conn, key, points)
		if err != nil {
			b.Fatal(err)
		}
		floor += d
	}
	batchFirst := true
	for b.Loop() {
		// The two swap places each time, so that a change in the
		// machine's load weighs on both alike.
		if batchFirst {
			runBatch()
			runFloor()
		} else {
			runFloor()
			runBatch()
		}
		batchFirst = !batchFirst
	}
	clock.report(b)
	envelopes := float64(b.N * len(points))
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / envelopes }
	b.ReportMetric(ms(batch), "ms/env")
	b.ReportMetric(ms(floor), "floor-ms/env")
	b.ReportMetric(float64(batch)/float64(floor), "x-floor")
	b.ReportMetric(ms(host), "host-ms/env")
	b.ReportMetric(float64(clock.cmds)/envelopes, "cmds/env")
}
