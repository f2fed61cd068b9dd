//! Issue 5: a corrupted sled folder is moved aside with a clear log line, rebuilt from the streams, and the
//! node answers correctly after.

use crate::common;

use std::time::Duration;

use halcyon_policy::Purpose;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_read_model_folder_is_moved_aside_and_rebuilt() {
    let h = common::Harness::start().await;
    let s = common::children(2);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let before = common::find_by_nhs(
        &mut h.client().await,
        "police-sy",
        &nhs,
        Purpose::Safeguarding,
        &after,
    )
    .await
    .unwrap();
    let common::Harness { nats, node, data } = h;
    node.stop(Duration::from_secs(5)).await;

    // Scribble over every file sled keeps.
    let dir = data.path().join("read-models");
    for entry in walk(&dir) {
        std::fs::write(&entry, b"\xde\xad\xbe\xef not a sled file").unwrap();
    }
    let node = common::start_node(common::node_config(&nats, data.path()))
        .await
        .expect("the node starts anyway");
    let aside: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("read-models.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt folder was moved aside: {aside:?}");
    let mut client =
        halcyon_grpc::pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
    let again = common::find_by_nhs(&mut client, "police-sy", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    assert_eq!(
        again.facts, before.facts,
        "after the rebuild the node answers as before"
    );
    node.stop(Duration::from_secs(5)).await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}
