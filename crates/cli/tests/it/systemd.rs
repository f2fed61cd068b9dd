//! Issue 18: the service units in deploy/systemd/ are ones systemd accepts. `systemd-analyze verify` reads
//! each unit as systemd would (every key known, every value parsed, the executables present); it prints a
//! line for each problem, so the check is its exit code and an empty output. The binaries' paths are
//! pointed at this build's `halcyon` and the test kit's `nats-server`.

use std::process::Command;

use halcyon_testkit::{nats_server_binary, workspace_root};

use crate::common::BIN;

#[test]
fn systemd_accepts_the_service_units() {
    let dir = tempfile::tempdir().unwrap();
    let units = workspace_root().join("deploy/systemd");
    let halcyon = std::fs::read_to_string(units.join("halcyon.service"))
        .unwrap()
        .replace("/usr/local/bin/halcyon", BIN)
        // The environment file is on the deployed host, not here.
        .replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/");
    let nats = std::fs::read_to_string(units.join("nats-server@.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/nats-server",
            nats_server_binary().to_str().unwrap(),
        );
    std::fs::write(dir.path().join("halcyon.service"), halcyon).unwrap();
    // A template is verified as one of its instances.
    std::fs::write(dir.path().join("nats-server@1.service"), nats).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "./halcyon.service", "./nats-server@1.service"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed for this test");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify failed: {said}");
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_stop_timeout_outlasts_the_drain() {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/halcyon.service")).unwrap();
    let env = std::fs::read_to_string(workspace_root().join("deploy/systemd/halcyon.env.example")).unwrap();
    let value = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} is not set"))
            .trim()
            .parse()
            .unwrap()
    };
    let drain = value(&env, "HALCYON_DRAIN_DELAY_SECS") + value(&env, "HALCYON_DRAIN_GRACE_SECS");
    let stop = value(&unit, "TimeoutStopSec");
    // The node also waits up to 10 s for projection to stop and 2 s to leave the nodes bucket.
    assert!(
        stop > drain + 12,
        "TimeoutStopSec={stop} must exceed the drain ({drain} s) and the shutdown after it"
    );
}
