//! Shared by the CLI tests that drive the binary against a real node: running `halcyon`, and `halcyon serve`
//! as a child process on a free port with a temporary data folder.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_testkit::{NatsServer, workspace_root};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_halcyon");

/// Runs `halcyon` from the workspace root; commands that take a stream spec get the one-server spec
/// (deploy/streams-local.toml) unless their arguments name another.
pub fn halcyon(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(workspace_root())
        .env("HALCYON_LOG", "warn")
        .env("HALCYON_HEARTBEAT_SECS", "1")
        .env("HALCYON_LEASE_SECS", "3")
        .env("HALCYON_STREAMS_SPEC", "deploy/streams-local.toml")
        .env("HALCYON_OPERATOR", OPERATOR)
        .env("HALCYON_READ_REASON", READ_REASON)
        .output()
        .expect("run halcyon")
}

/// The operator every test's reads of child data are recorded under, and why.
pub const OPERATOR: &str = "test-operator-01";
pub const READ_REASON: &str = "integration test";

/// Runs halcyon, expecting success; returns standard output.
pub fn halcyon_ok(args: &[&str]) -> String {
    let out = halcyon(args);
    assert!(
        out.status.success(),
        "halcyon {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `halcyon streams apply --spec deploy/streams-local.toml`, as the deploy `operator` user on a server with
/// the deploy users: what an operator runs before a node starts (the node only checks the streams).
pub fn apply_streams(nats: &NatsServer) {
    let url = nats.url();
    let mut args = vec![
        "streams",
        "apply",
        "--spec",
        "deploy/streams-local.toml",
        "--nats-url",
        &url,
    ];
    if nats.auth() == halcyon_testkit::Auth::Deploy {
        args.extend([
            "--nats-user",
            "operator",
            "--credentials",
            "deploy/nats/dev-credentials.toml",
        ]);
    }
    halcyon_ok(&args);
}

/// The arguments that point `halcyon serve` at the one-server stream spec.
pub const LOCAL_STREAMS: [&str; 2] = ["--streams-spec", "deploy/streams-local.toml"];

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `halcyon serve` on a free port with a temporary data folder; stopped on drop.
pub struct Node {
    pub process: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
}

impl Node {
    pub fn start(nats: &NatsServer, node_id: &str) -> Node {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        apply_streams(nats);
        // Its log is `node.log` beside the data folder `node`.
        let process = serve_node(nats, &data.path().join("node"), port, node_id, &[], &[]);
        Node { process, port, data }
    }

    /// A client once the node answers (it provisions the streams before it listens); a node that exits
    /// first fails the test with its log.
    pub async fn client(&mut self) -> QueryServiceClient<Channel> {
        client_once_listening(self.port, &mut self.process, &self.data.path().join("node.log")).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `halcyon serve` on `port` with its data in `data` (kept across restarts), its log beside it
/// (`data.log`); as the node user on a server with the deploy users (`auth`), or anonymously on an open one.
pub fn serve_at(nats: &NatsServer, data: &Path, port: u16, node_id: &str, auth: bool) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    apply_streams(nats);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--streams-spec",
        "deploy/streams-local.toml",
        "--nats-url",
        &nats.url(),
        "--nats-monitor-url",
        &nats.monitor_url(),
    ]);
    if auth {
        cmd.args([
            "--nats-user",
            "halcyon-node",
            "--nats-password",
            "node-dev-secret",
        ]);
    }
    cmd.args([
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["--node-id", node_id])
    .current_dir(workspace_root())
    .env("HALCYON_LOG", "warn")
    .env("HALCYON_HEARTBEAT_SECS", "1")
    .env("HALCYON_LEASE_SECS", "3")
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap()
}

/// Stops a node as a service manager would (SIGTERM: it drains and flushes), killing it after 20 s.
pub fn stop(mut node: Child) {
    stop_mut(&mut node);
}

/// [`stop`], for a process held behind a guard.
pub fn stop_mut(node: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = node.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most two minutes) until the node on `port` has projected `wanted` (stream → sequence).
pub async fn caught_up(port: u16, wanted: &BTreeMap<String, u64>) {
    caught_up_within(port, wanted, Duration::from_secs(120)).await
}

/// Waits (at most `limit`) until the node on `port` has projected `wanted` (stream → sequence).
pub async fn caught_up_within(port: u16, wanted: &BTreeMap<String, u64>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        assert!(Instant::now() < deadline, "the node did not catch up");
        if let Ok(mut client) = QueryServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            let mut request = tonic::Request::new(halcyon_grpc::pb::GetPositionsRequest {});
            request
                .metadata_mut()
                .insert("authorization", "Bearer demo-operator".parse().unwrap());
            if let Ok(r) = client.get_positions(request).await {
                let have: BTreeMap<_, _> = r
                    .into_inner()
                    .positions
                    .into_iter()
                    .map(|p| (p.stream, p.sequence))
                    .collect();
                if wanted
                    .iter()
                    .all(|(s, q)| have.get(s).copied().unwrap_or(0) >= *q)
                {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exports the stopped node's read models in `live`, rebuilds a second copy from the streams into `rebuilt`
/// and exports that: returns both exports (live, rebuilt), written beside them in `dir`.
pub fn export_live_and_rebuilt(nats_url: &str, live: &Path, rebuilt: &Path, dir: &Path) -> (String, String) {
    export_live_and_rebuilt_with(&["--nats-url", nats_url], live, rebuilt, dir)
}

/// [`export_live_and_rebuilt`], the rebuild connecting with `nats` (URL, user, credentials…).
pub fn export_live_and_rebuilt_with(
    nats: &[&str],
    live: &Path,
    rebuilt: &Path,
    dir: &Path,
) -> (String, String) {
    let export = |data: &Path, name: &str| {
        let out = dir.join(name);
        let mut args = vec![
            "export",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(nats);
        halcyon_ok(&args);
        std::fs::read_to_string(&out).unwrap()
    };
    let live_export = export(live, "live.txt");
    let mut rebuild = vec!["rebuild"];
    rebuild.extend_from_slice(nats);
    rebuild.extend(["--data-dir", rebuilt.to_str().unwrap(), "--quiet"]);
    halcyon_ok(&rebuild);
    (live_export, export(rebuilt, "rebuilt.txt"))
}

/// Every agency stream's last sequence, as the deploy operator sees them (empty streams left out).
pub async fn stream_lasts(nats: &NatsServer) -> BTreeMap<String, u64> {
    halcyon_bus::streams::all_stream_infos(&operator_js(nats).await)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.config.name.starts_with("EVENTS_") && i.state.last_sequence > 0)
        .map(|i| (i.config.name, i.state.last_sequence))
        .collect()
}

/// `halcyon publish --scenario-children N --seed S`, each agency as its own NATS user; returns the same
/// scenario, generated here, to know its children.
pub fn publish_scenario(nats: &NatsServer, children: usize, seed: u64) -> halcyon_testkit::Scenario {
    let out = halcyon(&[
        "publish",
        "--nats-url",
        &nats.url(),
        "--scenario-children",
        &children.to_string(),
        "--seed",
        &seed.to_string(),
        "--credentials",
        "deploy/nats/dev-credentials.toml",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    halcyon_testkit::Scenario::generate(
        &halcyon_testkit::ScenarioConfig {
            seed,
            children,
            ..Default::default()
        },
        &halcyon_testkit::ScenarioAgencies::deploy(),
    )
}

/// `halcyon serve` as the deploy node user on `port`, its data in `data` (kept across restarts) and its log
/// appended to `data.log`, with `extra` arguments and `env` variables (heartbeats every second).
pub fn serve_node(
    nats: &NatsServer,
    data: &Path,
    port: u16,
    node_id: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    Command::new(BIN)
        .arg("serve")
        .args(LOCAL_STREAMS)
        .args([
            "--nats-url",
            &nats.url(),
            "--nats-user",
            "halcyon-node",
            "--nats-password",
            "node-dev-secret",
            "--nats-monitor-url",
            &nats.monitor_url(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            node_id,
        ])
        .args(extra)
        .current_dir(workspace_root())
        .env("HALCYON_LOG", "warn")
        .env("HALCYON_HEARTBEAT_SECS", "1")
        .env("HALCYON_LEASE_SECS", "3")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// JetStream as the deploy operator.
pub async fn operator_js(nats: &NatsServer) -> async_nats::jetstream::Context {
    let client = halcyon_bus::connect(
        &nats.url(),
        &halcyon_bus::Credentials::user("operator", "operator-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    async_nats::jetstream::new(client)
}

/// A client of the node on `port` once it listens (it checks the streams before it does); a node that exits
/// first fails the test with its log.
pub async fn client_once_listening(port: u16, node: &mut Child, log: &Path) -> QueryServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = QueryServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            return client;
        }
        if let Some(status) = node.try_wait().unwrap() {
            panic!(
                "the node exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the node did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The arguments that make a `halcyon` command connect as the deploy operator.
pub fn as_operator(nats: &NatsServer) -> Vec<String> {
    [
        "--nats-url",
        &nats.url(),
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The AUDIT stream's access records, decoded, in order.
pub async fn audit_records(js: &async_nats::jetstream::Context) -> Vec<halcyon_grpc::pb::AccessRecord> {
    use futures::StreamExt as _;
    use prost::Message as _;
    let last = js
        .get_stream("AUDIT")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    if last == 0 {
        return Vec::new();
    }
    let mut messages = std::pin::pin!(
        halcyon_bus::checkpoint::chain_messages(js, "AUDIT", 1, None)
            .await
            .unwrap()
    );
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        out.extend(
            halcyon_grpc::pb::AccessRecords::decode(m.payload.clone())
                .unwrap()
                .records,
        );
        if m.sequence >= last {
            break;
        }
    }
    out
}
