//! Rotation without downtime: the TLS certificate, its key, the client CA, the CRLs and the tokens file are
//! read again on SIGHUP (`crate::node::run`) or when any of them changes (looked at every
//! [`WATCH_EVERY`]). A reload is all or nothing per part: a file that cannot be read, a certificate and key
//! that do not belong together (say, the certificate is replaced before its key), leave what is in force,
//! and the next change or signal tries again. Each outcome is counted (`halcyon_reloads_total`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::tls::ServerTls;

/// How often the files are looked at for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Reloader {
    auth: Arc<Authenticator>,
    tls: Option<Arc<ServerTls>>,
    metrics: Arc<Metrics>,
    /// (modified, length) of every watched file at the last look.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
    /// The last reload failed: try again at the next look even if nothing changed since.
    failed: Mutex<bool>,
}

impl Reloader {
    pub fn new(auth: Arc<Authenticator>, tls: Option<Arc<ServerTls>>, metrics: Arc<Metrics>) -> Self {
        let this = Self {
            auth,
            tls,
            metrics,
            seen: Mutex::new(Vec::new()),
            failed: Mutex::new(false),
        };
        *this.seen.lock().expect("seen lock") = this.stamps();
        this
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.auth.tokens_path().map(PathBuf::from).into_iter().collect();
        if let Some(tls) = &self.tls {
            files.extend(tls.settings().files());
        }
        files
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files()
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Reads the tokens file and the TLS material again; each part that loads is in force at once.
    pub fn reload(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        match self.auth.reload_tokens() {
            Ok(true) => tracing::info!("tokens reloaded"),
            Ok(false) => {}
            Err(e) => problems.push(format!("tokens: {e}")),
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate, key, client CA and CRLs reloaded"),
                Err(e) => problems.push(format!("tls: {e}")),
            }
        }
        *self.failed.lock().expect("failed lock") = !problems.is_empty();
        // Whatever loaded is in force: long-lived calls check their callers against it.
        self.auth.credentials_changed();
        if problems.is_empty() {
            self.metrics.reloads.with_label_values(&["ok"]).inc();
            Ok(())
        } else {
            let why = problems.join("; ");
            tracing::error!(error = %why, "reload failed: what was in force stays");
            self.metrics.reloads.with_label_values(&["failed"]).inc();
            Err(why)
        }
    }

    /// Until `shutdown`: reloads when a watched file changes (or the last reload failed).
    pub async fn watch_files(self: Arc<Self>, shutdown: CancellationToken) {
        if self.files().is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.stamps();
            let changed = *self.seen.lock().expect("seen lock") != now;
            let retry = *self.failed.lock().expect("failed lock");
            if changed || retry {
                *self.seen.lock().expect("seen lock") = now;
                if changed {
                    tracing::info!("a TLS or tokens file changed: reloading");
                }
                let _ = self.reload();
            }
        }
    }
}
