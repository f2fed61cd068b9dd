//! Mutual TLS for production: the node presents its certificate, requires a client certificate signed by
//! the configured CA (and not revoked by a configured CRL), and takes the caller from it: subject O = agency
//! id, OU = role, CN = principal id.
//!
//! The certificate, its key, the client CA and the CRLs are reloaded without a restart ([`ServerTls`]):
//! new connections get the new configuration at once, and a client certificate a new CRL revokes is refused
//! on the connections it already holds too (each call checks its serial, `crate::auth`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use halcyon_policy::{Principal, Role};
use halcyon_schema::{AgencyId, Registry};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::auth::Caller;
use crate::error::ApiError;

/// Where the node's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs agencies' client certificates; no other is accepted.
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM) of that CA: a listed client certificate is refused.
    pub crls: Vec<PathBuf>,
}

/// TLS as loaded from [`TlsSettings`]: the server configuration and the serial numbers its CRLs revoke.
#[derive(Debug, Clone)]
pub struct LoadedTls {
    pub config: Arc<rustls::ServerConfig>,
    pub revoked: Arc<HashSet<Vec<u8>>>,
}

impl TlsSettings {
    /// Every file this configuration reads (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()];
        files.extend(self.crls.iter().cloned());
        files
    }

    /// Reads and checks every file: a certificate and key that belong together, at least one CA
    /// certificate, readable CRLs.
    pub fn load(&self) -> Result<LoadedTls, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(&self.client_ca)?) {
            let ca = ca.map_err(|e| format!("{}: {e}", self.client_ca.display()))?;
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", self.client_ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate", self.client_ca.display()));
        }
        let mut crls = Vec::new();
        let mut revoked = HashSet::new();
        for path in &self.crls {
            let before = crls.len();
            for crl in CertificateRevocationListDer::pem_slice_iter(&read(path)?) {
                let crl = crl.map_err(|e| format!("{}: {e}", path.display()))?;
                let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for r in parsed.iter_revoked_certificates() {
                    revoked.insert(r.raw_serial().to_vec());
                }
                crls.push(crl);
            }
            if crls.len() == before {
                // An empty or half-written file would otherwise lift every revocation.
                return Err(format!(
                    "{}: no certificate revocation list in it",
                    path.display()
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                .build()
                .map_err(|e| format!("client verification: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(LoadedTls {
            config: Arc::new(config),
            revoked: Arc::new(revoked),
        })
    }
}

/// The node's TLS as it is now; [`ServerTls::reload`] swaps it.
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsSettings,
    current: RwLock<LoadedTls>,
}

impl ServerTls {
    pub fn new(settings: TlsSettings) -> Result<Self, String> {
        let loaded = settings.load()?;
        Ok(Self {
            settings,
            current: RwLock::new(loaded),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Reads the files again; on any problem the configuration in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = self.settings.load()?;
        *self.current.write().expect("tls lock") = loaded;
        Ok(())
    }

    pub fn current(&self) -> LoadedTls {
        self.current.read().expect("tls lock").clone()
    }

    /// Whether a CRL in force revokes this client certificate's serial number.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.current.read().expect("tls lock").revoked.contains(serial)
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections accepted on `listener` with the configuration in force when each arrives (handshakes
/// run concurrently, each bounded), for `tonic`'s `serve_with_incoming`.
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Without TCP_NODELAY a small response waits for the client's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().config);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The caller a verified client certificate names; refused if a CRL in force revokes it.
pub fn caller_from_certificate(
    der: &[u8],
    registry: &Registry,
    tls: Option<&ServerTls>,
) -> Result<Caller, ApiError> {
    let refuse = |why: String| ApiError::Unauthenticated(format!("client certificate: {why}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| refuse(format!("unreadable: {e}")))?;
    if tls.is_some_and(|t| t.is_revoked(cert.raw_serial())) {
        return Err(refuse("revoked".into()));
    }
    let subject = cert.subject();
    let first = |attrs: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>, name: &str| {
        attrs
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| refuse(format!("the subject has no {name}")))
    };
    let agency: AgencyId = first(subject.iter_organization().next(), "O (agency id)")?
        .parse()
        .map_err(|e| refuse(format!("O: {e}")))?;
    let role: Role = first(subject.iter_organizational_unit().next(), "OU (role)")?
        .parse()
        .map_err(|e: String| refuse(format!("OU: {e}")))?;
    let principal_id = first(subject.iter_common_name().next(), "CN (principal)")?;
    let registered = registry
        .get(&agency)
        .ok_or_else(|| refuse(format!("agency {agency} is not registered")))?;
    Ok(Caller {
        principal: Principal {
            agency,
            kind: registered.kind,
            role,
        },
        principal_id,
        credential: crate::auth::Credential::Certificate(cert.raw_serial().to_vec()),
    })
}
