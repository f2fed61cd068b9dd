//! A throwaway `nats-server` with JetStream (`sync_interval: always`) on a free loopback port in a temp
//! dir. Stopped on drop; can be restarted on the same store and port.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How clients authenticate to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authorization block: anyone may do anything (unit-style tests of the projector path).
    Open,
    /// `deploy/nats/accounts.conf`: one user per agency, node and operator users.
    Deploy,
}

/// Finds `nats-server`: `$HALCYON_NATS_SERVER`, then the project-local `.tools/bin`, then `PATH`; if none,
/// runs `deploy/install-nats-server.sh` to install the pinned release into `.tools/bin`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HALCYON_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let root = crate::workspace_root();
    let local = root.join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    if let Some(on_path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    }) && version_ok(&on_path)
    {
        return on_path;
    }
    let status = Command::new("bash")
        .arg(root.join("deploy/install-nats-server.sh"))
        .status()
        .expect("run deploy/install-nats-server.sh");
    assert!(
        status.success(),
        "deploy/install-nats-server.sh failed; put nats-server >= 2.12 on PATH"
    );
    local
}

/// `sync_interval: always` needs nats-server 2.12 or later.
fn version_ok(binary: &Path) -> bool {
    let Ok(out) = Command::new(binary).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (2, 12))
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A running `nats-server`. Dropping it kills the server and removes its store.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    auth: Auth,
}

impl NatsServer {
    /// Starts an open server (no users).
    pub fn start() -> Self {
        Self::start_with(Auth::Open, true)
    }

    /// Starts a server with the deploy users and permissions.
    pub fn start_with_auth() -> Self {
        Self::start_with(Auth::Deploy, true)
    }

    /// Starts a server; `sync_always = false` gives the JetStream default (for benchmarks and the
    /// refuse-to-start check).
    pub fn start_with(auth: Auth, sync_always: bool) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix("halcyon-nats-")
            .tempdir()
            .expect("temp dir");
        // A port found free can be taken (by another test's client, say) before the server binds it: then
        // the server exits saying so, and it is started again on other ports.
        for attempt in 1.. {
            let (port, monitor_port) = (free_port(), free_port());
            let config = dir.path().join("nats.conf");
            let store = dir.path().join("jetstream");
            let mut text = format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\nserver_name: halcyon-test-{port}\n\
                 max_payload: 1MB\njetstream {{\n  store_dir: \"{}\"\n{}}}\n",
                store.display(),
                if sync_always {
                    "  sync_interval: always\n"
                } else {
                    ""
                },
            );
            if auth == Auth::Deploy {
                // Includes resolve relative to the config file, so the accounts file sits beside it.
                let accounts = crate::workspace_root().join("deploy/nats/accounts.conf");
                std::fs::copy(&accounts, dir.path().join("accounts.conf"))
                    .expect("copy deploy/nats/accounts.conf");
                text.push_str("include \"accounts.conf\"\n");
            }
            std::fs::write(&config, text).expect("write nats config");
            let mut server = Self {
                child: None,
                port,
                monitor_port,
                dir,
                config,
                auth,
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
                }
                Err(log) => panic!("nats-server exited; log:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("nats-server exited; log:\n{log}");
        }
    }

    /// Starts the server; `Err` with its log if it exited instead of listening.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log file");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server greets a client (it enables JetStream before it listens).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("(exit {status})\n{}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start in 20 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring endpoint, e.g. `http://127.0.0.1:PORT`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn auth(&self) -> Auth {
        self.auth
    }

    /// The folder holding the server's config, log and JetStream store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL: no clean shutdown) and leaves its store in place.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a killed server again.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is already running");
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
