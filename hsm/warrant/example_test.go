package warrant_test

import (
	"fmt"
	"os"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// The appliance's check of a submitted warrant. The replay check against
// the ledger and the officer's approval come after it.
func ExampleVerifier() {
	store, err := trust.Open("/var/lib/custodian/trust")
	if err != nil {
		fmt.Println(err)
		return
	}
	v := &warrant.Verifier{
		Trust:       store,
		CustodianID: "cust-1",
		HeldKeyIDs:  []string{"2026-11"},
		Now:         time.Now,
	}
	p7s, err := os.ReadFile("w.p7s")
	if err != nil {
		fmt.Println(err)
		return
	}
	ok, err := v.Verify(p7s)
	if err != nil {
		// The reason is what the API, the log and the ledger record.
		fmt.Println("refused:", warrant.ReasonOf(err))
		return
	}
	fmt.Printf("replay key %s\n%s", ok.Replay, warrant.Summary(ok.Warrant, ok.Signers))
}
