//! The read models a node answers from, and rebuilding them online.
//!
//! Every call asks [`Live::get`] for the store in use. The tasks that write a store (projection, view
//! derivation, the flag-check index, the deadline timer, signal notices) run as one [`ReadSide`], so they
//! can be stopped and started on another store together.
//!
//! A store carries a stamp (`halcyon_projector::location`): the read models' format and the fingerprint of
//! the configuration it was derived with. A node whose store's stamp differs from its own (a newer build,
//! another policy, agency registry, timescales or signal rules) rebuilds online: it goes on answering from
//! the old store while a second store projects every stream from the beginning beside it; once the new
//! store has caught up with the old one, the node stops both writers, derives the last views, stamps and
//! flushes the new store, switches `CURRENT` to it (one atomic rename), answers from it and starts its
//! writers on it, and removes the old store. Killed at any moment, the node comes back answering from a
//! complete store: the old one (and rebuilds again) until the rename, the new one after it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use halcyon_projector::Projector;
use halcyon_projector::location::{self, Stamp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::metrics::Metrics;

/// The store in use: swapped once when an online rebuild finishes.
#[derive(Debug)]
pub struct Live {
    current: RwLock<Arc<Projector>>,
}

impl Live {
    pub fn new(projector: Arc<Projector>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(projector),
        })
    }

    /// The store in use now (a call keeps the one it started with).
    pub fn get(&self) -> Arc<Projector> {
        self.current.read().expect("live lock").clone()
    }

    fn set(&self, projector: Arc<Projector>) {
        *self.current.write().expect("live lock") = projector;
    }
}

/// The fingerprint a store's stamp carries: what the read models are derived with (the configuration's
/// fingerprint but the binary, whose effect on the store is its format, and the future tolerance).
pub fn fingerprint(config: &NodeConfig) -> String {
    fingerprint_of(&config.peers.fingerprint, config.future_tolerance_ms)
}

/// [`fingerprint`] from the configuration's parts and the future tolerance (what `halcyon rebuild` stamps
/// the store it makes with, so that a node started on it does not rebuild it again).
pub fn fingerprint_of(
    parts: &std::collections::BTreeMap<String, String>,
    future_tolerance_ms: i64,
) -> String {
    let tolerance = [
        b"future_tolerance_ms".as_slice(),
        &future_tolerance_ms.to_be_bytes(),
    ]
    .concat();
    crate::peers::fingerprint_digest(parts.iter().filter(|(p, _)| *p != "binary"), &tolerance)
}

/// Opens a store with the node's specifications (views, deadlines, signals, tolerance).
pub fn open(dir: &std::path::Path, config: &NodeConfig) -> Result<Projector, crate::node::NodeError> {
    let spec = halcyon_projector::ViewSpec::new(Arc::new(config.policy.clone()), &config.agencies);
    Ok(crate::node::open_read_models(dir, config.sled_cache_bytes)?
        .with_future_tolerance_ms(config.future_tolerance_ms)
        .with_schema_version_max(config.schema_version_max)
        .with_views(spec)
        .with_deadlines(halcyon_projector::DeadlineSpec::new(config.timescales.clone()))
        .with_signals(halcyon_projector::SignalSpec::new(
            config.signals.clone(),
            &config.agencies,
        )))
}

/// What a read side needs besides its store.
#[derive(Debug, Clone)]
pub struct Deps {
    pub js: jetstream::Context,
    pub halted: crate::ingest::Halted,
    pub events: crate::events::Events,
    pub metrics: Arc<Metrics>,
    pub clock: halcyon_projector::clock::Clock,
    pub membership: Arc<crate::peers::Membership>,
}

/// The tasks writing one store.
#[derive(Debug)]
pub struct ReadSide {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ReadSide {
    /// The node's writers on `projector`: projection, views, the flag-check index, the deadline timer and
    /// signal notices to watchers. Stopped by `shutdown` or [`ReadSide::stop`].
    pub fn start(projector: &Arc<Projector>, deps: &Deps, shutdown: &CancellationToken) -> Self {
        let token = shutdown.child_token();
        let mut tasks = Vec::new();
        // Subscribed before any derivation, so no signal is missed.
        if let Some(spec) = projector.signal_spec() {
            tasks.push(tokio::spawn(
                crate::signals::run(
                    spec.subscribe_notices(),
                    deps.events.clone(),
                    deps.metrics.clone(),
                    token.clone(),
                )
                .instrument(tracing::info_span!("signals")),
            ));
        }
        tasks.extend(Self::writers(projector, deps, &token));
        tasks.push(tokio::spawn(
            crate::deadlines::run(
                projector.clone(),
                deps.clock.clone(),
                deps.events.clone(),
                Some(deps.membership.clone()),
                deps.metrics.clone(),
                token.clone(),
            )
            .instrument(tracing::info_span!("deadlines")),
        ));
        Self { token, tasks }
    }

    /// Only what fills a store from the streams (projection, views, the flag-check index), telling nobody:
    /// the writers of a store being rebuilt beside the one in use.
    fn rebuilding(projector: &Arc<Projector>, deps: &Deps, shutdown: &CancellationToken) -> Self {
        let token = shutdown.child_token();
        let quiet = Deps {
            halted: Arc::default(),
            events: crate::events::channel(),
            metrics: Arc::new(Metrics::new(&crate::metrics::BuildInfo::new(
                "rebuild",
                &Default::default(),
            ))),
            ..deps.clone()
        };
        let tasks = Self::writers(projector, &quiet, &token);
        Self { token, tasks }
    }

    fn writers(projector: &Arc<Projector>, deps: &Deps, token: &CancellationToken) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(
                crate::ingest::run(
                    deps.js.clone(),
                    projector.clone(),
                    deps.halted.clone(),
                    deps.events.clone(),
                    deps.metrics.clone(),
                    token.clone(),
                )
                .instrument(tracing::info_span!("projection")),
            ),
            tokio::spawn(
                crate::access_index::run(deps.js.clone(), projector.clone(), token.clone())
                    .instrument(tracing::info_span!("access_index")),
            ),
            tokio::spawn(
                crate::ingest::derive_views(projector.clone(), token.clone())
                    .instrument(tracing::info_span!("views")),
            ),
        ]
    }

    /// Stops every task and waits for them (at most `grace`, then aborts them); whether they all ended in
    /// time. (A batch already handed to a blocking thread finishes; the projector's writer lock and
    /// checkpoints keep a later writer from applying anything twice.)
    pub async fn stop(self, grace: Duration) -> bool {
        self.token.cancel();
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let ended = tokio::time::timeout(grace, futures::future::join_all(self.tasks))
            .await
            .is_ok();
        if !ended {
            for a in aborts {
                a.abort();
            }
        }
        ended
    }
}

/// Ends the process here when `HALCYON_CRASH_AT` names this point: how the tests kill a node at an exact
/// moment of a rebuild (`rebuild:midway`, `swap:before-pointer`, `swap:after-pointer`), as SIGKILL would.
fn crash_point(name: &str) {
    if std::env::var("HALCYON_CRASH_AT").as_deref() == Ok(name) {
        eprintln!("HALCYON_CRASH_AT={name}: aborting here");
        std::process::abort();
    }
}

/// What an online rebuild works with.
#[derive(Debug)]
pub struct Rebuild {
    pub data_dir: PathBuf,
    pub config: NodeConfig,
    pub stamp: Stamp,
    pub live: Arc<Live>,
    pub read_side: Arc<tokio::sync::Mutex<Option<ReadSide>>>,
    pub deps: Deps,
    pub shutdown: CancellationToken,
}

/// How long the new store may take, once the old one's writers have stopped, to reach its positions.
const SWITCH_CATCH_UP_MAX: Duration = Duration::from_secs(60);

/// How often the rebuild compares the new store with the one in use.
const CATCH_UP_CHECK: Duration = Duration::from_millis(200);

impl Rebuild {
    /// Rebuilds beside the store in use and switches to the new store once it has caught up (see the
    /// module docs). Returns early, leaving the old store in use, at shutdown or on any failure.
    pub async fn run(self) {
        let name = format!(
            "{}.rebuild-{}",
            location::DEFAULT_STORE,
            halcyon_schema::clock::now_ms()
        );
        let dir = self.data_dir.join(&name);
        let fresh = match open(&dir, &self.config) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(error = %e, "online rebuild: cannot open a new store; answering from the old one");
                return;
            }
        };
        self.deps.metrics.rebuilding.set(1);
        tracing::warn!(store = %name, stamp = %self.stamp, "online rebuild started: the old read models answer meanwhile");
        let started = std::time::Instant::now();
        let writers = ReadSide::rebuilding(&fresh, &self.deps, &self.shutdown);
        let mut tick = tokio::time::interval(CATCH_UP_CHECK);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    // The unfinished store is removed at the next start, which rebuilds again.
                    writers.stop(Duration::from_secs(5)).await;
                    self.deps.metrics.rebuilding.set(0);
                    return;
                }
                _ = tick.tick() => {}
            }
            let old = self.live.get();
            let behind: Vec<(String, u64, u64)> = old
                .checkpoints()
                .into_iter()
                .filter_map(|(s, at)| {
                    let fresh_at = fresh.checkpoint(&s);
                    (fresh_at < at).then_some((s, fresh_at, at))
                })
                .collect();
            if !fresh.is_empty() && !behind.is_empty() {
                crash_point("rebuild:midway");
            }
            let index_behind = fresh.access_position().unwrap_or(0) < old.access_position().unwrap_or(0);
            if behind.is_empty() && !index_behind && !fresh.views_stale().unwrap_or(true) {
                break;
            }
        }
        // The switch. The old store's writers stop first, so it no longer moves; the new store's writers
        // then bring it to exactly where the old one stopped (never behind what a caller has seen), and
        // stop; calls answer from the old store meanwhile.
        let mut read_side = self.read_side.lock().await;
        if let Some(side) = read_side.take() {
            side.stop(Duration::from_secs(10)).await;
        }
        let old = self.live.get();
        let (target, target_index) = (old.checkpoints(), old.access_position().unwrap_or(0));
        let reached = async {
            loop {
                let behind = target.iter().any(|(s, at)| fresh.checkpoint(s) < *at)
                    || fresh.access_position().unwrap_or(0) < target_index;
                if !behind {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let reached = tokio::select! {
            r = tokio::time::timeout(SWITCH_CATCH_UP_MAX, reached) => r.is_ok(),
            _ = self.shutdown.cancelled() => false,
        };
        let writers_stopped = writers.stop(Duration::from_secs(10)).await;
        if !reached || !writers_stopped {
            if !self.shutdown.is_cancelled() {
                tracing::error!(
                    reached,
                    writers_stopped,
                    "online rebuild: the new store did not reach the old one's positions; answering from the old one (the next start rebuilds again)"
                );
                *read_side = Some(ReadSide::start(&old, &self.deps, &self.shutdown));
            }
            self.deps.metrics.rebuilding.set(0);
            return;
        }
        let finish = {
            let (fresh, stamp, now_ms) = (fresh.clone(), self.stamp.clone(), self.deps.clock.now_ms());
            tokio::task::spawn_blocking(move || {
                fresh.derive_all_views()?;
                // Breaches already due were announced when the old store recorded them: recorded here
                // without a word, as `halcyon rebuild` does, not announced again after the switch.
                fresh.record_all_breaches(now_ms)?;
                fresh.flush()?;
                fresh.set_stamp(&stamp)
            })
        };
        let finished = match finish.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let switched = finished.and_then(|()| {
            crash_point("swap:before-pointer");
            location::point_to(&self.data_dir, &name).map_err(|e| e.to_string())
        });
        if let Err(e) = switched {
            tracing::error!(error = %e, "online rebuild: cannot switch to the new store; answering from the old one");
            *read_side = Some(ReadSide::start(&old, &self.deps, &self.shutdown));
            self.deps.metrics.rebuilding.set(0);
            return;
        }
        crash_point("swap:after-pointer");
        self.live.set(fresh.clone());
        *read_side = Some(ReadSide::start(&fresh, &self.deps, &self.shutdown));
        drop(read_side);
        match location::remove_others(&self.data_dir) {
            Ok(removed) => tracing::info!(removed = ?removed, "old read models removed"),
            Err(e) => tracing::warn!(error = %e, "old read models not removed (the next start removes them)"),
        }
        self.deps.metrics.rebuilding.set(0);
        tracing::warn!(
            store = %name,
            secs = started.elapsed().as_secs_f64(),
            "online rebuild done: answering from the new read models"
        );
    }
}
