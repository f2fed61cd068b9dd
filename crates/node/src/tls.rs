//! Mutual TLS for production: the node presents its certificate, requires a client certificate signed by
//! the configured CA, and takes the caller from it: subject O = agency id, OU = role, CN = principal id.

use std::path::PathBuf;

use halcyon_policy::{Principal, Role};
use halcyon_schema::{AgencyId, Registry};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
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
}

impl TlsSettings {
    pub fn server_config(&self) -> Result<ServerTlsConfig, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.client_ca)?)))
    }
}

/// The caller a verified client certificate names.
pub fn caller_from_certificate(der: &[u8], registry: &Registry) -> Result<Caller, ApiError> {
    let refuse = |why: String| ApiError::Unauthenticated(format!("client certificate: {why}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| refuse(format!("unreadable: {e}")))?;
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
    })
}
