//! Follows the AUDIT stream and indexes every access record into the node's sled
//! (`halcyon_projector::access_index`): by child, agency, principal and time for `ListAccess`, and every
//! permitted check of a child's flag, from where the flag answer carries the child's last 25 accesses.
//! Every node indexes the same records, so every node gives the same lists once it has read as far.
//! Resumes from the position stored with the index; an ordered consumer that hears nothing while AUDIT has
//! moved on is recreated (`crate::ingest::STALL_CHECK`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_projector::Projector;
use halcyon_projector::access_index::AccessRow;
use halcyon_schema::subject::AUDIT_STREAM;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`.
pub async fn run(js: jetstream::Context, projector: Arc<Projector>, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let started = tokio::time::Instant::now();
        match follow(&js, &projector, &shutdown).await {
            Ok(()) => return,
            Err(reason) => {
                tracing::warn!(%reason, "indexing the access log stopped; resuming from its position")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.after(started.elapsed())) => {}
        }
    }
}

async fn follow(
    js: &jetstream::Context,
    projector: &Arc<Projector>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let from = projector.access_position().map_err(|e| e.to_string())? + 1;
    let messages = halcyon_bus::checkpoint::chain_messages(js, AUDIT_STREAM, from, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut chunks = std::pin::pin!(messages.ready_chunks(crate::ingest::BATCH_LEN_MAX));
    let mut position = from - 1;
    let mut quiet = tokio::time::interval(crate::ingest::STALL_CHECK);
    quiet.tick().await;
    let (mut heard, mut stall) = (true, crate::ingest::Stall::default());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = quiet.tick() => {
                if !heard {
                    stall.quiet(js, AUDIT_STREAM, position).await?;
                }
                heard = false;
            }
            chunk = chunks.next() => {
                let Some(chunk) = chunk else {
                    return Err("the read of AUDIT ended".into());
                };
                heard = true;
                stall.heard();
                let mut found = Vec::new();
                for m in chunk {
                    let m = m.map_err(|e| e.to_string())?;
                    found.extend(AccessRow::of_message(m.sequence, &m.payload));
                    position = m.sequence;
                }
                let p = projector.clone();
                let through = position;
                tokio::task::spawn_blocking(move || p.index_access(through, &found))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}
