//! A node among others (`halcyon_bus::nodes`): it claims its id at start (a second live node with the same
//! id is refused), writes a heartbeat every few seconds (its configuration's fingerprint, its positions, its
//! clock's offset from the time NATS stores), compares its fingerprint with every live peer's, and guards
//! the deadline timer against its own clock: beyond `clock_skew_max` from NATS time it records no breach
//! until the clock is back in bounds. Health shows both (`halcyon.Peers`, `halcyon.Clock`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use halcyon_bus::nodes::{EntryError, Heartbeat, NodeEntry, StoredHeartbeat};
use halcyon_projector::Projector;
use halcyon_projector::clock::Clock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a starting node keeps trying to claim its id while the bucket has no leader.
const CLAIM_PATIENCE: Duration = Duration::from_secs(30);

/// How a node lives among others.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// A heartbeat this often.
    pub heartbeat_every: Duration,
    /// A duty's lease lasts this long unless renewed (renewed every quarter of it); a dead holder's duty
    /// passes to another node within it.
    pub lease_ttl: Duration,
    /// Beyond this offset from NATS time the node records no deadline breach.
    pub clock_skew_max: Duration,
    /// What the node runs with, by part: a digest of each (the binary's version is added by the node).
    pub fingerprint: BTreeMap<String, String>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            heartbeat_every: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(15),
            clock_skew_max: Duration::from_secs(30),
            fingerprint: BTreeMap::new(),
        }
    }
}

/// The first 16 hex digits of the SHA-256 of a configuration's parts (each part's name and digest) and then
/// `extra`: one value for a whole fingerprint (build info, a store's stamp).
pub fn fingerprint_digest<'a>(
    parts: impl IntoIterator<Item = (&'a String, &'a String)>,
    extra: &[u8],
) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for (part, digest) in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
        hash.update(digest.as_bytes());
        hash.update([0]);
    }
    hash.update(extra);
    hex::encode(&hash.finalize()[..8])
}

/// What a node knows of itself among its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersState {
    /// This node's clock minus NATS time at the last heartbeat, ms.
    pub clock_offset_ms: Option<i64>,
    /// The offset is beyond the bound: no breach is recorded.
    pub clock_skewed: bool,
    /// How live peers' configurations differ from this node's, one line per peer and part.
    pub differences: Vec<String>,
    /// Live peers seen at the last heartbeat (this node excluded).
    pub peers: Vec<String>,
    /// Another node wrote this node's entry: two live nodes have this id.
    pub id_in_use: bool,
}

/// This node's membership: its entry in the bucket and what it last learned.
#[derive(Debug)]
pub struct Membership {
    node_id: String,
    entry: tokio::sync::Mutex<NodeEntry>,
    heartbeat: Mutex<Heartbeat>,
    kv: async_nats::jetstream::kv::Store,
    clock: Clock,
    config: PeersConfig,
    state: watch::Sender<PeersState>,
    /// NATS time of this node's last heartbeat, ms.
    last_stored_ms: Mutex<Option<i64>>,
    /// When the last heartbeat was acknowledged (this node's monotonic clock).
    last_beat_at: Mutex<Option<tokio::time::Instant>>,
}

impl Membership {
    /// Claims `node_id` in the bucket; refuses if a live node already uses it.
    pub async fn join(
        js: &jetstream::Context,
        node_id: &str,
        instance: String,
        listen: String,
        clock: Clock,
        mut config: PeersConfig,
    ) -> Result<Arc<Self>, EntryError> {
        config
            .fingerprint
            .insert("binary".into(), env!("CARGO_PKG_VERSION").into());
        let kv = halcyon_bus::nodes::bucket(js).await?;
        let heartbeat = Heartbeat {
            node_id: node_id.to_owned(),
            instance,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            fingerprint: config.fingerprint.clone(),
            positions: BTreeMap::new(),
            clock_offset_ms: None,
            listen,
            duties: Vec::new(),
            sent_at_ms: clock.now_ms(),
        };
        // A stopped node's entry stops changing; a live one changes every heartbeat. A node starting while
        // the cluster elects the bucket's leader (a server just restarted, the bucket just made) meets "no
        // responders" for a few seconds: it tries again for a while rather than exit; another live node
        // with its id is refused at once.
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let give_up = tokio::time::Instant::now() + CLAIM_PATIENCE;
        let entry = loop {
            let started = tokio::time::Instant::now();
            match NodeEntry::claim(kv.clone(), &heartbeat, config.heartbeat_every * 5 / 2).await {
                Ok(entry) => break entry,
                Err(EntryError::Bus(e)) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(error = %e, "claiming the node id failed; trying again");
                    tokio::time::sleep(backoff.after(started.elapsed())).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Arc::new(Self {
            node_id: node_id.to_owned(),
            entry: tokio::sync::Mutex::new(entry),
            heartbeat: Mutex::new(heartbeat),
            kv,
            clock,
            config,
            state: watch::channel(PeersState::default()).0,
            last_stored_ms: Mutex::new(None),
            last_beat_at: Mutex::new(None),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This run's instance id (names the node in leases).
    pub fn instance(&self) -> String {
        self.heartbeat.lock().expect("heartbeat lock").instance.clone()
    }

    pub fn bucket(&self) -> &async_nats::jetstream::kv::Store {
        &self.kv
    }

    pub fn config(&self) -> &PeersConfig {
        &self.config
    }

    pub fn subscribe(&self) -> watch::Receiver<PeersState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> PeersState {
        self.state.borrow().clone()
    }

    /// Leaves the bucket at a clean stop (the entry is deleted; the next start claims it at once).
    pub async fn leave(&self) {
        self.entry.lock().await.leave().await;
    }

    /// Marks a duty held or not (shown in the heartbeat).
    pub fn set_duty(&self, duty: &str, held: bool) {
        let mut hb = self.heartbeat.lock().expect("heartbeat lock");
        hb.duties.retain(|d| d != duty);
        if held {
            hb.duties.push(duty.to_owned());
        }
    }

    /// Writes a heartbeat now and measures the clock's offset from the time NATS stored it.
    pub async fn beat(&self, projector: &Projector) -> Result<i64, EntryError> {
        let heartbeat = {
            let mut hb = self.heartbeat.lock().expect("heartbeat lock");
            hb.positions = projector.checkpoints().into_iter().collect();
            hb.sent_at_ms = self.clock.now_ms();
            hb.clone()
        };
        let stored_ms = self.entry.lock().await.beat(&heartbeat).await?;
        let offset = heartbeat.sent_at_ms - stored_ms;
        self.heartbeat.lock().expect("heartbeat lock").clock_offset_ms = Some(offset);
        *self.last_stored_ms.lock().expect("stored lock") = Some(stored_ms);
        *self.last_beat_at.lock().expect("beat lock") = Some(tokio::time::Instant::now());
        let skewed = offset.unsigned_abs() > self.config.clock_skew_max.as_millis() as u64;
        let was = self.state.borrow().clock_skewed;
        if skewed != was {
            if skewed {
                tracing::error!(
                    offset_ms = offset,
                    bound_ms = self.config.clock_skew_max.as_millis() as u64,
                    "this node's clock differs from NATS time beyond the bound: recording no deadline breaches until it is back"
                );
            } else {
                tracing::warn!(
                    offset_ms = offset,
                    "this node's clock is back within bounds of NATS time: recording breaches again"
                );
            }
        }
        self.state.send_modify(|s| {
            s.clock_offset_ms = Some(offset);
            s.clock_skewed = skewed;
        });
        Ok(offset)
    }

    /// Whether this node wrote a heartbeat within the last three heartbeat periods: it can read and write
    /// the nodes bucket, so it knows who holds each duty (readiness asks this).
    pub fn duties_known(&self) -> bool {
        self.last_beat_at
            .lock()
            .expect("beat lock")
            .is_some_and(|at| at.elapsed() <= self.config.heartbeat_every * 3)
    }

    /// Whether the clock is within bounds of NATS time now (measured afresh; the last measurement if NATS
    /// cannot be reached).
    pub async fn clock_in_bounds(&self, projector: &Projector) -> bool {
        if let Err(e) = self.beat(projector).await {
            tracing::warn!(error = %e, "cannot measure the clock against NATS; going by the last measurement");
        }
        !self.state.borrow().clock_skewed
    }

    /// Returns once the clock is within bounds again.
    pub async fn until_clock_in_bounds(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| !s.clock_skewed).await;
    }

    /// Reads every peer's heartbeat and records how live peers' configurations differ from this node's.
    pub async fn compare(&self) -> Result<(), halcyon_bus::BusError> {
        let all = halcyon_bus::nodes::heartbeats(&self.kv).await?;
        let Some(now) = *self.last_stored_ms.lock().expect("stored lock") else {
            return Ok(());
        };
        let live_since = now - 3 * self.config.heartbeat_every.as_millis() as i64;
        let live: Vec<&StoredHeartbeat> = all
            .iter()
            .filter(|p| p.heartbeat.node_id != self.node_id && p.stored_ms >= live_since)
            .collect();
        let differences: Vec<String> = live
            .iter()
            .flat_map(|p| fingerprint_differences(&self.config.fingerprint, &p.heartbeat))
            .collect();
        let before = self.state.borrow().differences.clone();
        if differences != before {
            if differences.is_empty() {
                tracing::info!("every live peer runs with the same configuration");
            } else {
                tracing::warn!(differences = ?differences, "live peers run with a different configuration: answers may differ by node");
            }
        }
        self.state.send_modify(|s| {
            s.differences = differences;
            s.peers = live.iter().map(|p| p.heartbeat.node_id.clone()).collect();
        });
        Ok(())
    }
}

/// How `peer`'s configuration differs from `ours`, one line per part (no content: digests only).
pub fn fingerprint_differences(ours: &BTreeMap<String, String>, peer: &Heartbeat) -> Vec<String> {
    let parts: std::collections::BTreeSet<&String> = ours.keys().chain(peer.fingerprint.keys()).collect();
    parts
        .into_iter()
        .filter_map(|part| {
            let (a, b) = (ours.get(part), peer.fingerprint.get(part));
            (a != b).then(|| {
                format!(
                    "{}: {part} differs ({} here, {} there)",
                    peer.node_id,
                    a.map_or("none", String::as_str),
                    b.map_or("none", String::as_str)
                )
            })
        })
        .collect()
}

/// The node's instance id, kept in its data folder (`node-instance`): the same across restarts of the node,
/// so a node restarted after a crash reclaims its id at once, while another node with the same id (its own
/// data folder) must wait out the entry's quiet time, and is refused if the entry is live.
pub fn instance_of(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-instance");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => write_instance(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_instance(&path),
        Err(e) => Err(e),
    }
}

fn write_instance(path: &std::path::Path) -> std::io::Result<String> {
    let instance = uuid::Uuid::now_v7().to_string();
    std::fs::write(path, format!("{instance}\n"))?;
    Ok(instance)
}

/// Writes a heartbeat every `heartbeat_every` and compares peers, until `shutdown`. Losing the node's own
/// entry to another node is logged as an error each time (two live nodes with one id).
pub async fn run(
    membership: Arc<Membership>,
    live: Arc<crate::read_models::Live>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(membership.config.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match membership.beat(&live.get()).await {
            Ok(_) => {
                membership
                    .state
                    .send_if_modified(|s| std::mem::replace(&mut s.id_in_use, false));
                if let Err(e) = membership.compare().await {
                    tracing::warn!(error = %e, "cannot read the peers' heartbeats");
                }
            }
            Err(e @ EntryError::InUse { .. }) => {
                membership
                    .state
                    .send_if_modified(|s| !std::mem::replace(&mut s.id_in_use, true));
                tracing::error!(error = %e, "heartbeat refused");
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat not written; will retry"),
        }
    }
}
