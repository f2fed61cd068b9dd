//! Projecting the streams from the start into fresh read models: `halcyon rebuild` (then swapped in),
//! exports for comparison, and as-of reconstruction (stop at a position or a stored time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::{BusError, list_event_streams, ordered_messages};
use halcyon_projector::store::Prepared;
use halcyon_projector::{BATCH_LEN_MAX, Incoming, Projector, ProjectorError};

/// Where projection stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Until {
    /// The last message each stream held when projection began.
    #[default]
    End,
    /// At most these sequences (streams not named: nothing).
    Positions(BTreeMap<String, u64>),
    /// Messages the server stored at or before this time (Unix ms).
    StoredAt(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("a projection task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Progress callbacks: (events applied so far, events to apply in all).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Projects every agency stream into `projector` up to `until`; returns the number of messages applied.
pub async fn project_streams(
    js: &jetstream::Context,
    projector: &Arc<Projector>,
    until: &Until,
    progress: Progress<'_>,
) -> Result<u64, RebuildError> {
    let mut ends = BTreeMap::new();
    for name in list_event_streams(js).await? {
        let mut stream = js.get_stream(&name).await.map_err(|e| BusError::JetStream {
            doing: format!("opening stream {name}"),
            source: e.into(),
        })?;
        let last = stream
            .info()
            .await
            .map_err(|e| BusError::JetStream {
                doing: format!("reading stream {name}"),
                source: e.into(),
            })?
            .state
            .last_sequence;
        let end = match until {
            Until::Positions(p) => last.min(p.get(&name).copied().unwrap_or(0)),
            _ => last,
        };
        ends.insert(name, end);
    }
    let total: u64 = ends
        .iter()
        .map(|(s, end)| end.saturating_sub(projector.checkpoint(s)))
        .sum();
    let mut done = 0u64;
    progress(done, total);
    // Two stages overlap: while one batch is applied (sled, under the writer lock), the next is read and
    // made ready (decoded, checked, encoded). Batches are still applied one at a time, in stream order.
    let mut applying: Option<Applying> = None;
    let acceptance = projector.acceptance();
    for (name, end) in ends {
        let start = projector.checkpoint(&name) + 1;
        if start > end {
            continue;
        }
        let messages = ordered_messages(js, &name, start).await?;
        let mut chunks = std::pin::pin!(messages.ready_chunks(BATCH_LEN_MAX));
        'stream: while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            let mut finished = false;
            for m in chunk {
                let m = m?;
                let past_time = matches!(until, Until::StoredAt(t) if m.stored_at_ms > *t);
                if m.sequence > end || past_time {
                    finished = true;
                    break;
                }
                finished = m.sequence == end;
                batch.push(Incoming {
                    sequence: m.sequence,
                    subject: m.subject,
                    payload: m.payload,
                    stored_at_ms: m.stored_at_ms,
                });
            }
            if !batch.is_empty() {
                let stream = name.clone();
                let prepared =
                    tokio::task::spawn_blocking(move || Prepared::new(&stream, &batch, acceptance)).await?;
                if let Some(previous) = applying.take() {
                    done += previous.finish().await?;
                    progress(done, total);
                }
                applying = Some(Applying::start(projector, prepared));
            }
            if finished {
                break 'stream;
            }
        }
    }
    if let Some(last) = applying.take() {
        done += last.finish().await?;
        progress(done, total);
    }
    let p = projector.clone();
    tokio::task::spawn_blocking(move || p.derive_all_views()).await??;
    Ok(done)
}

/// One batch being applied on the blocking pool.
struct Applying {
    n: u64,
    task: tokio::task::JoinHandle<Result<halcyon_projector::ApplyOutcome, ProjectorError>>,
}

impl Applying {
    fn start(projector: &Arc<Projector>, prepared: Prepared) -> Self {
        let p = projector.clone();
        Self {
            n: prepared.len() as u64,
            task: tokio::task::spawn_blocking(move || p.apply_prepared(prepared)),
        }
    }

    /// Waits for the batch to be applied; the number of messages it held.
    async fn finish(self) -> Result<u64, RebuildError> {
        self.task.await??;
        Ok(self.n)
    }
}

/// Folders used by `rebuild`: the live read models and their replacement.
pub fn read_models_dir(data_dir: &Path) -> Result<PathBuf, RebuildError> {
    halcyon_projector::location::active_dir(data_dir).map_err(|source| RebuildError::Io {
        what: "finding the read models in use",
        source,
    })
}

/// Makes `fresh` (a folder in `data_dir`) the read models in use, then removes the old ones. The switch is
/// one atomic rename of `data_dir/CURRENT` (`halcyon_projector::location`): a crash at any moment leaves
/// either the old store or `fresh` in use, each complete.
pub fn swap_in(data_dir: &Path, fresh: &Path) -> Result<(), RebuildError> {
    let io = |what: &'static str, source: std::io::Error| RebuildError::Io { what, source };
    let name = fresh
        .file_name()
        .ok_or_else(|| {
            io(
                "naming the rebuilt read models",
                std::io::Error::other("no folder name"),
            )
        })?
        .to_string_lossy()
        .into_owned();
    halcyon_projector::location::point_to(data_dir, &name)
        .map_err(|e| io("switching to the rebuilt read models", e))?;
    halcyon_projector::location::remove_others(data_dir)
        .map_err(|e| io("removing the old read models", e))?;
    Ok(())
}
