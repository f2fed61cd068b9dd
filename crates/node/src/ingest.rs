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

/// Events behind per stream, as the node's health task last saw them (every second).
pub type Lag = Arc<Mutex<BTreeMap<String, u64>>>;

/// Streams this node has stopped reading because they went backwards, with the reason (health is
/// NOT_SERVING while any is listed).
pub type Halted = Arc<Mutex<BTreeMap<String, String>>>;

/// Checks that `stream` still holds, at this node's checkpoint, the message the node applied there.
/// `Ok(Err(reason))` if the stream went backwards — restored from an older snapshot, or deleted and
/// recreated — so that reading on from the checkpoint would skip or misapply events: the read models
/// must be rebuilt.
pub async fn went_backwards(
    js: &jetstream::Context,
    projector: &Projector,
    stream: &str,
) -> Result<Result<(), String>, halcyon_bus::BusError> {
    let checkpoint = projector.checkpoint(stream);
    if checkpoint == 0 {
        return Ok(Ok(()));
    }
    let rebuild = "the read models must be rebuilt from the streams (`halcyon rebuild`, or start the node with an empty data folder)";
    let Some(info) =
        halcyon_bus::streams::patiently(|| halcyon_bus::streams::stream_info(js, stream)).await?
    else {
        return Ok(Err(format!(
            "{stream}: this node has applied up to sequence {checkpoint} but the stream does not exist; {rebuild}"
        )));
    };
    let last = info.state.last_sequence;
    if last < checkpoint {
        return Ok(Err(format!(
            "{stream}: this node has applied up to sequence {checkpoint} but the stream ends at {last} (restored from an older snapshot, or recreated); refusing to skip ahead: {rebuild}"
        )));
    }
    let digest = match projector.checkpoint_digest(stream) {
        Ok(Some(digest)) => digest,
        // A checkpoint written before digests were kept.
        Ok(None) => return Ok(Ok(())),
        Err(e) => {
            return Ok(Err(format!(
                "{stream}: the checkpoint cannot be read: {e}; {rebuild}"
            )));
        }
    };
    match halcyon_bus::streams::patiently(|| halcyon_bus::streams::stored_payload(js, stream, checkpoint))
        .await?
    {
        Some(payload) if halcyon_projector::store::message_digest(&payload) == digest => Ok(Ok(())),
        Some(_) => Ok(Err(format!(
            "{stream}: the message at sequence {checkpoint} is not the one this node applied there (the stream was recreated or restored and written again); refusing to read on: {rebuild}"
        ))),
        None => Ok(Err(format!(
            "{stream}: the message at sequence {checkpoint}, which this node applied, is no longer in the stream; {rebuild}"
        ))),
    }
}

/// Runs until `shutdown`: discovers agency streams and consumes each.
pub async fn run(
    js: jetstream::Context,
    projector: Arc<Projector>,
    halted: Halted,
    events: Events,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    per_stream(&js, &shutdown, |name| {
        let consumer = Consumer {
            js: js.clone(),
            projector: projector.clone(),
            stream: name.clone(),
            halted: halted.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
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
    halted: Halted,
    events: Events,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Consumer {
    /// Reads the stream from the checkpoint forever; after any failure, backs off and starts again from the
    /// checkpoint. Before each start, checks that the stream did not go backwards; if it did, reads nothing
    /// more from it (health says why) until the read models are rebuilt.
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.check_then_read() => result,
            };
            match result {
                Ok(()) => tracing::warn!("stream ended; re-reading from the checkpoint"),
                Err(e) => tracing::warn!(error = %e, "consumer stopped; re-reading from the checkpoint"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.after(started.elapsed())) => {}
            }
        }
    }

    async fn check_then_read(&self) -> Result<(), halcyon_bus::BoxError> {
        match went_backwards(&self.js, &self.projector, &self.stream).await? {
            Ok(()) => {
                self.halted.lock().expect("halted lock").remove(&self.stream);
            }
            Err(reason) => {
                tracing::error!(%reason, "not reading this stream");
                self.halted
                    .lock()
                    .expect("halted lock")
                    .insert(self.stream.clone(), reason.clone());
                return Err(reason.into());
            }
        }
        self.read_from_checkpoint().await
    }

    async fn read_from_checkpoint(&self) -> Result<(), halcyon_bus::BoxError> {
        let start = self.projector.checkpoint(&self.stream) + 1;
        tracing::info!(start, "consuming");
        let messages = ordered_messages(&self.js, &self.stream, start).await?;
        let mut chunks = std::pin::pin!(messages.ready_chunks(BATCH_LEN_MAX));
        let mut stall = Stall::default();
        loop {
            let chunk = match tokio::time::timeout(STALL_CHECK, chunks.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => {
                    stall
                        .quiet(&self.js, &self.stream, self.projector.checkpoint(&self.stream))
                        .await?;
                    continue;
                }
            };
            stall.heard();
            let mut batch = Vec::with_capacity(chunk.len());
            for m in chunk {
                let RawMessage {
                    sequence,
                    subject,
                    payload,
                    stored_at_ms,
                    ..
                } = m?;
                batch.push(Incoming {
                    sequence,
                    subject,
                    payload,
                    stored_at_ms,
                });
            }
            let (projector, stream) = (self.projector.clone(), self.stream.clone());
            let started = std::time::Instant::now();
            let outcome = tokio::task::spawn_blocking(move || projector.apply(&stream, &batch)).await??;
            self.metrics.applied(
                &self.stream,
                (outcome.projected + outcome.quarantined + outcome.duplicates) as usize,
                started.elapsed(),
            );
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

/// How long a consumer may go without a message before the node asks whether the stream has moved on.
/// An ordered consumer can stall silently after a server of the cluster fails (the server's consumer state
/// is lost and the client is not told); the node then drops it and reads again from its checkpoint.
pub const STALL_CHECK: Duration = Duration::from_secs(5);

/// Notices an ordered consumer that stalled silently (see [`STALL_CHECK`]). Every reader of a stream (the
/// projection, the chain keeper, the flag-check index, a watch's notifications) calls [`Stall::heard`] when
/// a message arrives and [`Stall::quiet`] after each [`STALL_CHECK`] without one.
#[derive(Debug, Default)]
pub struct Stall {
    /// The stream had moved past the reader at the last quiet check (one such check alone may have raced
    /// a message being stored; a second is a stall).
    behind: bool,
}

impl Stall {
    pub fn heard(&mut self) {
        self.behind = false;
    }

    /// After a quiet [`STALL_CHECK`]: fails if `stream` holds messages past `read_to` (the last sequence
    /// read) now and did at the previous quiet check too, so that the reader starts again. A stream that
    /// cannot be asked about counts as not moved on.
    pub async fn quiet(&mut self, js: &jetstream::Context, stream: &str, read_to: u64) -> Result<(), String> {
        let Ok(Some(info)) = halcyon_bus::streams::stream_info(js, stream).await else {
            self.behind = false;
            return Ok(());
        };
        let last = info.state.last_sequence;
        if last > read_to && self.behind {
            return Err(format!(
                "no message for {:?} although {stream} ends at {last} and this reader is at {read_to}: the read stalled",
                STALL_CHECK * 2
            ));
        }
        self.behind = last > read_to;
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
