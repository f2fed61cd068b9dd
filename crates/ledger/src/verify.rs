//! Verification: check every checkpoint (signature, shape, one unbroken chain of checkpoints from the
//! stream's genesis), then walk the stream's stored messages in order, comparing each with the fingerprint
//! its checkpoint recorded and re-deriving the chain head at each checkpoint. The first divergent position
//! is reported with what differs; otherwise the stream is intact up to the last checkpoint.

use std::collections::{BTreeMap, VecDeque};

use sha2::{Digest as _, Sha256};

use crate::chain::{Chain, Hash, OutOfOrder, StoredMessage, genesis};
use crate::checkpoint::{Checkpoint, Entry};
use crate::key::Keyring;

/// Which recorded field of a message differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Subject,
    Payload,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Subject => "subject",
            Field::Payload => "payload",
        })
    }
}

/// The first place where the stream and its checkpoints disagree, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// A recorded message is gone: the stream jumps from before `expected` to `found` (`None`: the stream
    /// ends before it).
    Gap {
        expected: u64,
        found: Option<u64>,
        event_id: String,
    },
    /// The same event at the same position, with a different subject or payload.
    Altered {
        sequence: u64,
        event_id: String,
        field: Field,
        /// Truncated digests, hex.
        recorded: String,
        found: String,
    },
    /// A different event stands at a recorded position: history was rewritten (for example the stream was
    /// rebuilt from a copy with an event removed, inserted or replaced, shifting what follows).
    Rewritten {
        sequence: u64,
        expected_event_id: String,
        found_event_id: String,
    },
    /// A message stands at a position where the checkpoints record none.
    Inserted { sequence: u64, event_id: String },
    /// Every message matches its fingerprint but the re-derived head differs from the signed one.
    HeadMismatch {
        sequence: u64,
        recorded: Hash,
        derived: Hash,
    },
    /// A checkpoint that cannot be trusted: bad or unknown signature, or malformed.
    BadCheckpoint {
        from_sequence: u64,
        to_sequence: u64,
        reason: String,
    },
    /// The checkpoints do not form one chain from the genesis: one is missing, or two disagree.
    CheckpointChainBroken { from_sequence: u64, reason: String },
    /// A checkpoint from the exported copy that the checkpoint stream no longer holds.
    CheckpointMissing { from_sequence: u64, to_sequence: u64 },
}

impl Divergence {
    /// The first stream sequence this divergence concerns.
    pub fn position(&self) -> u64 {
        match self {
            Divergence::Gap { expected, .. } => *expected,
            Divergence::Altered { sequence, .. }
            | Divergence::Rewritten { sequence, .. }
            | Divergence::Inserted { sequence, .. }
            | Divergence::HeadMismatch { sequence, .. } => *sequence,
            Divergence::BadCheckpoint { from_sequence, .. }
            | Divergence::CheckpointChainBroken { from_sequence, .. }
            | Divergence::CheckpointMissing { from_sequence, .. } => *from_sequence,
        }
    }

    /// A short name for the kind, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Divergence::Gap { .. } => "gap",
            Divergence::Altered { .. } => "altered",
            Divergence::Rewritten { .. } => "rewritten",
            Divergence::Inserted { .. } => "inserted",
            Divergence::HeadMismatch { .. } => "head-mismatch",
            Divergence::BadCheckpoint { .. } => "bad-checkpoint",
            Divergence::CheckpointChainBroken { .. } => "checkpoint-chain-broken",
            Divergence::CheckpointMissing { .. } => "checkpoint-missing",
        }
    }
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Divergence::Gap {
                expected,
                found: Some(found),
                event_id,
            } => write!(
                f,
                "gap: message {expected} (event {event_id}) is missing; the stream goes on at {found}"
            ),
            Divergence::Gap {
                expected,
                found: None,
                event_id,
            } => write!(
                f,
                "gap: message {expected} (event {event_id}) is missing; the stream ends before it"
            ),
            Divergence::Altered {
                sequence,
                event_id,
                field,
                recorded,
                found,
            } => write!(
                f,
                "altered {field}: message {sequence} (event {event_id}) has {field} sha256 {found}…, the checkpoint recorded {recorded}…"
            ),
            Divergence::Rewritten {
                sequence,
                expected_event_id,
                found_event_id,
            } => write!(
                f,
                "rewritten history: message {sequence} is event {found_event_id}, the checkpoint recorded event {expected_event_id}"
            ),
            Divergence::Inserted { sequence, event_id } => write!(
                f,
                "inserted: message {sequence} (event {event_id}) stands where the checkpoints record no message"
            ),
            Divergence::HeadMismatch {
                sequence,
                recorded,
                derived,
            } => write!(
                f,
                "chain head at {sequence} is {}, the checkpoint signed {}",
                hex::encode(derived),
                hex::encode(recorded)
            ),
            Divergence::BadCheckpoint {
                from_sequence,
                to_sequence,
                reason,
            } => write!(
                f,
                "checkpoint {from_sequence}..={to_sequence} cannot be trusted: {reason}"
            ),
            Divergence::CheckpointChainBroken {
                from_sequence,
                reason,
            } => write!(f, "checkpoints broken from {from_sequence}: {reason}"),
            Divergence::CheckpointMissing {
                from_sequence,
                to_sequence,
            } => write!(
                f,
                "checkpoint {from_sequence}..={to_sequence} is in the exported copy but no longer in the checkpoint stream"
            ),
        }
    }
}

/// What verifying one stream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub stream: String,
    /// Messages read from the stream.
    pub n_messages: u64,
    /// Trusted checkpoints (signature, shape and linkage checked).
    pub n_checkpoints: usize,
    /// The last sequence up to which every message matched and a signed head was re-derived (0: none).
    pub verified_up_to: u64,
    /// The last sequence read from the stream.
    pub last_sequence: u64,
    /// Messages after the last checkpoint (not yet checkpointed, so not yet evidence).
    pub n_unchecked: u64,
    /// Everything that diverges, first position first; empty when intact.
    pub divergences: Vec<Divergence>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.divergences.is_empty()
    }

    /// The first divergent position and what differs.
    pub fn first(&self) -> Option<&Divergence> {
        self.divergences.first()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.first() {
            None => write!(
                f,
                "{}: intact up to {} ({} messages read, {} signed {} checked",
                self.stream,
                self.verified_up_to,
                self.n_messages,
                self.n_checkpoints,
                checkpoints(self.n_checkpoints)
            )?,
            Some(d) => {
                write!(
                    f,
                    "{}: DIVERGES at {} — {d}\n  intact up to {} ({} messages read, {} signed {} checked",
                    self.stream,
                    d.position(),
                    self.verified_up_to,
                    self.n_messages,
                    self.n_checkpoints,
                    checkpoints(self.n_checkpoints)
                )?;
            }
        }
        if self.n_unchecked > 0 {
            write!(
                f,
                "; {} after the last checkpoint, not yet checkpointed",
                self.n_unchecked
            )?;
        }
        f.write_str(")")?;
        for d in self.divergences.iter().skip(1) {
            write!(f, "\n  also at {}: {d}", d.position())?;
        }
        Ok(())
    }
}

fn checkpoints(n: usize) -> &'static str {
    if n == 1 { "checkpoint" } else { "checkpoints" }
}

/// Checks one stream's messages, fed in order, against its checkpoints.
#[derive(Debug)]
pub struct Verifier {
    stream: String,
    chain: Chain,
    /// Trusted checkpoints not yet reached, in order.
    checkpoints: VecDeque<Checkpoint>,
    /// The next entry of the front checkpoint.
    next_entry: usize,
    n_checkpoints: usize,
    /// Checkpoint-level problems, found before any message is read.
    problems: Vec<Divergence>,
    /// The first message-level divergence; later messages are counted, not compared.
    diverged: Option<Divergence>,
    n_messages: u64,
    verified_up_to: u64,
    n_unchecked: u64,
}

impl Verifier {
    /// `stored`: the checkpoints the checkpoint stream holds; `exported`: a copy kept elsewhere (may be
    /// empty; checkpoints of other streams are ignored). `keys`: the public keys to trust.
    pub fn new(stream: &str, stored: Vec<Checkpoint>, exported: Vec<Checkpoint>, keys: &Keyring) -> Self {
        let mut problems = Vec::new();
        let trusted = |c: Checkpoint, problems: &mut Vec<Divergence>| -> Option<Checkpoint> {
            let reason = c
                .shape_error()
                .or_else(|| c.verify_signature(keys).err().map(|e| e.to_string()));
            match reason {
                None => Some(c),
                Some(reason) => {
                    problems.push(Divergence::BadCheckpoint {
                        from_sequence: c.from_sequence,
                        to_sequence: c.to_sequence,
                        reason,
                    });
                    None
                }
            }
        };
        let mut by_end: BTreeMap<u64, Checkpoint> = BTreeMap::new();
        for c in stored.into_iter().filter(|c| c.stream == stream) {
            if let Some(c) = trusted(c, &mut problems) {
                if let Some(other) = by_end.get(&c.to_sequence)
                    && other != &c
                {
                    problems.push(conflict(&c));
                    continue;
                }
                by_end.insert(c.to_sequence, c);
            }
        }
        for c in exported.into_iter().filter(|c| c.stream == stream) {
            if let Some(c) = trusted(c, &mut problems) {
                match by_end.get(&c.to_sequence) {
                    Some(other) if other == &c => {}
                    Some(_) => problems.push(conflict(&c)),
                    None => {
                        problems.push(Divergence::CheckpointMissing {
                            from_sequence: c.from_sequence,
                            to_sequence: c.to_sequence,
                        });
                        by_end.insert(c.to_sequence, c);
                    }
                }
            }
        }
        // One chain of checkpoints from the genesis; stop trusting at the first break.
        let mut checkpoints = VecDeque::new();
        let (mut from, mut prev) = (1u64, genesis(stream));
        for c in by_end.into_values() {
            let reason = if c.from_sequence != from {
                Some(format!(
                    "the next checkpoint covers {}..={}, but the previous one ended at {}",
                    c.from_sequence,
                    c.to_sequence,
                    from - 1
                ))
            } else if c.prev_head != prev {
                Some(format!(
                    "checkpoint {}..={} does not continue the previous checkpoint's head",
                    c.from_sequence, c.to_sequence
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                problems.push(Divergence::CheckpointChainBroken {
                    from_sequence: from,
                    reason,
                });
                break;
            }
            (from, prev) = (c.to_sequence + 1, c.head);
            checkpoints.push_back(c);
        }
        Self {
            stream: stream.to_owned(),
            chain: Chain::new(stream),
            n_checkpoints: checkpoints.len(),
            checkpoints,
            next_entry: 0,
            problems,
            diverged: None,
            n_messages: 0,
            verified_up_to: 0,
            n_unchecked: 0,
        }
    }

    /// The last sequence the trusted checkpoints cover (0: none).
    pub fn checkpointed_up_to(&self) -> u64 {
        self.checkpoints
            .back()
            .map_or(self.verified_up_to, |c| c.to_sequence)
    }

    /// Checks the next stored message; false once the stream has diverged (reading on is pointless).
    pub fn push(&mut self, m: &StoredMessage<'_>) -> Result<bool, OutOfOrder> {
        if m.sequence <= self.chain.last_sequence() {
            return Err(OutOfOrder {
                stream: self.stream.clone(),
                sequence: m.sequence,
                last: self.chain.last_sequence(),
            });
        }
        self.n_messages += 1;
        if self.diverged.is_some() {
            return Ok(false);
        }
        // The payload is hashed once, for both the comparison and the link; nothing is allocated unless
        // the message diverges.
        let payload_digest: Hash = Sha256::digest(m.payload).into();
        let Some(checkpoint) = self.checkpoints.front() else {
            self.chain.push_digest(m, &payload_digest)?;
            self.n_unchecked += 1;
            return Ok(true);
        };
        let entry = &checkpoint.entries[self.next_entry];
        if let Some(d) = compare(entry, m, &payload_digest) {
            self.diverged = Some(d);
            return Ok(false);
        }
        self.chain.push_digest(m, &payload_digest)?;
        self.next_entry += 1;
        if self.next_entry == checkpoint.entries.len() {
            if self.chain.head() != checkpoint.head {
                self.diverged = Some(Divergence::HeadMismatch {
                    sequence: checkpoint.to_sequence,
                    recorded: checkpoint.head,
                    derived: self.chain.head(),
                });
                return Ok(false);
            }
            self.verified_up_to = checkpoint.to_sequence;
            self.checkpoints.pop_front();
            self.next_entry = 0;
        }
        Ok(true)
    }

    /// The verdict, once every stored message has been pushed.
    pub fn finish(mut self) -> Report {
        if self.diverged.is_none()
            && let Some(checkpoint) = self.checkpoints.front()
        {
            let entry = &checkpoint.entries[self.next_entry];
            self.diverged = Some(Divergence::Gap {
                expected: entry.sequence,
                found: None,
                event_id: entry.event_id.clone(),
            });
        }
        let mut divergences = self.problems;
        divergences.extend(self.diverged);
        divergences.sort_by_key(Divergence::position);
        Report {
            stream: self.stream,
            n_messages: self.n_messages,
            n_checkpoints: self.n_checkpoints,
            verified_up_to: self.verified_up_to,
            last_sequence: self.chain.last_sequence(),
            n_unchecked: self.n_unchecked,
            divergences,
        }
    }
}

fn conflict(c: &Checkpoint) -> Divergence {
    Divergence::CheckpointChainBroken {
        from_sequence: c.from_sequence,
        reason: format!(
            "two validly signed checkpoints end at {} with different contents (one rewritten and re-signed?)",
            c.to_sequence
        ),
    }
}

/// The difference between a recorded entry and the message found, if any.
fn compare(entry: &Entry, found: &StoredMessage<'_>, payload_digest: &Hash) -> Option<Divergence> {
    if entry.sequence < found.sequence {
        return Some(Divergence::Gap {
            expected: entry.sequence,
            found: Some(found.sequence),
            event_id: entry.event_id.clone(),
        });
    }
    if entry.sequence > found.sequence {
        return Some(Divergence::Inserted {
            sequence: found.sequence,
            event_id: found.event_id.to_owned(),
        });
    }
    if entry.event_id != found.event_id {
        return Some(Divergence::Rewritten {
            sequence: found.sequence,
            expected_event_id: entry.event_id.clone(),
            found_event_id: found.event_id.to_owned(),
        });
    }
    let subject_digest: Hash = Sha256::digest(found.subject.as_bytes()).into();
    for (field, want, got) in [
        (
            Field::Subject,
            &entry.subject_digest[..],
            &subject_digest[..entry.subject_digest.len()],
        ),
        (
            Field::Payload,
            &entry.payload_digest[..],
            &payload_digest[..entry.payload_digest.len()],
        ),
    ] {
        if want != got {
            return Some(Divergence::Altered {
                sequence: found.sequence,
                event_id: found.event_id.to_owned(),
                field,
                recorded: hex::encode(want),
                found: hex::encode(got),
            });
        }
    }
    None
}
