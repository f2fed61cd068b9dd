//! Projection wiring: an ordered consumer per agency stream, each starting at the node's own checkpoint + 1
//! and applying its ready batches itself (the projector serialises writers). Any failure — NATS, sled, a
//! gap — drops the consumer and re-reads from the checkpoint, so nothing is skipped or applied twice. New
//! agency streams are picked up without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::{RawMessage, list_event_streams, ordered_messages};
use halcyon_projector::{Incoming, Projector};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{Events, NodeEvent};

pub use halcyon_projector::BATCH_LEN_MAX;
/// How often the node looks for new agency streams.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Events behind per stream, as last reported by each consumer.
pub type Lag = Arc<Mutex<BTreeMap<String, u64>>>;

/// Runs until `shutdown`: discovers agency streams and consumes each.
pub async fn run(
    js: jetstream::Context,
    projector: Arc<Projector>,
    lag: Lag,
    events: Events,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    per_stream(&js, &shutdown, |name| {
        let consumer = Consumer {
            js: js.clone(),
            projector: projector.clone(),
            stream: name.clone(),
            lag: lag.clone(),
            events: events.clone(),
        };
        consumer
            .run(stop.clone())
            .instrument(tracing::info_span!("consumer", stream = %name))
    })
    .await;
}

/// Runs until `shutdown`: every `DISCOVERY_INTERVAL` lists the agency streams and spawns `start(name)` once
/// for each stream not seen before (so new agencies are picked up without a restart); then waits for the
/// tasks it spawned.
pub async fn per_stream<F, T>(js: &jetstream::Context, shutdown: &CancellationToken, mut start: F)
where
    F: FnMut(String) -> T,
    T: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(DISCOVERY_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let names = match list_event_streams(js).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list agency streams; will retry");
                continue;
            }
        };
        for name in names {
            if started.insert(name.clone()) {
                tasks.spawn(start(name));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

struct Consumer {
    js: jetstream::Context,
    projector: Arc<Projector>,
    stream: String,
    lag: Lag,
    events: Events,
}

impl Consumer {
    /// Reads the stream from the checkpoint forever; after any failure, backs off and starts again from the
    /// checkpoint.
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.read_from_checkpoint() => result,
            };
            match result {
                Ok(()) => tracing::warn!("stream ended; re-reading from the checkpoint"),
                Err(e) => tracing::warn!(error = %e, "consumer stopped; re-reading from the checkpoint"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn read_from_checkpoint(&self) -> Result<(), halcyon_bus::BoxError> {
        let start = self.projector.checkpoint(&self.stream) + 1;
        tracing::info!(start, "consuming");
        let messages = ordered_messages(&self.js, &self.stream, start).await?;
        let mut chunks = std::pin::pin!(messages.ready_chunks(BATCH_LEN_MAX));
        while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            let mut pending = 0;
            for m in chunk {
                let RawMessage {
                    sequence,
                    subject,
                    payload,
                    stored_at_ms,
                    pending: p,
                    ..
                } = m?;
                pending = p;
                batch.push(Incoming {
                    sequence,
                    subject,
                    payload,
                    stored_at_ms,
                });
            }
            self.lag
                .lock()
                .expect("lag lock")
                .insert(self.stream.clone(), pending);
            let (projector, stream) = (self.projector.clone(), self.stream.clone());
            let outcome = tokio::task::spawn_blocking(move || projector.apply(&stream, &batch)).await??;
            tracing::debug!(
                projected = outcome.projected,
                quarantined = outcome.quarantined,
                "batch applied"
            );
            if !outcome.new_facts.is_empty() {
                // No receivers is fine: nobody is watching.
                let _ = self.events.send(NodeEvent::Facts(Arc::new(outcome.new_facts)));
            }
        }
        Ok(())
    }
}

/// How long the view deriver lets new batches settle before deriving, so a burst of batches touching the
/// same children costs one derivation each rather than one per batch.
pub const VIEW_SETTLE: Duration = Duration::from_millis(50);

/// Runs until `shutdown`: derives the per-agency views of children whose facts changed (markers written
/// with the facts), a chunk at a time, whenever the checkpoints move. Starts with whatever a previous run
/// left stale.
pub async fn derive_views(projector: Arc<Projector>, shutdown: CancellationToken) {
    let mut positions = projector.subscribe_positions();
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let p = projector.clone();
            match tokio::task::spawn_blocking(move || p.derive_views()).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => tracing::debug!(children = n, "views derived"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "deriving views failed; will retry on the next batch");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the view deriver panicked; will retry on the next batch");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = positions.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(VIEW_SETTLE) => {}
        }
    }
}
