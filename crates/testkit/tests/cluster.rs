//! The three-server cluster harness and the TCP proxy against real nats-server processes: an R3 stream
//! survives the kill of its leader, a paused server, TLS clients, a silent partition, a full disk.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use halcyon_testkit::{Auth, ClusterOptions, NatsCluster, NatsServer, TcpProxy};

const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(urls: Vec<String>) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(urls)
        .await
        .expect("connect")
}

fn context(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    js
}

async fn create_r3(js: &jetstream::Context, name: &str, subject: &str) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("create R3 stream")
}

async fn publish_once(js: &jetstream::Context, subject: &str) -> Result<u64, String> {
    match js.publish(subject.to_owned(), "x".into()).await {
        Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Publishes until the first ack (or `DEADLINE`); returns the sequence, the time it took and the errors
/// seen on the way.
async fn publish_until_acked(js: &jetstream::Context, subject: &str) -> (u64, Duration, Vec<String>) {
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        match publish_once(js, subject).await {
            Ok(seq) => return (seq, start.elapsed(), errors),
            Err(e) => errors.push(e),
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no ack within {DEADLINE:?}: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_leader(stream: &mut stream::Stream) -> Option<String> {
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// Waits until the stream has a leader and every replica is current; returns the leader.
async fn wait_stream_current(stream: &mut stream::Stream) -> String {
    let start = Instant::now();
    loop {
        if let Ok(info) = stream.info().await
            && let Some(cluster) = &info.cluster
            && let Some(leader) = &cluster.leader
            && cluster.replicas.len() == 2
            && cluster.replicas.iter().all(|p| p.current && !p.offline)
        {
            return leader.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "stream replicas not current within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_survives_the_kill_of_its_leader() {
    let mut cluster = NatsCluster::start(Auth::Open);
    assert_eq!(cluster.len(), 3);
    let names = cluster.server_names();
    let port = cluster.port(0);
    assert_eq!(
        names,
        (0..3).map(|n| format!("halcyon-t{n}-{port}")).collect::<Vec<_>>()
    );
    assert_eq!(cluster.seed_urls(), cluster.urls().join(","));
    assert!(
        cluster
            .monitor_urls()
            .iter()
            .all(|u| u.starts_with("http://127.0.0.1:"))
    );
    for i in 0..3 {
        assert!(cluster.dir(i).join("nats.conf").exists());
        let (_, routez) = cluster.monitor_get(i, "/routez").expect("routez");
        let routez: serde_json::Value = serde_json::from_str(&routez).unwrap();
        let mut remotes: Vec<&str> = routez["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["remote_name"].as_str())
            .collect();
        remotes.sort_unstable();
        remotes.dedup();
        assert_eq!(remotes.len(), 2, "server {i} routes to both others");
        let (_, jsz) = cluster.monitor_get(i, "/jsz").expect("jsz");
        let jsz: serde_json::Value = serde_json::from_str(&jsz).unwrap();
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3);
        assert_eq!(jsz["config"]["sync_always"], true);
        assert_eq!(jsz["config"]["unique_tag"], "az:");
    }
    assert!(cluster.meta_leader_index().is_some());

    let js = context(connect(cluster.urls()).await);
    let mut stream = create_r3(&js, "FAULTS", "faults.>").await;
    assert_eq!(publish_until_acked(&js, "faults.a").await.0, 1);
    let leader = wait_stream_current(&mut stream).await;
    let victim = cluster.index_of(&leader).unwrap();

    cluster.kill(victim);
    assert!(!cluster.is_running(victim));
    let (seq, took, errors) = publish_until_acked(&js, "faults.a").await;
    eprintln!("killed stream leader {leader}: next ack after {took:?}; errors on the way: {errors:?}");
    assert_eq!(seq, 2);
    let new_leader = stream_leader(&mut stream).await.expect("a new stream leader");
    assert_ne!(new_leader, leader);

    let start = Instant::now();
    cluster.start_again(victim);
    eprintln!("server {victim} healthy again {:?} after start", start.elapsed());
    wait_stream_current(&mut stream).await;
    eprintln!("stream replicas current {:?} after start", start.elapsed());
    assert_eq!(publish_until_acked(&js, "faults.a").await.0, 3);
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    assert!(
        cluster
            .log(victim)
            .matches("=== halcyon-testkit: starting")
            .count()
            == 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stream_leader_is_replaced_and_rejoins() {
    let mut cluster = NatsCluster::start(Auth::Open);
    let mut admin = {
        let js = context(connect(cluster.urls()).await);
        create_r3(&js, "PAUSE", "pause.>").await;
        js.get_stream("PAUSE").await.unwrap()
    };
    let leader = wait_stream_current(&mut admin).await;
    let paused = cluster.index_of(&leader).unwrap();
    // A client connected to a paused server would hang until its ping interval notices; talk to the others.
    let others: Vec<String> = (0..3).filter(|&i| i != paused).map(|i| cluster.url(i)).collect();
    let js = context(connect(others).await);
    let mut stream = js.get_stream("PAUSE").await.unwrap();
    assert_eq!(publish_until_acked(&js, "pause.a").await.0, 1);

    cluster.pause(paused);
    assert!(cluster.is_paused(paused) && cluster.is_running(paused));
    assert!(
        cluster.monitor_get(paused, "/healthz").is_none(),
        "a stopped process answers nothing"
    );
    let (seq, took, errors) = publish_until_acked(&js, "pause.a").await;
    eprintln!("paused stream leader {leader}: next ack after {took:?}; errors on the way: {errors:?}");
    assert_eq!(seq, 2);

    cluster.resume(paused);
    cluster.wait_healthy(paused);
    wait_stream_current(&mut stream).await;
    assert_eq!(publish_until_acked(&js, "pause.a").await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_deploy_users() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        auth: Auth::Deploy,
        tls: true,
        tls_verify_clients: true,
        ..ClusterOptions::default()
    });
    for i in 0..3 {
        let (_, varz) = cluster.monitor_get(i, "/varz").unwrap();
        let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
        assert_eq!(varz["tls_required"], true, "client listener requires TLS");
        assert_eq!(varz["tls_verify"], true, "client listener verifies certificates");
        assert_eq!(
            varz["cluster"]["tls_required"], true,
            "routes use TLS: {}",
            varz["cluster"]
        );
    }
    let operator = || {
        async_nats::ConnectOptions::new()
            .user_and_password("operator".into(), "operator-dev-secret".into())
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(1)
    };
    let client = operator()
        .add_root_certificates(cluster.ca_file())
        .add_client_certificate(cluster.client_cert(), cluster.client_key())
        .require_tls(true)
        .connect(cluster.urls())
        .await
        .expect("TLS client with a client certificate connects");
    let js = context(client);
    create_r3(&js, "TLS", "tls.>").await;

    let no_cert = operator()
        .add_root_certificates(cluster.ca_file())
        .require_tls(true)
        .connect(cluster.url(0))
        .await;
    assert!(no_cert.is_err(), "a client without a certificate is refused");
    let plain = operator().connect(cluster.url(0)).await;
    assert!(plain.is_err(), "a plain-text client is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_certificates() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    });
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(cluster.ca_file())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(cluster.urls())
        .await
        .expect("TLS client trusting the dev CA connects");
    let js = context(client);
    create_r3(&js, "TLS", "tls.>").await;
    assert_eq!(publish_until_acked(&js, "tls.a").await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_proxy_is_a_silent_partition() {
    let server = NatsServer::start();
    let proxy = TcpProxy::start(("127.0.0.1", server.port()));
    let client = connect(vec![proxy.url()]).await;
    let js = context(client.clone());
    js.create_stream(stream::Config {
        name: "PROXY".into(),
        subjects: vec!["proxy.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(publish_once(&js, "proxy.a").await, Ok(1));
    assert_eq!(proxy.connections(), 1);

    proxy.stall();
    let err = publish_once(&js, "proxy.a").await.unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected,
        "the client does not notice a silent partition"
    );
    assert_eq!(proxy.connections(), 1);

    proxy.heal();
    // The publish that timed out was stored once the bytes flowed again.
    let (seq, _, _) = publish_until_acked(&js, "proxy.a").await;
    assert_eq!(seq, 3);

    proxy.cut();
    let (seq, took, _) = publish_until_acked(&js, "proxy.a").await;
    eprintln!("after cut: reconnected and acked in {took:?}");
    assert_eq!(seq, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_disables_jetstream_on_that_server_until_restarted() {
    if !NatsCluster::small_disk_supported() {
        eprintln!("SKIPPED: small disks need `unshare -rm` with tmpfs mounts in user namespaces");
        return;
    }
    let mut cluster = NatsCluster::start_with(ClusterOptions {
        small_disk: Some(8 << 20),
        ..ClusterOptions::default()
    });
    assert!((0..3).all(|i| cluster.has_small_disk(i)));
    assert!(cluster.disk_free(0).unwrap() > 7 << 20);
    let js = context(connect(cluster.urls()).await);
    let mut stream = create_r3(&js, "DISK", "disk.>").await;
    assert_eq!(publish_until_acked(&js, "disk.a").await.0, 1);
    let leader = wait_stream_current(&mut stream).await;
    let full = (cluster.index_of(&leader).unwrap() + 1) % 3;

    let ballast = cluster.fill_disk(full);
    assert!(ballast > 7 << 20, "ballast {ballast}");
    assert_eq!(cluster.disk_free(full), Some(0));
    // The full server fails at its next write that needs a new page (a block file's last page may still
    // take a few small records), disables JetStream, and the two others go on as a quorum.
    let start = Instant::now();
    let mut acked = 1;
    while cluster.healthy(full) {
        assert!(start.elapsed() < DEADLINE, "the full server stays healthy");
        let ack = js.publish("disk.a", vec![0u8; 4096].into()).await.unwrap();
        assert_eq!(ack.await.expect("the quorum acks").sequence, acked + 1);
        acked += 1;
    }
    eprintln!(
        "full disk on server {full}: JetStream disabled after {acked} messages, {:?}",
        start.elapsed()
    );
    let (code, body) = cluster.monitor_get(full, "/healthz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("JetStream not enabled (10076)"), "{body}");
    let log = cluster.log(full);
    assert!(log.contains("no space left on device"), "{log}");
    assert!(
        log.contains("JetStream out of resources, will be DISABLED"),
        "{log}"
    );

    // Freeing the space is not enough: JetStream stays disabled until the server restarts.
    cluster.free_disk(full);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!cluster.healthy(full));
    cluster.restart(full);
    wait_stream_current(&mut stream).await;
    assert_eq!(publish_until_acked(&js, "disk.a").await.0, acked + 1);
    assert_eq!(stream.info().await.unwrap().state.messages, acked + 1);
}

#[test]
fn a_small_disk_on_one_server_only() {
    if !NatsCluster::small_disk_supported() {
        eprintln!("SKIPPED: small disks need `unshare -rm` with tmpfs mounts in user namespaces");
        return;
    }
    let cluster = NatsCluster::start_with(ClusterOptions {
        small_disk: Some(4 << 20),
        small_disk_servers: vec![2],
        ..ClusterOptions::default()
    });
    assert!(!cluster.has_small_disk(0) && !cluster.has_small_disk(1) && cluster.has_small_disk(2));
    assert!(cluster.store_dir(0).starts_with(cluster.dir(0)));
    assert!(cluster.store_dir(2).starts_with("/proc/"));
    let free = cluster.disk_free(2).unwrap();
    assert!(free > 3 << 20 && free <= 4 << 20, "{free}");
    // (The server may write a little in between: its meta layer shares the disk.)
    let ballast = cluster.fill_disk_leaving(2, 64 << 10);
    assert!(cluster.disk_free(2).unwrap() <= 64 << 10);
    let topped = cluster.fill_disk(2);
    assert!(topped > ballast && topped <= ballast + (64 << 10));
    assert_eq!(cluster.disk_free(2), Some(0));
    cluster.free_disk(2);
    assert!(cluster.disk_free(2).unwrap() > 3 << 20);
    assert!((0..3).all(|i| cluster.healthy(i)));
}
