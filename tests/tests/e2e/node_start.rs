//! A node checks the deployment before it serves: JetStream must sync every write on every server, and the
//! streams must be as the checked-in spec says. The node never changes a stream (its NATS user may not);
//! `halcyon streams apply --spec` (the operator) is the only writer of stream settings.

use crate::common;

use std::time::Duration;

use async_nats::jetstream;
use halcyon_bus::streams::{self, Provisioned};
use halcyon_bus::{Credentials, StreamSpec, connect};
use halcyon_node::Node;
use halcyon_testkit::{Auth, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_server_that_does_not_sync_every_write() {
    let nats = NatsServer::start_with(Auth::Deploy, false);
    let data = tempfile::tempdir().unwrap();
    let config = common::node_config(&nats, data.path());
    common::apply_streams(&config).await;
    let err = Node::start(config).await.unwrap_err();
    assert!(err.to_string().contains("sync_interval"), "{err}");

    let mut config = common::node_config(&nats, data.path());
    config.allow_unsynced_jetstream = true;
    let node = Node::start(config)
        .await
        .expect("starts with the explicit override");
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_policy_that_predates_the_signal_category() {
    // england-2026.2 (kept for reviews of its time) has no D14: a live node under it would decide signals
    // as exploitation records (D11), which the police receive.
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::node_config(&nats, data.path());
    config.policy = halcyon_policy::Policy::load(
        &halcyon_testkit::workspace_root().join("deploy/policy/england-2026.2.toml"),
    )
    .unwrap();
    let err = common::start_node(config).await.unwrap_err().to_string();
    assert!(
        err.contains("england-2026.2") && err.contains("no [category.D14]"),
        "{err}"
    );
}

async fn as_user(nats: &NatsServer, user: &str) -> jetstream::Context {
    let credentials = Credentials::user(
        user,
        &format!("{}-dev-secret", user.trim_start_matches("halcyon-")),
    );
    jetstream::new(connect(&nats.url(), &credentials, "test").await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_spec_is_idempotent_reconciles_and_refuses() {
    let nats = NatsServer::start_with_auth();
    let js = as_user(&nats, "operator").await;
    let agency = "police-sy".parse().unwrap();
    let spec = StreamSpec::single_server();
    let applied = streams::apply(&js, &spec, [&agency]).await.unwrap();
    assert_eq!(applied.len(), 4, "{applied:?}");
    assert_eq!(applied[3].0, halcyon_bus::nodes::NODES_STREAM);
    assert!(
        applied.iter().all(|(_, p)| *p == Provisioned::Created),
        "{applied:?}"
    );
    let again = streams::apply(&js, &spec, [&agency]).await.unwrap();
    assert!(
        again.iter().all(|(_, p)| *p == Provisioned::Unchanged),
        "{again:?}"
    );
    let mut wider = spec.clone();
    wider.events.duplicate_window_secs = 7200;
    let changed = streams::apply(&js, &wider, [&agency]).await.unwrap();
    match &changed[0] {
        (name, Provisioned::Updated(changes)) => {
            assert_eq!(name, "EVENTS_POLICE_SY");
            assert!(changes[0].starts_with("duplicate_window"), "{changes:?}");
        }
        other => panic!("expected an update, got {other:?}"),
    }
    // A stream someone created by hand without deny_delete (the server will not let it be turned on or off
    // later): applying the spec refuses to adopt it, naming the setting.
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS_SCHOOL_OAKWOOD".into(),
        subjects: vec!["halcyon.events.school-oakwood.>".into()],
        deny_purge: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = streams::apply(&js, &spec, [&"school-oakwood".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("setting deny_delete"), "{err}");
}

/// Must-show 5: a node whose spec the streams fall short of refuses to start, naming each difference, and
/// changes nothing (each stream's config is the same before and after); the node's NATS user cannot create,
/// update or delete a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_streams_short_of_the_spec_and_changes_nothing() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let operator = as_user(&nats, "operator").await;

    // Nothing applied yet: the node names the missing streams and creates none.
    let config = common::node_config(&nats, data.path());
    let err = Node::start(config.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("EVENTS_POLICE_SY: the stream does not exist"),
        "{err}"
    );
    assert!(err.contains("AUDIT: the stream does not exist"), "{err}");
    assert!(err.contains("halcyon streams apply --spec"), "{err}");
    assert!(
        halcyon_bus::list_event_streams(&operator)
            .await
            .unwrap()
            .is_empty()
    );

    // Applied with a weaker spec than the node's: a 60 s duplicate window on the events.
    let mut weaker = StreamSpec::single_server();
    weaker.events.duplicate_window_secs = 60;
    streams::apply(&operator, &weaker, config.agencies.iter().map(|a| &a.id))
        .await
        .unwrap();
    let before = configs(&operator).await;
    let err = Node::start(config.clone()).await.unwrap_err().to_string();
    let agencies = config.agencies.iter().count();
    assert!(
        err.contains(&format!("({agencies} difference(s))")),
        "one difference per agency stream: {err}"
    );
    assert!(
        err.contains("EVENTS_POLICE_SY: duplicate window 60 s is shorter than the spec's 3600 s"),
        "{err}"
    );
    // A node asked for three replicas on a one-copy deployment refuses too.
    let mut three = config.clone();
    three.streams = StreamSpec::replicated(3);
    let err = Node::start(three).await.unwrap_err().to_string();
    assert!(
        err.contains("AUDIT: replicas 1 is fewer than the spec's 3"),
        "{err}"
    );
    assert_eq!(
        configs(&operator).await,
        before,
        "a refusing node changed a stream"
    );

    // The node's own NATS user has no right to change a stream, whatever its code tried: the server
    // refuses each request as a permissions violation (which the client sees as no answer).
    let (client, violations) = halcyon_bus::connect_watching(
        &nats.url(),
        &Credentials::user("halcyon-node", "node-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let node_js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    let mut audit = before.iter().find(|c| c.name == "AUDIT").cloned().unwrap();
    audit.duplicate_window = Duration::from_secs(30);
    assert!(
        node_js.update_stream(audit).await.is_err(),
        "the node user updated a stream"
    );
    assert!(
        node_js.delete_stream("AUDIT").await.is_err(),
        "the node user deleted a stream"
    );
    assert!(
        node_js
            .create_stream(jetstream::stream::Config {
                name: "EVENTS_ROGUE".into(),
                subjects: vec!["halcyon.events.rogue.>".into()],
                ..Default::default()
            })
            .await
            .is_err(),
        "the node user created a stream"
    );
    for api in [
        "$JS.API.STREAM.UPDATE.AUDIT",
        "$JS.API.STREAM.DELETE.AUDIT",
        "$JS.API.STREAM.CREATE.EVENTS_ROGUE",
    ] {
        assert!(
            violations.about(api).is_some(),
            "no permissions violation reported for {api}: {:?}",
            violations.all()
        );
    }
    assert_eq!(configs(&operator).await, before);

    // Applied as the spec says, the node starts.
    streams::apply(&operator, &config.streams, config.agencies.iter().map(|a| &a.id))
        .await
        .unwrap();
    let node = Node::start(config).await.expect("starts once the streams match");
    node.stop(Duration::from_secs(5)).await;
}

/// Every stream's configuration as the server holds it, in name order.
async fn configs(js: &jetstream::Context) -> Vec<jetstream::stream::Config> {
    use futures::TryStreamExt;
    let mut names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        out.push(streams::stream_info(js, &name).await.unwrap().unwrap().config);
    }
    out
}
