package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A runbook block is one fenced command block of a role's runbook: a
// ```sh block (commands for a shell on the role's own machine), a plain
// ``` block holding console lines ("custodian> …", the appliance's serial
// console), or a file for the role's host that runs a command: a
// ```crontab block (cron.d lines) or a ```systemd unit. Other blocks
// (toml, prose examples) show files or output, not commands.
type runbookBlock struct {
	Doc     string // docs/NAME.md
	Line    int    // of the opening fence
	Console bool
	Host    string // "crontab" or "systemd": a file that holds a command
	Text    string // the block's lines, each ending in "\n"
}

// Hash keys a block: its first 8 hex digits of SHA-256 of the text. A block
// whose text changes gets another key, and the runbook test no longer
// knows it.
func (b runbookBlock) Hash() string {
	sum := sha256.Sum256([]byte(b.Text))
	return hex.EncodeToString(sum[:4])
}

func (b runbookBlock) String() string {
	return fmt.Sprintf("%s:%d (%s)", b.Doc, b.Line, b.Hash())
}

// runbookBlocks reads the command blocks of docs/doc in document order.
func runbookBlocks(t testing.TB, doc string) []runbookBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []runbookBlock
	var cur *runbookBlock
	var lang string
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == nil {
			if strings.HasPrefix(trimmed, "```") {
				lang = strings.TrimPrefix(trimmed, "```")
				cur = &runbookBlock{Doc: doc, Line: i + 1}
			}
			continue
		}
		if trimmed == "```" {
			switch {
			case lang == "sh":
				blocks = append(blocks, *cur)
			case lang == "crontab" || lang == "systemd":
				cur.Host = lang
				blocks = append(blocks, *cur)
			case lang == "" && strings.Contains(cur.Text, "custodian> "):
				cur.Console = true
				blocks = append(blocks, *cur)
			}
			cur = nil
			continue
		}
		// Blocks indented under a list item keep their lines' relative indent.
		cur.Text += strings.TrimPrefix(line, indentOf(line, trimmed)) + "\n"
	}
	return blocks
}

// indentOf is the leading white space of line, up to three spaces of a
// list item's indentation.
func indentOf(line, trimmed string) string {
	n := len(line) - len(strings.TrimLeft(line, " "))
	if n > 3 {
		n = 3
	}
	return line[:n]
}

// blockPlan is what the runbook test does with one block: its hash, its
// name (unique in its runbook; runbookStory runs blocks by name), and why
// it does not run here, if it does not.
type blockPlan struct {
	hash, name, skip string
}

// Reasons shared by several blocks.
const (
	skipSDCard  = "writes an SD card or the board's EEPROM/RTC: needs the hardware"
	skipImage   = "builds or reads an appliance image from the kernel and firmware packages the manifest pins (fetch-debs.sh; network); the image builder has tests of its own"
	skipUpdate  = "an image update's image and update file (skipImage)"
	skipExample = "an illustration of the console protocol; the same lines run in a later step"
)

// runbookPlans lists every command block of every role's runbook, in
// document order. A block added to a runbook, removed or changed fails
// TestRunbookBlocksAreKnown until this table says what to do with it: a
// changed block needs its new hash (once it runs as before), a new one an
// entry here and, unless it says why it is skipped, a place in
// runbookStory.
var runbookPlans = map[string][]blockPlan{
	"operator.md": {
		{"64efe9c6", "picocom", "opens the serial console of a real Pi; the test drives the same console (firmware/console) directly"},
		{"fbe50854", "console example: ledger verify", skipExample},
		{"530f28dc", "console example: put", skipExample},
		{"808b2fd2", "base64 -d request.b64", ""},
		{"266950a2", "boot key", ""},
		{"1a05898a", "rootfs court roots", ""},
		{"ea280d6e", "make build", "builds this repository; the test runs the binary it built (bin/custodian links to it)"},
		{"ccebc1bc", "appliance binary", "cross-compiles the appliance binary from the repository, which the image build takes (skipImage)"},
		{"28cb3042", "image build", skipImage},
		{"747073ef", "image measure --image", skipImage},
		{"693be7c4", "TLS certificates", ""},
		{"dc2ea971", "dd", skipSDCard},
		{"2cc35c27", "TLS files on the card", skipSDCard + "; the test puts the same files in the data directory's tls/"},
		{"86895caa", "hwclock", skipSDCard},
		{"c95c0caf", "enroll request", ""},
		{"102e649c", "enroll answer", ""},
		{"edb85b6c", "ledger init", ""},
		{"8da6a2f6", "provision", ""},
		{"d0af7ea1", "trust store at the console", ""},
		{"fbe50854", "ledger verify", ""},
		{"45459f44", "trust list", ""},
		{"beacf4cd", "resolve-rollback", ""},
		{"ab93793f", "image build update", skipUpdate},
		{"0288a5dd", "reseal --update", ""},
		{"16d5e84b", "update apply", skipUpdate + "; the test boots the new image's measurements on swtpm instead"},
		{"1a5915a3", "reseal --finish", ""},
		{"4bf4e1ef", "update commit", "rewrites autoboot.txt on the card's boot partition after a tryboot: needs the Pi's firmware"},
		{"98d281ec", "floor raise", ""},
	},
	"escrow-authority.md": {
		{"d8fa30ca", "enroll keygen", ""},
		{"0f433c3f", "enroll challenge", ""},
		{"302732d6", "enroll verify", ""},
		{"c322295d", "enroll verify --refuse", ""},
		{"2333e4bd", "image measure", skipImage + "; the next block is the documented way without it"},
		{"d62b4258", "policy from-enrollment", ""},
		{"087c6179", "update keygen", ""},
		{"90ebe87d", "ceremony", ""},
		{"0d16320b", "update sign", ""},
	},
	"court-trust-admin.md": {
		{"9d95f531", "add-root", ""},
		{"dcd74401", "judge certificate", ""},
		{"9539dd47", "root CRL", ""},
		{"6b001db2", "judges' CA CRL", ""},
		{"5ea0030d", "issuing CA CRL", ""},
		{"c6c98031", "set-policy", ""},
		{"7ddc2f7c", "trust list", ""},
		{"3fb5ccc7", "warrant verify", ""},
	},
	"judge.md": {
		{"3cc036f8", "warrant new", ""},
		{"39767d6c", "warrant show", ""},
		{"a9b77017", "find the key", ""},
		{"e31890ca", "sign", ""},
		{"f793787f", "co-sign", ""},
		{"0709ec0b", "show and verify", ""},
		{"92288c75", "openssl cms", ""},
	},
	"officer.md": {
		{"fab4eaba", "client key", ""},
		{"a6a37ab5", "release", ""},
		{"08ee2b02", "resume", "needs a release whose witness stopped right after its entry; TestInvariantWitnessTimeoutAfterTheEntryReleasesOnceOnResume runs the same command line"},
		{"75747d5f", "reveal", ""},
	},
	"agency.md": {
		{"4bbed537", "keygen", ""},
		{"496867c8", "seal", ""},
		{"a319757e", "recover", "a share-mode key ID; the story's ceremony makes the default, scoped"},
		{"8686d4f6", "open", ""},
		{"6adde611", "open a directory", ""},
		{"ab9ca7b7", "open with the key", "a share-mode key ID's recovered key (see recover)"},
	},
	"auditor.md": {
		{"0b66178c", "on the device", ""},
		{"945528ca", "checkpoint over TLS", ""},
		{"68ad9e88", "ledger export", ""},
		{"9c03018a", "checkproof", ""},
		{"3ce25681", "ledger list over TLS", ""},
		{"dcb4fb24", "verify-opening", ""},
		{"62b96d62", "report", ""},
		{"b3bc94b1", "report with openings", ""},
		{"9b1a179f", "monitor", ""},
		{"38299d57", "monitor's user", "creates a system user and its directory as root; the story's monitor keeps its state in the auditor's own directory"},
		{"6e8877e7", "monitor from cron", ""},
		{"dd0fbb91", "monitor as a service", ""},
		{"f4a6a238", "attest over TLS", ""},
		{"804e1bdf", "attest on the device", ""},
		{"0284fd96", "attest verify", ""},
	},
}

// runbookPlanBlocks reads every runbook's blocks and checks them against
// runbookPlans.
func runbookPlanBlocks(t *testing.T) map[string][]runbookBlock {
	t.Helper()
	all := make(map[string][]runbookBlock)
	for doc, plans := range runbookPlans {
		blocks := runbookBlocks(t, doc)
		all[doc] = blocks
		for i, b := range blocks {
			if i >= len(plans) {
				t.Errorf("%s is not in runbookPlans (add it, and run it in runbookStory or say why not):\n%s", b, b.Text)
				continue
			}
			if p := plans[i]; p.hash != b.Hash() {
				t.Errorf("%s changed, or another block was added before it: runbookPlans[%q][%d] (%s, %q) has hash %s; check the block still runs and update the table:\n%s",
					b, doc, i, p.hash, p.name, b.Hash(), b.Text)
			}
		}
		for i := len(blocks); i < len(plans); i++ {
			t.Errorf("%s: runbookPlans[%d] (%q) is no longer in the runbook", doc, i, plans[i].name)
		}
	}
	return all
}

// TestRunbookBlocksAreKnown: every command block of a role's runbook is
// either run by TestRunbooks or skipped with a reason, and a block the
// table does not know (added, changed) fails. Needs no swtpm: CI runs it
// everywhere.
func TestRunbookBlocksAreKnown(t *testing.T) {
	runbookPlanBlocks(t)
	ran := make(map[string]map[string]bool)
	for _, st := range runbookStory {
		if st.do != nil {
			continue
		}
		if ran[st.doc()] == nil {
			ran[st.doc()] = make(map[string]bool)
		}
		for _, name := range st.blocks {
			i := planIndex(st.doc(), name)
			if i < 0 {
				t.Errorf("runbookStory runs %s block %q, which runbookPlans does not name", st.doc(), name)
			} else if p := runbookPlans[st.doc()][i]; p.skip != "" {
				t.Errorf("runbookStory runs %s block %q, which runbookPlans skips: %s", st.doc(), name, p.skip)
			}
			ran[st.doc()][name] = true
		}
	}
	for doc, plans := range runbookPlans {
		names := make(map[string]bool)
		for _, p := range plans {
			if names[p.name] {
				t.Errorf("%s: two blocks are named %q", doc, p.name)
			}
			names[p.name] = true
			if p.skip == "" && !ran[doc][p.name] {
				t.Errorf("%s block %q is neither run by runbookStory nor skipped with a reason", doc, p.name)
			}
		}
	}
}

// planIndex is the index of doc's block named name in runbookPlans, or -1.
func planIndex(doc, name string) int {
	return slices.IndexFunc(runbookPlans[doc], func(p blockPlan) bool { return p.name == name })
}

// A runbook's example output matches the real output up to "…" and
// numbers, and nothing else.
func TestShownOutput(t *testing.T) {
	for _, c := range []struct {
		shown, printed string
		match          bool
	}{
		{"ledger of court-a verifies: 12 entries, TPM counter and bound state match",
			"ledger of court-a verifies: 7 entries, TPM counter and bound state match\n[exit 0]\n", true},
		{"ledger of court-a verifies: 12 entries, TPM counter and bound state match",
			"ledger of court-a verifies: 7 entries\n[exit 0]\n", false},
		{"provisioned share 1 of key ID 2026-11 (2 of 3 needed) for court-a",
			"provisioned share 2 of key ID 2026-11 (2 of 3 needed) for court-b\n", false},
		{"wrote slot B (boot.img and root of …, security version 2): boot sha256 …",
			"wrote slot B (boot.img and root of x.update, security version 3): boot sha256 ab12\n", true},
		{"a.b", "axb\n", false},
	} {
		if got := shownOutput(c.shown).MatchString(c.printed); got != c.match {
			t.Errorf("shownOutput(%q) on %q: %v, want %v", c.shown, c.printed, got, c.match)
		}
	}
}
