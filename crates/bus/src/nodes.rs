//! Several nodes at once, over one JetStream key-value bucket (`halcyon_nodes`, created by the operator from
//! the stream spec, replicated like the streams):
//!
//! - `node.<id>`: each node's heartbeat ([`Heartbeat`]): who it is, what it runs with (a fingerprint of its
//!   configuration), how far it has projected, and how far its clock is from the time NATS stores. A node
//!   claims its key at start ([`NodeEntry::claim`]) and writes it by revision compare-and-set, so a second live
//!   node with the same id is found out (its write, or ours, fails).
//! - `duty.<name>`: a lease ([`Candidate`], [`Lease`]) for a duty that must be done by one node at a time.
//!   Taken by create (or by compare-and-set on a lease nobody renewed), renewed by compare-and-set. Expiry is
//!   measured on each node's monotonic clock, never by comparing wall clocks. With a lease time `T`: a holder
//!   counts on its lease for 0.7 `T` from before it wrote it; a candidate reads the lease every `T`/4 and
//!   takes it 0.75 `T` after it first saw the revision (so at least 0.75 `T` after the write, after the
//!   holder stopped counting on it, and at most `T` after the write: a dead holder's duty passes within the
//!   lease time). A holder paused past its lease can still have writes in flight; the duty's own writes must
//!   be fenced (`crate::checkpoint::begin_term`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::time::Instant;

use crate::error::BusError;
use crate::streams::BucketClass;

/// The bucket of heartbeats and duty leases.
pub const NODES_BUCKET: &str = "halcyon_nodes";
/// Its stream (JetStream names a bucket's stream `KV_<bucket>`).
pub const NODES_STREAM: &str = "KV_halcyon_nodes";
/// Key prefix of heartbeats.
const NODE_KEY: &str = "node.";
/// Key prefix of duty leases.
const DUTY_KEY: &str = "duty.";

/// The bucket's configuration for `class` (the operator creates it: `halcyon streams apply`).
pub fn bucket_config(class: &BucketClass) -> kv::Config {
    kv::Config {
        bucket: NODES_BUCKET.to_owned(),
        description: "halcyon node heartbeats and duty leases".to_owned(),
        history: 1,
        max_value_size: 64 * 1024,
        storage: jetstream::stream::StorageType::File,
        num_replicas: class.replicas,
        placement: (!class.placement_tags.is_empty()).then(|| jetstream::stream::Placement {
            cluster: None,
            tags: class.placement_tags.clone(),
        }),
        ..Default::default()
    }
}

/// Opens the bucket (it must exist: a node never creates it).
pub async fn bucket(js: &jetstream::Context) -> Result<kv::Store, BusError> {
    js.get_key_value(NODES_BUCKET).await.map_err(|e| {
        BusError::js(
            format!("opening the key-value bucket {NODES_BUCKET} (an operator creates it with `halcyon streams apply --spec`)"),
            e,
        )
    })
}

/// What a node says about itself every heartbeat. No personal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    /// The node's instance (a UUID kept in its data folder): tells a restart of the same node from a
    /// second node with the same id.
    pub instance: String,
    /// The binary's version.
    pub version: String,
    /// What the node runs with, by part (policy, agencies, timescales, bank holidays, signals, binary): a
    /// digest of each, so that nodes that differ can say where.
    pub fingerprint: BTreeMap<String, String>,
    /// The last sequence projected, per stream.
    pub positions: BTreeMap<String, u64>,
    /// The node's clock minus the time NATS stored its last heartbeat, milliseconds (with the round trip's
    /// uncertainty); `None` before the first measurement.
    pub clock_offset_ms: Option<i64>,
    /// Where the node answers gRPC.
    pub listen: String,
    /// The duties it holds.
    pub duties: Vec<String>,
    /// The node's clock when it wrote this, Unix ms.
    pub sent_at_ms: i64,
}

/// A heartbeat as stored.
#[derive(Debug, Clone)]
pub struct StoredHeartbeat {
    pub heartbeat: Heartbeat,
    /// When NATS stored it, Unix ms (the server's clock).
    pub stored_ms: i64,
    pub revision: u64,
}

/// Why a node's entry could not be claimed or written.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(
        "node id {node_id:?} is in use by another live node (instance {instance}, last heartbeat at revision {revision}); give each node its own id (--node-id)"
    )]
    InUse {
        node_id: String,
        instance: String,
        revision: u64,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn stored_ms(entry: &kv::Entry) -> i64 {
    (entry.created.unix_timestamp_nanos() / 1_000_000) as i64
}

fn decode_heartbeat(entry: &kv::Entry) -> Option<Heartbeat> {
    serde_json::from_slice(&entry.value).ok()
}

/// A node's own entry in the bucket, written by compare-and-set.
#[derive(Debug)]
pub struct NodeEntry {
    kv: kv::Store,
    key: String,
    node_id: String,
    revision: u64,
}

impl NodeEntry {
    /// Claims `node.<id>` for `heartbeat.instance`. An entry left by an earlier run is taken over if it does
    /// not change for `quiet` (a live node rewrites it more often than that); one that changes belongs to a
    /// live node with the same id, and is refused.
    pub async fn claim(kv: kv::Store, heartbeat: &Heartbeat, quiet: Duration) -> Result<Self, EntryError> {
        let key = format!("{NODE_KEY}{}", heartbeat.node_id);
        let value = Bytes::from(serde_json::to_vec(heartbeat).expect("a heartbeat serialises"));
        let in_use = |e: &kv::Entry| EntryError::InUse {
            node_id: heartbeat.node_id.clone(),
            instance: decode_heartbeat(e).map_or_else(|| "unknown".into(), |h| h.instance),
            revision: e.revision,
        };
        let entry = kv
            .entry(&key)
            .await
            .map_err(|e| BusError::js(format!("reading {key}"), e))?;
        let revision = match entry {
            None => match kv.create(&key, value).await {
                Ok(r) => r,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let now = kv
                        .entry(&key)
                        .await
                        .map_err(|e| BusError::js(format!("reading {key}"), e))?;
                    return Err(now
                        .as_ref()
                        .map_or_else(|| BusError::js(format!("creating {key}"), e).into(), in_use));
                }
                Err(e) => return Err(BusError::js(format!("creating {key}"), e).into()),
            },
            Some(e) => {
                let theirs = decode_heartbeat(&e);
                let ours = theirs.as_ref().is_some_and(|h| h.instance == heartbeat.instance);
                if !ours && e.operation == kv::Operation::Put {
                    // Whoever wrote it last: a node that stopped, or one still running.
                    tokio::time::sleep(quiet).await;
                    let again = kv
                        .entry(&key)
                        .await
                        .map_err(|e| BusError::js(format!("reading {key}"), e))?;
                    if let Some(again) = again
                        && again.revision != e.revision
                    {
                        return Err(in_use(&again));
                    }
                }
                match kv.update(&key, value, e.revision).await {
                    Ok(r) => r,
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        return Err(in_use(&e));
                    }
                    Err(err) => return Err(BusError::js(format!("claiming {key}"), err).into()),
                }
            }
        };
        Ok(Self {
            kv,
            key,
            node_id: heartbeat.node_id.clone(),
            revision,
        })
    }

    /// Writes a heartbeat (compare-and-set on the last one this node wrote) and returns when NATS stored it,
    /// Unix ms. Fails with [`EntryError::InUse`] if another node wrote this node's key since.
    pub async fn beat(&mut self, heartbeat: &Heartbeat) -> Result<i64, EntryError> {
        let value = Bytes::from(serde_json::to_vec(heartbeat).expect("a heartbeat serialises"));
        match self.kv.update(&self.key, value.clone(), self.revision).await {
            Ok(r) => self.revision = r,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let now = self.kv.entry(&self.key).await.ok().flatten();
                // Our own earlier write, stored although its acknowledgement was lost: adopt it and write again.
                if let Some(entry) = &now
                    && decode_heartbeat(entry).is_some_and(|h| h.instance == heartbeat.instance)
                {
                    self.revision = self
                        .kv
                        .update(&self.key, value, entry.revision)
                        .await
                        .map_err(|e| BusError::js(format!("writing {}", self.key), e))?;
                    return self.stored_at_ms().await;
                }
                return Err(EntryError::InUse {
                    node_id: self.node_id.clone(),
                    instance: now
                        .as_ref()
                        .and_then(decode_heartbeat)
                        .map_or_else(|| "unknown".into(), |h| h.instance),
                    revision: now.map_or(0, |e| e.revision),
                });
            }
            Err(e) => return Err(BusError::js(format!("writing {}", self.key), e).into()),
        }
        self.stored_at_ms().await
    }

    /// When NATS stored this node's last write, Unix ms.
    async fn stored_at_ms(&self) -> Result<i64, EntryError> {
        let stored = self
            .kv
            .entry_for_revision(&self.key, self.revision)
            .await
            .map_err(|e| BusError::js(format!("reading {} back", self.key), e))?
            .ok_or_else(|| BusError::js(format!("reading {} back", self.key), "it is gone"))?;
        Ok(stored_ms(&stored))
    }
}

impl NodeEntry {
    /// Deletes the entry at a clean stop, so that the node's next start claims it at once.
    pub async fn leave(&self) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(error = %e, key = %self.key, "node entry not removed");
        }
    }
}

/// Every node's last heartbeat, by node id.
pub async fn heartbeats(kv: &kv::Store) -> Result<Vec<StoredHeartbeat>, BusError> {
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| BusError::js(format!("listing {NODES_BUCKET}"), e))?
        .try_collect()
        .await
        .map_err(|e| BusError::js(format!("listing {NODES_BUCKET}"), e))?;
    let mut out = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with(NODE_KEY)) {
        let Some(entry) = kv
            .entry(key)
            .await
            .map_err(|e| BusError::js(format!("reading {key}"), e))?
        else {
            continue;
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        if let Some(heartbeat) = decode_heartbeat(&entry) {
            out.push(StoredHeartbeat {
                stored_ms: stored_ms(&entry),
                revision: entry.revision,
                heartbeat,
            });
        }
    }
    out.sort_by(|a, b| a.heartbeat.node_id.cmp(&b.heartbeat.node_id));
    Ok(out)
}

/// Who holds a duty, as stored in its lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseHolder {
    pub node_id: String,
    pub instance: String,
    /// How long the lease lasts unless renewed, ms.
    pub ttl_ms: u64,
}

/// The current holder of `duty`, with the revision of its lease and when NATS stored it (Unix ms).
pub async fn duty_holder(kv: &kv::Store, duty: &str) -> Result<Option<(LeaseHolder, u64, i64)>, BusError> {
    let key = format!("{DUTY_KEY}{duty}");
    let entry = kv
        .entry(&key)
        .await
        .map_err(|e| BusError::js(format!("reading {key}"), e))?;
    Ok(entry.and_then(|e| {
        (e.operation == kv::Operation::Put)
            .then(|| serde_json::from_slice(&e.value).ok())
            .flatten()
            .map(|h| (h, e.revision, stored_ms(&e)))
    }))
}

/// A node that wants a duty: call [`Candidate::try_take`] every fraction of the lease time.
#[derive(Debug)]
pub struct Candidate {
    kv: kv::Store,
    key: String,
    me: LeaseHolder,
    ttl: Duration,
    /// The holder's lease revision last seen, when it was first seen, and the longer of the holder's and
    /// this node's lease times.
    seen: Option<(u64, Instant, Duration)>,
}

/// The lease on a duty, while held.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    value: Bytes,
    revision: u64,
    ttl: Duration,
    valid_until: Instant,
}

/// Why a lease was lost.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    #[error("another node took the lease of {key}")]
    Taken { key: String },
    #[error("the lease of {key} ran out before it could be renewed: {reason}")]
    Expired { key: String, reason: String },
}

impl Candidate {
    pub fn new(kv: kv::Store, duty: &str, node_id: &str, instance: &str, ttl: Duration) -> Self {
        Self {
            kv,
            key: format!("{DUTY_KEY}{duty}"),
            me: LeaseHolder {
                node_id: node_id.to_owned(),
                instance: instance.to_owned(),
                ttl_ms: ttl.as_millis() as u64,
            },
            ttl,
            seen: None,
        }
    }

    /// Takes the lease if nobody holds it, or if its holder has not renewed it for its whole time to live
    /// (measured here, from when this node first saw that revision). `Ok(None)`: someone else holds it.
    pub async fn try_take(&mut self) -> Result<Option<Lease>, BusError> {
        let value = Bytes::from(serde_json::to_vec(&self.me).expect("a lease serialises"));
        let entry = self
            .kv
            .entry(&self.key)
            .await
            .map_err(|e| BusError::js(format!("reading {}", self.key), e))?;
        let sent = Instant::now();
        let taken = match entry {
            None => match self.kv.create(&self.key, value.clone()).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(BusError::js(format!("creating {}", self.key), e)),
            },
            Some(e) => {
                let holder: Option<LeaseHolder> = serde_json::from_slice(&e.value).ok();
                let released = e.operation != kv::Operation::Put;
                let mine = holder.as_ref().is_some_and(|h| h.instance == self.me.instance);
                // A lease counts from when this node first saw its revision, for the longer of the two
                // times to live.
                let holder_ttl = holder
                    .as_ref()
                    .map_or(self.ttl, |h| Duration::from_millis(h.ttl_ms).max(self.ttl));
                let lapsed = match self.seen {
                    Some((revision, since, _)) if revision == e.revision => {
                        since.elapsed() >= holder_ttl.mul_f64(TAKE_AFTER)
                    }
                    _ => {
                        self.seen = Some((e.revision, Instant::now(), holder_ttl));
                        false
                    }
                };
                if released || mine || lapsed {
                    match self.kv.update(&self.key, value.clone(), e.revision).await {
                        Ok(r) => Some(r),
                        Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                        Err(err) => return Err(BusError::js(format!("taking {}", self.key), err)),
                    }
                } else {
                    None
                }
            }
        };
        Ok(taken.map(|revision| {
            self.seen = None;
            Lease {
                kv: self.kv.clone(),
                key: self.key.clone(),
                value,
                revision,
                ttl: self.ttl,
                valid_until: sent + self.held_for(),
            }
        }))
    }

    fn held_for(&self) -> Duration {
        self.ttl.mul_f64(HOLD_FOR)
    }

    /// How long to wait before the next [`Candidate::try_take`]: a quarter of the lease time, or less when
    /// the lease seen would lapse sooner (so that a dead holder's duty passes within the lease time).
    pub fn next_try_in(&self) -> Duration {
        let poll = self.ttl / 4;
        match self.seen {
            Some((_, since, ttl)) => ttl.mul_f64(TAKE_AFTER).saturating_sub(since.elapsed()).min(poll),
            None => poll,
        }
    }
}

/// A holder counts on its lease for this share of the lease time from before it wrote it.
const HOLD_FOR: f64 = 0.7;
/// A candidate takes a lease whose revision has not changed for this share of the lease time since it first
/// saw it. It reads every quarter of the lease time, so it first sees a revision at most 0.25 after it was
/// written: it takes over between 0.75 and 1.0 of the lease time after the last write, always after the
/// holder's 0.7 (with 5% to spare for monotonic clocks running at different rates).
const TAKE_AFTER: f64 = 0.75;

impl Lease {
    /// The lease's revision in the bucket (grows with every renewal).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether the lease is still held by this node's reckoning.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// How often to renew.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// Renews the lease by compare-and-set. A failure that leaves time on the lease is returned as
    /// `Ok(false)` (try again); one that shows the lease gone, or comes after it ran out, is `LeaseLost`.
    pub async fn renew(&mut self) -> Result<bool, LeaseLost> {
        let sent = Instant::now();
        match self.kv.update(&self.key, self.value.clone(), self.revision).await {
            Ok(r) => {
                self.revision = r;
                self.valid_until = sent + self.ttl.mul_f64(HOLD_FOR);
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(LeaseLost::Taken {
                key: self.key.clone(),
            }),
            Err(e) if !self.is_valid() => Err(LeaseLost::Expired {
                key: self.key.clone(),
                reason: e.to_string(),
            }),
            Err(_) => Ok(false),
        }
    }

    /// Gives the lease up (at a clean stop), so another node takes the duty at once.
    pub async fn release(self) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(error = %e, key = %self.key, "lease not released; it runs out instead");
        }
    }
}
