//! Prometheus for the tests: the pinned `promtool` and `prometheus` binaries (deploy/install-prometheus.sh
//! puts them in `.tools/bin`), a real Prometheus server scraping a node on loopback, and a plain HTTP GET
//! for a node's admin listener.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `promtool` or `prometheus`: from `.tools/bin` (installed by deploy/install-prometheus.sh, which runs if
/// neither there nor on PATH), else from PATH.
pub fn prometheus_binary(name: &str) -> PathBuf {
    let root = crate::workspace_root();
    let local = root.join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    if let Some(on_path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }) {
        return on_path;
    }
    let status = Command::new("bash")
        .arg(root.join("deploy/install-prometheus.sh"))
        .status()
        .expect("run deploy/install-prometheus.sh");
    assert!(
        status.success(),
        "deploy/install-prometheus.sh failed; put promtool and prometheus on PATH"
    );
    local
}

/// A GET over HTTP/1.0 (the admin listener and Prometheus' API): the status code and the body.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        conn,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// A Prometheus server on a free loopback port, scraping `targets` every second with `rules` loaded; its
/// store in a temporary folder. Dropping it kills it.
#[derive(Debug)]
pub struct PrometheusServer {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    pub fn start(targets: &[SocketAddr], rules: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::nats::free_port();
        let rules_copy = dir.path().join("alerts.yml");
        std::fs::copy(rules, &rules_copy).expect("copy the alert rules");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: halcyon\n    static_configs:\n      - targets: [{}]\n",
            rules_copy.display(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(prometheus_binary("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    /// Its log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
