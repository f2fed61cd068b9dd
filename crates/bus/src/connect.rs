//! Connecting to NATS as someone: an agency, a halcyon node or an operator.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::BusError;

/// Who connects. Agencies get their own inbox prefix so only they can read their publish acks.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    /// `_INBOX_<agency>` for agency users; the default `_INBOX` otherwise.
    pub inbox_prefix: Option<String>,
}

impl Credentials {
    /// An agency's user, as in `deploy/nats/accounts.conf`.
    pub fn agency(user: &str, password: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            inbox_prefix: Some(format!("_INBOX_{user}")),
        }
    }

    pub fn user(user: &str, password: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            inbox_prefix: None,
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

/// Connects, naming the connection after the program (it shows in the server's monitoring).
pub async fn connect(
    url: &str,
    credentials: &Credentials,
    name: &str,
) -> Result<async_nats::Client, BusError> {
    Ok(connect_watching(url, credentials, name).await?.0)
}

/// Connects and collects the permission violations the server reports on this connection.
pub async fn connect_watching(
    url: &str,
    credentials: &Credentials,
    name: &str,
) -> Result<(async_nats::Client, Violations), BusError> {
    let violations = Violations::default();
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
        .request_timeout(Some(Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (&credentials.user, &credentials.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = &credentials.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    let client = options.connect(url).await.map_err(|source| BusError::Connect {
        url: url.to_owned(),
        source,
    })?;
    Ok((client, violations))
}
