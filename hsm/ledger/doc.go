// Package ledger is the appliance's memory: an append-only,
// tamper-evident log of every release, refusal and change of state, that
// anyone can check without learning what a warrant said.
//
// Promises:
//
//   - Durable before done. [Ledger.Append] returns only after the entry,
//     its Merkle hashes, its salt and its anti-replay key are one record of
//     the ledger's journal ([JournalName]), written and fdatasynced, and
//     the TPM NV counter is incremented. A power cut at any point leaves
//     either the whole entry or none of it: a record cut short is the
//     journal's last, never acknowledged, and is dropped at Open; a
//     damaged record before the last refuses to open
//     ([ErrJournalDamaged]). Every ledger commit (notes, changes, resolve)
//     is one record and one sync.
//
//   - ledger.db ([FileName]) is an index of the journal: every read uses
//     it. A transaction records its changes (reading its own as it goes)
//     and refuses any ledger.db would; once the journal holds them,
//     ledger.db makes them in the background, without syncs of its own;
//     every read and the next transaction wait for that commit.
//     It is used as it is only when the journal ends with the clean marker
//     [Ledger.Close] writes naming the record it holds (with an HMAC under
//     [Config.StateKey] over a hash chain of every record before it) and
//     every page of it checks; otherwise (a crash, a missing or damaged
//     file; a panic in bbolt is caught) Open rebuilds it from the journal,
//     then checks it as it always did, so nothing trusts the journal more
//     than it trusted ledger.db. A ledger.db the journal disagrees with
//     (holding a record newer than the journal's, or the journal edited
//     under its marker) is never replaced but kept aside, and the ledger
//     blocks ([ErrIndexKept], [ErrRecordsEdited]); one that an image older
//     than the journal wrote after a clean marker (its record unchanged)
//     is not told apart, and is used as it is. A data directory with ledger.db alone (the
//     format before the journal) is migrated at Open. The journal is
//     locked for the ledger's life: a second opener gets [ErrInUse].
//     An entry committed whose increment the TPM then refuses stands: its
//     index comes back with [ErrUncounted], the ledger blocks, and the
//     next open finishes the increment.
//     [Ledger.AppendNoted] adds the caller's notes (a record about the
//     entry) to that same transaction: one commit for both. Notes are
//     outside the tree. A note written Bound (a request in flight) is
//     bound by the state's HMAC, as the entries are, until it is written
//     again unbound ([Ledger.NoteBound]); any other is outside the
//     binding, so the caller checks it against the entries it names.
//
//   - Tamper-evident. Entries are the leaves of an RFC 6962 Merkle tree
//     (golang.org/x/mod/sumdb/tlog). [Ledger.Checkpoint] signs the tree
//     head as a C2SP tlog-checkpoint in a C2SP signed note (Ed25519); its
//     signing key is sealed to the TPM under the image's PCR policy, so
//     only the approved image can sign. Inclusion and consistency proofs
//     are served for any size.
//
//   - Published as tiles. [Ledger.Tile] reads the tree and the entries as
//     a C2SP tlog-tiles log (hash tiles from the stored hashes with
//     x/mod's tlog.ReadTileData, entry bundles, [ParseTilePath] for the
//     one canonical path form), nothing past the ledger's size
//     ([ErrTileBeyondTree]); [Ledger.Export] writes it as static files,
//     durably and idempotently, inside its directory only (an os.Root, no
//     symbolic links: [ErrNotExport]), one export at a time
//     ([ErrExportRunning]), and never over another log's files
//     ([ErrOtherLog]) nor over a larger or other history of this one
//     ([ErrHistoryChanged]: keep it as evidence). Neither writes to the
//     ledger: its append path and format are the same with or without.
//
//   - Anchored to the TPM. Each entry consumes one value of a TPM NV
//     counter, which only goes up. At open and before every append the
//     ledger's counter is compared with the TPM's: a data directory
//     restored from a copy (ledger behind), or moved to another TPM, is
//     blocked ([ErrRolledBack], [ErrCounterAhead], [ErrOtherDevice]). A
//     restored copy stays blocked until an operator resolves it
//     ([Ledger.ResolveRollback]): one transaction that binds the directory
//     as it is and appends a resolve entry committing to the accepted
//     state, and raises the replay floor to now so that no warrant signed
//     before it can be used again. It refuses a clock behind the newest
//     entry, records this TPM's approved image did not write
//     ([ErrRecordsEdited]: only a copy the device wrote is accepted), and
//     a ledger of another device or a TPM without the enrolled EK
//     ([Config.DeviceErr]): those cannot be adopted. A crash between the
//     commit and the increment (ledger exactly one ahead) is finished at
//     the next open.
//
//   - Bound to the TPM. Counting alone misses a copy padded with made-up
//     entries until its counter matches, or a trust store or bundle put
//     back on its own. An HMAC under a key only the approved image unseals
//     on this TPM ([Config.StateKey], derived from the checkpoint key's
//     seed) covers the origin, the device, size, tree root, counter,
//     newest time, replay floor, a digest of the replay index, of the
//     salts, of the bound notes and of each bound directory
//     ([Config.Bound]). It is rewritten
//     in the same transaction as every append (no TPM command) and checked
//     at Open before the counter, with everything it stands for
//     recomputed from the records: the whole tree from every entry's
//     bytes (each stored hash compared), the newest entry's time
//     ([Ledger.Newest]), the salts and the replay index; a bound directory changes only through
//     [Ledger.Change], which logs it in the same step. A mismatch blocks
//     ([ErrStateMismatch], [ErrChangeInterrupted]; [ErrStateUnauthenticated]
//     without the key) until [Ledger.ResolveRollback].
//
//   - One key per TPM. The checkpoint key is an import blob, which anyone
//     can make from public values (the EK, the PCRs, the floor), so a
//     sealed key alone proves nothing: a forger could bind a whole data
//     directory under a key of their own. At ledger init the TPM anchors
//     the key, for its life, in a platform NV index written once and never
//     deletable ([SigningKey.Anchor], tpm.Anchor); [SigningKey.Open] gives
//     the signer and the state key only for the anchored key (two TPM
//     commands at open, none per append). Any other key, or a TPM without
//     the anchor, blocks with [ErrForeignLedgerKey] (via [Config.KeyErr]),
//     which ResolveRollback cannot accept.
//
//   - Anti-replay. Each entry may carry a replay key (a warrant's court
//     root key, court and serial); a key is accepted once, in the same
//     transaction as its entry, so the index and the log cannot disagree
//     after a crash.
//
//   - Monotonic time. An entry older than the newest one is refused, and
//     [Ledger.CheckClock] tells the appliance its clock runs behind its
//     own records.
package ledger
