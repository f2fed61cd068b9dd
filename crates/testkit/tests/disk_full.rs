//! What nats-server (2.15.1) does when storage runs out, pinned down so that an upgrade that changes it is
//! noticed. The slow cases are `#[ignore]`d (the testkit's own tests stay under a minute); run them with
//! `cargo test -p halcyon-testkit --test disk_full -- --ignored --nocapture`.
//!
//! Findings (see also the `cluster` module docs):
//! - A server whose store filesystem fills logs `Critical write error: ... no space left on device` and
//!   `JetStream out of resources, will be DISABLED`, shuts JetStream down, and answers `/healthz` with 503
//!   `{"status":"unavailable","error":"JetStream not enabled (10076)"}`. It does not come back when space is
//!   freed (watched for 40 s): it needs a restart, after which it catches up from the others.
//! - A stream whose leader's disk fills: the publish in flight times out, later ones fail at once with `no
//!   stream found for given subject` (no responders) until a new leader is elected among the others
//!   (~5-7 s), then publishes are acked again.
//! - All three full: the first publish times out (`timed out: didn't receive ack in time`), every later one
//!   fails at once with `no stream found for given subject` (the request has no responders). Every server
//!   that tried to write disabled JetStream (10076 as above); one that had nothing to write since keeps it
//!   but reports `JetStream stream '$G > NAME' is not current` (no quorum; in one run it answered ok again
//!   after the others' space was freed, while publishes still failed). Freeing space does not help;
//!   restarting all three does, and every acknowledged message is still there (the store recovers with
//!   `Stream state too short (0 bytes)` / `Recovering stream state from index errored: corrupt state file`
//!   warnings, then `Restored N messages`).
//! - Reaching `max_file_store` (JetStream's own limit, before the disk is full): the publish fails with
//!   `insufficient resources` (503, error code 10023), the server logs `JetStream file resource limits
//!   exceeded for server`, and the stream is left without a leader (`/healthz` on the others: `JetStream
//!   stream '$G > NAME' is not current: group node unhealthy`); later publishes fail with `no stream found
//!   for given subject`, a purge with `JetStream system temporarily unavailable` (10008). It did not recover
//!   in 30 s, nor after restarting the server that hit the limit (its store is still over the limit).
//! - A stream's own `max_bytes` with `discard: new` refuses cleanly: `maximum bytes exceeded` (503, error
//!   code 10077) for that publish only, the stream stays healthy, and raising `max_bytes` with a stream
//!   update lets publishes through again. So: sum of the streams' `max_bytes` < `max_file_store` < disk.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use halcyon_testkit::{ClusterOptions, NatsCluster};

async fn context(cluster: &NatsCluster, timeout: Duration) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connect(cluster.urls())
        .await
        .expect("connect");
    let mut js = jetstream::new(client);
    js.set_timeout(timeout);
    js
}

async fn publish(js: &jetstream::Context, bytes: usize) -> Result<u64, String> {
    match js.publish("disk.a", vec![7u8; bytes].into()).await {
        Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn leader_index(cluster: &NatsCluster, stream: &mut stream::Stream) -> Option<usize> {
    let info = stream.info().await.ok()?;
    cluster.index_of(info.cluster.as_ref()?.leader.as_ref()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_max_bytes_refuses_cleanly_and_can_be_raised() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        max_file_store: 4 << 20,
        ..ClusterOptions::default()
    });
    let js = context(&cluster, Duration::from_secs(2)).await;
    let mut config = stream::Config {
        name: "DISK".into(),
        subjects: vec!["disk.>".into()],
        num_replicas: 3,
        max_bytes: 1 << 20,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let mut stream = js.create_stream(config.clone()).await.unwrap();
    // A replicated stream just created may not take publishes until its group has elected a leader (seen
    // once on a loaded machine: "no stream found for given subject"); that is not the refusal looked for.
    let mut not_ready = 0;
    let error = loop {
        match publish(&js, 10_000).await {
            Ok(_) => {}
            Err(e) if e.contains("no stream found") && not_ready < 100 => {
                not_ready += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        error,
        "publish failed: maximum bytes exceeded (code 503, error code 10077)"
    );
    assert!(leader_index(&cluster, &mut stream).await.is_some());
    config.max_bytes = 2 << 20;
    js.update_stream(config).await.unwrap();
    publish(&js, 10_000).await.expect("fits after the raise");
    assert!((0..3).all(|i| cluster.healthy(i)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~35 s): documents nats-server's behaviour on full disks"]
async fn full_disks_disable_jetstream_until_restart() {
    if !NatsCluster::small_disk_supported() {
        eprintln!("SKIPPED: small disks need `unshare -rm` with tmpfs mounts in user namespaces");
        return;
    }
    let mut cluster = NatsCluster::start_with(ClusterOptions {
        small_disk: Some(8 << 20),
        ..ClusterOptions::default()
    });
    let js = context(&cluster, Duration::from_secs(2)).await;
    let mut stream = js
        .create_stream(stream::Config {
            name: "DISK".into(),
            subjects: vec!["disk.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    for seq in 1..=3 {
        assert_eq!(publish(&js, 1000).await, Ok(seq));
    }
    let mut acked;

    // The stream leader's disk fills: a new leader takes over.
    let leader = leader_index(&cluster, &mut stream).await.unwrap();
    cluster.fill_disk(leader);
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        match publish(&js, 4096).await {
            Ok(seq) => {
                acked = seq;
                if !cluster.healthy(leader) && !errors.is_empty() {
                    break;
                }
            }
            Err(e) => errors.push(e),
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{errors:?}");
    }
    eprintln!(
        "leader's disk full: acks again after {:?}, errors {errors:?}",
        start.elapsed()
    );
    assert_eq!(errors[0], "timed out: didn't receive ack in time");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("timed out") || e == "no stream found for given subject"),
        "{errors:?}"
    );

    // Every disk full: no writes at all.
    for i in 0..3 {
        cluster.fill_disk(i);
    }
    let mut errors = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match publish(&js, 4096).await {
            Ok(seq) => acked = seq,
            Err(e) => errors.push(e),
        }
        if errors.iter().any(|e| e.contains("no stream found")) {
            break;
        }
    }
    eprintln!("all disks full: errors {errors:?}");
    assert!(errors.iter().any(|e| e.contains("timed out")), "{errors:?}");
    assert_eq!(
        errors.last().map(String::as_str),
        Some("no stream found for given subject")
    );
    let start = Instant::now();
    while (0..3).any(|i| cluster.healthy(i)) {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut disabled = 0;
    for i in 0..3 {
        let (code, body) = cluster.monitor_get(i, "/healthz").unwrap();
        eprintln!("server {i}: /healthz {code} {body}");
        assert_eq!(code, 503);
        // A server that has not written since its disk filled keeps JetStream, but the stream has no quorum.
        if cluster
            .log(i)
            .contains("JetStream out of resources, will be DISABLED")
        {
            assert!(body.contains("JetStream not enabled (10076)"), "{body}");
            disabled += 1;
        } else {
            assert!(body.contains("is not current"), "{body}");
        }
    }
    assert!(disabled >= 2, "a majority lost JetStream");

    // Freeing the space does not bring JetStream back.
    for i in 0..3 {
        cluster.free_disk(i);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        publish(&js, 10).await,
        Err("no stream found for given subject".into())
    );
    for i in 0..3 {
        let health = cluster.monitor_get(i, "/healthz");
        eprintln!("10 s after freeing, server {i}: /healthz {health:?}");
        if cluster
            .log(i)
            .contains("JetStream out of resources, will be DISABLED")
        {
            let (_, body) = health.unwrap();
            assert!(body.contains("JetStream not enabled (10076)"), "{body}");
        }
    }

    // A restart does, with every acknowledged message.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_again_no_wait(i);
    }
    cluster.wait_all_healthy();
    let start = Instant::now();
    let seq = loop {
        if let Ok(seq) = publish(&js, 10).await {
            break seq;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(seq > acked, "acked {acked}, then {seq}");
    let state = stream.info().await.unwrap().state.clone();
    assert!(state.messages > acked, "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (~15 s): documents nats-server's behaviour at max_file_store"]
async fn reaching_max_file_store_leaves_the_stream_without_a_leader() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        max_file_store: 2 << 20,
        ..ClusterOptions::default()
    });
    let js = context(&cluster, Duration::from_secs(2)).await;
    js.create_stream(stream::Config {
        name: "DISK".into(),
        subjects: vec!["disk.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let error = loop {
        if let Err(e) = publish(&js, 10_000).await {
            break e;
        }
    };
    assert_eq!(
        error,
        "publish failed: insufficient resources (code 503, error code 10023)"
    );
    assert!((0..3).any(|i| {
        cluster
            .log(i)
            .contains("JetStream file resource limits exceeded for server")
    }));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        publish(&js, 10).await,
        Err("no stream found for given subject".into())
    );
    let unhealthy: Vec<String> = (0..3)
        .filter_map(|i| cluster.monitor_get(i, "/healthz"))
        .filter(|(code, _)| *code == 503)
        .map(|(_, body)| body)
        .collect();
    eprintln!("after 10 s: {unhealthy:?}");
    assert!(
        unhealthy
            .iter()
            .any(|b| b.contains("is not current: group node unhealthy")),
        "{unhealthy:?}"
    );
}
