//! Who is calling: bearer tokens from configuration, stored as SHA-256 hashes, each bound to an agency, a
//! role and a principal id. (Mutual TLS maps a client certificate to the same `Caller`.)

use std::collections::HashMap;
use std::path::Path;

use halcyon_policy::{Principal, Role};
use halcyon_schema::{AgencyId, Registry};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The practitioner or system id within the agency (for the access log).
    pub principal_id: String,
    /// What it proved itself with: checked again when credentials are reloaded, so that a long-lived call
    /// (a watch) ends once they are withdrawn.
    pub credential: Credential,
}

/// The credential a caller presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The SHA-256 of a bearer token.
    Token([u8; 32]),
    /// A client certificate's serial number.
    Certificate(Vec<u8>),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    agency: AgencyId,
    role: Role,
    principal: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    sha256: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    token: Vec<TokenEntry>,
}

/// The configured bearer tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Caller>,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    pub fn load(path: &Path, registry: &Registry) -> Result<Self, String> {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&src, registry).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_toml(src: &str, registry: &Registry) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(src).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for entry in file.token {
            let agency = registry
                .get(&entry.agency)
                .ok_or_else(|| format!("token for {}: agency is not in the registry", entry.agency))?;
            let hash: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("token for {}: sha256 must be 64 hex digits", entry.agency))?;
            let caller = Caller {
                principal: Principal {
                    agency: agency.id.clone(),
                    kind: agency.kind,
                    role: entry.role,
                },
                principal_id: entry.principal,
                credential: Credential::Token(hash),
            };
            if by_hash.insert(hash, caller).is_some() {
                return Err(format!(
                    "token for {}: the same token is configured twice",
                    entry.agency
                ));
            }
        }
        Ok(Self { by_hash })
    }

    /// The caller a request's `authorization: Bearer <token>` names. When the request also names an agency
    /// (`x-halcyon-agency`), it must be the token's.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, ApiError> {
        let header = metadata.get("authorization").ok_or_else(|| {
            ApiError::Unauthenticated("no credentials: send `authorization: Bearer <token>`".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthenticated("authorization must be `Bearer <token>`".into()))?;
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let caller = self
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("unknown token".into()))?;
        Ok(caller)
    }
}

/// How callers prove who they are: client certificates (mutual TLS) when the node serves TLS, bearer tokens
/// otherwise. The tokens file and the TLS material are reloaded without a restart ([`Self::reload_tokens`],
/// [`crate::tls::ServerTls::reload`]).
#[derive(Debug)]
pub struct Authenticator {
    /// Bumped whenever the tokens or the TLS material are reloaded.
    generation: tokio::sync::watch::Sender<u64>,
    tokens: std::sync::RwLock<Tokens>,
    /// Where the tokens came from (read again on reload), if from a file.
    tokens_path: Option<std::path::PathBuf>,
    pub registry: Registry,
    /// The node's TLS, when it serves mutual TLS.
    pub tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
}

impl Authenticator {
    pub fn new(
        tokens: Tokens,
        tokens_path: Option<std::path::PathBuf>,
        registry: Registry,
        tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
    ) -> Self {
        Self {
            generation: tokio::sync::watch::channel(0).0,
            tokens: std::sync::RwLock::new(tokens),
            tokens_path,
            registry,
            tls,
        }
    }

    /// Reads the tokens file again: from now on only its tokens are accepted (calls already admitted go
    /// on). On any problem the tokens in force stay.
    pub fn reload_tokens(&self) -> Result<bool, String> {
        let Some(path) = &self.tokens_path else {
            return Ok(false);
        };
        let tokens = Tokens::load(path, &self.registry)?;
        *self.tokens.write().expect("tokens lock") = tokens;
        Ok(true)
    }

    /// Tells long-lived calls that credentials were reloaded (each checks its own again).
    pub fn credentials_changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes when credentials are reloaded.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether `caller`'s credential is still accepted: its token still in the file for the same principal,
    /// or its certificate not revoked by a CRL in force.
    pub fn still_valid(&self, caller: &Caller) -> bool {
        match &caller.credential {
            Credential::Token(hash) => self
                .tokens
                .read()
                .expect("tokens lock")
                .by_hash
                .get(hash)
                .is_some_and(|c| c == caller),
            Credential::Certificate(serial) => self.tls.as_ref().is_some_and(|t| !t.is_revoked(serial)),
        }
    }

    /// The tokens file, if the tokens came from one.
    pub fn tokens_path(&self) -> Option<&std::path::Path> {
        self.tokens_path.as_deref()
    }

    pub fn authenticate<T>(&self, request: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let caller = if let Some(tls) = &self.tls {
            let certs = request.peer_certs().ok_or_else(|| {
                ApiError::Unauthenticated("no client certificate: this node requires mutual TLS".into())
            })?;
            let leaf = certs
                .first()
                .ok_or_else(|| ApiError::Unauthenticated("empty client certificate chain".into()))?;
            crate::tls::caller_from_certificate(leaf.as_ref(), &self.registry, Some(tls))?
        } else {
            self.tokens
                .read()
                .expect("tokens lock")
                .authenticate(request.metadata())?
        };
        if let Some(claimed) = request.metadata().get("x-halcyon-agency") {
            let claimed = claimed.to_str().unwrap_or("");
            if claimed != caller.principal.agency.as_str() {
                return Err(ApiError::Forbidden(format!(
                    "these credentials belong to agency {}, not {claimed}",
                    caller.principal.agency
                )));
            }
        }
        Ok(caller)
    }
}
