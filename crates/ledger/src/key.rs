//! Checkpoint keys: an ed25519 signing key a node loads from a file, the public keys a verifier trusts,
//! and their file format (one `halcyon-ed25519-secret:` or `halcyon-ed25519-public:` line of 64 hex digits;
//! blank lines and `#` comments ignored), so a secret key passed where a public one belongs is named as such.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256};

const SECRET_PREFIX: &str = "halcyon-ed25519-secret:";
const PUBLIC_PREFIX: &str = "halcyon-ed25519-public:";

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("this is a signing (secret) key; pass the matching public key (`halcyon-ed25519-public:` line)")]
    SecretWherePublicWanted,
    #[error("this is a public key; a node signs with the secret key (`halcyon-ed25519-secret:` line)")]
    PublicWhereSecretWanted,
    #[error("expected one line `{wanted}<64 hex digits>` (blank lines and # comments aside): {found}")]
    Malformed { wanted: &'static str, found: String },
    #[error("not a valid ed25519 public key: {0}")]
    NotAPoint(String),
}

/// A checkpoint signature that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signed with key {key_id}, which is not among the trusted public keys")]
    UnknownKey { key_id: String },
    #[error("the signature does not verify with key {key_id}: the checkpoint was altered or forged")]
    Invalid { key_id: String },
    #[error(
        "signed with key {key_id} at {created_at_ms} (Unix ms), outside the key's validity in the keyring ({validity})"
    )]
    OutsideValidity {
        key_id: String,
        created_at_ms: i64,
        validity: String,
    },
}

/// When a key may sign: from `from_ms` (inclusive) until `until_ms` (exclusive), Unix ms; open where `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validity {
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Validity {
    pub fn contains(&self, at_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| at_ms >= f) && self.until_ms.is_none_or(|u| at_ms < u)
    }
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<i64>| v.map_or_else(|| "open".to_owned(), |ms| ms.to_string());
        write!(f, "from {} until {}", show(self.from_ms), show(self.until_ms))
    }
}

/// A node's checkpoint signing key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

impl SigningKey {
    /// From 32 secret bytes (a seed from a CSPRNG, or a test's constant).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let line = key_line(text, SECRET_PREFIX)?;
        if line.starts_with(PUBLIC_PREFIX) {
            return Err(KeyError::PublicWhereSecretWanted);
        }
        Ok(Self::from_seed(hex32(line, SECRET_PREFIX)?))
    }

    /// The key file's text, with a warning comment.
    pub fn to_file_text(&self) -> String {
        format!(
            "# halcyon checkpoint signing key (ed25519), key id {}. Secret: readable by the node only.\n{SECRET_PREFIX}{}\n",
            self.public_key().key_id(),
            hex::encode(self.0.to_bytes())
        )
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        self.0.sign(bytes).to_bytes()
    }
}

/// A public key that verifies checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let line = key_line(text, PUBLIC_PREFIX)?;
        if line.starts_with(SECRET_PREFIX) {
            return Err(KeyError::SecretWherePublicWanted);
        }
        let bytes = hex32(line, PUBLIC_PREFIX)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| KeyError::NotAPoint(e.to_string()))
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "# halcyon checkpoint public key (ed25519), key id {}.\n{PUBLIC_PREFIX}{}\n",
            self.key_id(),
            hex::encode(self.0.as_bytes())
        )
    }

    /// The first 8 bytes of SHA-256 of the key, in hex: names the key in checkpoints.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Strict ed25519 verification (no malleable or small-order signatures).
    pub fn verify(&self, bytes: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(bytes, &signature).is_ok() && self.0.verify(bytes, &signature).is_ok()
    }
}

/// The public keys a verifier or node trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, PublicKey>,
    validity: BTreeMap<String, Validity>,
}

impl Keyring {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut ring = Self::default();
        for key in keys {
            ring.add(key);
        }
        ring
    }

    /// A key trusted whenever it signed.
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.key_id(), key);
    }

    /// A key trusted for checkpoints signed within `validity` only.
    pub fn add_valid(&mut self, key: PublicKey, validity: Validity) {
        self.validity.insert(key.key_id(), validity);
        self.keys.insert(key.key_id(), key);
    }

    /// When `key_id` may sign (open for a key added without dates).
    pub fn validity(&self, key_id: &str) -> Validity {
        self.validity.get(key_id).cloned().unwrap_or_default()
    }

    /// Adds every key of `other` (with its dates).
    pub fn extend(&mut self, other: &Keyring) {
        for (id, key) in &other.keys {
            self.keys.insert(id.clone(), *key);
        }
        for (id, v) in &other.validity {
            self.validity.insert(id.clone(), v.clone());
        }
    }

    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

fn key_line<'a>(text: &'a str, wanted: &'static str) -> Result<&'a str, KeyError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(line), None) => Ok(line),
        (None, _) => Err(KeyError::Malformed {
            wanted,
            found: "no key line".into(),
        }),
        (Some(_), Some(_)) => Err(KeyError::Malformed {
            wanted,
            found: "more than one key line".into(),
        }),
    }
}

fn hex32(line: &str, prefix: &'static str) -> Result<[u8; 32], KeyError> {
    let malformed = |found: String| KeyError::Malformed {
        wanted: prefix,
        found,
    };
    let digits = line
        .strip_prefix(prefix)
        .ok_or_else(|| malformed(format!("the line does not start with {prefix:?}")))?;
    let bytes = hex::decode(digits).map_err(|e| malformed(format!("not hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| malformed(format!("{} bytes, not 32", b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_told_apart() {
        let key = SigningKey::from_seed([7; 32]);
        let secret = key.to_file_text();
        let public = key.public_key().to_file_text();
        assert_eq!(SigningKey::parse(&secret).unwrap().public_key(), key.public_key());
        assert_eq!(PublicKey::parse(&public).unwrap(), key.public_key());
        assert_eq!(
            PublicKey::parse(&secret).unwrap_err(),
            KeyError::SecretWherePublicWanted
        );
        assert_eq!(
            SigningKey::parse(&public).unwrap_err(),
            KeyError::PublicWhereSecretWanted
        );
        assert!(!format!("{key:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn malformed_key_files_say_why() {
        for (text, why) in [
            ("", "no key line"),
            ("# only a comment\n", "no key line"),
            (
                "halcyon-ed25519-public:00\nhalcyon-ed25519-public:00",
                "more than one key line",
            ),
            ("ssh-ed25519 AAAA", "does not start with"),
            ("halcyon-ed25519-public:zz", "not hex"),
            ("halcyon-ed25519-public:0011", "2 bytes, not 32"),
        ] {
            let e = PublicKey::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_bytes() {
        let key = SigningKey::from_seed([1; 32]);
        let other = SigningKey::from_seed([2; 32]).public_key();
        let sig = key.sign(b"checkpoint");
        assert!(key.public_key().verify(b"checkpoint", &sig));
        assert!(!key.public_key().verify(b"checkpoinT", &sig));
        assert!(!other.verify(b"checkpoint", &sig));
        assert_ne!(key.public_key().key_id(), other.key_id());
        assert_eq!(key.public_key().key_id().len(), 16);
    }
}

/// One key of a keyring file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringEntry {
    /// The node that holds the secret half (for people; not checked).
    node: String,
    /// The public key line (`halcyon-ed25519-public:<hex>`).
    public: String,
    /// RFC 3339; the key signs nothing before this.
    valid_from: Option<String>,
    /// RFC 3339; a retired key: checkpoints it signed from this moment on are refused.
    valid_until: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    key: Vec<KeyringEntry>,
}

impl Keyring {
    /// Parses a keyring file: every node's checkpoint public key with its validity dates (`[[key]]` tables
    /// of `node`, `public`, `valid_from`, `valid_until`). The error names the entry and what is wrong.
    pub fn from_toml(src: &str) -> Result<(Keyring, Vec<(String, String)>), String> {
        let file: KeyringFile = toml::from_str(src).map_err(|e| e.to_string())?;
        let mut ring = Keyring::default();
        let mut nodes = Vec::new();
        let when = |i: usize, field: &str, v: &Option<String>| -> Result<Option<i64>, String> {
            v.as_deref()
                .map(|text| {
                    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                        .map_err(|e| format!("key {}: {field} {text:?} is not an RFC 3339 time: {e}", i + 1))
                })
                .transpose()
        };
        for (i, entry) in file.key.iter().enumerate() {
            let key = PublicKey::parse(&entry.public)
                .map_err(|e| format!("key {} ({}): {e}", i + 1, entry.node))?;
            let validity = Validity {
                from_ms: when(i, "valid_from", &entry.valid_from)?,
                until_ms: when(i, "valid_until", &entry.valid_until)?,
            };
            if let (Some(f), Some(u)) = (validity.from_ms, validity.until_ms)
                && u <= f
            {
                return Err(format!(
                    "key {} ({}): valid_until is not after valid_from",
                    i + 1,
                    entry.node
                ));
            }
            if ring.get(&key.key_id()).is_some() {
                return Err(format!(
                    "key {} ({}): key {} is listed twice",
                    i + 1,
                    entry.node,
                    key.key_id()
                ));
            }
            nodes.push((entry.node.clone(), key.key_id()));
            ring.add_valid(key, validity);
        }
        Ok((ring, nodes))
    }
}
