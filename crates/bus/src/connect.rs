//! Connecting to NATS as someone: an agency, a halcyon node or an operator.

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

/// Connects, naming the connection after the program (it shows in the server's monitoring).
pub async fn connect(
    url: &str,
    credentials: &Credentials,
    name: &str,
) -> Result<async_nats::Client, BusError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (&credentials.user, &credentials.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = &credentials.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    options.connect(url).await.map_err(|source| BusError::Connect {
        url: url.to_owned(),
        source,
    })
}
