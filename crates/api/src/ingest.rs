//! Projection wiring: an ordered consumer per agency stream, each starting at the node's own checkpoint + 1,
//! feeding one applier that writes batches to sled. New agency streams are picked up without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::{BusError, RawMessage, list_event_streams, ordered_messages};
use halcyon_projector::{Incoming, Projector};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Messages per sled batch (MEASURED.md: about 1,000 rows keeps batches fast and memory flat).
pub const BATCH_LEN_MAX: usize = 1000;
/// How often the node looks for new agency streams.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Events behind per stream, as last reported by each consumer.
pub type Lag = Arc<Mutex<BTreeMap<String, u64>>>;

/// Runs until `shutdown`: discovers agency streams, consumes each, applies batches in order.
pub async fn run(
    js: jetstream::Context,
    projector: Arc<Projector>,
    lag: Lag,
    events: crate::events::Events,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<(String, Vec<Incoming>)>(8);
    let applier = {
        let projector = projector.clone();
        async move {
            while let Some((stream, batch)) = rx.recv().await {
                let p = projector.clone();
                let name = stream.clone();
                match tokio::task::spawn_blocking(move || p.apply(&name, &batch)).await {
                    Ok(Ok(outcome)) => {
                        if !outcome.new_facts.is_empty() {
                            // No receivers is fine: nobody is watching.
                            let _ = events.send(crate::events::NodeEvent::Facts(Arc::new(
                                outcome.new_facts.clone(),
                            )));
                        }
                        tracing::debug!(%stream, projected = outcome.projected, quarantined = outcome.quarantined, "batch applied")
                    }
                    Ok(Err(e)) => {
                        // The batch is not applied and its checkpoint not advanced; the consumer restarts
                        // from the checkpoint, so nothing is lost.
                        tracing::error!(%stream, error = %e, "batch not applied; the stream will be re-read");
                    }
                    Err(e) => tracing::error!(%stream, error = %e, "applier task failed"),
                }
            }
        }
    };
    let applier = tokio::spawn(applier.instrument(tracing::info_span!("applier")));

    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(DISCOVERY_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let names = match list_event_streams(&js).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list agency streams; will retry");
                continue;
            }
        };
        for name in names {
            if started.insert(name.clone()) {
                let task = consume(
                    js.clone(),
                    projector.clone(),
                    name.clone(),
                    tx.clone(),
                    lag.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(task.instrument(tracing::info_span!("consumer", stream = %name)));
            }
        }
    }
    drop(tx);
    let _ = applier.await;
}

/// Reads one stream from the checkpoint, in ready-made chunks, forever; restarts from the checkpoint after
/// an error.
async fn consume(
    js: jetstream::Context,
    projector: Arc<Projector>,
    stream: String,
    tx: mpsc::Sender<(String, Vec<Incoming>)>,
    lag: Lag,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = projector.checkpoint(&stream) + 1;
        tracing::info!(start, "consuming");
        let result: Result<(), BusError> = async {
            let messages = ordered_messages(&js, &stream, start).await?;
            let mut chunks = std::pin::pin!(messages.ready_chunks(BATCH_LEN_MAX));
            loop {
                let chunk = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    chunk = chunks.next() => match chunk {
                        Some(chunk) => chunk,
                        None => return Ok(()),
                    },
                };
                let mut batch = Vec::with_capacity(chunk.len());
                let mut pending = None;
                for m in chunk {
                    let RawMessage {
                        sequence,
                        subject,
                        payload,
                        stored_at_ms,
                        pending: p,
                        ..
                    } = m?;
                    pending = Some(p);
                    batch.push(Incoming {
                        sequence,
                        subject,
                        payload,
                        stored_at_ms,
                    });
                }
                if let Some(p) = pending {
                    lag.lock().expect("lag lock").insert(stream.clone(), p);
                }
                if tx.send((stream.clone(), batch)).await.is_err() {
                    return Ok(());
                }
            }
        }
        .await;
        if shutdown.is_cancelled() || tx.is_closed() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!("stream ended; re-reading from the checkpoint"),
            Err(e) => tracing::warn!(error = %e, "consumer failed; re-reading from the checkpoint"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
