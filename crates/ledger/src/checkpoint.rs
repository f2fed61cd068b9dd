//! Signed checkpoints: the chain head of a stream at a sequence, linked to the previous checkpoint's head,
//! with a short fingerprint of every message since it (so a verifier can name the exact first divergent
//! message, not just the interval), signed with ed25519 over a canonical length-prefixed encoding.
//! Checkpoints travel and are exported as JSON; the signature never depends on the JSON's layout.

use serde::{Deserialize, Serialize};

use crate::chain::{Chain, Fingerprint, Hash, OutOfOrder, StoredMessage, genesis};
use crate::key::{Keyring, SignatureError, SigningKey};

/// The checkpoint format written by this code.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Most messages one checkpoint may cover (about 100 bytes of JSON each, well inside NATS' 1 MB payload).
pub const ENTRIES_MAX: usize = 5_000;

const SIGNING_TAG: &[u8] = b"halcyon.ledger.v1.checkpoint\0";

/// One message as a checkpoint records it: its position, its event id in full, and truncated digests of
/// its subject and payload (enough to say which changed; the chain head binds the full digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "seq")]
    pub sequence: u64,
    #[serde(rename = "id")]
    pub event_id: String,
    #[serde(rename = "subj", with = "hex_array")]
    pub subject_digest: [u8; 8],
    #[serde(rename = "pay", with = "hex_array")]
    pub payload_digest: [u8; 16],
}

impl Entry {
    pub fn of(f: &Fingerprint) -> Self {
        Self {
            sequence: f.sequence,
            event_id: f.event_id.clone(),
            subject_digest: f.subject_digest[..8].try_into().expect("8 of 32 bytes"),
            payload_digest: f.payload_digest[..16].try_into().expect("16 of 32 bytes"),
        }
    }
}

/// The chain of `stream` from `from_sequence` to `to_sequence`, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub stream: String,
    /// The first stream sequence covered: the previous checkpoint's `to_sequence + 1` (1 for the first).
    pub from_sequence: u64,
    /// The last message covered; `head` is the chain's head there.
    pub to_sequence: u64,
    /// The previous checkpoint's head (the stream's genesis for the first): checkpoints form one chain.
    #[serde(with = "hex_array")]
    pub prev_head: Hash,
    #[serde(with = "hex_array")]
    pub head: Hash,
    /// When the node signed it (Unix ms, the node's clock).
    pub created_at_ms: i64,
    /// The node that recorded it.
    pub node_id: String,
    /// Which key signed it (`PublicKey::key_id`).
    pub key_id: String,
    /// Every message from `from_sequence` to `to_sequence`, in order.
    pub entries: Vec<Entry>,
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The bytes the signature covers: every field but the signature, length-prefixed.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.entries.len() * 80);
        out.extend_from_slice(SIGNING_TAG);
        out.extend_from_slice(&self.version.to_be_bytes());
        put(&mut out, self.stream.as_bytes());
        out.extend_from_slice(&self.from_sequence.to_be_bytes());
        out.extend_from_slice(&self.to_sequence.to_be_bytes());
        out.extend_from_slice(&self.prev_head);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        put(&mut out, self.node_id.as_bytes());
        put(&mut out, self.key_id.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.sequence.to_be_bytes());
            put(&mut out, e.event_id.as_bytes());
            out.extend_from_slice(&e.subject_digest);
            out.extend_from_slice(&e.payload_digest);
        }
        out
    }

    /// Signs with `key`, setting `key_id` and `signature`.
    pub fn sign(mut self, key: &SigningKey) -> Self {
        self.key_id = key.public_key().key_id();
        self.signature = key.sign(&self.signing_bytes());
        self
    }

    /// Checks the signature against the trusted keys.
    pub fn verify_signature(&self, keys: &Keyring) -> Result<(), SignatureError> {
        let key = keys.get(&self.key_id).ok_or_else(|| SignatureError::UnknownKey {
            key_id: self.key_id.clone(),
        })?;
        if !key.verify(&self.signing_bytes(), &self.signature) {
            return Err(SignatureError::Invalid {
                key_id: self.key_id.clone(),
            });
        }
        let validity = keys.validity(&self.key_id);
        if validity.contains(self.created_at_ms) {
            Ok(())
        } else {
            Err(SignatureError::OutsideValidity {
                key_id: self.key_id.clone(),
                created_at_ms: self.created_at_ms,
                validity: validity.to_string(),
            })
        }
    }

    /// What is wrong with the checkpoint's own shape, if anything (a signed but malformed checkpoint is
    /// still refused: the verifier relies on these).
    pub fn shape_error(&self) -> Option<String> {
        if self.version != CHECKPOINT_VERSION {
            return Some(format!("unknown checkpoint version {}", self.version));
        }
        if self.from_sequence == 0 || self.from_sequence > self.to_sequence {
            return Some(format!(
                "covers {}..={}, which is not a range of sequences",
                self.from_sequence, self.to_sequence
            ));
        }
        let Some(last) = self.entries.last() else {
            return Some("records no messages".into());
        };
        if last.sequence != self.to_sequence {
            return Some(format!(
                "ends at {} but its last entry is {}",
                self.to_sequence, last.sequence
            ));
        }
        let mut previous = self.from_sequence - 1;
        for e in &self.entries {
            if e.sequence <= previous {
                return Some(format!("entry {} is out of order after {previous}", e.sequence));
            }
            previous = e.sequence;
        }
        None
    }

    /// One JSON line (the export format and the CHECKPOINTS message payload).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint always serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Extends a stream's chain message by message and cuts signed checkpoints of what it has seen since the
/// last one. What a node's chain task drives.
#[derive(Debug, Clone)]
pub struct Recorder {
    chain: Chain,
    from_sequence: u64,
    prev_head: Hash,
    entries: Vec<Entry>,
}

impl Recorder {
    /// From the stream's beginning.
    pub fn new(stream: &str) -> Self {
        Self {
            chain: Chain::new(stream),
            from_sequence: 1,
            prev_head: genesis(stream),
            entries: Vec::new(),
        }
    }

    /// After a checkpoint (whose signature the caller has checked).
    pub fn after(checkpoint: &Checkpoint) -> Self {
        Self {
            chain: Chain::resume(&checkpoint.stream, checkpoint.to_sequence, checkpoint.head),
            from_sequence: checkpoint.to_sequence + 1,
            prev_head: checkpoint.head,
            entries: Vec::new(),
        }
    }

    /// The first sequence not yet linked.
    pub fn next_sequence(&self) -> u64 {
        self.chain.last_sequence() + 1
    }

    pub fn push(&mut self, m: &StoredMessage<'_>) -> Result<(), OutOfOrder> {
        let fingerprint = self.chain.push(m)?;
        self.entries.push(Entry::of(&fingerprint));
        Ok(())
    }

    /// Messages linked since the last checkpoint.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    pub fn head(&self) -> Hash {
        self.chain.head()
    }

    /// A signed checkpoint of everything since the last one, or `None` if nothing is new.
    pub fn cut(&mut self, key: &SigningKey, node_id: &str, now_ms: i64) -> Option<Checkpoint> {
        if self.entries.is_empty() {
            return None;
        }
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            stream: self.chain.stream().to_owned(),
            from_sequence: self.from_sequence,
            to_sequence: self.chain.last_sequence(),
            prev_head: self.prev_head,
            head: self.chain.head(),
            created_at_ms: now_ms,
            node_id: node_id.to_owned(),
            key_id: String::new(),
            entries: std::mem::take(&mut self.entries),
            signature: [0; 64],
        }
        .sign(key);
        self.from_sequence = checkpoint.to_sequence + 1;
        self.prev_head = checkpoint.head;
        Some(checkpoint)
    }
}

/// Byte arrays as lower-case hex strings in JSON.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| D::Error::custom(format!("{} bytes where {N} belong", b.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Keyring;

    fn recorded(n: u64) -> (SigningKey, Vec<Checkpoint>) {
        let key = SigningKey::from_seed([3; 32]);
        let mut r = Recorder::new("EVENTS_X");
        let mut out = Vec::new();
        for seq in 1..=n {
            let payload = seq.to_be_bytes();
            r.push(&StoredMessage {
                sequence: seq,
                subject: "halcyon.events.x.c1",
                event_id: &format!("e{seq}"),
                payload: &payload,
            })
            .unwrap();
            if seq % 3 == 0 {
                out.extend(r.cut(&key, "node-1", 1_000 + seq as i64));
            }
        }
        out.extend(r.cut(&key, "node-1", 9_999));
        assert!(
            r.cut(&key, "node-1", 10_000).is_none(),
            "nothing new, no checkpoint"
        );
        (key, out)
    }

    #[test]
    fn checkpoints_link_and_verify() {
        let (key, cps) = recorded(7);
        assert_eq!(
            cps.iter()
                .map(|c| (c.from_sequence, c.to_sequence))
                .collect::<Vec<_>>(),
            [(1, 3), (4, 6), (7, 7)]
        );
        assert_eq!(cps[0].prev_head, genesis("EVENTS_X"));
        assert_eq!(cps[1].prev_head, cps[0].head);
        let keys = Keyring::new([key.public_key()]);
        for c in &cps {
            assert_eq!(c.shape_error(), None);
            c.verify_signature(&keys).unwrap();
            let back = Checkpoint::from_json(&c.to_json()).unwrap();
            assert_eq!(&back, c);
        }
    }

    #[test]
    fn any_change_to_a_signed_checkpoint_breaks_its_signature() {
        let (key, cps) = recorded(3);
        let keys = Keyring::new([key.public_key()]);
        let c = &cps[0];
        let mut changed = vec![c.clone(); 6];
        changed[0].to_sequence += 1;
        changed[1].head[0] ^= 1;
        changed[2].entries[1].payload_digest[0] ^= 1;
        changed[3].entries[2].event_id.push('x');
        changed[4].created_at_ms += 1;
        changed[5].node_id = "node-2".into();
        for (i, c) in changed.iter().enumerate() {
            assert!(
                matches!(c.verify_signature(&keys), Err(SignatureError::Invalid { .. })),
                "change {i}"
            );
        }
        let strangers = Keyring::new([SigningKey::from_seed([4; 32]).public_key()]);
        assert!(matches!(
            c.verify_signature(&strangers),
            Err(SignatureError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_resumed_recorder_continues_the_same_chain() {
        let (key, all) = recorded(7);
        let mut r = Recorder::new("EVENTS_X");
        for seq in 1..=3u64 {
            let payload = seq.to_be_bytes();
            r.push(&StoredMessage {
                sequence: seq,
                subject: "halcyon.events.x.c1",
                event_id: &format!("e{seq}"),
                payload: &payload,
            })
            .unwrap();
        }
        let first = r.cut(&key, "node-1", 1_003).unwrap();
        let mut resumed = Recorder::after(&first);
        assert_eq!(resumed.next_sequence(), 4);
        for seq in 4..=6u64 {
            let payload = seq.to_be_bytes();
            resumed
                .push(&StoredMessage {
                    sequence: seq,
                    subject: "halcyon.events.x.c1",
                    event_id: &format!("e{seq}"),
                    payload: &payload,
                })
                .unwrap();
        }
        assert_eq!(resumed.cut(&key, "node-1", 1_006).unwrap(), all[1]);
    }

    #[test]
    fn a_keyring_key_verifies_only_what_it_signed_within_its_dates() {
        let (key, cps) = recorded(3);
        let public = key.public_key().to_file_text();
        let line = public
            .lines()
            .find(|l| l.starts_with("halcyon-ed25519-public:"))
            .unwrap();
        let ring = |from: &str, until: &str| {
            Keyring::from_toml(&format!(
                "[[key]]\nnode = \"n1\"\npublic = \"{line}\"\nvalid_from = \"{from}\"\nvalid_until = \"{until}\"\n"
            ))
            .unwrap()
            .0
        };
        // `recorded` signs at 1970-01-01T00:00:00.00x: inside 1969..1971, outside 1971..1972.
        let c = &cps[0];
        c.verify_signature(&ring("1969-01-01T00:00:00Z", "1971-01-01T00:00:00Z"))
            .unwrap();
        let refused = c
            .verify_signature(&ring("1971-01-01T00:00:00Z", "1972-01-01T00:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(refused, SignatureError::OutsideValidity { .. }),
            "{refused}"
        );
        // A file naming an impossible range, or a key twice, is refused naming the entry.
        let bad = Keyring::from_toml(&format!(
            "[[key]]\nnode = \"n1\"\npublic = \"{line}\"\nvalid_from = \"2027-01-01T00:00:00Z\"\nvalid_until = \"2026-01-01T00:00:00Z\"\n"
        ))
        .unwrap_err();
        assert!(
            bad.contains("key 1 (n1): valid_until is not after valid_from"),
            "{bad}"
        );
        let twice = format!(
            "[[key]]\nnode = \"a\"\npublic = \"{line}\"\n[[key]]\nnode = \"b\"\npublic = \"{line}\"\n"
        );
        assert!(Keyring::from_toml(&twice).unwrap_err().contains("listed twice"));
    }
}
