//! Connecting to NATS as someone: an agency, a halcyon node or an operator.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::BusError;

/// Who connects, and how the connection is secured. Agencies get their own inbox prefix so only they can
/// read their publish acks.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    /// `_INBOX_<agency>` for agency users; the default `_INBOX` otherwise.
    pub inbox_prefix: Option<String>,
    /// A NATS credentials file (user JWT and nkey seed), for servers in operator/JWT mode.
    pub creds_file: Option<PathBuf>,
    /// A file holding the user's nkey seed (`SU…`), for servers that list nkey users.
    pub nkey_file: Option<PathBuf>,
    /// TLS to the servers: the CA that signed them and, where they verify clients, this client's
    /// certificate and key.
    pub tls: Option<ClientTls>,
    /// How long to keep trying the seed servers when the first connection fails (a cluster being started
    /// or restarted beside the node); zero: try each seed once.
    pub connect_wait: Duration,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            user: None,
            password: None,
            inbox_prefix: None,
            creds_file: None,
            nkey_file: None,
            tls: None,
            connect_wait: CONNECT_WAIT_DEFAULT,
        }
    }
}

/// How long a first connection keeps trying by default.
pub const CONNECT_WAIT_DEFAULT: Duration = Duration::from_secs(10);

/// TLS settings of a client connection (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the servers' certificates (a partnership's own CA, not a public one).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Credentials {
    /// An agency's user, as in `deploy/nats/accounts.conf`.
    pub fn agency(user: &str, password: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            inbox_prefix: Some(format!("_INBOX_{user}")),
            ..Self::default()
        }
    }

    pub fn user(user: &str, password: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            ..Self::default()
        }
    }
}

/// Permission violations the server reported on one connection (for example, an agency publishing on
/// another agency's subject), so a publisher can say "denied" instead of "timed out".
#[derive(Debug, Clone, Default)]
pub struct Violations(Arc<Mutex<VecDeque<String>>>);

impl Violations {
    /// Most recent reports kept.
    const KEPT_MAX: usize = 64;

    fn push(&self, report: String) {
        let mut v = self.0.lock().expect("violations lock");
        if v.len() == Self::KEPT_MAX {
            v.pop_front();
        }
        v.push_back(report);
    }

    /// A reported violation that names `subject`, if any.
    pub fn about(&self, subject: &str) -> Option<String> {
        let quoted = format!("\"{subject}\"");
        self.0
            .lock()
            .expect("violations lock")
            .iter()
            .rev()
            .find(|r| r.contains(&quoted))
            .cloned()
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().expect("violations lock").iter().cloned().collect()
    }
}

/// Connects, naming the connection after the program (it shows in the server's monitoring). `urls` is one
/// seed URL or several, comma-separated (any server of a cluster; the client learns the rest from it).
pub async fn connect(
    urls: &str,
    credentials: &Credentials,
    name: &str,
) -> Result<async_nats::Client, BusError> {
    Ok(connect_watching(urls, credentials, name).await?.0)
}

/// Parses comma-separated seed URLs.
pub fn seed_urls(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let seeds: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse().map_err(|e: std::io::Error| BusError::Url {
                url: u.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        return Err(BusError::Url {
            url: urls.to_owned(),
            reason: "no server URL given".into(),
        });
    }
    Ok(seeds)
}

/// Connects and collects the permission violations the server reports on this connection. Keeps trying
/// the seeds for `credentials.connect_wait` if none answers at first; once connected, the client
/// reconnects by itself, to any server of the cluster, for as long as the process runs.
pub async fn connect_watching(
    urls: &str,
    credentials: &Credentials,
    name: &str,
) -> Result<(async_nats::Client, Violations), BusError> {
    let seeds = seed_urls(urls)?;
    let violations = Violations::default();
    let deadline = tokio::time::Instant::now() + credentials.connect_wait;
    let mut delay = Duration::from_millis(200);
    loop {
        let options = options(credentials, name, &violations).await?;
        match options.connect(seeds.clone()).await {
            Ok(client) => return Ok((client, violations)),
            Err(source) => {
                let now = tokio::time::Instant::now();
                if now + delay > deadline || is_refused_for_good(&source) {
                    return Err(BusError::Connect {
                        url: urls.to_owned(),
                        source,
                    });
                }
                tracing::warn!(error = %source, retry_in = ?delay, "cannot connect to NATS yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Wrong credentials or TLS settings do not get better by waiting.
fn is_refused_for_good(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as K;
    // A certificate the server will not take, or one this client does not trust, comes back as an I/O
    // error ("received fatal alert: CertificateRequired", "invalid peer certificate: UnknownIssuer").
    matches!(
        e.kind(),
        K::Authentication | K::AuthorizationViolation | K::Tls | K::ServerParse
    ) || e.to_string().to_ascii_lowercase().contains("certificate")
}

async fn options(
    credentials: &Credentials,
    name: &str,
    violations: &Violations,
) -> Result<async_nats::ConnectOptions, BusError> {
    let seen = violations.clone();
    let mut options = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(report)) = event
                    && report.to_ascii_lowercase().contains("permissions violation")
                {
                    tracing::warn!(%report, "NATS refused an operation on this connection");
                    seen.push(report);
                }
            }
        })
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // A silent partition (no RST, no FIN) is noticed after two unanswered pings; then the client moves
        // to another server of the cluster.
        .ping_interval(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(path) = &credentials.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| BusError::CredentialsFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    if let Some(path) = &credentials.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|e| BusError::CredentialsFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let (Some(user), Some(password)) = (&credentials.user, &credentials.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = &credentials.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(tls) = &credentials.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(BusError::CredentialsFile {
                    path: "(TLS)".into(),
                    reason: "a client certificate needs both its certificate and its key file".into(),
                });
            }
        }
    }
    Ok(options)
}
