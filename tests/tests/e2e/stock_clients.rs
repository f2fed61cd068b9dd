//! Issue 13: clients we did not write. Stock Python clients (grpcio-reflection, nats-py, grpcio with
//! classes generated from proto/ by grpc_tools.protoc) against a real node: reflection lists the services
//! (the stock client speaks only v1alpha), a stock NATS publisher on its agency's inbox prefix gets its
//! acknowledgement, and the event reads back over gRPC. The clients live in a virtual environment of their
//! own (pinned in tests/python/requirements.txt, under target/); skipped, with a message, only where
//! Python is absent.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use halcyon_testkit::workspace_root;

/// A Python 3 on this machine, if there is one.
pub(crate) fn python() -> Option<PathBuf> {
    ["python3", "python"].into_iter().find_map(|name| {
        let ok = Command::new(name)
            .args([
                "-c",
                "import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| PathBuf::from(name))
    })
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `cmd` as [`run`] does, but kills it and fails naming what it printed if it has not finished within
/// `limit`: a client that waits for something that never comes must fail the test, not hang the suite.
pub(crate) fn run_within(cmd: &mut Command, limit: Duration) -> String {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Read both pipes while waiting, so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        None => panic!("{cmd:?} did not finish within {limit:?}; killed:\n{stdout}\n{stderr}"),
        Some(s) if !s.success() => panic!("{cmd:?} failed ({s}):\n{stdout}\n{stderr}"),
        Some(_) => stdout,
    }
}

/// Runs an outside client against `h` (its NATS URL and gRPC address in `HALCYON_NATS`, `HALCYON_GRPC`),
/// under [`run_within`] with `limit`, and reads the one JSON object it prints.
pub(crate) async fn run_client(h: &common::Harness, mut cmd: Command, limit: Duration) -> serde_json::Value {
    cmd.env("HALCYON_NATS", h.nats.url())
        .env("HALCYON_GRPC", h.node.addr.to_string());
    let stdout = tokio::task::spawn_blocking(move || run_within(&mut cmd, limit))
        .await
        .unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The virtual environment with the pinned clients, made once per requirements file.
/// Tests that need it at once wait for the one making it.
pub(crate) fn venv(python: &Path) -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = workspace_root();
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = target.join("python/stock-clients");
    let marker = dir.join("installed-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new(python).arg("-m").arg("venv").arg(&dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements));
    std::fs::write(&marker, &wanted).unwrap();
    dir
}

/// Python classes and gRPC stubs generated from proto/ by grpc_tools.protoc, in a temp dir.
pub(crate) fn generate(venv: &Path) -> tempfile::TempDir {
    let root = workspace_root();
    let generated = tempfile::tempdir().unwrap();
    let protos: Vec<PathBuf> = std::fs::read_dir(root.join("proto/halcyon/v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .args(&protos));
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_python_clients_reflect_publish_and_query() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python 3 on this machine; the stock-client test needs python3 with venv");
        return;
    };
    let venv = tokio::task::spawn_blocking(move || venv(&python)).await.unwrap();
    let root = workspace_root();
    let generated = generate(&venv);

    let h = common::Harness::start().await;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(root.join("tests/python/stock_clients.py"))
        .env("HALCYON_PY_OUT", generated.path());
    let out = run_client(&h, cmd, Duration::from_secs(180)).await;

    let services: Vec<&str> = out["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for wanted in [
        "halcyon.v1.QueryService",
        "halcyon.v1.AuditService",
        "halcyon.v1.DeadlineService",
        "halcyon.v1.SignalService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&wanted), "{wanted} not among {services:?}");
    }
    assert_eq!(out["published"]["stream"], "EVENTS_CSC_ROTHERHAM");
    // On the default inbox prefix the acknowledgement never arrives (deploy/README.md says so).
    assert_ne!(out["default_inbox"], "acknowledged", "{out}");
    let event_id = out["published"]["event_id"].as_str().unwrap();
    assert_eq!(out["view"]["given_name"], "Ada");
    assert!(
        out["view"]["event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == event_id),
        "the published event reads back: {out}"
    );
    // A flag check for an NHS number Halcyon does not know: no flag, no child id.
    assert_eq!(out["unknown_flag"]["child_id"], "");
    assert_eq!(out["unknown_flag"]["plan"], false);
    h.node.stop(Duration::from_secs(5)).await;
}
