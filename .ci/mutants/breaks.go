package main

// breaks lists each property, broken, with the tests that must catch it.
// A fragment must occur exactly once in its file: when a refactor moves
// the code, update the fragment with it.
var breaks = []mutant{
	// No plaintext share on the TPM bus: unseal sessions salted to the
	// import key, ZGen sessions to the gate key the ZGen key loads under.
	{
		name: "unseal sessions without Salted(import key), response encryption kept",
		edits: []edit{{"tpm/unseal.go",
			"\t\ttpm2.Salted(key.kind.importHandle(), key.public),\n\t\ttpm2.AESEncryption(128, tpm2.EncryptOut))",
			"\t\ttpm2.AESEncryption(128, tpm2.EncryptOut))"}},
		pkg: "./tpm", tests: []string{"TestInvariantNoPlaintextShareOnTPMBus"},
	},
	{
		name: "ZGen sessions without Salted(gate key), encryption kept",
		edits: []edit{{"tpm/batch.go",
			"\t\ttpm2.Salted(gateKey.ObjectHandle, k.gateKey.public),\n\t\ttpm2.AESEncryption(128, tpm2.EncryptInOut))",
			"\t\ttpm2.AESEncryption(128, tpm2.EncryptInOut))"}},
		pkg: "./tpm", tests: []string{"TestInvariantScopedShareNeverOnTPMBus", "TestInvariantBatchKeepsShareAndPartialsOffTheBus"},
	},
	{
		name: "ZGen points sent in the clear (responses still encrypted)",
		edits: []edit{{"tpm/batch.go",
			"tpm2.AESEncryption(128, tpm2.EncryptInOut))",
			"tpm2.AESEncryption(128, tpm2.EncryptOut))"}},
		pkg: "./tpm", tests: []string{"TestInvariantBatchKeepsShareAndPartialsOffTheBus"},
	},
	// Nothing sealed leaves through TPM2_Rewrap: the import key's and the
	// gate key's policies name only the commands they need.
	{
		name: "import key's policy also allows TPM2_Rewrap",
		edits: []edit{{"tpm/importkey.go",
			"var importCommands = []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad, tpm2.TPMCCCertify}",
			"var importCommands = []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad, tpm2.TPMCCCertify, tpm2.TPMCCRewrap}"}},
		pkg: "./tpm", tests: []string{"TestInvariantImportKeyDoesNotRewrap", "TestInvariantBundleDoesNotLeaveThroughRewrap"},
	},
	{
		name: "gate key's policy also allows TPM2_Rewrap",
		edits: []edit{{"tpm/scoped.go",
			"\t\treturn []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad}",
			"\t\treturn []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad, tpm2.TPMCCRewrap}"}},
		pkg: "./tpm", tests: []string{"TestInvariantScopedShareDoesNotLeaveThroughRewrap"},
	},
	// A sealed share's wrapper is go-tpm's: its HMAC binds the object's Name.
	{
		name:  "the duplication wrapper's HMAC leaves out the sealed object's Name",
		edits: []edit{{"tpm/duplicate.go", "\tmac.Write(dupSensitive)\n\tmac.Write(name)\n", "\tmac.Write(dupSensitive)\n"}},
		pkg:   "./tpm", tests: []string{"TestDuplicateIsTheLibrarys", "TestDuplicateReadsRandomAsTheLibraryDoes"},
	},
	// A share leaves only after its ledger entry is durable.
	{
		name: "share mode unseals and seals the share before its ledger entry",
		edits: []edit{{"hsm/release/store.go",
			"\tt0 := time.Now()\n\tindex, code, err := d.appendRelease(rec, keyID, subject, replay, list)",
			"\tif b.Escrow.Mode != escrow.ModeScoped {\n\t\td.sealShare(r, b, tm)\n\t}\n\tt0 := time.Now()\n\tindex, code, err := d.appendRelease(rec, keyID, subject, replay, list)"}},
		pkg: "./tests", tests: []string{"TestInvariantShareLeavesOnlyAfterDurableLedgerEntry"},
	},
	// Nothing is lost on power loss.
	{
		name: "journal not synced before the index commits and the ack",
		edits: []edit{{"hsm/ledger/journal.go",
			"\tif err == nil {\n\t\terr = syncJournal(j.f)\n\t}\n",
			""}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantAcknowledgedEntryIsOnDisk", "TestInvariantOneSyncPerAppend"},
	},
	{
		name: "reads of ledger.db do not wait for its commit after an acknowledged write",
		edits: []edit{{"hsm/ledger/journal.go",
			"func (l *Ledger) view(fn func(*bolt.Tx) error) error {\n\tif err := l.indexing.wait(); err != nil {\n\t\treturn err\n\t}\n",
			"func (l *Ledger) view(fn func(*bolt.Tx) error) error {\n"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantAcknowledgedWriteIsReadAtOnce", "TestInvariantAcknowledgedAppendIsNeverReadAsAbsent"},
	},
	{
		name: "a transaction's reads miss its own recorded changes",
		edits: []edit{{"hsm/ledger/wtx.go",
			"\tfor i := len(w.ops) - 1; i >= 0; i-- {",
			"\tfor i := -1; i >= 0; i-- {"}},
		pkg: "./hsm/ledger", tests: []string{"TestTransactionReadsItsOwnChanges"},
	},
	{
		name: "a transaction keeps the caller's buffers, not a copy",
		edits: []edit{{"hsm/ledger/wtx.go",
			"\to.key, o.val = kv[:n:n], kv[n:]",
			"\t_ = kv[:n:n]"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantCallerBuffersReusedAfterReturnChangeNothing"},
	},
	{
		name: "a rebuild takes ledger.db's buckets as the journal made them",
		edits: []edit{{"hsm/ledger/files.go",
			"if err := replayOp(tx, o); err != nil {",
			"if err := applyOp(tx, o); err != nil {"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantJournalRebuildsAfterIndexBucketsWereChanged"},
	},
	{
		name: "a note moved onto its own key deleted",
		edits: []edit{{"hsm/ledger/notes.go",
			"\t\tif bytes.Equal(from, to) {",
			"\t\tif false {"}},
		pkg: "./hsm/ledger", tests: []string{"TestMoveNoteOntoItselfKeepsIt"},
	},
	{
		name: "a transaction whose caller panicked left open",
		edits: []edit{{"hsm/ledger/journal.go",
			"\t\tif startIndexCommit == nil { // an error, or a panic in fn",
			"\t\tif false { // an error, or a panic in fn"}},
		pkg: "./hsm/ledger", tests: []string{"TestLedgerOutlivesAPanickingNotesCallback"},
	},
	{
		name: "a change ledger.db refuses recorded in the journal",
		edits: []edit{{"hsm/ledger/wtx.go",
			"\tcase len(o.key) > bolt.MaxKeySize:",
			"\tcase false:"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantTransactionRefusesWhatLedgerDbWould", "TestInvariantNoteLedgerDbCannotStoreIsRefusedBeforeTheJournal"},
	},
	{
		name: "the journal's room of zeros left after its records at rest",
		edits: []edit{{"hsm/ledger/journal.go",
			"\t} else if err := j.trim(); err != nil { // a clean marker ends the file",
			"\t} else if err := error(nil); err != nil {"}, {"hsm/ledger/files.go",
			"\ttrimmed := j.trim()\n",
			"\tvar trimmed error\n"}},
		pkg: "./hsm/ledger", tests: []string{"TestJournalKeepsRoomWhileOpenAndNoneAtRest"},
	},
	{
		name: "no room: each append's sync commits the journal's new size",
		edits: []edit{{"hsm/ledger/journal.go",
			"\tif r.kind == kindTx {\n\t\tj.reserve(r.frameSize())\n",
			"\tif false {\n"}},
		pkg: "./hsm/ledger", tests: []string{"TestJournalKeepsRoomWhileOpenAndNoneAtRest"},
	},
	{
		name: "the journal's room taken on a nearly full partition",
		edits: []edit{{"hsm/ledger/journal.go",
			"int64(fs.Bavail)*int64(fs.Bsize) < to-from+roomMargin",
			"int64(fs.Bavail)*int64(fs.Bsize) < to-from"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantRoomLeavesLedgerDbTheSpaceANoteNeeds", "TestInvariantFullPartitionBlocksOnlyWhenItIsFull"},
	},
	{
		name: "an index not closed cleanly used as it is",
		edits: []edit{{"hsm/ledger/files.go",
			"\t\tif l.j.clean {",
			"\t\tif true {"}, {"hsm/ledger/files.go",
			"\t\tif got != held {",
			"\t\tif false {"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantUncleanIndexIsRebuiltFromJournal"},
	},
	{
		name: "a journal edited under its clean marker taken as clean",
		edits: []edit{{"hsm/ledger/journal.go",
			"\treturn hmac.Equal(r.chain, r.before[:]) && hmac.Equal(r.mac, markerMAC(j.key, r.held, r.chain))",
			"\treturn true"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantJournalEditUnderCleanMarkerIsNoticed"},
	},
	{
		name: "a ledger.db newer than its journal rebuilt over",
		edits: []edit{{"hsm/ledger/files.go",
			"\tcase (held <= l.j.held || held == l.j.source) && !edited:",
			"\tcase !edited:"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantRebuildKeepsTheIndexItReplaces"},
	},
	{
		name: "a clean ledger.db handed to bolt.Open unread",
		edits: []edit{{"hsm/ledger/files.go",
			"\t\tif err := checkIndexFile(dbPath); err != nil {",
			"\t\tif err := checkIndexFile(dbPath); false && err != nil {"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantDamagedIndexLeavesNoOpenFile"},
	},
	{
		name: "a ledger write that bypasses the journal",
		edits: []edit{{"hsm/ledger/notes.go",
			"if err := tx.put(bucketNotes, to, v); err != nil {",
			"if err := func() error { full, err := tx.full(); if err != nil { return err }; return full.Bucket(bucketNotes).Put(to, append([]byte(nil), v...)) }(); err != nil {"}},
		pkg: "./hsm/ledger", tests: []string{"TestRebuiltIndexIsTheIndex"},
	},
	{
		name: "a damaged journal record taken for a torn tail and cut away",
		edits: []edit{{"hsm/ledger/journal.go",
			"\t\tif why := s.notTorn(); why != \"\" {",
			"\t\tif why := s.notTorn(); false && why != \"\" {"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantDamagedJournalRecordBlocks"},
	},
	{
		name: "durable files written without fsync",
		edits: []edit{{"hsm/durable/durable.go",
			"\tif err == nil {\n\t\terr = f.Sync()\n\t}\n",
			""}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantAcknowledgedEntryIsOnDisk"},
	},
	{
		name: "directory not fsynced after a rename",
		edits: []edit{{"hsm/durable/durable.go",
			"\td, err := os.Open(dir)\n\tif err != nil {\n\t\treturn err\n\t}\n\tdefer d.Close()\n\treturn d.Sync()",
			"\td, err := os.Open(dir)\n\tif err != nil {\n\t\treturn err\n\t}\n\tdefer d.Close()\n\treturn nil"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantAcknowledgedEntryIsOnDisk"},
	},
	// A warrant verifies only if every check holds.
	{
		name: "a CRL without nextUpdate counted as fresh",
		edits: []edit{{"hsm/trust/trust.go",
			"!c.List.NextUpdate.IsZero() && now.Before(c.List.NextUpdate)",
			"(c.List.NextUpdate.IsZero() || now.Before(c.List.NextUpdate))"}},
		pkg: "./hsm/trust", tests: []string{"TestInvariantCRLWithoutNextUpdateIsNeverFresh"},
	},
	{
		name: "revocation not checked",
		edits: []edit{{"hsm/warrant/verify.go",
			"if crl.Revoked(c.SerialNumber) {",
			"if false {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantWarrantRefusalCatalogue"},
	},
	{
		name: "a stale CRL accepted",
		edits: []edit{{"hsm/warrant/verify.go",
			"if !crl.Fresh(now) {",
			"if false {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantWarrantRefusalCatalogue"},
	},
	{
		name: "the approval policy's signer count not enforced",
		edits: []edit{{"hsm/warrant/verify.go",
			"if len(certs) < policy.Signers {",
			"if len(certs) < 1 {"}},
		pkg: "./hsm/warrant", tests: []string{"TestVerifyDoubleLock"},
	},
	{
		name: "one judge with two cards counted as two signers",
		edits: []edit{{"hsm/warrant/signers.go",
			"func(n string) bool { return slices.Contains(nb, n) }",
			"func(n string) bool { return false && slices.Contains(nb, n) }"}},
		pkg: "./hsm/warrant", tests: []string{"TestVerifyDoubleLock", "TestInvariantDistinctSignersAreDistinctPersonNames"},
	},
	{
		name: "any extended key usage accepted",
		edits: []edit{{"hsm/warrant/verify.go",
			"if err := checkPurpose(chain, policy.EKUs); err != nil {",
			"if err := error(nil); err != nil {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantSignerNeedsSigningPurposeAlongChain"},
	},
	{
		name: "the warrant's court not checked against its root's",
		edits: []edit{{"hsm/warrant/verify.go",
			"if bound := v.Trust.CourtOf(root); bound != court {",
			"if bound := v.Trust.CourtOf(root); false && bound != court {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantWarrantCourtIsItsRootsCourt"},
	},
	{
		name: "a signer whose chains reach two courts' roots accepted",
		edits: []edit{{"hsm/warrant/verify.go",
			"if err := v.checkOneCourt(c, chains); err != nil {",
			"if err := v.checkOneCourt(c, chains); false && err != nil {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantSignerChainsToOneCourt"},
	},
	{
		name: "built chains kept past a change of a certificate's validity",
		edits: []edit{{"hsm/warrant/cache.go",
			"if !ok || now.Before(r.from) || !now.Before(r.to) {",
			"if !ok {"}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantCachedChainsKeepEveryCheck", "TestInvariantCachedChainsFollowCertificateValidity"},
	},
	{
		name: "built chains kept without the roots they were built to",
		edits: []edit{{"hsm/warrant/cache.go",
			"\troots := store.RootsDigest()\n\th.Write(roots[:])\n",
			""}},
		pkg: "./hsm/warrant", tests: []string{"TestInvariantCachedChainsKeepEveryCheck"},
	},
	// A warrant is used once.
	{
		name: "replay key not checked",
		edits: []edit{{"hsm/ledger/ledger.go",
			"if tx.get(bucketReplay, replayKey) != nil {",
			"if false {"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantReplayKeyIsAcceptedOnce"},
	},
	// Start-up state is bound to the TPM.
	{
		name: "the ledger state's HMAC not checked",
		// The journal's clean marker, under the same key, catches a forged
		// directory first: it is broken too, so that the state's HMAC is
		// what the tests must catch.
		edits: []edit{{"hsm/ledger/state.go",
			"case !hmac.Equal(mac, l.stateMAC(&l.state)):",
			"case !hmac.Equal(mac, mac):"}, {"hsm/ledger/journal.go",
			"\treturn hmac.Equal(r.chain, r.before[:]) && hmac.Equal(r.mac, markerMAC(j.key, r.held, r.chain))",
			"\treturn true"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantStartupStateIsBoundToTPMPaddedCopyIsBlocked", "TestInvariantRollbackOfDataDirBlocksUntilResolved"},
	},
	{
		name: "resolve accepts records the device did not write",
		edits: []edit{
			{"hsm/ledger/ledger.go", "\t\tif len(edited) > 0 {", "\t\tif false {"},
			{"hsm/ledger/ledger.go", "\tif errors.Is(l.blocked, ErrRecordsEdited) {\n\t\t// Found edited at Open", "\tif false {\n\t\t// Found edited at Open"}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantResolveAcceptsOnlyRecordsTheDeviceWrote"},
	},
	{
		name: "ledger init replaces a lost ledger on an anchored TPM",
		edits: []edit{{"hsm/appliance/appliance.go",
			"\tcase err == nil:\n\t\treturn ErrLedgerCreated",
			"\tcase err == nil:\n\t\treturn nil"}},
		pkg: "./hsm/appliance", tests: []string{"TestInvariantLostLedgerIsNeverReplaced"},
	},
	// A rolled-back data directory is blocked.
	{
		name:  "a ledger behind the TPM counter accepted",
		edits: []edit{{"hsm/ledger/ledger.go", "\tcase l.state.counter < tpmValue:\n", "\tcase false:\n"}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantRollbackOfDataDirBlocksUntilResolved"},
	},
	// The clock never runs behind the newest entry.
	{
		name:  "a clock behind the newest entry accepted",
		edits: []edit{{"hsm/ledger/ledger.go", "if now.Truncate(time.Second).Before(newest) {", "if false {"}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantClockBehindNewestEntryIsRefused"},
	},
	// Sealing never uses PCRs 16 and 23.
	{
		name:  "PCRs 16 and 23 accepted for sealing",
		edits: []edit{{"tpm/pcr.go", "if i == pcrDebug || i == pcrApplication {", "if false {"}},
		pkg:   "./tpm", tests: []string{"TestInvariantSealingRefusesPoliciesThatProtectNothing"},
	},
	// No fail-open defaults.
	{
		name:  "an empty trust store verifies",
		edits: []edit{{"hsm/warrant/verify.go", "if v.Trust == nil || v.Trust.Empty() {", "if v.Trust == nil {"}},
		pkg:   "./hsm/warrant", tests: []string{"TestInvariantWarrantRefusalCatalogue"},
	},
	// No downgrade.
	{
		name: "PolicyNV (the version floor) left out of the seal policy",
		edits: []edit{
			{"tpm/floor.go", "\t\tpolicyFloor(version),\n\t} {", "\t} {"},
			{"tpm/floor.go", "\treturn checkFloor(t, sess, version)\n}", "\treturn nil\n}"},
		},
		pkg: "./tpm", tests: []string{"TestInvariantNoDowngradeTheFloorOnlyRises"},
	},
	// Scoped mode: a wrong partial is caught by its proof.
	{
		name:  "the proof's point equation not checked",
		edits: []edit{{"tpm/dleq.go", "if !eq.pointHolds {", "if false {"}},
		pkg:   "./tpm", tests: []string{"TestWrongPartialIsCaughtByItsProof"},
	},
	{
		name:  "the proof's key equation not checked",
		edits: []edit{{"tpm/dleq.go", "if !eq.keyHolds {", "if false {"}},
		pkg:   "./tpm", tests: []string{"TestWrongPartialIsCaughtByItsProof"},
	},
	// Scoped mode: one proof for a batch of partials.
	{
		name:  "batch weights hashed without the partials",
		edits: []edit{{"tpm/batch.go", "\t\th.Write(partials[i])\n", ""}},
		pkg:   "./tpm", tests: []string{"TestBatchCompensatingErrorsFail", "TestBatchWeightsFollowTheTranscript"},
	},
	{
		name:  "the batch's proof not checked",
		edits: []edit{{"tpm/batch.go", "if _, err := VerifyPartial(proofKey, r, p); err != nil {", "if _, err := VerifyPartial(proofKey, r, p); err != nil && false {"}},
		pkg:   "./tpm", tests: []string{"TestBatchOf1And100PointsVerifies", "TestBatchRefusesReorderedDroppedOrDuplicatedPartials"},
	},
	{
		name:  "the combined point proved without a blind",
		edits: []edit{{"tpm/batch.go", "\trho, err := p256.RandomScalar()\n", "\trho, err := p256.ReduceScalar([]byte{1}), error(nil)\n"}},
		pkg:   "./tpm", tests: []string{"TestInvariantBatchKeepsShareAndPartialsOffTheBus"},
	},
	{
		// Either alone is caught by neither test: the TPM keeps a child of
		// a stClear parent from loading after a restart too.
		name: "the gate key and objects of a scoped key without stClear",
		edits: []edit{
			{"tpm/scoped.go", "attrs := tpm2.TPMAObject{AdminWithPolicy: true, NoDA: true, STClear: true}", "attrs := tpm2.TPMAObject{AdminWithPolicy: true, NoDA: true}"},
			{"tpm/scoped.go", "Decrypt: true, AdminWithPolicy: true, NoDA: true, STClear: true}", "Decrypt: true, AdminWithPolicy: true, NoDA: true}"},
		},
		pkg: "./tpm", tests: []string{"TestInvariantScopedObjectDiesWithItsBoot"},
	},
	// A call after the first only loads what the first imported, and a
	// kept private part that no longer loads gives way to an import.
	{
		name:  "every call imports the scoped key's objects again",
		edits: []edit{{"tpm/kept.go", "\tif private, ok := kept.Get(key); ok {", "\tif private, ok := kept.Get(key); ok && false {"}},
		pkg:   "./tpm", tests: []string{"TestBatchTPMCommandsPerEnvelope", "TestInvariantScopedKeptObjectsStillPassTheGate"},
	},
	{
		name:  "a kept gate key that no longer loads is not forgotten",
		edits: []edit{{"tpm/kept.go", "\tkept.Forget(keptKey(k.Key.Name(), &k.gateKey))\n", ""}},
		pkg:   "./tpm", tests: []string{"TestInvariantScopedKeptObjectsStillPassTheGate"},
	},
	{
		name:  "any failure to load a kept part forgets the parts and imports again",
		edits: []edit{{"tpm/kept.go", "\t\tif privateRefused(err) {", "\t\tif err != nil {"}},
		pkg:   "./tpm", tests: []string{"TestKeptPartsSurviveAFullTPM"},
	},
	// A scoped key or blob parsed once is not checked again, and each
	// caller gets one of its own.
	{
		name:  "parsed scoped keys shared between callers",
		edits: []edit{{"tpm/scoped.go", "\treturn k.clone(), nil\n", "\treturn k, nil\n"}},
		pkg:   "./tpm", tests: []string{"TestParsedScopedKeysAreIndependentCopies"},
	},
	{
		name:  "parsed blobs shared between callers",
		edits: []edit{{"tpm/blob.go", "\treturn b.clone(), nil\n", "\treturn b, nil\n"}},
		pkg:   "./tpm", tests: []string{"TestParsedBlobsAreIndependentCopies"},
	},
	// At the agency, a wrong batch names its custodian; a wrong partial of
	// a version 1 package, for its envelope.
	{
		name:  "the agency takes a batch without checking its proof",
		edits: []edit{{"hsm/escrow/scoped.go", "if err := tpm.VerifyBatch(c.ProofKey, points, b); err != nil {", "if err := tpm.VerifyBatch(c.ProofKey, points, b); err != nil && false {"}},
		pkg:   "./hsm/escrow", tests: []string{"TestOpenBatchNamesTheCustodianOfAWrongBatch"},
	},
	{
		name:  "the agency combines version 1 partials without checking their proofs",
		edits: []edit{{"hsm/escrow/scoped.go", "return tpm.VerifyPartial(rp.custodian.ProofKey, enc, p)", "return p.Point, nil"}},
		pkg:   "./hsm/escrow", tests: []string{"TestOpenBatchReadsVersion1Packages"},
	},
	{
		name:  "the agency leaves the custodian of a failed partial unnamed",
		edits: []edit{{"hsm/escrow/scoped.go", "\t\t\tbad.Custodians[rp.custodian.ID] = err.Error()\n", ""}},
		pkg:   "./hsm/escrow", tests: []string{"TestOpenBatchNamesTheCustodianOfAWrongBatch", "TestOpenBatchReadsVersion1Packages"},
	},
	// Scoped mode: an envelope proves its sealer drew its key.
	{
		name:  "the seal proof's transcript leaves out R",
		edits: []edit{{"hsm/escrow/sealproof.go", "\tb.AddBytes(st.enc)\n", ""}},
		pkg:   "./hsm/escrow", tests: []string{"TestRequesterMadeEnvelopesAreRefused"},
	},
	{
		name:  "the seal proof's transcript leaves out the target",
		edits: []edit{{"hsm/escrow/sealproof.go", "c.AddBytes([]byte(st.target))", ""}},
		pkg:   "./hsm/escrow", tests: []string{"TestRequesterMadeEnvelopesAreRefused"},
	},
	// Version 3 seal proofs are checked many at once: a random linear
	// combination with fresh weights, falling back to each proof.
	{
		name:  "the seal proofs' batch weights are all 1",
		edits: []edit{{"hsm/escrow/sealproof3.go", "\t\twi := w[weightLen*i : weightLen*(i+1)]\n", "\t\twi := []byte{byte(1 + 0*i)}\n"}},
		pkg:   "./hsm/escrow", tests: []string{"TestInvariantSealProofBatchWeightsCatchCancellingForgeries"},
	},
	{
		name:  "the seal proofs' batch drops the last proof's terms",
		edits: []edit{{"hsm/escrow/sealproof3.go", "\tfor i, cl := range claims {\n", "\tfor i, cl := range claims[:len(claims)-1] {\n"}},
		pkg:   "./hsm/escrow", tests: []string{"TestSealProofBatchHoldsForHonestProofs"},
	},
	{
		name:  "the seal proofs' batch drops the z·G term",
		edits: []edit{{"hsm/escrow/sealproof3.go", "\t\twz.Add(ws.Mul(cl.z))\n", "\t\t_ = ws\n"}},
		pkg:   "./hsm/escrow", tests: []string{"TestSealProofBatchHoldsForHonestProofs"},
	},
	{
		name:  "the seal proofs' batch leaves each range's last proof unchecked",
		edits: []edit{{"hsm/escrow/sealproof3.go", "\t\tidx := v3[chunks[k][0]:chunks[k][1]]\n", "\t\tidx := v3[chunks[k][0] : chunks[k][1]-1]\n"}},
		pkg:   "./hsm/escrow", tests: []string{"TestSealProofBatchOf10000NamesTheForgedOne"},
	},
	{
		name:  "a failing seal proof batch does not fall back to name the forged proofs",
		edits: []edit{{"hsm/escrow/sealproof3.go", "if ok, err := checkBatchV3(batch); ok && err == nil {", "if ok, err := checkBatchV3(batch); true || ok && err == nil {"}},
		pkg:   "./hsm/escrow", tests: []string{"TestSealProofBatchOf10000NamesTheForgedOne", "TestRequesterMadeEnvelopesAreRefused"},
	},
	{
		name:  "OpenBatch opens a proven envelope that changed after its proof was checked",
		edits: []edit{{"hsm/escrow/batch.go", "if err != nil || !sameRef(env.Ref(), *ref) {", "if err != nil {"}},
		pkg:   "./hsm/escrow", tests: []string{"TestOpenBatchChecksAnEnvelopeThatChangedAlone"},
	},
	{
		name: "the appliance does not check the envelopes' seal proofs",
		edits: []edit{{"hsm/release/release.go",
			"if i, err := escrow.FirstFailure(escrow.CheckSealProofs(named)); err != nil {",
			"if i, err := escrow.FirstFailure(escrow.CheckSealProofs(named)); false && err != nil {"}},
		pkg: "./tests", tests: []string{"TestDeviceRefusesRequesterMadeEnvelopesNamedByHand"},
	},
	{
		name: "an envelope list is taken without checking it is the one the warrant signs",
		edits: []edit{{"hsm/warrant/warrant.go",
			"if detached.Count() != w.EnvelopeList.Count || !bytes.Equal(detached.TreeHash[:], w.EnvelopeList.TreeHash) {",
			"if false && (detached.Count() != w.EnvelopeList.Count || !bytes.Equal(detached.TreeHash[:], w.EnvelopeList.TreeHash)) {"}},
		pkg: "./hsm/warrant", tests: []string{"TestWarrantChecksItsList"},
	},
	// The release daemon.
	{
		name: "no verification after the press",
		edits: []edit{{"hsm/release/release.go",
			"\tv, list, _, code, err := d.vet(r.p7s, r.detached, false, bundles, state)",
			"\tv, list, code, err := r.v, r.list, Code(\"\"), error(nil)\n\tfor _, k := range r.v.Warrant.KeyIDs {\n\t\tbundles[k], _ = d.cfg.Appliance.Bundle(k)\n\t}"}},
		pkg: "./tests", tests: []string{"TestInvariantVerificationRunsAgainRightBeforeTheFirstReleaseEntry"},
	},
	{
		name: "the TPM's free slots read before the warrant verifies again",
		edits: []edit{{"hsm/release/release.go",
			"\tstate := tpmState{d.cfg.TPM}\n\tcause, err := d.recheck(r, state)\n\tvar full error\n\tif err == nil {\n\t\tfull = state.room()\n\t}\n",
			"\tstate := tpmState{d.cfg.TPM}\n\tfull := state.room()\n\tcause, err := d.recheck(r, state)\n"}},
		pkg: "./tests", tests: []string{"TestInvariantTPMStateChangedWhileTheWarrantVerifiesAgainIsSeen"},
	},
	{
		name:  "a TPM that cannot count its slots is called full",
		edits: []edit{{"hsm/release/gate.go", "\tif errors.Is(err, errNoRoom) {\n\t\treturn CodeTPMFull", "\tif true {\n\t\treturn CodeTPMFull"}},
		pkg:   "./tests", tests: []string{"TestTPMFailingToCountItsSlotsIsNotTPMFull"},
	},
	{
		name:  "ReadPCRs takes an answer for PCRs it did not ask",
		edits: []edit{{"tpm/pcr.go", "\t\t\tif !slices.Contains(pending, i) {", "\t\t\tif false {"}},
		pkg:   "./tpm", tests: []string{"TestReadPCRsRefusesAnAnswerForOtherPCRs"},
	},
	{
		name: "no recheck before a later key ID's entry",
		edits: []edit{{"hsm/release/store.go",
			"		if rec.FirstEntry != nil {\n\t\t\tt0 := time.Now()\n\t\t\tcause, err := d.recheckKeyID(",
			"		if rec.FirstEntry != nil && false {\n\t\t\tt0 := time.Now()\n\t\t\tcause, err := d.recheckKeyID("}},
		pkg: "./tests", tests: []string{"TestInvariantEveryKeyIDCheckedBeforeItsEntry"},
	},
	{
		name: "the summary does not list whole-share key IDs",
		edits: []edit{{"hsm/warrant/summary.go",
			"		if !named[k] && (list != nil || w.EnvelopeList == nil) {",
			"		if false && !named[k] && (list != nil || w.EnvelopeList == nil) {"}},
		pkg: "./hsm/warrant", tests: []string{"TestSummaryEnvelopes"},
	},
	{
		name: "envelope lists read outside the list cap",
		edits: []edit{{"hsm/release/submit.go",
			"	case a.lists <- struct{}{}:\n\t\tdone = func() { <-a.lists }\n\tdefault:",
			"	case a.lists <- struct{}{}:\n\t\tdone = func() { <-a.lists }\n\tdefault:\n\t\tbreak"}},
		pkg: "./hsm/release", tests: []string{"TestListsAreReadInsideTheVerificationCap"},
	},
	{
		name: "an envelope list read before the warrant part is checked",
		edits: []edit{{"hsm/release/submit.go",
			"	if err := a.beforeList(body); err != nil {",
			"	if err := a.beforeList(body); false && err != nil {"}},
		pkg: "./hsm/release", tests: []string{"TestListsAreReadOnlyAfterTheWarrantPart"},
	},
	{
		name: "busy decided after the seal proofs",
		edits: []edit{{"hsm/release/release.go",
			"	case fresh && d.busy():",
			"	case fresh && d.busy() && false:"}},
		pkg: "./tests", tests: []string{"TestBusyRefusedBeforeSealProofsAreChecked"},
	},
	{
		name: "the request record is not written in its release entry's transaction",
		edits: []edit{{"hsm/release/store.go",
			"d.appendEntryNoted(ledger.KindRelease, ledger.OutcomeOK, \"\", keyID, subject, replay, notes)",
			"d.appendEntryNoted(ledger.KindRelease, ledger.OutcomeOK, \"\", keyID, subject, replay, nil); _ = notes"}},
		pkg: "./tests", tests: []string{"TestKillNineBetweenLedgerEntryAndResponse"},
	},
	{
		name: "a kill after the first entry, before the record names it, is not found",
		edits: []edit{{"hsm/release/store.go",
			"	if rec.FirstEntry == nil && rec.Intent != nil {\n\t\tif err := d.findFirstEntry(rec); err != nil {",
			"	if rec.FirstEntry == nil && rec.Intent != nil && false {\n\t\tif err := d.findFirstEntry(rec); err != nil {"}},
		pkg: "./tests", tests: []string{"TestInvariantKillAfterFirstEntryLogsInterrupted"},
	},
	{
		name: "unverified refusals logged per request",
		edits: []edit{{"hsm/release/release.go",
			"\tcase signed:\n\t\treturn nil, nil, d.refuse(p7s, code, err)",
			"\tcase signed || code != \"\":\n\t\treturn nil, nil, d.refuse(p7s, code, err)"}},
		pkg: "./tests", tests: []string{"TestInvariantNothingOutsideCanMakeItWriteTPMNV"},
	},
	// Strict formats match field names exactly, once.
	{
		name:  "strict formats match field names ignoring case",
		edits: []edit{{"hsm/internal/strictjson/strictjson.go", "json.MatchCaseInsensitiveNames(false),", "json.MatchCaseInsensitiveNames(true),"}},
		pkg:   "./hsm/internal/strictjson", tests: []string{"TestInvariantStrictFormatsMatchFieldNamesExactly", "FuzzDecode"},
	},
	{
		name:  "strict formats accept unknown fields",
		edits: []edit{{"hsm/internal/strictjson/strictjson.go", "json.RejectUnknownMembers(true),", "json.RejectUnknownMembers(false),"}},
		pkg:   "./hsm/internal/strictjson", tests: []string{"TestInvariantStrictFormatsMatchFieldNamesExactly", "FuzzDecode"},
	},
	{
		name:  "strict formats accept a repeated key",
		edits: []edit{{"hsm/internal/strictjson/strictjson.go", "jsontext.AllowDuplicateNames(false),", "jsontext.AllowDuplicateNames(true),"}},
		pkg:   "./hsm/internal/strictjson", tests: []string{"TestDecodeRefuses", "TestEscapedKeyIsTheSameKey"},
	},
	// The network is not trusted.
	{
		name: "the daemon serves plain HTTP without --insecure-http",
		edits: []edit{{"cmd/custodian/tls.go",
			"\tcase s.insecureHTTP:\n\t\treturn nil, nil, nil\n\tcase s.cert == \"\" && s.key == \"\":",
			"\tcase s.insecureHTTP, s.cert == \"\" && s.key == \"\":\n\t\treturn nil, nil, nil\n\tcase false:"}},
		pkg: "./cmd/custodian", tests: []string{"TestInvariantServeRefusesPlainHTTPUnlessAsked"},
	},
	{
		name:  "clients talk plain HTTP without --insecure-http",
		edits: []edit{{"cmd/custodian/tls.go", "\t\tif !c.insecureHTTP {", "\t\tif false {"}},
		pkg:   "./cmd/custodian", tests: []string{"TestInvariantClientsRefusePlainHTTPUnlessAsked"},
	},
	// An update never leaves the device without a way back.
	{
		name:  "update apply writes an image nothing was resealed to",
		edits: []edit{{"firmware/update/apply.go", "\tif err := approve(policy); err != nil {", "\tif err := approve(policy); false && err != nil {"}},
		pkg:   "./firmware/update", tests: []string{"TestApplyRefusals"},
	},
	{
		name:  "update apply overwrites the fallback slot during a tryboot",
		edits: []edit{{"firmware/update/apply.go", "\tif boot.Tryboot {", "\tif false {"}},
		pkg:   "./firmware/update", tests: []string{"TestApplyRefusals"},
	},
	{
		name:  "update commit before reseal --finish promoted everything",
		edits: []edit{{"firmware/update/commit.go", "\tif len(pending) > 0 {", "\tif false {"}},
		pkg:   "./firmware/update", tests: []string{"TestCommitRefusals"},
	},
	{
		name:  "update apply writes an image a locked board would not boot (unsigned boot.sig)",
		edits: []edit{{"firmware/update/image.go", "\tif parsed.Signature == nil {", "\tif false {"}},
		pkg:   "./firmware/update", tests: []string{"TestApplyRefusesUnsignedBootSig"},
	},
	{
		name:  "a boot without the firmware's tryboot cell taken for an ordinary one",
		edits: []edit{{"firmware/update/slot.go", "\tif errors.Is(err, os.ErrNotExist) {\n\t\t// Without the cell", "\tif errors.Is(err, os.ErrNotExist) {\n\t\treturn b, nil\n\t\t// Without the cell"}},
		pkg:   "./firmware/update", tests: []string{"TestRunningSlotRefusals"},
	},
	{
		name:  "update commit rewrites the FAT, not one sector",
		edits: []edit{{"firmware/update/commit.go", "\tif !known || ext.Size != int64(len(want)) || ext.Clusters != 1 || ext.Off%SectorSize != 0 {", "\tif !known && len(old) == len(want) || ext.Clusters != 1 || ext.Off%SectorSize != 0 {"}},
		pkg:   "./firmware/update", tests: []string{"TestCommitRefusesAutobootOfAnotherLength"},
	},
	{
		name:  "a FAT cluster loop followed without end",
		edits: []edit{{"image/imagefs/fatcheck.go", "\t\t\tif state[next] == onPath {", "\t\t\tif false {"}},
		pkg:   "./firmware/update", tests: []string{"TestOpenImageRefusesFATClusterLoop"},
	},
	{
		name:  "a root's measurement hashes without a bound",
		edits: []edit{{"firmware/measure/tree.go", "total > MaxTreeBytes {", "total > 1<<62 {"}},
		pkg:   "./firmware/measure", tests: []string{"TestTreeDigestCapsTheBytesItHashes"},
	},
	// The kernel parses only a root that matches the signed boot image's pin.
	{
		name:  "a root taken whatever its digest",
		edits: []edit{{"image/rootpin.go", "\tif got != p {", "\tif got.Size != p.Size {"}},
		pkg:   "./image", tests: []string{"TestInvariantRootCheckedAgainstItsPin"},
	},
	{
		name:  "an update whose root is not its boot image's taken",
		edits: []edit{{"image/imagefs/imagefs.go", "\t\terr = pin.CheckRoot(io.NewSectionReader(root, 0, rootSize))", "\t\t_ = pin"}},
		pkg:   "./firmware/update", tests: []string{"TestApplyRefusals"},
	},
	{
		name:  "the root's copy checked before it is sealed",
		edits: []edit{{"firmware/earlyinit/rootcopy_linux.go", "\tseals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE", "\tseals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW"}},
		pkg:   "./firmware/earlyinit", tests: []string{"TestInvariantRootCopyIsSealedBeforeItIsChecked"},
	},
	{
		name: "a share resealed to another image taken as ready for this one",
		edits: []edit{
			{"hsm/appliance/update.go", "\tif !sealedTo(next.Escrow, pcrs, version) {", "\tif false {"},
			{"hsm/appliance/update.go", "\tif !approved.PCRs.Equal(pcrs) || approved.SecurityVersion != version {", "\tif approved == nil {"},
		},
		pkg: "./hsm/appliance", tests: []string{"TestResealMovesSharesToAnApprovedImage"},
	},
	// An opening opens only its own entry, with its own salt, to a
	// warrant of the court; salts go only to the officer's channel.
	{
		name:  "an opening accepted without its salt opening the commitment",
		edits: []edit{{"hsm/opening/opening.go", "if subtle.ConstantTimeCompare(e.Commitment, ledger.Commit(salt, Subject(o.Warrant, o.EnvelopeList))) != 1 {", "if false && subtle.ConstantTimeCompare(e.Commitment, ledger.Commit(salt, Subject(o.Warrant, o.EnvelopeList))) != 1 {"}},
		pkg:   "./hsm/opening", tests: []string{"TestInvariantOpeningNeedsTheEntrysOwnSalt", "TestInvariantOpeningBindsItsEntry"},
	},
	{
		name:  "an opening accepted without its inclusion proof",
		edits: []edit{{"hsm/opening/opening.go", "\tif err := ledger.VerifyInclusion(cp, o.Index, []byte(o.Entry), o.Proof); err != nil {", "\tif err := ledger.VerifyInclusion(cp, o.Index, []byte(o.Entry), o.Proof); false && err != nil {"}},
		pkg:   "./hsm/opening", tests: []string{"TestInvariantOpeningBindsItsEntry"},
	},
	{
		name:  "an opened warrant's court not checked",
		edits: []edit{{"hsm/opening/opening.go", "\t_, err := v.VerifySignatures(p7s)\n\tif err == nil {", "\t_, err := v.VerifySignatures(p7s)\n\tif true {"}},
		pkg:   "./hsm/opening", tests: []string{"TestInvariantOpeningShowsItsCourt"},
	},
	{
		name:  "salts given on an appliance that takes warrants from anyone",
		edits: []edit{{"hsm/release/api.go", "\tif a.Officers == nil || fp == \"\" || a.Daemon.Submitter(st.ID) != fp {", "\tif false && fp == \"\" {"}},
		pkg:   "./tests", tests: []string{"TestInvariantNoSaltsWithoutOfficerCertificates"},
	},
	{
		name:  "salts given to any officer who holds the request's ID",
		edits: []edit{{"hsm/release/api.go", "\tif a.Officers == nil || fp == \"\" || a.Daemon.Submitter(st.ID) != fp {", "\tif a.Officers == nil || fp == \"\" {"}},
		pkg:   "./tests", tests: []string{"TestInvariantSaltsGoOnlyToTheSubmittingCertificate"},
	},
	// The monitor keeps the public's view of each ledger to one history.
	{
		name:  "the monitor accepts a tree that does not extend the one it saw",
		edits: []edit{{"hsm/ledger/checkpoint.go", "\tif tlog.CheckTree(proof, int64(newer.Size), tlog.Hash(newer.Hash), int64(old.Size), tlog.Hash(old.Hash)) != nil {", "\tif tlog.CheckTree(proof, int64(newer.Size), tlog.Hash(newer.Hash), int64(old.Size), tlog.Hash(old.Hash)) != nil && false {"}},
		pkg:   "./tests", tests: []string{"TestMonitorDetectsSplitView"},
	},
	{
		name:  "the monitor accepts another root for a size it saw",
		edits: []edit{{"cmd/custodian/monitor_follow.go", "\tcase old != nil && cp.Size == old.Size && !bytes.Equal(cp.Hash, old.Hash):", "\tcase false:"}},
		pkg:   "./tests", tests: []string{"TestMonitorDetectsSplitView"},
	},
	{
		name:  "the monitor misses a smaller tree (stale or rolled back)",
		edits: []edit{{"cmd/custodian/monitor_follow.go", "\tcase old != nil && cp.Size < old.Size:", "\tcase false && old != nil && cp.Size < old.Size:"}},
		pkg:   "./tests", tests: []string{"TestMonitorReportsARollbackAsStale"},
	},
	{
		name:  "the monitor takes entries the signed tree does not hold",
		edits: []edit{{"cmd/custodian/ledger_export.go", "\t\tif tlog.RecordHash(e) != leaves[i] {", "\t\tif tlog.RecordHash(e) != leaves[i] && false {"}},
		pkg:   "./cmd/custodian", tests: []string{"TestMonitorRefusesTilesThatAreNotTheSignedTree"},
	},
	// The transparency report publishes only checked entries, as text.
	{
		name:  "the report counts entry bundles without checking them against the signed tree",
		edits: []edit{{"cmd/custodian/report.go", "		data, err := src.Tile(t)", "		data, err := src.get(t)"}},
		pkg:   "./tests", tests: []string{"TestInvariantReportCountsOnlyVerifiedEntries"},
	},
	{
		name:  "the report page is rendered without escaping",
		edits: []edit{{"hsm/report/render.go", "\t\"html/template\"", "\t\"text/template\""}},
		pkg:   "./hsm/report", tests: []string{"TestInvariantReportEscapesLedgerFields"},
	},
	// A release reads the ledger's counter back after its increment.
	{
		name:  "an append that spends a replay key does not read the counter back",
		edits: []edit{{"hsm/ledger/ledger.go", "l.countEntry(next.counter, replayKey != nil)", "l.countEntry(next.counter, false)"}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantConcurrentCopyCannotSpendAWarrantTwice"},
	},
	// Witnesses: a release waits for its quorum; the agency and the
	// witness package count it.
	{
		name: "a release goes on without its witness quorum",
		edits: []edit{{"hsm/release/store.go",
			"\tcosigned, code, err := d.witnessed(b, index, tm)\n\tif code == CodeWitnessTimeout {\n\t\treturn code, fmt.Errorf(\"%w: %w\", errAwaitingWitnesses, err)\n\t}\n\tif err != nil {\n\t\treturn fail(code, err)\n\t}",
			"\tcosigned, code, err := d.witnessed(b, index, tm)\n\t_, _ = code, err"}},
		pkg: "./tests", tests: []string{"TestInvariantWitnessTimeoutAfterTheEntryReleasesOnceOnResume"},
	},
	{
		name: "a warrant is shown for approval without asking the witnesses first",
		edits: []edit{{"hsm/release/release.go",
			"\tif code, err := d.witnessesAnswer(inOrder(v.Warrant.KeyIDs, bundles)); err != nil {",
			"\tif code, err := d.witnessesAnswer(nil); err != nil {"}},
		pkg: "./tests", tests: []string{"TestInvariantWitnessOutageBeforeTheSummaryDoesNotSpendTheWarrant"},
	},
	{
		name: "the release entry is written without asking the witnesses after the press",
		edits: []edit{{"hsm/release/release.go",
			"\tcode, err := d.witnessesAnswer(inOrder(r.status.KeyIDs, r.bundles))",
			"\tcode, err := d.witnessesAnswer(nil)"}},
		pkg: "./tests", tests: []string{"TestInvariantWitnessOutageAfterThePressDoesNotSpendTheWarrant"},
	},
	{
		name: "a request awaiting its witnesses is released without its checks run again",
		edits: []edit{{"hsm/release/resume.go",
			"\tcause, err := d.recheckKeyID(r, k, *rec.FirstEntry)",
			"\tcause, err := Code(\"\"), error(nil)"}},
		pkg: "./tests", tests: []string{"TestInvariantResumeChecksTheWarrantAgain"},
	},
	{
		name: "a request is tried again while a try runs",
		edits: []edit{{"hsm/release/resume.go",
			"\tcase !ValidID(id) || !ok || r.status.State != StateAwaitingWitnesses:",
			"\tcase !ValidID(id) || !ok:"}},
		pkg: "./tests", tests: []string{"TestInvariantWitnessTimeoutAfterTheEntryReleasesOnceOnResume"},
	},
	// Only a request the ledger binds as in flight is finished after a
	// restart, and a key ID never released is not logged as a failure.
	{
		name:  "an unfinished record is acted on without its binding",
		edits: []edit{{"hsm/release/store.go", "\tif !rec.bound && recordsBound {", "\tif !rec.bound && recordsBound && false {"}},
		pkg:   "./tests", tests: []string{"TestInvariantOnlyRequestsLeftInFlightAreFinished", "TestInvariantOldLayoutRecordsAreFinishedOnlyAtTheFirstStart"},
	},
	{
		name:  "records an older version left are not finished at the first start",
		edits: []edit{{"hsm/release/store.go", "\tif !rec.bound && recordsBound {", "\tif !rec.bound {"}},
		pkg:   "./tests", tests: []string{"TestInvariantUpdateBetweenAKillAndTheRestartLogsTheInterruption"},
	},
	{
		name:  "a package its record does not name is served",
		edits: []edit{{"hsm/release/release.go", "\tcase err != nil || !slices.Contains(rec.Packages, keyID):", "\tcase err != nil:"}},
		pkg:   "./tests", tests: []string{"TestInvariantOnlyPackagesTheRecordNamesAreServed"},
	},
	{
		name:  "a share is unsealed after the ledger blocked",
		edits: []edit{{"hsm/release/store.go", "\tif blocked != nil {\n\t\trec.unlogged = append(rec.unlogged, keyID)", "\tif blocked != nil && false {\n\t\trec.unlogged = append(rec.unlogged, keyID)"}},
		pkg:   "./tests", tests: []string{"TestInvariantNothingIsUnsealedOnceTheLedgerBlocks"},
	},
	{
		name:  "bound notes are not checked at open",
		edits: []edit{{"hsm/ledger/state.go", "\tif err := checkBoundNotes(tx); err != nil {", "\tif err := checkBoundNotes(tx); err != nil && false {"}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantBoundNotesAreCheckedLikeEntries"},
	},
	{
		name: "the state's HMAC does not cover the bound notes",
		edits: []edit{
			{"hsm/ledger/state.go", "\tif s.notes == ([sha256.Size]byte{}) {\n\t\tb.AddBytes([]byte(stateEncoding))", "\tif true {\n\t\tb.AddBytes([]byte(stateEncoding))"},
			{"hsm/ledger/state.go", "\t\tb.AddBytes(s.notes[:])\n", ""}},
		pkg: "./hsm/ledger", tests: []string{"TestInvariantBoundNotesAreCheckedLikeEntries"},
	},
	{
		name:  "a bound note can be moved aside",
		edits: []edit{{"hsm/ledger/notes.go", "\t\t\treturn ErrNoteBound\n", ""}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantBoundNotesAreCheckedLikeEntries"},
	},
	{
		name:  "a blocked ledger takes notes",
		edits: []edit{{"hsm/ledger/notes.go", "func (l *Ledger) PutNotes(notes ...Note) error {\n\tl.mu.Lock()\n\tdefer l.mu.Unlock()\n\tif l.blocked != nil {", "func (l *Ledger) PutNotes(notes ...Note) error {\n\tl.mu.Lock()\n\tdefer l.mu.Unlock()\n\tif l.blocked != nil && false {"}},
		pkg:   "./hsm/ledger", tests: []string{"TestInvariantBoundNotesAreCheckedLikeEntries"},
	},
	{
		name:  "the record does not name a later key ID's release entry",
		edits: []edit{{"hsm/release/store.go", "\t\tnext.LedgerIndices[keyID] = index\n", ""}},
		pkg:   "./tests", tests: []string{"TestInvariantKillAtASecondKeyIDsEntryKeepsTheFirstAndLogsTheSecond"},
	},
	{
		name:  "a key ID never released is logged as a failure",
		edits: []edit{{"hsm/release/store.go", "\t\t\tkind = ledger.KindRefusal\n", "\t\t\tkind = ledger.KindFailure\n"}},
		pkg:   "./tests", tests: []string{"TestInvariantKillBetweenTwoKeyIDsLogsTheSecond"},
	},
	{
		name:  "the agency takes packages without the witness quorum",
		edits: []edit{{"hsm/escrow/witnessed.go", "\tif policy.Quorum == 0 {", "\tif true {"}},
		pkg:   "./tests", tests: []string{"TestInvariantReleaseCarriesWitnessQuorumAndAgencyRefusesWithout"},
	},
	{
		name:  "one cosignature short of the quorum passes",
		edits: []edit{{"hsm/witness/witness.go", "\tif len(names) < p.Quorum {", "\tif len(names) < p.Quorum-1 {"}},
		pkg:   "./hsm/witness", tests: []string{"TestInvariantQuorumIsCounted"},
	},
}
