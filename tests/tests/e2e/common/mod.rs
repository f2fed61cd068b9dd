//! Shared set-up for end-to-end tests: a real nats-server with the deploy users, a halcyon node on a free
//! loopback port with sled in a temp dir, agency publishers, and an authenticated gRPC client.
#![allow(dead_code, reason = "each test file uses part of the kit")]

use std::collections::BTreeMap;
use std::time::Duration;

use halcyon_bus::{Credentials, Position, Publisher, PublisherConfig, StreamSpec, connect};
use halcyon_grpc::pb::{self, query_service_client::QueryServiceClient};
use halcyon_node::{Node, NodeConfig, auth::Tokens};
use halcyon_policy::{Policy, Purpose};
use halcyon_schema::Registry;
use halcyon_testkit::{NatsServer, Scenario, workspace_root};
use tonic::transport::Channel;

pub fn registry() -> Registry {
    Registry::from_toml(&std::fs::read_to_string(workspace_root().join("deploy/agencies.toml")).unwrap())
        .unwrap()
}

pub fn node_config(nats: &NatsServer, data_dir: &std::path::Path) -> NodeConfig {
    let agencies = registry();
    let tokens = Tokens::load(&workspace_root().join("deploy/tokens.toml"), &agencies).unwrap();
    NodeConfig {
        nats_url: nats.url(),
        nats_credentials: Credentials::user("halcyon-node", "node-dev-secret"),
        nats_monitor_urls: vec![nats.monitor_url()],
        allow_unsynced_jetstream: false,
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        drain_delay: Duration::ZERO,
        drain_grace: Duration::from_secs(10),
        agencies,
        policy: Policy::load(&workspace_root().join("deploy/policy/england.toml")).unwrap(),
        tokens,
        tokens_path: None,
        node_id: "test-node".into(),
        peers: test_peers(),
        reflection: true,
        read_wait: Duration::from_secs(20),
        streams: StreamSpec::single_server(),
        concurrency_max: 256,
        lag_max: 10_000,
        tls: None,
        checkpoints: Some(dev_chain()),
        timescales: std::sync::Arc::new(halcyon_timescales::Timescales::england()),
        clock: halcyon_projector::clock::Clock::system(),
        signals: std::sync::Arc::new(halcyon_signals::SignalRules::england()),
        future_tolerance_ms: halcyon_schema::validate::CLOCK_TOLERANCE_MS,
        sled_cache_bytes: halcyon_projector::store::SLED_CACHE_BYTES_DEFAULT,
        schema_version_max: halcyon_schema::SCHEMA_VERSION,
    }
}

/// Quick heartbeats and a short lease, so that tests of several nodes run in seconds.
pub fn test_peers() -> halcyon_node::peers::PeersConfig {
    halcyon_node::peers::PeersConfig {
        heartbeat_every: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(3),
        ..Default::default()
    }
}

/// For a node whose test clock is moved days ahead on purpose (to let deadlines pass in a moment): no bound
/// on its distance from NATS time, so the clock guard lets it record breaches.
pub fn clock_unguarded() -> halcyon_node::peers::PeersConfig {
    halcyon_node::peers::PeersConfig {
        clock_skew_max: Duration::from_secs(100 * 365 * 86_400),
        ..test_peers()
    }
}

/// Applies the node's stream spec as an operator would (`halcyon streams apply --spec`): as the deploy
/// `operator` user where the node connects as a user, else on an open server.
pub async fn apply_streams(config: &NodeConfig) {
    let operator = match config.nats_credentials.user {
        Some(_) => Credentials::user("operator", "operator-dev-secret"),
        None => Credentials::default(),
    };
    let client = connect(&config.nats_url, &operator, "test operator")
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    halcyon_bus::streams::apply(&js, &config.streams, config.agencies.iter().map(|a| &a.id))
        .await
        .expect("streams applied");
}

/// Applies the streams (as the operator), then starts the node.
pub async fn start_node(config: NodeConfig) -> Result<Node, halcyon_node::node::NodeError> {
    apply_streams(&config).await;
    Node::start(config).await
}

/// The development checkpoint key (deploy/checkpoint-dev.key), checkpoints every 100 messages or 200 ms.
pub fn dev_chain() -> halcyon_node::chain::ChainConfig {
    let text = std::fs::read_to_string(workspace_root().join("deploy/checkpoint-dev.key")).unwrap();
    halcyon_node::chain::ChainConfig {
        every_messages: 100,
        every: Duration::from_millis(200),
        ..halcyon_node::chain::ChainConfig::new(halcyon_ledger::SigningKey::parse(&text).unwrap())
    }
}

/// A nats-server with the deploy users and a node in front of it.
pub struct Harness {
    pub nats: NatsServer,
    pub node: Node,
    pub data: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        let nats = NatsServer::start_with_auth();
        let data = tempfile::tempdir().unwrap();
        let node = start_node(node_config(&nats, data.path()))
            .await
            .expect("node starts");
        Self { nats, node, data }
    }

    pub async fn client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::connect(format!("http://{}", self.node.addr))
            .await
            .unwrap()
    }
}

/// Publishes each envelope as its own agency (deploy credentials); returns the last position per stream.
pub async fn publish_as_agencies(url: &str, envelopes: &[pb::Envelope]) -> Vec<Position> {
    let mut by_agency: BTreeMap<String, Vec<pb::Envelope>> = BTreeMap::new();
    for e in envelopes {
        by_agency.entry(e.agency_id.clone()).or_default().push(e.clone());
    }
    let mut last = BTreeMap::new();
    for (agency, envelopes) in by_agency {
        let client = connect(
            url,
            &Credentials::agency(&agency, &format!("{agency}-dev-secret")),
            "test",
        )
        .await
        .unwrap();
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                agency: Some(agency.parse().unwrap()),
                ..Default::default()
            },
        );
        for e in &envelopes {
            let p = publisher.publish(e, None).await.expect("published");
            last.insert(p.position.stream.clone(), p.position);
        }
    }
    last.into_values().collect()
}

/// JetStream as the deploy's operator user (reads every stream, as an auditor or a rebuild does).
pub async fn operator(nats: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(
        connect(
            &nats.url(),
            &Credentials::user("operator", "operator-dev-secret"),
            "test",
        )
        .await
        .unwrap(),
    )
}

/// Messages `stream` holds now.
pub async fn stream_messages(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

pub fn context(purpose: Purpose, after: &[Position]) -> pb::RequestContext {
    pb::RequestContext {
        purpose: purpose.to_pb() as i32,
        break_glass: false,
        break_glass_reason: String::new(),
        min_positions: after
            .iter()
            .map(|p| pb::Position {
                stream: p.stream.clone(),
                sequence: p.sequence,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub async fn find_by_nhs(
    client: &mut QueryServiceClient<Channel>,
    agency: &str,
    nhs: &str,
    purpose: Purpose,
    after: &[Position],
) -> Result<pb::ChildView, tonic::Status> {
    let request = pb::FindChildRequest {
        context: Some(context(purpose, after)),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
    };
    client
        .find_child(authorised(request, &format!("demo-{agency}")))
        .await
        .map(|r| r.into_inner())
}

pub fn subjects(s: &Scenario) -> Vec<String> {
    s.envelopes.iter().map(Scenario::subject).collect()
}

/// Waits (bounded) until the last checkpoint of `stream` covers `sequence`.
pub async fn wait_checkpointed(
    js: &async_nats::jetstream::Context,
    stream: &str,
    sequence: u64,
) -> halcyon_ledger::Checkpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(last)) = halcyon_bus::checkpoint::last_checkpoint(js, stream).await
            && last.checkpoint.to_sequence >= sequence
        {
            return last.checkpoint;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stream} not checkpointed up to {sequence} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seeded scenario (deploy agencies, default seed) for `n` children.
pub fn children(n: usize) -> Scenario {
    Scenario::generate(
        &halcyon_testkit::ScenarioConfig {
            children: n,
            ..Default::default()
        },
        &halcyon_testkit::ScenarioAgencies::deploy(),
    )
}

/// A standing watch of `token`'s agency (purpose safeguarding, from now).
pub async fn watch(
    client: &mut QueryServiceClient<Channel>,
    token: &str,
) -> tonic::Streaming<pb::WatchEvent> {
    client
        .watch(authorised(
            pb::WatchRequest {
                context: Some(context(Purpose::Safeguarding, &[])),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// How long the helpers below wait for something the node derives or sends.
pub const SETTLE_WAIT: Duration = Duration::from_secs(20);

/// A standing watch of `agency`'s demo principal on `node` (purpose safeguarding, from now).
pub async fn watch_as(node: &Node, agency: &str) -> tonic::Streaming<pb::WatchEvent> {
    let mut client = QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    watch(&mut client, &format!("demo-{agency}")).await
}

pub async fn next_event(watch: &mut tonic::Streaming<pb::WatchEvent>, what: &str) -> pb::WatchEvent {
    tokio::time::timeout(SETTLE_WAIT, futures::StreamExt::next(watch))
        .await
        .unwrap_or_else(|_| panic!("no {what} on the watch within {SETTLE_WAIT:?}"))
        .expect("the watch stays open")
        .expect("a watch event")
}

/// The next signal on a watch (skipping the facts and breaches it also carries), within `SETTLE_WAIT` overall.
pub async fn next_signal(watch: &mut tonic::Streaming<pb::WatchEvent>, what: &str) -> pb::Signal {
    let until = std::time::Instant::now() + SETTLE_WAIT;
    loop {
        assert!(
            std::time::Instant::now() < until,
            "no {what} on the watch within {SETTLE_WAIT:?}"
        );
        if let Some(pb::watch_event::Kind::Signal(s)) = next_event(watch, what).await.kind {
            return s;
        }
    }
}

/// Waits (bounded) until the node has derived every child's views, deadlines and signals.
pub async fn derived(node: &Node, after: &[Position]) {
    let wanted: Vec<(String, u64)> = after.iter().map(|p| (p.stream.clone(), p.sequence)).collect();
    node.projector().wait_for(&wanted, SETTLE_WAIT).await.unwrap();
    let until = std::time::Instant::now() + SETTLE_WAIT;
    while node.projector().views_stale().unwrap() {
        assert!(
            std::time::Instant::now() < until,
            "views derived within {SETTLE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Access records on the AUDIT stream now.
pub async fn audit_records(nats: &halcyon_testkit::NatsServer) -> Vec<pb::AccessRecord> {
    let js = operator(nats).await;
    let last = stream_messages(&js, "AUDIT").await;
    if last == 0 {
        return Vec::new();
    }
    let mut messages = halcyon_bus::ordered_messages(&js, "AUDIT", 1).await.unwrap();
    let mut records = Vec::new();
    for _ in 0..last {
        let m = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut messages))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        records.extend(halcyon_bus::audit::decode_records(&m.payload).unwrap());
    }
    records
}
