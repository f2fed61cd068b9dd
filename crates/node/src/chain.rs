//! Tamper evidence kept by a node: for every agency stream, an ordered consumer extends the stream's hash
//! chain (`halcyon_ledger`) and a signed checkpoint is published to CHECKPOINTS every `every_messages`
//! messages, or every `every` when something is new. On start (and after any failure) it resumes from the
//! stream's last checkpoint, whose signature it checks first; it refuses to extend one it cannot trust.
//! Several nodes may follow the same stream: each subject's checkpoints stay one linear chain because a
//! checkpoint is published only if the last one is still the one it extends.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::checkpoint::{CheckpointError, chain_messages, last_checkpoint, publish_checkpoint};
use halcyon_ledger::{ENTRIES_MAX, Keyring, PublicKey, Recorder, SigningKey};
use halcyon_schema::clock::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest a final checkpoint at shutdown may take.
const FINAL_CHECKPOINT_WAIT: Duration = Duration::from_secs(2);
/// Backoff after a checkpoint this node refuses to extend (it logs an error each time).
const REFUSED_BACKOFF: Duration = Duration::from_secs(60);

/// How a node signs checkpoints.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// The node's ed25519 checkpoint key (from a file; `deploy/checkpoint-dev.key` is for development only).
    pub signing_key: SigningKey,
    /// Other nodes' public keys, whose checkpoints this node may extend.
    pub trusted_keys: Vec<PublicKey>,
    /// A checkpoint at least every this many messages (at most `halcyon_ledger::ENTRIES_MAX`).
    pub every_messages: usize,
    /// And at least this often while there is something new.
    pub every: Duration,
}

impl ChainConfig {
    pub const EVERY_MESSAGES_DEFAULT: usize = 1_000;
    pub const EVERY_DEFAULT: Duration = Duration::from_secs(5);

    /// Defaults for the rest.
    pub fn new(signing_key: SigningKey) -> Self {
        Self {
            signing_key,
            trusted_keys: Vec::new(),
            every_messages: Self::EVERY_MESSAGES_DEFAULT,
            every: Self::EVERY_DEFAULT,
        }
    }

    /// What is wrong with the settings, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=ENTRIES_MAX).contains(&self.every_messages) {
            return Err(format!(
                "checkpoint_every_messages: must be 1 to {ENTRIES_MAX}, got {}",
                self.every_messages
            ));
        }
        if self.every.is_zero() {
            return Err("checkpoint_every_secs: must be at least 1".into());
        }
        Ok(())
    }

    fn keyring(&self) -> Keyring {
        Keyring::new(std::iter::once(self.signing_key.public_key()).chain(self.trusted_keys.iter().copied()))
    }
}

/// Runs until `shutdown`: discovers agency streams and keeps each one's chain.
pub async fn run(js: jetstream::Context, config: ChainConfig, node_id: String, shutdown: CancellationToken) {
    if let Err(e) = config.check() {
        tracing::error!(error = %e, "not keeping hash chains");
        return;
    }
    let keys = config.keyring();
    tracing::info!(key_id = %config.signing_key.public_key().key_id(), "keeping hash chains");
    let stop = shutdown.clone();
    crate::ingest::per_stream(&js, &shutdown, |name| {
        let follower = Follower {
            js: js.clone(),
            stream: name.clone(),
            config: config.clone(),
            keys: keys.clone(),
            node_id: node_id.clone(),
        };
        follower
            .run(stop.clone())
            .instrument(tracing::info_span!("chain", stream = %name))
    })
    .await;
}

/// Why following a stream stopped.
enum Stop {
    /// NATS trouble or a lost race with another node: resume from the last checkpoint.
    Retry(String),
    /// The last checkpoint cannot be trusted: do not extend it.
    Refused(String),
}

impl From<CheckpointError> for Stop {
    fn from(e: CheckpointError) -> Self {
        Stop::Retry(e.to_string())
    }
}

impl From<halcyon_bus::BusError> for Stop {
    fn from(e: halcyon_bus::BusError) -> Self {
        Stop::Retry(e.to_string())
    }
}

struct Follower {
    js: jetstream::Context,
    stream: String,
    config: ChainConfig,
    keys: Keyring,
    node_id: String,
}

impl Follower {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let started = tokio::time::Instant::now();
            let wait = match self.follow(&shutdown).await {
                Ok(()) => return,
                Err(Stop::Retry(reason)) => {
                    tracing::warn!(%reason, "chain stopped; resuming from the last checkpoint");
                    backoff.after(started.elapsed())
                }
                Err(Stop::Refused(reason)) => {
                    tracing::error!(%reason, "not extending this stream's checkpoints; run `halcyon audit verify`");
                    REFUSED_BACKOFF
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Resumes from the last trusted checkpoint and follows the stream until shutdown (Ok) or a failure.
    async fn follow(&self, shutdown: &CancellationToken) -> Result<(), Stop> {
        let (mut recorder, mut expected_last) = match last_checkpoint(&self.js, &self.stream).await {
            Ok(None) => (Recorder::new(&self.stream), 0),
            Ok(Some(stored)) => {
                let c = &stored.checkpoint;
                let distrust = c
                    .shape_error()
                    .or_else(|| (c.stream != self.stream).then(|| format!("it is for stream {}", c.stream)))
                    .or_else(|| c.verify_signature(&self.keys).err().map(|e| e.to_string()));
                if let Some(reason) = distrust {
                    return Err(Stop::Refused(format!(
                        "the last checkpoint ({}..={}, CHECKPOINTS sequence {}): {reason}",
                        c.from_sequence, c.to_sequence, stored.sequence
                    )));
                }
                (Recorder::after(c), stored.sequence)
            }
            Err(CheckpointError::Unreadable { sequence, reason }) => {
                return Err(Stop::Refused(format!(
                    "the last checkpoint (CHECKPOINTS sequence {sequence}) is unreadable: {reason}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(from = recorder.next_sequence(), "chaining");
        let messages = chain_messages(&self.js, &self.stream, recorder.next_sequence(), None).await?;
        let mut chunks = std::pin::pin!(messages.ready_chunks(crate::ingest::BATCH_LEN_MAX));
        let mut tick = tokio::time::interval(self.config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // When a message last arrived: an ordered consumer can stall silently after a server fails
        // (`crate::ingest::STALL_CHECK`).
        let mut heard = tokio::time::Instant::now();
        // Behind the stream at the last quiet check (a second such check is a stall).
        let mut behind = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let last = tokio::time::timeout(
                        FINAL_CHECKPOINT_WAIT,
                        self.checkpoint(&mut recorder, &mut expected_last),
                    )
                    .await;
                    if !matches!(last, Ok(Ok(()))) {
                        tracing::warn!(pending = recorder.pending(), "no final checkpoint at shutdown; the next start covers these messages");
                    }
                    return Ok(());
                }
                _ = tick.tick() => {
                    self.checkpoint(&mut recorder, &mut expected_last).await?;
                    if heard.elapsed() >= crate::ingest::STALL_CHECK {
                        behind = self.check_not_stalled(recorder.next_sequence(), behind).await?;
                        heard = tokio::time::Instant::now();
                    }
                }
                chunk = chunks.next() => {
                    let Some(chunk) = chunk else {
                        return Err(Stop::Retry("the stream's read ended".into()));
                    };
                    heard = tokio::time::Instant::now();
                    behind = false;
                    for m in chunk {
                        let m = m?;
                        recorder.push(&m.stored()).map_err(|e| Stop::Retry(e.to_string()))?;
                        if recorder.pending() >= self.config.every_messages {
                            self.checkpoint(&mut recorder, &mut expected_last).await?;
                        }
                    }
                }
            }
        }
    }

    /// Whether the stream holds `next` or later although nothing arrived for a while; fails (so that the
    /// read starts again from the last checkpoint) when it was so at the previous quiet check too.
    async fn check_not_stalled(&self, next: u64, was_behind: bool) -> Result<bool, Stop> {
        let Ok(Some(info)) = halcyon_bus::streams::stream_info(&self.js, &self.stream).await else {
            return Ok(false);
        };
        let behind = info.state.last_sequence >= next;
        if behind && was_behind {
            return Err(Stop::Retry(format!(
                "no message for {:?} although the stream ends at {}: the read stalled",
                crate::ingest::STALL_CHECK * 2,
                info.state.last_sequence
            )));
        }
        Ok(behind)
    }

    /// Signs and publishes what is new since the last checkpoint, if anything.
    async fn checkpoint(&self, recorder: &mut Recorder, expected_last: &mut u64) -> Result<(), Stop> {
        let Some(checkpoint) = recorder.cut(&self.config.signing_key, &self.node_id, now_ms()) else {
            return Ok(());
        };
        *expected_last = publish_checkpoint(&self.js, &checkpoint, *expected_last).await?;
        tracing::debug!(
            to = checkpoint.to_sequence,
            n = checkpoint.entries.len(),
            "checkpoint published"
        );
        Ok(())
    }
}
