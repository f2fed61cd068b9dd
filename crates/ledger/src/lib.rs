//! Tamper evidence for Halcyon's streams. A hash chain over each stream's stored messages (sequence,
//! subject, event id, payload), checkpoints of that chain signed with ed25519 that also record a short
//! fingerprint of every message they cover, and a verifier that re-derives the chain from the messages and
//! reports the first divergent position and what differs: a gap, an altered field, rewritten history.
//!
//! Pure: no tokio, NATS, sled or clock (callers pass the time). The bus reads and writes checkpoints; a
//! node's chain task records them; `halcyon audit verify` checks them.
#![forbid(unsafe_code)]

pub mod chain;
pub mod checkpoint;
pub mod key;
pub mod verify;

pub use chain::{Chain, Fingerprint, Hash, OutOfOrder, StoredMessage, genesis, link};
pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, ENTRIES_MAX, Entry, Recorder};
pub use key::{KeyError, Keyring, PublicKey, SignatureError, SigningKey, Validity};
pub use verify::{Divergence, Field, Report, Verifier};
