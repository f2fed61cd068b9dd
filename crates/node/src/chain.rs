//! Tamper evidence kept by a node: for every agency stream, an ordered consumer extends the stream's hash
//! chain (`halcyon_ledger`) and a signed checkpoint is published to CHECKPOINTS every `every_messages`
//! messages, or every `every` when something is new. On start (and after any failure) it resumes from the
//! stream's last checkpoint, whose signature it checks first; it refuses to extend one it cannot trust.
//!
//! Keeping the chains is a duty of one node at a time: a node holds it through a lease in the nodes bucket
//! (`halcyon_bus::nodes`), the others stand by and take over, from the last checkpoint, when the lease runs
//! out. The holder begins a keeper term before it writes (`halcyon_bus::checkpoint::begin_term`) and the
//! server refuses a checkpoint from any earlier term, so a holder paused past its lease writes nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::checkpoint::{
    CheckpointError, Term, begin_term, chain_messages, last_checkpoint, publish_checkpoint,
};
use halcyon_bus::nodes::Candidate;
use halcyon_ledger::{ENTRIES_MAX, Keyring, PublicKey, Recorder, SigningKey};
use halcyon_schema::clock::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::peers::Membership;

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
    /// The keyring file's keys, with their validity dates (`deploy/keyring-dev.toml`).
    pub keyring: Keyring,
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
            keyring: Keyring::default(),
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
        let mut ring = Keyring::new(
            std::iter::once(self.signing_key.public_key()).chain(self.trusted_keys.iter().copied()),
        );
        ring.extend(&self.keyring);
        ring
    }
}

/// The duty's name in the nodes bucket.
pub const DUTY: &str = "checkpoints";

/// Runs until `shutdown`: stands by until this node holds the checkpoint duty, then keeps every agency
/// stream's chain while it holds it.
pub async fn run(
    js: jetstream::Context,
    config: ChainConfig,
    membership: Arc<Membership>,
    shutdown: CancellationToken,
) {
    if let Err(e) = config.check() {
        tracing::error!(error = %e, "not keeping hash chains");
        return;
    }
    let keys = config.keyring();
    let ttl = membership.config().lease_ttl;
    let mut candidate = Candidate::new(
        membership.bucket().clone(),
        DUTY,
        membership.node_id(),
        &membership.instance(),
        ttl,
    );
    let key_id = config.signing_key.public_key().key_id();
    tracing::info!(%key_id, "standing by for the checkpoint duty");
    loop {
        let lease = loop {
            // A key outside its dates in the keyring would sign checkpoints no node or verifier accepts:
            // such a node does not stand for the duty.
            let validity = keys.validity(&key_id);
            if !validity.contains(now_ms()) {
                tracing::error!(%key_id, %validity, "this node's checkpoint key is outside its validity in the keyring; not standing for the checkpoint duty");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(REFUSED_BACKOFF) => continue,
                }
            }
            match candidate.try_take().await {
                Ok(Some(lease)) => break lease,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the checkpoint duty's lease; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(candidate.next_try_in()) => {}
            }
        };
        tracing::info!(lease = lease.revision(), "took the checkpoint duty");
        hold(&js, &config, &keys, &membership, lease, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("no longer holding the checkpoint duty; standing by");
        // Not straight back: a term that could not begin (CHECKPOINTS unwritable) would otherwise be tried
        // again at once, and a lease just lost is another node's now.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ttl / 4) => {}
        }
    }
}

/// Keeps the chains while the lease holds: begins a term, follows every stream, renews the lease; ends
/// when the lease is lost or runs out, a checkpoint is fenced off, or at shutdown (when it releases it).
async fn hold(
    js: &jetstream::Context,
    config: &ChainConfig,
    keys: &Keyring,
    membership: &Membership,
    mut lease: halcyon_bus::nodes::Lease,
    shutdown: &CancellationToken,
) {
    if !lease.is_valid() {
        return;
    }
    let term = match begin_term(js, membership.node_id(), lease.revision()).await {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot begin a keeper term");
            return;
        }
    };
    membership.set_duty(DUTY, true);
    let term_over = shutdown.child_token();
    let followers = {
        let (js, config, keys, node_id) = (
            js.clone(),
            config.clone(),
            keys.clone(),
            membership.node_id().to_owned(),
        );
        let (term_over, shutdown) = (term_over.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stop = term_over.clone();
            // The access log is chained like the agency streams: altering, removing or reordering an access
            // record is found by `halcyon audit verify` at its position.
            let audit = Follower {
                js: js.clone(),
                stream: halcyon_schema::subject::AUDIT_STREAM.to_owned(),
                config: config.clone(),
                keys: keys.clone(),
                node_id: node_id.clone(),
                term,
            }
            .run(stop.clone(), shutdown.clone())
            .instrument(tracing::info_span!(
                "chain",
                stream = halcyon_schema::subject::AUDIT_STREAM
            ));
            let audit = tokio::spawn(audit);
            crate::ingest::per_stream(&js, &term_over, |name| {
                let follower = Follower {
                    js: js.clone(),
                    stream: name.clone(),
                    config: config.clone(),
                    keys: keys.clone(),
                    node_id: node_id.clone(),
                    term,
                };
                follower
                    .run(stop.clone(), shutdown.clone())
                    .instrument(tracing::info_span!("chain", stream = %name))
            })
            .await;
            let _ = audit.await;
        })
    };
    let mut renew = tokio::time::interval(lease.renew_every());
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = term_over.cancelled() => break,
            _ = tokio::time::sleep_until(lease.valid_until()) => {
                tracing::warn!("the checkpoint duty's lease ran out before it was renewed");
                break;
            }
            _ = renew.tick() => match lease.renew().await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("the checkpoint duty's lease was not renewed; will retry"),
                Err(lost) => {
                    tracing::warn!(error = %lost, "lost the checkpoint duty");
                    break;
                }
            },
        }
    }
    term_over.cancel();
    let _ = followers.await;
    membership.set_duty(DUTY, false);
    if shutdown.is_cancelled() && lease.is_valid() {
        lease.release().await;
    }
}

/// Why following a stream stopped.
enum Stop {
    /// NATS trouble or a lost race with another node: resume from the last checkpoint.
    Retry(String),
    /// The last checkpoint cannot be trusted: do not extend it.
    Refused(String),
    /// Another node began a keeper term, or this node's key is out of date: this node's term is over.
    Fenced(String),
}

impl From<CheckpointError> for Stop {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::Fenced { .. } => Stop::Fenced(e.to_string()),
            e => Stop::Retry(e.to_string()),
        }
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
    term: Term,
}

impl Follower {
    /// Follows until the term is over (`term_over`; at shutdown too, after a last checkpoint).
    async fn run(self, term_over: CancellationToken, shutdown: CancellationToken) {
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let started = tokio::time::Instant::now();
            let wait = match self.follow(&term_over, &shutdown).await {
                Ok(()) => return,
                Err(Stop::Fenced(reason)) => {
                    tracing::warn!(%reason, "this node's keeper term is over");
                    term_over.cancel();
                    return;
                }
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
                _ = term_over.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Resumes from the last trusted checkpoint and follows the stream until shutdown (Ok) or a failure.
    async fn follow(&self, term_over: &CancellationToken, shutdown: &CancellationToken) -> Result<(), Stop> {
        let mut recorder = match last_checkpoint(&self.js, &self.stream).await {
            Ok(None) => Recorder::new(&self.stream),
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
                Recorder::after(c)
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
        let mut stall = crate::ingest::Stall::default();
        loop {
            tokio::select! {
                _ = term_over.cancelled() => {
                    // At shutdown, a last checkpoint of what is pending (still in this term); when the term
                    // ended otherwise, nothing more.
                    if shutdown.is_cancelled() {
                        let last = tokio::time::timeout(
                            FINAL_CHECKPOINT_WAIT,
                            self.checkpoint(&mut recorder),
                        )
                        .await;
                        if !matches!(last, Ok(Ok(()))) {
                            tracing::warn!(pending = recorder.pending(), "no final checkpoint at shutdown; the next keeper covers these messages");
                        }
                    }
                    return Ok(());
                }
                _ = tick.tick() => {
                    self.checkpoint(&mut recorder).await?;
                    if heard.elapsed() >= crate::ingest::STALL_CHECK {
                        stall
                            .quiet(&self.js, &self.stream, recorder.next_sequence() - 1)
                            .await
                            .map_err(Stop::Retry)?;
                        heard = tokio::time::Instant::now();
                    }
                }
                chunk = chunks.next() => {
                    let Some(chunk) = chunk else {
                        return Err(Stop::Retry("the stream's read ended".into()));
                    };
                    heard = tokio::time::Instant::now();
                    stall.heard();
                    for m in chunk {
                        let m = m?;
                        recorder.push(&m.stored()).map_err(|e| Stop::Retry(e.to_string()))?;
                        if recorder.pending() >= self.config.every_messages {
                            self.checkpoint(&mut recorder).await?;
                        }
                    }
                }
            }
        }
    }

    /// Signs and publishes what is new since the last checkpoint, if anything.
    async fn checkpoint(&self, recorder: &mut Recorder) -> Result<(), Stop> {
        let key_id = self.config.signing_key.public_key().key_id();
        let validity = self.keys.validity(&key_id);
        if !validity.contains(now_ms()) {
            return Err(Stop::Fenced(format!(
                "this node's checkpoint key {key_id} is outside its validity in the keyring ({validity}): giving up the duty"
            )));
        }
        let Some(checkpoint) = recorder.cut(&self.config.signing_key, &self.node_id, now_ms()) else {
            return Ok(());
        };
        publish_checkpoint(&self.js, &checkpoint, self.term).await?;
        tracing::debug!(
            to = checkpoint.to_sequence,
            n = checkpoint.entries.len(),
            "checkpoint published"
        );
        Ok(())
    }
}
