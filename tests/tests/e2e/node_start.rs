//! Issue 3: a node refuses to start against a NATS server that does not sync every JetStream write, unless
//! told to; stream provisioning is idempotent, reconciles what it may and refuses what it must not change.

use crate::common;

use std::time::Duration;

use halcyon_bus::streams::Provisioned;
use halcyon_bus::{StreamSettings, ensure_event_stream};
use halcyon_node::Node;
use halcyon_testkit::{Auth, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_server_that_does_not_sync_every_write() {
    let nats = NatsServer::start_with(Auth::Deploy, false);
    let data = tempfile::tempdir().unwrap();
    let err = Node::start(common::node_config(&nats, data.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sync_interval"), "{err}");

    let mut config = common::node_config(&nats, data.path());
    config.allow_unsynced_jetstream = true;
    let node = Node::start(config)
        .await
        .expect("starts with the explicit override");
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_reconciles_and_refuses() {
    let nats = NatsServer::start_with_auth();
    let js = common::operator(&nats).await;
    let agency = "police-sy".parse().unwrap();
    let settings = StreamSettings::default();
    assert_eq!(
        ensure_event_stream(&js, &agency, &settings).await.unwrap(),
        Provisioned::Created
    );
    assert_eq!(
        ensure_event_stream(&js, &agency, &settings).await.unwrap(),
        Provisioned::Unchanged
    );
    let wider = StreamSettings {
        duplicate_window: Duration::from_secs(7200),
        ..settings.clone()
    };
    match ensure_event_stream(&js, &agency, &wider).await.unwrap() {
        Provisioned::Updated(changes) => assert!(changes[0].starts_with("duplicate_window"), "{changes:?}"),
        other => panic!("expected an update, got {other:?}"),
    }
    // A stream someone created by hand without deny_delete (the server will not let it be turned on or off
    // later): provisioning refuses to adopt it, naming the setting.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "EVENTS_SCHOOL_OAKWOOD".into(),
        subjects: vec!["halcyon.events.school-oakwood.>".into()],
        deny_purge: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = ensure_event_stream(&js, &"school-oakwood".parse().unwrap(), &settings)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("setting deny_delete"), "{err}");
}
