package witness_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/witness"
)

// liveLog is memLog as the appliance's ledger: the cosigner can take its
// newest checkpoint.
type liveLog struct {
	*memLog
	t testing.TB
}

func (l liveLog) CheckpointSize() ([]byte, int64, error) { return l.checkpoint(l.t), l.size, nil }

// TestInvariantOvertakenCheckpointIsCosignedNotRefused: a checkpoint of
// the live ledger that a newer one of the same history overtook at the
// witnesses (anyone may submit; the background loop shares the
// cosigner) is not called a restored copy: the cosigner moves to the
// newest checkpoint, which holds the older one's entries, and gets it
// cosigned by two real litewitnesses.
func TestInvariantOvertakenCheckpointIsCosignedNotRefused(t *testing.T) {
	skey, vkey := logKeys(t)
	p := twoWitnesses(t, vkey)
	l := newLog(t, skey)
	live := liveLog{l, t}
	l.append(t, "e0", "e1", "e2")
	appliance, _ := witness.NewCosigner(t.TempDir(), nil)
	other, _ := witness.NewCosigner(t.TempDir(), nil) // a monitor's
	if _, err := cosign(t, appliance, l, p); err != nil {
		t.Fatal(err)
	}
	l.append(t, "release entry")
	releaseCP, releaseSize := l.checkpoint(t), l.size
	l.append(t, "refusal from a concurrent request")
	if _, err := cosign(t, other, l, p); err != nil { // someone submits size 5 first
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cosigned, size, err := appliance.Cosign(ctx, live, releaseCP, releaseSize, p)
	if err != nil {
		t.Fatalf("an honest, consistent, overtaken checkpoint was not cosigned: %v", err)
	}
	checkCosigned(t, cosigned, size, releaseSize, l.size, p)

	// Same in one cosigner: the loop cosigned size 7, a release asks for 6.
	l.append(t, "x")
	cp6, s6 := l.checkpoint(t), l.size
	l.append(t, "y")
	if _, err := cosign(t, appliance, l, p); err != nil {
		t.Fatal(err)
	}
	cosigned, size, err = appliance.Cosign(ctx, live, cp6, s6, p)
	if err != nil {
		t.Fatalf("one cosigner: an overtaken checkpoint was refused: %v", err)
	}
	checkCosigned(t, cosigned, size, s6, l.size, p)
}

func checkCosigned(t *testing.T, cosigned []byte, size, atLeast, live int64, p witness.Policy) {
	t.Helper()
	cp, names, err := witness.VerifyQuorum(cosigned, p)
	if err != nil {
		t.Fatalf("the cosigned checkpoint does not verify: %v", err)
	}
	if int64(cp.Size) != size || size < atLeast || size > live {
		t.Fatalf("cosigned size %d (returned %d), want the newest, %d, holding the %d entries asked for", cp.Size, size, live, atLeast)
	}
	if len(names) != 2 {
		t.Fatalf("cosigned by %v, want both witnesses", names)
	}
}

// TestInvariantSmallerLogThanTheWitnessesIsBehind: when the live ledger
// itself holds fewer entries than a witness cosigned (a data directory
// restored from a copy), the checkpoint is refused as behind.
func TestInvariantSmallerLogThanTheWitnessesIsBehind(t *testing.T) {
	skey, vkey := logKeys(t)
	p := twoWitnesses(t, vkey)
	l := newLog(t, skey)
	l.append(t, "e0", "e1", "e2")
	restored := newLog(t, skey) // a copy taken at size 3
	restored.append(t, "e0", "e1", "e2")
	l.append(t, "e3", "e4")
	other, _ := witness.NewCosigner(t.TempDir(), nil)
	if _, err := cosign(t, other, l, p); err != nil {
		t.Fatal(err)
	}
	appliance, _ := witness.NewCosigner(t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := appliance.Cosign(ctx, liveLog{restored, t}, restored.checkpoint(t), restored.size, p)
	if !errors.Is(err, witness.ErrRefused) || !errors.Is(err, witness.ErrBehind) {
		t.Fatalf("a log smaller than what the witnesses cosigned: got %v, want refused as behind", err)
	}
}
