//! The hash chain over one stream: each link is SHA-256 over the previous link and one stored message's
//! sequence, subject, event id and payload digest, every variable-length field length-prefixed so that no
//! bytes can move from one field to the next without changing the link.

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest: a chain link or head.
pub type Hash = [u8; 32];

/// Domain separation: a link can never be mistaken for a genesis, a fingerprint or a signature input.
const GENESIS_TAG: &[u8] = b"halcyon.ledger.v1.genesis\0";
const LINK_TAG: &[u8] = b"halcyon.ledger.v1.link\0";

/// One message as JetStream stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    /// The `Nats-Msg-Id` header (the event id); empty when the message has none.
    pub event_id: &'a str,
    pub payload: &'a [u8],
}

/// The chain's starting point for a stream, so that two streams' chains can never be swapped.
pub fn genesis(stream: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_TAG);
    put(&mut h, stream.as_bytes());
    h.finalize().into()
}

/// `SHA-256(tag ‖ prev ‖ sequence ‖ len ‖ subject ‖ len ‖ event id ‖ SHA-256(payload))`. Hashing the
/// payload's digest rather than the payload lets the verifier hash each payload once for both the link
/// and the fingerprint; it binds the payload just as tightly.
pub fn link(prev: &Hash, sequence: u64, subject: &str, event_id: &str, payload_digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(LINK_TAG);
    h.update(prev);
    h.update(sequence.to_be_bytes());
    put(&mut h, subject.as_bytes());
    put(&mut h, event_id.as_bytes());
    h.update(payload_digest);
    h.finalize().into()
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// What the verifier compares per message: the event id in full and digests of subject and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub sequence: u64,
    pub event_id: String,
    pub subject_digest: Hash,
    pub payload_digest: Hash,
}

impl Fingerprint {
    pub fn of(m: &StoredMessage<'_>) -> Self {
        Self {
            sequence: m.sequence,
            event_id: m.event_id.to_owned(),
            subject_digest: Sha256::digest(m.subject.as_bytes()).into(),
            payload_digest: Sha256::digest(m.payload).into(),
        }
    }
}

/// A message arrived at or below the chain's last sequence: the caller's reader went backwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream}: message {sequence} arrived after {last}; a chain only moves forward")]
pub struct OutOfOrder {
    pub stream: String,
    pub sequence: u64,
    pub last: u64,
}

/// One stream's chain: its head and the last sequence linked into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    stream: String,
    head: Hash,
    last_sequence: u64,
}

impl Chain {
    /// An empty chain, at the stream's genesis.
    pub fn new(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            head: genesis(stream),
            last_sequence: 0,
        }
    }

    /// A chain whose head at `last_sequence` is known (from a checkpoint).
    pub fn resume(stream: &str, last_sequence: u64, head: Hash) -> Self {
        Self {
            stream: stream.to_owned(),
            head,
            last_sequence,
        }
    }

    /// Links one message; returns its fingerprint.
    pub fn push(&mut self, m: &StoredMessage<'_>) -> Result<Fingerprint, OutOfOrder> {
        let fingerprint = Fingerprint::of(m);
        self.push_fingerprinted(m, &fingerprint)?;
        Ok(fingerprint)
    }

    /// Links one message whose fingerprint the caller has already computed.
    pub fn push_fingerprinted(&mut self, m: &StoredMessage<'_>, f: &Fingerprint) -> Result<(), OutOfOrder> {
        self.push_digest(m, &f.payload_digest)
    }

    /// Links one message whose payload digest the caller has already computed.
    pub fn push_digest(&mut self, m: &StoredMessage<'_>, payload_digest: &Hash) -> Result<(), OutOfOrder> {
        if m.sequence <= self.last_sequence {
            return Err(OutOfOrder {
                stream: self.stream.clone(),
                sequence: m.sequence,
                last: self.last_sequence,
            });
        }
        self.head = link(&self.head, m.sequence, m.subject, m.event_id, payload_digest);
        self.last_sequence = m.sequence;
        Ok(())
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn head(&self) -> Hash {
        self.head
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(sequence: u64, subject: &'a str, event_id: &'a str, payload: &'a [u8]) -> StoredMessage<'a> {
        StoredMessage {
            sequence,
            subject,
            event_id,
            payload,
        }
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        let p = Sha256::digest(b"x").into();
        let g = genesis("S");
        assert_ne!(link(&g, 1, "ab", "c", &p), link(&g, 1, "a", "bc", &p));
        assert_ne!(link(&g, 1, "", "abc", &p), link(&g, 1, "abc", "", &p));
    }

    #[test]
    fn every_field_and_the_stream_change_the_head() {
        let base = {
            let mut c = Chain::new("S");
            c.push(&m(1, "s", "e", b"p")).unwrap();
            c.head()
        };
        for (stream, msg) in [
            ("T", m(1, "s", "e", b"p")),
            ("S", m(2, "s", "e", b"p")),
            ("S", m(1, "t", "e", b"p")),
            ("S", m(1, "s", "f", b"p")),
            ("S", m(1, "s", "e", b"q")),
        ] {
            let mut c = Chain::new(stream);
            c.push(&msg).unwrap();
            assert_ne!(c.head(), base, "{stream} {msg:?}");
        }
    }

    #[test]
    fn a_chain_refuses_to_go_backwards() {
        let mut c = Chain::new("S");
        c.push(&m(5, "s", "e", b"p")).unwrap();
        assert_eq!(
            c.push(&m(5, "s", "e", b"p")).unwrap_err().to_string(),
            "stream S: message 5 arrived after 5; a chain only moves forward"
        );
    }
}
