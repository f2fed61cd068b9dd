//! Issue 20, person-level accountability over real NATS, sled and gRPC: a calling system names the
//! practitioner behind the screen (id and role) in the request context; the access record written before
//! the answer carries them beside the system's own identity; a role without a person, or an identifier that
//! is too long, is refused before anything is read.

use crate::common;

use futures::StreamExt;
use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use prost::Message as _;

/// Every access record in AUDIT, in order.
async fn access_records(js: &async_nats::jetstream::Context) -> Vec<pb::AccessRecord> {
    let last = js
        .get_stream("AUDIT")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let mut messages = std::pin::pin!(
        halcyon_bus::checkpoint::chain_messages(js, "AUDIT", 1, None)
            .await
            .unwrap()
    );
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        out.extend(pb::AccessRecords::decode(m.payload.clone()).unwrap().records);
        if m.sequence >= last {
            break;
        }
    }
    out
}

fn find(nhs: &str, person: &str, role: &str) -> tonic::Request<pb::FindChildRequest> {
    common::authorised(
        pb::FindChildRequest {
            context: Some(pb::RequestContext {
                acting_person_id: person.into(),
                acting_person_role: role.into(),
                ..common::context(Purpose::Safeguarding, &[])
            }),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
        },
        "demo-police-sy",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_practitioner_is_recorded_beside_the_calling_system() {
    let h = common::Harness::start().await;
    let scenario = common::children(2);
    let after = common::publish_as_agencies(&h.nats.url(), &scenario.envelopes).await;
    let wanted: Vec<(String, u64)> = after.iter().map(|p| (p.stream.clone(), p.sequence)).collect();
    h.node
        .projector()
        .wait_for(&wanted, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let nhs = scenario.children[0].nhs.to_string();
    let mut client = h.client().await;
    let js = common::operator(&h.nats).await;

    let before = access_records(&js).await.len();
    client
        .find_child(find(&nhs, "pc-4411", "detective constable"))
        .await
        .unwrap();
    let records = access_records(&js).await;
    assert_eq!(records.len(), before + 1);
    let r = records.last().unwrap();
    assert_eq!(
        (r.agency_id.as_str(), r.method.as_str()),
        ("police-sy", "FindChild")
    );
    assert_eq!(r.acting_person_id, "pc-4411");
    assert_eq!(r.acting_person_role, "detective constable");
    assert!(
        !r.principal_id.is_empty(),
        "the system's own identity stays beside the person"
    );

    // A call naming nobody records nobody.
    client.find_child(find(&nhs, "", "")).await.unwrap();
    let records = access_records(&js).await;
    assert_eq!(records.last().unwrap().acting_person_id, "");

    // Refused before anything is read (and so nothing is recorded): a role without a person, an id too long.
    let count = records.len();
    for (person, role, says) in [
        (
            "",
            "social worker",
            "acting_person_role without context.acting_person_id",
        ),
        (&"x".repeat(65)[..], "", "context.acting_person_id: at most 64"),
    ] {
        let status = client.find_child(find(&nhs, person, role)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }
    assert_eq!(access_records(&js).await.len(), count);
}
