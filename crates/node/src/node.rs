//! One halcyon node: connect to NATS as the node, check durability, provision streams, open the read
//! models, project, and serve gRPC until shut down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use halcyon_bus::{AuditWriter, connect};
use halcyon_grpc::pb::query_service_server::QueryServiceServer;
use halcyon_projector::Projector;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::ingest::{self, Lag};
use crate::limits::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};
use crate::query::Query;

/// Why a node could not start.
/// The node's limit on every call on its port, gRPC and FHIR alike.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Bus(#[from] halcyon_bus::BusError),
    #[error(transparent)]
    Projector(#[from] halcyon_projector::ProjectorError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("a stream went backwards: {0}")]
    WentBackwards(String),
    #[error(transparent)]
    Peers(#[from] halcyon_bus::nodes::EntryError),
}

/// A running node (for tests and the binary): where it listens, its read models, and how to stop it.
#[derive(Debug)]
pub struct Node {
    pub addr: SocketAddr,
    /// The read models in use (another store after an online rebuild).
    live: Arc<crate::read_models::Live>,
    /// The tasks writing the store in use.
    read_side: Arc<tokio::sync::Mutex<Option<crate::read_models::ReadSide>>>,
    pub lag: Lag,
    /// This node among its peers (heartbeat, clock offset, configuration differences).
    pub membership: Arc<crate::peers::Membership>,
    /// Where the admin listener (`/livez`, `/readyz`, `/metrics`) listens, if it runs.
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the node is ready, and why not (as `/readyz` answers).
    pub readiness: tokio::sync::watch::Receiver<crate::admin::Readiness>,
    /// Reloads the TLS material and the tokens file (SIGHUP, or a file changed).
    reloader: Arc<crate::reload::Reloader>,
    /// Cancelled when the drain begins: readiness and health turn, watches end UNAVAILABLE.
    draining: CancellationToken,
    /// Cancelled when the node stops taking calls (after the drain delay): new calls are refused UNAVAILABLE.
    closing: CancellationToken,
    /// Every call's admission: all of it free again means no call is in flight.
    admission: Arc<tokio::sync::Semaphore>,
    concurrency_max: usize,
    /// Cancelled once no call is in flight: the gRPC server closes its connections.
    grpc_stop: CancellationToken,
    /// Calls refused since closing.
    refused_closing: Arc<std::sync::atomic::AtomicU64>,
    drain_delay: Duration,
    drain_grace: Duration,
    /// The gRPC server: awaited (up to the grace) before anything it needs stops.
    grpc: JoinHandle<()>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the read models; if sled reports an error, moves the folder aside, says so, and starts afresh
/// (sled is a cache of the log: the projector rebuilds it from the streams).
pub fn open_read_models(dir: &Path, cache_bytes: u64) -> Result<Projector, NodeError> {
    match Projector::open_with_cache(dir, cache_bytes) {
        Ok(p) => Ok(p),
        Err(e) => {
            let aside = dir.with_extension(format!("corrupt-{}", halcyon_schema::clock::now_ms()));
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "read models cannot be opened; moving them aside and rebuilding from the streams"
            );
            std::fs::rename(dir, &aside).map_err(|io| {
                NodeError::Config(format!(
                    "cannot move {} aside to {}: {io}",
                    dir.display(),
                    aside.display()
                ))
            })?;
            Ok(Projector::open_with_cache(dir, cache_bytes)?)
        }
    }
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        // A policy file older than the signal rules' category would decide signals as the category it was
        // split out of (for reviews of its time, `Policy::decides_as`): never for live answers.
        let signal_category = config.signals.category();
        if config.policy.category(signal_category).is_none() {
            return Err(NodeError::Config(format!(
                "policy {} has no [category.{signal_category}], the category of the signal rules ({}): a node answers under a policy that decides signals as their own category",
                config.policy.version(),
                config.signals.version()
            )));
        }
        let client = connect(
            &config.nats_url,
            &config.nats_credentials,
            &format!("halcyon-node {}", config.node_id),
        )
        .await?;
        let js = jetstream::new(client.clone());
        // The node never changes a stream: it checks them against the spec and refuses to start on any
        // shortfall (an operator applies the spec).
        let streams =
            halcyon_bus::streams::verify(&js, &config.streams, config.agencies.iter().map(|a| &a.id)).await?;
        match halcyon_bus::streams::check_sync_everywhere(&config.nats_monitor_urls, &streams).await {
            Ok(servers) => tracing::info!(
                servers = ?servers.iter().map(|s| s.server_name.as_str()).collect::<Vec<_>>(),
                "every server holding a stream syncs each write"
            ),
            Err(e) if config.allow_unsynced_jetstream => {
                tracing::warn!(error = %e, "starting anyway (--allow-unsynced-jetstream): acknowledged events may be lost on power failure")
            }
            Err(e) if config.nats_monitor_urls.is_empty() => {
                return Err(NodeError::Config(format!(
                    "{e}: set nats_monitor_url (HALCYON_NATS_MONITOR_URL, every server's, comma-separated) so the node can check that JetStream syncs every write, or pass --allow-unsynced-jetstream"
                )));
            }
            Err(e) => return Err(e.into()),
        }

        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Config(format!("data dir {}: {e}", config.data_dir.display())))?;
        // A rebuild that did not finish, or an old store not yet removed after a switch, is removed; the
        // store `CURRENT` names is the one in use (`halcyon_projector::location`).
        match halcyon_projector::location::remove_others(&config.data_dir) {
            Ok(removed) if !removed.is_empty() => {
                tracing::warn!(removed = ?removed, "removed read models that were not in use (an unfinished rebuild, or replaced ones)")
            }
            Ok(_) => {}
            Err(e) => return Err(NodeError::Config(format!("read models: {e}"))),
        }
        let dir = halcyon_projector::location::active_dir(&config.data_dir)
            .map_err(|e| NodeError::Config(format!("read models: {e}")))?;
        let projector = Arc::new(crate::read_models::open(&dir, &config)?);
        // What this store was made with: a store from another build or configuration is rebuilt online.
        let stamp = halcyon_projector::location::Stamp::current(&crate::read_models::fingerprint(&config));
        let rebuild = match projector.stamp()? {
            Some(found) if found == stamp => false,
            None if projector.is_empty() && projector.access_position()? == 0 => {
                projector.set_stamp(&stamp)?;
                false
            }
            found => {
                tracing::warn!(
                    found = %found.map_or_else(|| "none (an older format)".to_owned(), |s| s.to_string()),
                    wanted = %stamp,
                    "these read models were made by another build or configuration: rebuilding them online"
                );
                true
            }
        };
        // A stream that went backwards behind this node's checkpoint is refused, not skipped.
        let mut behind = Vec::new();
        for stream in projector.checkpoints().keys() {
            if let Err(reason) = ingest::went_backwards(&js, &projector, stream).await? {
                behind.push(reason);
            }
        }
        if !behind.is_empty() {
            return Err(NodeError::WentBackwards(behind.join("; ")));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.listen,
            source,
        })?;
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                crate::admin::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
            ),
            None => None,
        };
        // Claimed before anything is written: a second live node with this id is refused here.
        let instance = crate::peers::instance_of(&config.data_dir).map_err(|e| {
            NodeError::Config(format!(
                "data dir {}: the node's instance id: {e}",
                config.data_dir.display()
            ))
        })?;
        let membership = crate::peers::Membership::join(
            &js,
            &config.node_id,
            instance,
            addr.to_string(),
            config.clock.clone(),
            config.peers.clone(),
        )
        .await?;
        let lag: Lag = Arc::new(Mutex::new(Default::default()));
        let halted: ingest::Halted = Arc::default();
        let shutdown = CancellationToken::new();
        let draining = CancellationToken::new();
        let closing = CancellationToken::new();
        let grpc_stop = CancellationToken::new();
        let admission = Arc::new(tokio::sync::Semaphore::new(config.concurrency_max));
        let refused_closing = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let metrics = Arc::new(crate::metrics::Metrics::new(&crate::metrics::BuildInfo::new(
            config.policy.version(),
            &membership.config().fingerprint,
        )));
        metrics.start_at_zero(
            config.timescales.rules().rules().iter().map(|r| r.id.as_str()),
            config.signals.rules().iter().map(|r| r.id.as_str()),
        );
        // Where every stream ends as the node starts, before it applies anything: the node is ready once it
        // has applied that far (and the first scrape already shows the backlog as lag).
        let at_start = match tokio::time::timeout(
            Duration::from_secs(5),
            halcyon_bus::streams::all_stream_infos(&js),
        )
        .await
        {
            Ok(Ok(infos)) => Some(
                infos
                    .iter()
                    .filter(|i| {
                        i.config
                            .name
                            .starts_with(halcyon_schema::subject::EVENTS_STREAM_PREFIX)
                    })
                    .map(|i| {
                        let name = i.config.name.clone();
                        let applied = projector.checkpoint(&name);
                        (name, (i.state.last_sequence, applied))
                    })
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
            _ => None,
        };
        let (readiness_tx, readiness) = tokio::sync::watch::channel(crate::admin::Readiness {
            reasons: vec!["starting: catching up".into()],
            streams: at_start.clone().unwrap_or_default(),
            ..Default::default()
        });
        let mut tasks = Vec::new();
        membership.beat(&projector).await?;
        let live = crate::read_models::Live::new(projector.clone());
        tasks.push(tokio::spawn(
            crate::peers::run(membership.clone(), live.clone(), shutdown.clone())
                .instrument(tracing::info_span!("peers")),
        ));
        let events = crate::events::channel();
        match &config.checkpoints {
            Some(chain) => tasks.push(tokio::spawn(
                crate::chain::run(js.clone(), chain.clone(), membership.clone(), shutdown.clone())
                    .instrument(tracing::info_span!("chains")),
            )),
            None => tracing::warn!("no checkpoint key configured: this node keeps no tamper-evidence chain"),
        }
        let deps = crate::read_models::Deps {
            js: js.clone(),
            halted: halted.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            clock: config.clock.clone(),
            membership: membership.clone(),
        };
        let read_side = Arc::new(tokio::sync::Mutex::new(Some(
            crate::read_models::ReadSide::start(&projector, &deps, &shutdown),
        )));
        if rebuild {
            tasks.push(tokio::spawn(
                crate::read_models::Rebuild {
                    data_dir: config.data_dir.clone(),
                    config: config.clone(),
                    stamp: stamp.clone(),
                    live: live.clone(),
                    read_side: read_side.clone(),
                    deps: deps.clone(),
                    shutdown: shutdown.clone(),
                }
                .run()
                .instrument(tracing::info_span!("rebuild")),
            ));
        }

        // TLS and the tokens, both reloaded without a restart (`Node::reload`).
        let tls = match &config.tls {
            Some(settings) => Some(Arc::new(
                crate::tls::ServerTls::new(settings.clone())
                    .map_err(|e| NodeError::Config(format!("tls: {e}")))?,
            )),
            None => None,
        };
        let auth = Arc::new(crate::auth::Authenticator::new(
            config.tokens.clone(),
            config.tokens_path.clone(),
            config.agencies.clone(),
            tls.clone(),
        ));
        let query = Query {
            projector: live.clone(),
            policy: Arc::new(config.policy.clone()),
            auth: auth.clone(),
            audit: AuditWriter::spawn(js.clone(), &config.node_id, {
                let metrics = metrics.clone();
                halcyon_bus::audit::AuditConfig {
                    observer: Some(Arc::new(move |report| metrics.audit_written(report))),
                    ..Default::default()
                }
            }),
            js: js.clone(),
            node_id: config.node_id.clone(),
            read_wait: config.read_wait,
            lag: lag.clone(),
            events: events.clone(),
            registry: Arc::new(config.agencies.clone()),
            admission: admission.clone(),
            views: Arc::default(),
            metrics: metrics.clone(),
            draining: draining.clone(),
            closing: closing.clone(),
            refused_closing: refused_closing.clone(),
        };
        let query_for_audit = query.clone();
        let signals = crate::signals::Signals { query: query.clone() };
        let deadlines = crate::deadlines::Deadlines {
            query: query.clone(),
            clock: config.clock.clone(),
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<QueryServiceServer<Query>>().await;
        tasks.push(tokio::spawn(
            watch_health(
                health_reporter,
                Watched {
                    js: js.clone(),
                    lag: lag.clone(),
                    halted: halted.clone(),
                    lag_max: config.lag_max,
                    projector: live.clone(),
                    peers: membership.subscribe(),
                    membership: membership.clone(),
                    readiness: readiness_tx,
                    draining: draining.clone(),
                    catch_up_to: at_start
                        .map(|streams| streams.into_iter().map(|(s, (last, _))| (s, last)).collect()),
                },
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("health")),
        ));
        // Reflection in both versions: grpcurl and most tools speak v1, stock Python clients only v1alpha.
        let reflection = config.reflection.then(|| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(halcyon_grpc::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .expect("the embedded descriptor set is valid")
        });
        let reflection_v1alpha = config.reflection.then(|| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(halcyon_grpc::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha()
                .expect("the embedded descriptor set is valid")
        });
        let fhir = crate::fhir::router(query.clone());
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health_service)
            .add_service(crate::routes::QueryRoutes::new(query))
            .add_service(
                halcyon_grpc::pb::audit_service_server::AuditServiceServer::new(
                    crate::access_log::AccessLog {
                        query: query_for_audit,
                        js: js.clone(),
                    },
                )
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(RESPONSE_BYTES_MAX),
            )
            .add_service(
                halcyon_grpc::pb::deadline_service_server::DeadlineServiceServer::new(deadlines)
                    .max_decoding_message_size(REQUEST_BYTES_MAX)
                    .max_encoding_message_size(RESPONSE_BYTES_MAX),
            )
            .add_service(
                halcyon_grpc::pb::signal_service_server::SignalServiceServer::new(signals)
                    .max_decoding_message_size(REQUEST_BYTES_MAX)
                    .max_encoding_message_size(RESPONSE_BYTES_MAX),
            );
        if let Some(reflection) = reflection {
            routes.add_service(reflection);
        }
        if let Some(reflection) = reflection_v1alpha {
            routes.add_service(reflection);
        }
        // The FHIR read of the flag (`crate::fhir`) shares the port, the TLS and the gate; it is plain
        // HTTP/1.1 as FHIR clients speak it, so the listener accepts HTTP/1.1 beside gRPC's HTTP/2.
        let routes: tonic::service::Routes = routes.routes().into_axum_router().merge(fhir).into();
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .timeout(CALL_TIMEOUT)
            .layer(crate::metrics::CallLayer {
                metrics: metrics.clone(),
            })
            .layer(tower::util::MapResponseLayer::new(
                crate::limits::oversized_is_resource_exhausted,
            ))
            .add_routes(routes);
        let stop = grpc_stop.clone();
        let serving_tls = tls.clone();
        let grpc = tokio::spawn(
            async move {
                let served = match serving_tls {
                    // Each connection's handshake uses the TLS configuration in force when it arrives.
                    Some(tls) => {
                        router
                            .serve_with_incoming_shutdown(
                                crate::tls::incoming(listener, tls),
                                stop.cancelled_owned(),
                            )
                            .await
                    }
                    None => {
                        // Without TCP_NODELAY a small response waits for the client's delayed ACK (~40 ms).
                        let incoming =
                            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                        router
                            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                            .await
                    }
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }
            .instrument(tracing::info_span!("grpc")),
        );
        let reloader = Arc::new(crate::reload::Reloader::new(
            auth.clone(),
            tls.clone(),
            metrics.clone(),
        ));
        tasks.push(tokio::spawn(
            reloader
                .clone()
                .watch_files(shutdown.clone())
                .instrument(tracing::info_span!("reload")),
        ));
        let admin_addr = match admin_listener {
            Some(listener) => {
                let admin_addr = listener.local_addr().map_err(|source| NodeError::Listen {
                    addr: config.admin_listen.unwrap_or(config.listen),
                    source,
                })?;
                tasks.push(tokio::spawn(
                    crate::admin::serve(
                        listener,
                        crate::admin::Admin {
                            metrics: metrics.clone(),
                            readiness: readiness.clone(),
                            js: js.clone(),
                            projector: live.clone(),
                            membership: membership.clone(),
                        },
                        shutdown.clone(),
                    )
                    .instrument(tracing::info_span!("admin")),
                ));
                Some(admin_addr)
            }
            None => None,
        };
        tracing::info!(%addr, admin = ?admin_addr, node = %config.node_id, policy = %config.policy.version(), "halcyon node serving");
        Ok(Node {
            reloader,
            addr,
            live,
            read_side,
            lag,
            membership,
            admin_addr,
            metrics,
            readiness,
            draining,
            closing,
            admission,
            concurrency_max: config.concurrency_max,
            grpc_stop,
            refused_closing,
            drain_delay: config.drain_delay,
            drain_grace: config.drain_grace,
            grpc,
            shutdown,
            tasks,
        })
    }

    /// The read models the node answers from now.
    pub fn projector(&self) -> Arc<Projector> {
        self.live.get()
    }

    /// Reads the TLS material and the tokens file again (what SIGHUP does): new connections and calls use
    /// them at once; on any problem what is in force stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        self.reloader.reload()
    }

    /// Drains and stops: readiness and health turn NOT_SERVING and open watches end UNAVAILABLE at once;
    /// calls are still answered for the drain delay (while load balancers notice), then new calls are
    /// refused UNAVAILABLE and those in flight have the drain grace to finish, then the gRPC server closes
    /// its connections; then projection and the node's duties stop (waiting at most `grace` more), the
    /// node leaves the nodes bucket and sled is flushed.
    pub async fn stop(self, grace: Duration) {
        self.draining.cancel();
        tracing::info!(
            delay = ?self.drain_delay,
            grace = ?self.drain_grace,
            "draining: not ready; watches ended"
        );
        tokio::time::sleep(self.drain_delay).await;
        // New calls are refused UNAVAILABLE (an answer a client retries elsewhere) while the connections stay
        // open, until no admitted call is in flight; only then does the server close its connections, so no
        // client's call is cut off by a closing connection.
        self.closing.cancel();
        let until = tokio::time::Instant::now() + self.drain_grace;
        let all = u32::try_from(self.concurrency_max).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(until, self.admission.acquire_many(all)).await {
            Err(_) => tracing::warn!("calls still in flight at the end of the drain grace; stopping anyway"),
            Ok(_all_free) => {
                // A client answered just before may send its next call now: it is refused too, and the
                // connections close once a moment passes with no call refused.
                loop {
                    let seen = self.refused_closing.load(std::sync::atomic::Ordering::Relaxed);
                    if tokio::time::timeout_at(until, tokio::time::sleep(DRAIN_QUIET))
                        .await
                        .is_err()
                        || self.refused_closing.load(std::sync::atomic::Ordering::Relaxed) == seen
                    {
                        break;
                    }
                }
            }
        }
        self.grpc_stop.cancel();
        if tokio::time::timeout_at(until + Duration::from_secs(1), self.grpc)
            .await
            .is_err()
        {
            tracing::warn!("the gRPC server did not close its connections in time; stopping anyway");
        }
        self.shutdown.cancel();
        // An online rebuild holds the writers while it switches; the shutdown ends it (bounded).
        match tokio::time::timeout(grace, self.read_side.lock()).await {
            Ok(mut side) => {
                if let Some(side) = side.take() {
                    side.stop(grace).await;
                }
            }
            Err(_) => {
                tracing::warn!("an online rebuild did not hand over the writers in time; stopping anyway")
            }
        }
        let _ = tokio::time::timeout(grace, futures::future::join_all(self.tasks)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.membership.leave()).await;
        match self.live.get().flush() {
            Ok(()) => tracing::info!("read models flushed; stopped"),
            Err(e) => tracing::error!(error = %e, "flushing read models at shutdown"),
        }
    }
}

/// What the health task watches.
struct Watched {
    js: jetstream::Context,
    lag: Lag,
    halted: ingest::Halted,
    lag_max: u64,
    projector: Arc<crate::read_models::Live>,
    peers: tokio::sync::watch::Receiver<crate::peers::PeersState>,
    membership: Arc<crate::peers::Membership>,
    readiness: tokio::sync::watch::Sender<crate::admin::Readiness>,
    draining: CancellationToken,
    /// Where each stream ended when the node started (`None`: it could not list them then).
    catch_up_to: Option<std::collections::BTreeMap<String, u64>>,
}

/// Keeps the gRPC health status and the admin listener's readiness true, looking every second: the query
/// service is NOT_SERVING while a stream lags by more than `lag_max` events, a stream went backwards, the
/// AUDIT stream cannot be written (queries would fail closed anyway) or the node drains. Readiness also
/// waits, after start, until every stream is applied up to where it ended when the node first looked, and
/// needs the nodes bucket reachable (duties known). Where the streams end is listed every `LIST_EVERY`
/// seconds (every second while catching up).
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    watched: Watched,
    shutdown: CancellationToken,
) {
    let Watched {
        js,
        lag,
        halted,
        lag_max,
        projector,
        mut peers,
        membership,
        readiness,
        draining,
        mut catch_up_to,
    } = watched;
    // The first look is the one taken at start; the next a second later.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut serving = Some(true);
    let mut damaged_seen = 0;
    reporter
        .set_service_status(READ_MODELS, ServingStatus::Serving)
        .await;
    let mut peers_seen: Option<(bool, bool)> = None;
    // Ready once every stream is applied as far as it ended when the node started (or first looked).
    let mut caught_up = false;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = peers.changed() => {}
            _ = draining.cancelled(), if serving != Some(false) || readiness.borrow().ready => {}
        }
        // Among peers: a clock beyond the bound (no breaches recorded) and a configuration that differs
        // from a live peer's are each shown under their own name; the node still answers.
        let state = peers.borrow_and_update().clone();
        let now = (
            state.clock_skewed,
            !state.differences.is_empty() || state.id_in_use,
        );
        if peers_seen != Some(now) {
            let status = |bad: bool| {
                if bad {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                }
            };
            reporter.set_service_status(CLOCK, status(now.0)).await;
            reporter.set_service_status(PEERS, status(now.1)).await;
            peers_seen = Some(now);
        }
        let projector = projector.get();
        // Unreadable records are set aside and fail nothing else: the node keeps serving, and says so under
        // its own name, for an operator to rebuild.
        let damaged = projector.damaged().len();
        if damaged != damaged_seen {
            let status = if damaged == 0 {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(READ_MODELS, status).await;
            tracing::warn!(
                damaged,
                "read-model records set aside as unreadable (halcyon quarantine lists them; rebuild to replace)"
            );
            damaged_seen = damaged;
        }
        // AUDIT is writable only while its stream has a leader (in a cluster: while a quorum of its replicas
        // is up and reachable); a request that does not come back within a second counts as not.
        let audit = tokio::time::timeout(
            Duration::from_secs(1),
            halcyon_bus::streams::stream_info(&js, halcyon_schema::subject::AUDIT_STREAM),
        )
        .await;
        let audit_ok = match audit {
            Ok(Ok(Some(info))) => writable(&info),
            _ => false,
        };
        // Where every agency stream ends: one listing of every stream, every `LIST_EVERY` ticks (each
        // second while catching up after start). On a cluster a listing asks every stream's leader, so it is
        // not done every second; between listings the lag is the last listing's end minus what this node
        // has applied since.
        ticks += 1;
        let mut reasons = Vec::new();
        let mut streams = std::collections::BTreeMap::new();
        if !caught_up || ticks.is_multiple_of(LIST_EVERY) {
            let listing = tokio::time::timeout(
                Duration::from_secs(1),
                halcyon_bus::streams::all_stream_infos(&js),
            )
            .await;
            match listing {
                Ok(Ok(infos)) => {
                    for info in infos {
                        let name = info.config.name.clone();
                        if name.starts_with(halcyon_schema::subject::EVENTS_STREAM_PREFIX) {
                            streams.insert(
                                name.clone(),
                                (info.state.last_sequence, projector.checkpoint(&name)),
                            );
                        }
                    }
                    if catch_up_to.is_none() {
                        catch_up_to = Some(streams.iter().map(|(s, (last, _))| (s.clone(), *last)).collect());
                    }
                }
                Ok(Err(e)) => reasons.push(format!("NATS: cannot list the streams: {e}")),
                Err(_) => reasons.push("NATS: the stream listing did not come back within 1 s".to_owned()),
            }
        }
        if streams.is_empty() {
            // Not listed this time: the last listing's ends, with what has been applied since.
            streams = readiness
                .borrow()
                .streams
                .iter()
                .map(|(s, (last, _))| (s.clone(), (*last, projector.checkpoint(s))))
                .collect();
        }
        {
            let mut lag = lag.lock().expect("lag lock");
            lag.clear();
            lag.extend(
                streams
                    .iter()
                    .map(|(s, (last, applied))| (s.clone(), last.saturating_sub(*applied))),
            );
        }
        let lagging: Vec<String> = lag
            .lock()
            .expect("lag lock")
            .iter()
            .filter(|(_, behind)| **behind > lag_max)
            .map(|(s, behind)| format!("{s} ({behind} behind)"))
            .collect();
        let went_back: Vec<String> = halted.lock().expect("halted lock").keys().cloned().collect();
        let ok = lagging.is_empty() && audit_ok && went_back.is_empty() && !draining.is_cancelled();
        if serving != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(QUERY_SERVICE, status).await;
            if ok {
                tracing::info!("healthy again: serving");
            } else {
                tracing::warn!(lagging = ?lagging, audit_writable = audit_ok, went_backwards = ?went_back, draining = draining.is_cancelled(), "not serving");
            }
            serving = Some(ok);
        }
        // Readiness: the same, and caught up since start, and duties known.
        if !caught_up && let Some(targets) = &catch_up_to {
            let behind: Vec<String> = targets
                .iter()
                .filter(|(s, last)| projector.checkpoint(s) < **last)
                .map(|(s, last)| {
                    format!(
                        "catching up since start: {s} applied to {} of {last}",
                        projector.checkpoint(s)
                    )
                })
                .collect();
            if behind.is_empty() {
                caught_up = true;
                tracing::info!("caught up since start");
            } else {
                reasons.extend(behind);
            }
        }
        if catch_up_to.is_none() && reasons.is_empty() {
            reasons.push("the streams have not been listed yet".to_owned());
        }
        reasons.extend(
            lagging
                .iter()
                .map(|l| format!("lagging beyond {lag_max} events: {l}")),
        );
        if !audit_ok {
            reasons.push(
                "AUDIT: not writable (no leader or no quorum): every query would fail closed".to_owned(),
            );
        }
        reasons.extend(
            went_back
                .iter()
                .map(|s| format!("{s}: went backwards; rebuild the read models")),
        );
        if !membership.duties_known() {
            reasons.push(
                "the nodes bucket: no heartbeat written lately, so who holds each duty is unknown".to_owned(),
            );
        }
        if draining.is_cancelled() {
            reasons.push("draining: stopping".to_owned());
        }
        let ready = reasons.is_empty();
        readiness.send_if_modified(|r| {
            let next = crate::admin::Readiness {
                ready,
                reasons: reasons.clone(),
                streams: streams.clone(),
            };
            if *r == next {
                false
            } else {
                if r.ready != ready {
                    if ready {
                        tracing::info!("ready");
                    } else {
                        tracing::warn!(reasons = ?reasons, "not ready");
                    }
                }
                *r = next;
                true
            }
        });
    }
}

/// Every how many health ticks (seconds) the node lists every stream, once caught up since start.
const LIST_EVERY: u64 = 5;

/// How long a drain waits with no call refused before it closes the connections.
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// A replica the stream's leader has not heard from for this long counts as gone: the leader itself notices
/// a lost quorum only after several seconds more, and meanwhile every write would fail.
const REPLICA_SILENCE_MAX: Duration = Duration::from_secs(3);

/// Whether a stream can take a write: it has a leader and, in a cluster, a majority of its replicas
/// (counting the leader) were heard from lately.
fn writable(info: &async_nats::jetstream::stream::Info) -> bool {
    let Some(cluster) = &info.cluster else {
        return true;
    };
    if cluster.leader.as_deref().is_none_or(str::is_empty) {
        return false;
    }
    let replicas = info.config.num_replicas.max(1);
    let heard = 1 + cluster
        .replicas
        .iter()
        .filter(|p| !p.offline && p.active <= REPLICA_SILENCE_MAX)
        .count();
    heard > replicas / 2
}

/// The query service's name for the health protocol.
const QUERY_SERVICE: &str = "halcyon.v1.QueryService";
/// The read models' name for the health protocol: NOT_SERVING while any record is set aside as unreadable
/// (the node still answers from the rest).
pub const READ_MODELS: &str = "halcyon.ReadModels";

/// The node's clock for the health protocol: NOT_SERVING while it is further from NATS time than the
/// bound (no deadline breach is recorded meanwhile).
pub const CLOCK: &str = "halcyon.Clock";
/// The node's peers for the health protocol: NOT_SERVING while a live peer runs with a different
/// configuration (`halcyon nodes` says what differs), or another node writes this node's entry (two live
/// nodes with one id).
pub const PEERS: &str = "halcyon.Peers";

/// Runs a node until `shutdown` completes (SIGTERM/SIGINT in the binary).
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    // Handled from before the start, so that a reload during a slow start does not end the process.
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| NodeError::Config(format!("SIGHUP handler: {e}")))?;
    let node = Node::start(config).await?;
    #[cfg(unix)]
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the TLS material and the tokens");
                    let _ = node.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    shutdown.await;
    tracing::info!("shutting down");
    node.stop(Duration::from_secs(10)).await;
    Ok(())
}
