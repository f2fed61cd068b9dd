//! A throwaway three-server NATS JetStream cluster on loopback, for fault tests: kill, restart, pause
//! (SIGSTOP) and resume a server, fill a server's disk, and TLS on the client and route listeners.
//!
//! Each server runs from its own folder (config, log, JetStream store) under one temp dir, on three free
//! loopback ports (client, monitoring, route). The servers are named `halcyon-t{N}-{P}` (N = 0, 1, 2; P =
//! server 0's client port, so that parallel clusters are told apart in logs), tagged `az:zone-{N}` with
//! `unique_tag: "az:"` (an R3 stream puts one replica in each zone), and sync every write
//! (`sync_interval: always`). [`NatsCluster::start`] returns once every server answers `/healthz` with
//! `{"status":"ok"}` (which 2.15 reports only once the server is current with a JetStream meta leader) and
//! `/jsz` names a meta leader. Dropping the cluster kills every server.
//!
//! # Observed behaviour (nats-server 2.15.1, 2 cores, loopback)
//!
//! - Start: the three servers elect a meta leader and answer `/healthz` ok ~0.5 s after spawning.
//!   Before that `/healthz` answers 503 `{"status":"unavailable","error":"JetStream has not established
//!   contact with a meta leader"}`.
//! - SIGKILL of the meta leader: the other two keep answering `/healthz` ok for ~1.5-2 s, then
//!   `"JetStream is not current with the meta leader"` until a new meta leader is elected ~4.5-5 s after
//!   the kill. A killed server started again answers `/healthz` ok after ~1.5-3 s (`"JetStream has not
//!   established contact with a meta leader"`, then `"... is not current with the meta leader"` on the
//!   way), and its stream replicas are current by then.
//! - SIGKILL of an R3 stream's leader: publishes fail at once with `no stream found for given subject`
//!   (the request has no responders) for ~5 s, then the new leader acks them. SIGSTOP of the stream leader:
//!   publishes time out (`timed out: didn't receive ack in time`) for ~4 s (the paused server still holds
//!   the interest), then the new leader acks them. `tests/cluster.rs` prints the times it sees.
//! - Route pooling: `/routez` lists 4 route connections per remote (pool of 3 + one pinned to the system
//!   account), so 8 on each server of a healthy cluster, not 2.
//! - Full disk (the store filesystem, see below): the server logs `Critical write error: ... no space left
//!   on device` and `JetStream out of resources, will be DISABLED`, shuts JetStream down and answers
//!   `/healthz` with 503 `{"status":"unavailable","error":"JetStream not enabled (10076)"}`. It does not
//!   come back when the space is freed (watched for 40 s); a restart does, and it then catches up. One
//!   full server: the other two go on (if it led a stream, one publish times out and the others get
//!   `no stream found for given subject` until a new leader, ~5-7 s). All full: the first publish times
//!   out, every later one gets `no stream found for given subject`, until all restart; acknowledged
//!   messages survive. A block file's last page on tmpfs may still take a few small records after
//!   [`NatsCluster::fill_disk`], so the failure comes at the next write that needs a new page.
//!   `max_file_store` and a stream's `max_bytes` behave differently again: see `tests/disk_full.rs`.
//!
//! # Small disks
//!
//! With [`ClusterOptions::small_disk`], a server's JetStream store lives on a tmpfs of that size, mounted
//! without root in an unprivileged user + mount namespace. A holder process
//! (`unshare -rm sh -c 'mount -t tmpfs ... && exec cat'`) owns the namespace and the mount for the
//! lifetime of the cluster, so the store survives kill and restart of the server. The server itself runs
//! outside the namespace and reaches its store through the holder's `/proc/<pid>/root/<mountpoint>` (same
//! uid, so no privilege is needed). The holder reads its stdin, a pipe from this process, so it (and the
//! tmpfs) goes away even if the test process dies without running destructors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::nats::{Auth, free_port, nats_server_binary};

/// How long [`NatsCluster`] waits for a server (or the whole cluster) to become healthy before it panics.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How a [`NatsCluster`] is set up. `ClusterOptions::default()`: open auth, no TLS, `sync_interval:
/// always`, `max_file_store` 1 GiB, ordinary disks.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How clients authenticate (the deploy users of `deploy/nats/accounts.conf`, or open).
    pub auth: Auth,
    /// Put the JetStream store of the servers in [`small_disk_servers`](Self::small_disk_servers) on a tmpfs
    /// of this many bytes (see the module docs). Check [`NatsCluster::small_disk_supported`] first.
    pub small_disk: Option<u64>,
    /// Which servers get the small disk when [`small_disk`](Self::small_disk) is set; default all three.
    pub small_disk_servers: Vec<usize>,
    /// JetStream `max_file_store` in bytes. Keep it above `small_disk` to let the filesystem fill before
    /// JetStream's own limit is reached.
    pub max_file_store: u64,
    /// `sync_interval: always` (the deploy setting); `false` leaves the JetStream default.
    pub sync_always: bool,
    /// TLS on the client and route listeners, with dev certificates made by
    /// `deploy/nats/cluster/gen-dev-certs.sh` in the cluster's temp dir ([`NatsCluster::ca_file`]).
    pub tls: bool,
    /// With `tls`: also require a client certificate signed by the dev CA (`verify: true` on the client
    /// listener). Without it clients need only trust the CA (and authenticate as `auth` says).
    pub tls_verify_clients: bool,
    /// Do not tell clients of the other servers (`cluster { no_advertise: true }`): a client knows only the
    /// servers it was given, so a proxy in front of one server can partition it (see [`crate::TcpProxy`]).
    pub no_advertise: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            auth: Auth::Open,
            small_disk: None,
            small_disk_servers: vec![0, 1, 2],
            max_file_store: 1 << 30,
            sync_always: true,
            tls: false,
            tls_verify_clients: false,
            no_advertise: false,
        }
    }
}

/// The number of servers in a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

#[derive(Debug)]
struct SmallDisk {
    holder: Child,
    /// Keeps the holder alive: it exits when this pipe closes.
    _stdin: Option<ChildStdin>,
    /// The tmpfs mount point, as seen from outside the namespace (`/proc/<pid>/root/...`).
    mount: PathBuf,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    monitor_port: u16,
    route_port: u16,
    dir: PathBuf,
    config: PathBuf,
    store: PathBuf,
    child: Option<Child>,
    paused: bool,
    disk: Option<SmallDisk>,
}

impl Member {
    fn log_path(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// Three `nats-server` processes forming one JetStream cluster (see the module docs).
#[derive(Debug)]
pub struct NatsCluster {
    members: Vec<Member>,
    options: ClusterOptions,
    certs: Option<PathBuf>,
    // Last, so that the folder is removed after the servers are killed.
    dir: tempfile::TempDir,
}

/// Sends a signal to a process with `kill(1)` (the crate forbids unsafe code).
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A plain HTTP/1.0 GET on loopback: `(status code, body)`, or `None` if the server does not answer within
/// two seconds (not listening, or paused).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Whether a `/jsz` body's meta group lists `n` other peers, each current and online (the meta leader's
/// view).
fn peers_online(jsz: &str, n: usize) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(jsz) else {
        return false;
    };
    let Some(replicas) = value
        .get("meta_cluster")
        .and_then(|m| m.get("replicas"))
        .and_then(|r| r.as_array())
    else {
        return false;
    };
    replicas.len() == n
        && replicas.iter().all(|r| {
            r.get("current").and_then(|c| c.as_bool()) == Some(true)
                && r.get("offline").and_then(|o| o.as_bool()) != Some(true)
        })
}

/// The meta leader's name in a `/jsz` body, if it names one.
fn meta_leader_of(jsz: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(jsz).ok()?;
    let leader = value.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

enum Launch {
    Ready(NatsCluster),
    /// A port was taken between `free_port` and the server binding it.
    PortTaken(String),
}

impl NatsCluster {
    /// Starts a cluster with the default options and the given auth.
    pub fn start(auth: Auth) -> Self {
        Self::start_with(ClusterOptions {
            auth,
            ..ClusterOptions::default()
        })
    }

    /// Starts a cluster; returns once every server is healthy and a meta leader is elected (panics with
    /// every log after [`READY_TIMEOUT`]). If a port was taken by someone else in between, tries once more
    /// with fresh ports.
    pub fn start_with(options: ClusterOptions) -> Self {
        if options.small_disk.is_some() {
            assert!(
                Self::small_disk_supported(),
                "small_disk needs `unshare -rm` and tmpfs mounts in a user namespace, not available here"
            );
            assert!(
                options.small_disk_servers.iter().all(|&i| i < CLUSTER_SIZE),
                "small_disk_servers: indices are 0..{CLUSTER_SIZE}"
            );
        }
        match Self::launch(&options) {
            Launch::Ready(cluster) => cluster,
            Launch::PortTaken(first) => match Self::launch(&options) {
                Launch::Ready(cluster) => cluster,
                Launch::PortTaken(second) => panic!(
                    "nats cluster: a port was taken twice in a row\nfirst:\n{first}\nsecond:\n{second}"
                ),
            },
        }
    }

    fn launch(options: &ClusterOptions) -> Launch {
        let dir = tempfile::Builder::new()
            .prefix("halcyon-nats-cluster-")
            .tempdir()
            .expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..CLUSTER_SIZE)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let base = ports[0].0;
        let certs = options.tls.then(|| {
            let certs = dir.path().join("certs");
            let output = Command::new("bash")
                .arg(crate::workspace_root().join("deploy/nats/cluster/gen-dev-certs.sh"))
                .arg(&certs)
                .output()
                .expect("run deploy/nats/cluster/gen-dev-certs.sh");
            assert!(
                output.status.success(),
                "gen-dev-certs.sh failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            certs
        });
        let mut members = Vec::with_capacity(CLUSTER_SIZE);
        for (n, &(client_port, monitor_port, route_port)) in ports.iter().enumerate() {
            let sdir = dir.path().join(format!("s{n}"));
            std::fs::create_dir_all(&sdir).expect("server dir");
            let disk = match options.small_disk {
                Some(bytes) if options.small_disk_servers.contains(&n) => {
                    Some(mount_small_disk(&sdir.join("disk"), bytes))
                }
                _ => None,
            };
            let store = match &disk {
                Some(disk) => disk.mount.join("jetstream"),
                None => sdir.join("jetstream"),
            };
            members.push(Member {
                name: format!("halcyon-t{n}-{base}"),
                client_port,
                monitor_port,
                route_port,
                config: sdir.join("nats.conf"),
                dir: sdir,
                store,
                child: None,
                paused: false,
                disk,
            });
        }
        let mut cluster = Self {
            members,
            options: options.clone(),
            certs,
            dir,
        };
        for i in 0..CLUSTER_SIZE {
            cluster.write_config(i);
        }
        for i in 0..CLUSTER_SIZE {
            cluster.spawn(i);
        }
        match cluster.wait_ready() {
            Ok(()) => Launch::Ready(cluster),
            Err(logs) => Launch::PortTaken(logs),
        }
    }

    fn write_config(&self, i: usize) {
        let m = &self.members[i];
        let routes: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| format!("    \"nats-route://127.0.0.1:{}\"", o.route_port))
            .collect();
        let tls_block = |indent: &str, verify: bool| -> String {
            let certs = self.certs.as_ref().expect("certs");
            format!(
                "{indent}tls {{\n\
                 {indent}  cert_file: \"{}\"\n\
                 {indent}  key_file: \"{}\"\n\
                 {indent}  ca_file: \"{}\"\n\
                 {indent}  verify: {verify}\n\
                 {indent}  timeout: 2\n\
                 {indent}}}\n",
                certs.join("server.pem").display(),
                certs.join("server-key.pem").display(),
                certs.join("ca.pem").display(),
            )
        };
        let mut text = format!(
            "server_name: \"{name}\"\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{monitor}\n\
             server_tags: [\"az:zone-{i}\"]\n\
             max_payload: 1MB\n\
             jetstream {{\n\
             \x20 store_dir: \"{store}\"\n\
             {sync}\
             \x20 unique_tag: \"az:\"\n\
             \x20 max_file_store: {max}\n\
             }}\n\
             cluster {{\n\
             \x20 name: halcyon\n\
             \x20 listen: 127.0.0.1:{route}\n\
             \x20 routes: [\n{routes}\n  ]\n\
             {advertise}\
             {route_tls}\
             }}\n",
            name = m.name,
            client = m.client_port,
            monitor = m.monitor_port,
            store = m.store.display(),
            sync = if self.options.sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            },
            max = self.options.max_file_store,
            route = m.route_port,
            routes = routes.join("\n"),
            advertise = if self.options.no_advertise {
                "  no_advertise: true\n"
            } else {
                ""
            },
            route_tls = if self.certs.is_some() {
                tls_block("  ", true)
            } else {
                String::new()
            },
        );
        if self.certs.is_some() {
            text.push_str(&tls_block("", self.options.tls_verify_clients));
        }
        if self.options.auth == Auth::Deploy {
            // Includes resolve relative to the config file, so the accounts file sits beside it.
            let accounts = crate::workspace_root().join("deploy/nats/accounts.conf");
            std::fs::copy(&accounts, m.dir.join("accounts.conf")).expect("copy deploy/nats/accounts.conf");
            text.push_str("include \"accounts.conf\"\n");
        }
        std::fs::write(&m.config, text).expect("write nats config");
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "server {i} is already running");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_path())
            .expect("log file");
        writeln!(log, "=== halcyon-testkit: starting {} ===", m.name).ok();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&m.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        m.child = Some(child);
        m.paused = false;
    }

    /// Waits until all three are healthy and agree on a meta leader. `Err(logs)` if a server exited
    /// because a port was taken; panics on any other failure.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for i in 0..CLUSTER_SIZE {
                if let Some(status) = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    self.members[i].child = None;
                    let log = self.members[i].log();
                    if log.contains("address already in use") {
                        return Err(self.all_logs());
                    }
                    panic!(
                        "nats-server {i} exited with {status} while the cluster started\n{}",
                        self.all_logs()
                    );
                }
            }
            let healthy = (0..CLUSTER_SIZE).all(|i| self.healthy(i));
            // A stream placed before the meta leader has heard from every peer is refused ("no suitable
            // peers for placement, peer offline"): wait until all three name the same meta leader and the
            // leader's own /jsz shows the other two current and online.
            let seen: Vec<Option<String>> = (0..CLUSTER_SIZE).map(|i| self.meta_leader_seen_by(i)).collect();
            let agreed = seen[0]
                .as_ref()
                .filter(|l| seen.iter().all(|s| s.as_ref() == Some(*l)));
            if healthy
                && agreed
                    .and_then(|leader| self.index_of(leader))
                    .and_then(|i| self.monitor_get(i, "/jsz"))
                    .is_some_and(|(_, body)| peers_online(&body, CLUSTER_SIZE - 1))
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "nats cluster not ready within {READY_TIMEOUT:?}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn all_logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let health = http_get(m.monitor_port, "/healthz")
                .map(|(code, body)| format!("{code} {}", body.trim()))
                .unwrap_or_else(|| "no answer".into());
            out.push_str(&format!(
                "----- server {i} ({}) /healthz: {health}; log (last 80 lines of {}):\n{}\n",
                m.name,
                m.log_path().display(),
                tail(&m.log(), 80)
            ));
        }
        out
    }

    /// True if server `i` answers `/healthz` with `{"status":"ok"}`.
    pub fn healthy(&self, i: usize) -> bool {
        matches!(self.monitor_get(i, "/healthz"), Some((200, body)) if body.contains("\"ok\""))
    }

    /// Waits (up to [`READY_TIMEOUT`]) until server `i` answers `/healthz` ok; panics with every log if not.
    pub fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.members[i].child = None;
                panic!("nats-server {i} exited with {status}\n{}", self.all_logs());
            }
            assert!(
                self.members[i].child.is_some(),
                "wait_healthy({i}): server is not running"
            );
            if self.healthy(i) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {i} not healthy within {READY_TIMEOUT:?}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running, unpaused server answers `/healthz` ok.
    pub fn wait_all_healthy(&mut self) {
        for i in 0..CLUSTER_SIZE {
            if self.is_running(i) && !self.members[i].paused {
                self.wait_healthy(i);
            }
        }
    }

    /// GET `path` (e.g. `/jsz?streams=true`) on server `i`'s monitoring port: `(status code, body)`, or
    /// `None` if it does not answer within two seconds.
    pub fn monitor_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        http_get(self.members[i].monitor_port, path)
    }

    /// The JetStream meta leader as server `i` sees it (`/jsz` → `meta_cluster.leader`).
    pub fn meta_leader_seen_by(&self, i: usize) -> Option<String> {
        let (_, body) = self.monitor_get(i, "/jsz")?;
        meta_leader_of(&body)
    }

    /// The meta leader's name, as the first running, unpaused server that knows one reports it.
    pub fn meta_leader(&self) -> Option<String> {
        (0..CLUSTER_SIZE)
            .filter(|&i| self.is_running(i) && !self.members[i].paused)
            .find_map(|i| self.meta_leader_seen_by(i))
    }

    /// The index of the meta leader (see [`meta_leader`](Self::meta_leader)).
    pub fn meta_leader_index(&self) -> Option<usize> {
        let leader = self.meta_leader()?;
        self.index_of(&leader)
    }

    /// Waits (up to `timeout`) until the running servers agree on a meta leader other than a killed or
    /// paused server; returns its index.
    pub fn wait_meta_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let live: Vec<usize> = (0..CLUSTER_SIZE)
                .filter(|&i| self.is_running(i) && !self.members[i].paused)
                .collect();
            let seen: Vec<Option<String>> = live.iter().map(|&i| self.meta_leader_seen_by(i)).collect();
            if let Some(Some(first)) = seen.first()
                && seen.iter().all(|s| s.as_deref() == Some(first))
                && let Some(idx) = self.index_of(first)
                && live.contains(&idx)
            {
                return Some(idx);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the server called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// `nats://127.0.0.1:PORT` of each server (also with `tls`: pass `require_tls` to the client).
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every client URL, comma-joined (the form of a `--nats` seed list).
    pub fn seed_urls(&self) -> String {
        self.urls().join(",")
    }

    /// `http://127.0.0.1:PORT` of each server's monitoring endpoint.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.monitor_port))
            .collect()
    }

    /// The client port of server `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// The monitoring port of server `i`.
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.members[i].monitor_port
    }

    /// The route (cluster) port of server `i`.
    pub fn route_port(&self, i: usize) -> u16 {
        self.members[i].route_port
    }

    /// Each server's `server_name`.
    pub fn server_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Always 3.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn auth(&self) -> Auth {
        self.options.auth
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Server `i`'s log (every run, each started by a `=== halcyon-testkit: starting ... ===` line).
    pub fn log(&self, i: usize) -> String {
        self.members[i].log()
    }

    /// Server `i`'s folder: `nats.conf`, `nats.log`, and (unless it has a small disk) `jetstream/`.
    pub fn dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    /// Server `i`'s JetStream `store_dir`, as reachable from this process.
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.members[i].store
    }

    /// The cluster's temp dir (holds `s0`, `s1`, `s2` and, with `tls`, `certs`).
    pub fn root_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of server `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    fn cert(&self, file: &str) -> PathBuf {
        self.certs
            .as_ref()
            .expect("the cluster was started without tls")
            .join(file)
    }

    /// The dev CA certificate (PEM) that signed the servers' and the client certificate. Panics without
    /// `tls`.
    pub fn ca_file(&self) -> PathBuf {
        self.cert("ca.pem")
    }

    /// The client certificate (PEM, CN `halcyon-node`).
    pub fn client_cert(&self) -> PathBuf {
        self.cert("client.pem")
    }

    /// The client certificate's key (PEM, PKCS#8 EC P-256).
    pub fn client_key(&self) -> PathBuf {
        self.cert("client-key.pem")
    }

    /// Kills server `i` (SIGKILL: no clean shutdown); its store stays. No-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        m.paused = false;
    }

    /// Starts a killed server again on the same ports and store, and waits until it answers `/healthz` ok
    /// (which needs a meta leader among the running servers: two of three).
    pub fn start_again(&mut self, i: usize) {
        self.start_again_no_wait(i);
        self.wait_healthy(i);
    }

    /// Starts a killed server again without waiting (e.g. when the others are down too).
    pub fn start_again_no_wait(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Kills server `i` and starts it again ([`kill`](Self::kill) + [`start_again`](Self::start_again)).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_again(i);
    }

    /// Freezes server `i` with SIGSTOP: its sockets stay open but it answers nothing (a hung process, or
    /// a silent partition of that server from everyone).
    pub fn pause(&mut self, i: usize) {
        let pid = self.pid(i).expect("pause: server is not running");
        signal(pid, "STOP");
        // SIGSTOP reaches the process's threads a moment after `kill` returns; until every one has
        // stopped, the server may still answer. Wait until the kernel reports the process stopped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.members[i].paused = true;
    }

    /// Resumes a paused server with SIGCONT.
    pub fn resume(&mut self, i: usize) {
        let pid = self.pid(i).expect("resume: server is not running");
        signal(pid, "CONT");
        self.members[i].paused = false;
    }

    /// True if server `i`'s process runs (paused or not).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// True if server `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    /// True if this machine can give a server a small disk: `unshare -rm` (an unprivileged user + mount
    /// namespace) and a tmpfs mount inside it work. Checked once per process.
    pub fn small_disk_supported() -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            let Ok(dir) = tempfile::tempdir() else {
                return false;
            };
            Command::new("unshare")
                .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\""])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn small_disk(&self, i: usize) -> &SmallDisk {
        self.members[i]
            .disk
            .as_ref()
            .unwrap_or_else(|| panic!("server {i} has no small disk (ClusterOptions::small_disk)"))
    }

    fn ballast(&self, i: usize) -> PathBuf {
        self.small_disk(i).mount.join("ballast")
    }

    /// Fills server `i`'s small disk completely with a ballast file (beside the JetStream store, on the
    /// same tmpfs); returns the ballast's size in bytes. Call again to top it up after the server wrote
    /// more. Panics if the server has no small disk.
    ///
    /// What nats-server 2.15.1 then does is in the module docs ("Full disk") and `tests/disk_full.rs`.
    pub fn fill_disk(&self, i: usize) -> u64 {
        self.fill_disk_leaving(i, 0)
    }

    /// Fills server `i`'s small disk, then gives back `leave` bytes (so that the disk is nearly full);
    /// returns the ballast's size in bytes.
    pub fn fill_disk_leaving(&self, i: usize, leave: u64) -> u64 {
        let path = self.ballast(i);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut piece = chunk.len();
        // Write big chunks, then ever smaller ones, until not even one byte fits.
        while piece > 0 {
            match file.write(&chunk[..piece]) {
                Ok(0) => piece /= 2,
                Ok(n) => size += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => piece /= 2,
            }
        }
        let _ = file.sync_all();
        if leave > 0 {
            size = size.saturating_sub(leave);
            file.set_len(size).expect("shrink ballast");
        }
        size
    }

    /// Removes the ballast [`fill_disk`](Self::fill_disk) wrote on server `i`'s small disk.
    pub fn free_disk(&self, i: usize) {
        let path = self.ballast(i);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}: {e}", path.display()),
        }
    }

    /// Free bytes on server `i`'s small disk (`stat -f`), or `None` if it cannot tell.
    pub fn disk_free(&self, i: usize) -> Option<u64> {
        let mount = &self.small_disk(i).mount;
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(mount)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
        Some(parts.next()?? * parts.next()??)
    }

    /// True if server `i` has a small disk.
    pub fn has_small_disk(&self, i: usize) -> bool {
        self.members[i].disk.is_some()
    }
}

/// Mounts a tmpfs of `bytes` at `mountpoint` inside a new user + mount namespace held by a `cat` that
/// reads a pipe from this process; waits until the mount is visible through `/proc/<pid>/root`.
fn mount_small_disk(mountpoint: &Path, bytes: u64) -> SmallDisk {
    std::fs::create_dir_all(mountpoint).expect("mount point");
    let mut holder = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            // $0 = mount point, $1 = size. The marker says the mount is in place.
            "mount -t tmpfs -o size=\"$1\",mode=0700 tmpfs \"$0\" && : > \"$0/.mounted\" && exec cat >/dev/null",
        ])
        .arg(mountpoint)
        .arg(bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare");
    let stdin = holder.stdin.take();
    let relative = mountpoint.strip_prefix("/").unwrap_or(mountpoint);
    let mount = PathBuf::from(format!("/proc/{}/root", holder.id())).join(relative);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mount.join(".mounted").exists() {
        if let Ok(Some(status)) = holder.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("small disk: `unshare -rm ... mount -t tmpfs` exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "small disk: tmpfs not mounted in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    SmallDisk {
        holder,
        _stdin: stdin,
        mount,
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &mut self.members {
            if let Some(disk) = m.disk.as_mut() {
                disk._stdin.take();
                let _ = disk.holder.kill();
                let _ = disk.holder.wait();
            }
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`; Linux).
fn process_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name, which is in parentheses and may hold spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            })
            .is_none_or(|state| state == "T" || state == "t")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_leader_is_read_from_jsz() {
        let jsz = r#"{"server_id":"X","meta_cluster":{"name":"halcyon","leader":"halcyon-t1-4000","cluster_size":3}}"#;
        assert_eq!(meta_leader_of(jsz).as_deref(), Some("halcyon-t1-4000"));
        assert_eq!(
            meta_leader_of(r#"{"meta_cluster":{"name":"halcyon","leader":""}}"#),
            None
        );
        assert_eq!(meta_leader_of(r#"{"config":{}}"#), None);
    }
}
