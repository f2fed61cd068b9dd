//! Issue 5: exactly once across crashes. While a scenario of 20,000+ events is published, the node process
//! is killed with SIGKILL at random moments (10 times) and restarted; at the end its export is
//! byte-identical to a fresh rebuild's, and every event is applied exactly once.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;

use common::{BIN, caught_up_within, export_live_and_rebuilt, free_port};
use futures::StreamExt;
use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect};
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use rand::{Rng, SeedableRng};

fn serve(nats: &NatsServer, data: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    common::apply_streams(nats);
    Command::new(BIN)
        .arg("serve")
        .args(common::LOCAL_STREAMS)
        .args([
            "--nats-url",
            &nats.url(),
            "--nats-monitor-url",
            &nats.monitor_url(),
        ])
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            "crash",
        ])
        .current_dir(workspace_root())
        .env("HALCYON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn sigkill(node: &mut Child) {
    node.kill().unwrap();
    node.wait().unwrap();
}

fn sigterm(node: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    node.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_at_random_moments_ends_byte_identical_to_a_rebuild() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (live, rebuilt, log) = (
        dir.path().join("live"),
        dir.path().join("rebuilt"),
        dir.path().join("node.log"),
    );
    let port = free_port();

    let scenario = Scenario::generate(
        &ScenarioConfig {
            children: 900,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let n_events = scenario.envelopes.len();
    assert!(n_events >= 20_000, "{n_events} events");

    let mut node = serve(&nats, &live, port, &log);
    let url = nats.url();
    let publishing = tokio::spawn(async move {
        let client = connect(&url, &Credentials::default(), "crash-test")
            .await
            .unwrap();
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                window: 256,
                ..Default::default()
            },
        );
        let mut last = std::collections::BTreeMap::new();
        let mut results = std::pin::pin!(publisher.publish_all(scenario.envelopes));
        while let Some(r) = results.next().await {
            let p = r.expect("published").position;
            last.insert(p.stream, p.sequence);
        }
        last
    });

    let seed = rand::random::<u64>();
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills_while_publishing = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        kills_while_publishing += usize::from(!publishing.is_finished());
        sigkill(&mut node);
        node = serve(&nats, &live, port, &log);
    }
    let last = publishing.await.unwrap();
    eprintln!("{n_events} events published; {kills_while_publishing} of 10 SIGKILLs landed while publishing");
    assert!(
        kills_while_publishing >= 3,
        "only {kills_while_publishing} kills landed while publishing"
    );
    caught_up_within(port, &last, Duration::from_secs(300)).await;
    sigterm(&mut node);

    let (a, b) = export_live_and_rebuilt(&nats.url(), &live, &rebuilt, dir.path());
    let count = |prefix: &str| a.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        count("F "),
        n_events,
        "every event projected once: no lost or doubled facts"
    );
    assert_eq!((count("Q "), count("D ")), (0, 0));
    assert!(
        a == b,
        "the live export differs from the rebuild's ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    // Some kills land while a node is still starting (before it serves): crash moments too.
    let served = std::fs::read_to_string(&log)
        .unwrap()
        .matches("halcyon node serving")
        .count();
    eprintln!("{served} of 11 node processes reached serving before they were killed or stopped");
}
