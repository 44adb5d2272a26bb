# The two commands a newcomer needs:
#   make run    the whole story on this machine (custodian demo, on swtpm)
#   make test   every test, after installing what the tests need
GO ?= go

.PHONY: run test deps build cross fuzz man mutants

# The demo runs three custodians on swtpm, which deps installs when missing.
run: deps build
	./bin/custodian demo

build:
	$(GO) build -o bin/custodian ./cmd/custodian

deps:
	@sh .ci/deps

# CUSTODIAN_REQUIRE_TOOLS turns a test that would skip for a missing part
# (swtpm, SoftHSM2, openssl, cgo, chromium) into a failure: nothing skips silently.
# go test starts packages in the order they are named, two at a time: the
# longest ones (./tests, ./tpm) come first so that they do not start last.
test: deps
	$(GO) vet ./... ./.ci/mutants
	CUSTODIAN_REQUIRE_TOOLS=1 $(GO) test -count=1 -timeout 20m ./tests ./tpm ./...
	$(MAKE) mutants
	$(MAKE) cross
	$(MAKE) fuzz

# Breaks each security property on purpose, in a copy of the tree, and
# requires the tests named for it to fail (.ci/mutants/breaks.go lists
# the breaks; a fragment the code no longer has fails the run too).
mutants:
	$(GO) run ./.ci/mutants

# Every fuzz target, a few seconds each (FUZZTIME=1m make fuzz for longer).
fuzz:
	@sh .ci/fuzz

# The appliance binary must build without cgo for the Pi (arm64, and armv6);
# -tags appliance is the device's build, without the image builder.
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./cmd/custodian
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -o /dev/null ./cmd/custodian
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags appliance -o /dev/null ./cmd/custodian

# Regenerates the man pages (docs/man) and shell completions (docs/completions)
# from the command tree; run it after adding or changing a command or flag.
# TestCheckedInDocsAreCurrent, which make test runs, fails while they are stale.
man:
	$(GO) run ./cmd/custodian docs man docs/man
	$(GO) run ./cmd/custodian docs completions docs/completions
