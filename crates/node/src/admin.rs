//! The admin listener, on its own port (plain HTTP, for the infrastructure that runs the node):
//!
//! - `GET /livez`: 200 while the process runs and answers (a supervisor restarts it when this fails).
//! - `GET /readyz`: 200 `ready` when the node has caught up since it started (every stream applied up to
//!   where it ended when the node first looked), no stream lags beyond the bound, the AUDIT stream is
//!   writable, no stream went backwards, the node can read and write the nodes bucket (it knows who holds
//!   each duty) and it is not draining; otherwise 503 with one line per reason. A load balancer sends
//!   calls only to ready nodes.
//! - `GET /metrics`: every family of [`crate::metrics`] in the Prometheus text format.
//!
//! Nothing here names a child or a person; the listener needs no credentials and belongs on a management
//! network.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::http::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Sampled, StreamSample};

/// Whether the node is ready, and why not; kept by the node's health task (every second).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    /// Empty when ready.
    pub reasons: Vec<String>,
    /// Every stream the node projects: (last sequence in the stream, last applied), at the last look.
    pub streams: BTreeMap<String, (u64, u64)>,
}

/// What the admin listener reads.
#[derive(Debug, Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub readiness: watch::Receiver<Readiness>,
    pub js: jetstream::Context,
    pub projector: Arc<crate::read_models::Live>,
    pub membership: Arc<crate::peers::Membership>,
}

/// How long a scrape waits for any one NATS request before showing what it has.
const SAMPLE_WAIT: Duration = Duration::from_secs(1);

impl Admin {
    /// The state a scrape shows: lag from the health task's last look (in seconds from the stored time of
    /// the oldest message not yet applied), quarantine by stream and problem kind, the last checkpoint of
    /// each stream, the clock offset, sled's size.
    pub async fn sample(&self) -> Sampled {
        let readiness = self.readiness.borrow().clone();
        let now_ms = halcyon_schema::clock::now_ms();
        let mut streams = BTreeMap::new();
        for (stream, (last, applied)) in &readiness.streams {
            let behind = last.saturating_sub(*applied);
            let mut behind_secs = 0.0;
            if behind > 0
                && let Ok(Ok(Some(stored_ms))) = tokio::time::timeout(
                    SAMPLE_WAIT,
                    halcyon_bus::streams::stored_at_ms(&self.js, stream, applied + 1),
                )
                .await
            {
                behind_secs = (now_ms - stored_ms).max(0) as f64 / 1000.0;
            }
            streams.insert(
                stream.clone(),
                StreamSample {
                    applied: *applied,
                    behind,
                    behind_secs,
                },
            );
        }
        let mut checkpoints = BTreeMap::new();
        for stream in readiness.streams.keys() {
            if stream == halcyon_schema::subject::AUDIT_STREAM {
                continue;
            }
            if let Ok(Ok(Some(last))) = tokio::time::timeout(
                SAMPLE_WAIT,
                halcyon_bus::checkpoint::last_checkpoint(&self.js, stream),
            )
            .await
            {
                let age = (now_ms - last.checkpoint.created_at_ms).max(0) as f64 / 1000.0;
                checkpoints.insert(stream.clone(), (last.checkpoint.to_sequence, age));
            }
        }
        let projector = self.projector.get();
        let (quarantined, sled_bytes) = tokio::task::spawn_blocking(move || {
            let mut by = BTreeMap::<(String, String), u64>::new();
            for record in projector.quarantine(None).unwrap_or_default() {
                let reason = record.problems.first().map_or("unknown", |p| p.kind());
                *by.entry((record.stream, reason.to_owned())).or_default() += 1;
            }
            (by, projector.size_on_disk().unwrap_or(0))
        })
        .await
        .unwrap_or_default();
        Sampled {
            streams,
            quarantined,
            checkpoints,
            clock_offset_secs: self
                .membership
                .state()
                .clock_offset_ms
                .map_or(0.0, |ms| ms as f64 / 1000.0),
            sled_bytes,
            ready: readiness.ready,
        }
    }
}

/// Serves the admin listener on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, admin: Admin, stop: CancellationToken) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/livez", get(|| async { "live\n" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(admin): axum::extract::State<Admin>| async move {
                    let r = admin.readiness.borrow().clone();
                    if r.ready {
                        (StatusCode::OK, "ready\n".to_owned())
                    } else {
                        let mut body = String::from("not ready\n");
                        for reason in &r.reasons {
                            body.push_str(reason);
                            body.push('\n');
                        }
                        (StatusCode::SERVICE_UNAVAILABLE, body)
                    }
                },
            ),
        )
        .route(
            "/metrics",
            get(
                |axum::extract::State(admin): axum::extract::State<Admin>| async move {
                    let sampled = admin.sample().await;
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        admin.metrics.render(&sampled),
                    )
                },
            ),
        )
        .with_state(admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// Binds the admin listener (before anything else starts, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
