//! Issue 2's end-to-end path: agency events published over NATS JetStream (each agency under its own
//! identity), projected into sled by a running node, read back over gRPC on loopback under the policy, with
//! an access record in the AUDIT stream for every answer.

use crate::common;

use futures::StreamExt;
use halcyon_policy::Purpose;
use halcyon_schema::Category;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_projected_and_read_back_under_the_policy() {
    let h = common::Harness::start().await;
    let scenario = common::children(3);
    let after = common::publish_as_agencies(&h.nats.url(), &scenario.envelopes).await;
    let child = &scenario.children[0];
    let nhs = child.nhs.to_string();
    let facts_of_child = scenario
        .envelopes
        .iter()
        .filter(|e| e.child.as_ref().unwrap().nhs_number == nhs)
        .count();

    let mut client = h.client().await;
    let csc = common::find_by_nhs(&mut client, "csc-rotherham", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let police = common::find_by_nhs(&mut client, "police-sy", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let ed = common::find_by_nhs(&mut client, "health-rgh-ed", &nhs, Purpose::DirectCare, &after)
        .await
        .unwrap();

    // No principal is shown or told of more facts than the child has; of a fact it may never see, or lacks
    // a relationship for, it is told nothing (issue 13), so shown + withheld may fall short.
    for view in [&csc, &police, &ed] {
        let withheld: u32 = view.withheld.iter().map(|w| w.count).sum();
        assert!(view.facts.len() + withheld as usize <= facts_of_child);
        assert_eq!(view.policy_version, "england-2026.4");
    }
    // The owning authority sees its own referral with the referrer's identity; police see the referral
    // without it; A&E sees the child-protection flag but no case content.
    let referral = |v: &halcyon_grpc::pb::ChildView| {
        v.facts
            .iter()
            .find(|f| f.event_type == "ReferralReceived")
            .cloned()
    };
    let csc_referral = referral(&csc).expect("CSC sees its referral");
    let referrer = |f: &halcyon_grpc::pb::VisibleFact| match f.event.as_ref().unwrap().kind.as_ref().unwrap()
    {
        halcyon_grpc::pb::event::Kind::ReferralReceived(r) => r.referrer.clone().unwrap_or_default(),
        _ => unreachable!(),
    };
    assert!(!referrer(&csc_referral).referrer_name.is_empty());
    if let Some(police_referral) = referral(&police) {
        assert!(
            referrer(&police_referral).referrer_name.is_empty(),
            "referrer identity leaked to police"
        );
    }
    assert!(
        police.facts.iter().any(|f| f.agency_id == "police-sy"),
        "police see their own facts"
    );
    assert!(csc.facts.len() > ed.facts.len());
    let ed_categories: Vec<Category> = ed
        .facts
        .iter()
        .filter(|f| f.agency_id != "health-rgh-ed")
        .map(|f| Category::from_wire(f.category).unwrap())
        .collect();
    assert!(
        ed_categories.contains(&Category::STATUS_FLAG),
        "A&E sees the CP flag: {ed_categories:?}"
    );
    for c in &ed_categories {
        assert!(
            [Category::STATUS_FLAG, Category::IDENTITY].contains(c),
            "A&E saw {c} of another agency"
        );
    }

    // Three calls, three access records, written before the answers.
    let client =
        async_nats::ConnectOptions::with_user_and_password("operator".into(), "operator-dev-secret".into())
            .connect(h.nats.url())
            .await
            .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut audit = halcyon_bus::ordered_messages(&js, "AUDIT", 1).await.unwrap();
    let mut records = Vec::new();
    while records.len() < 3 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), audit.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        records.extend(halcyon_bus::audit::decode_records(&m.payload).unwrap());
    }
    let agencies: Vec<&str> = records.iter().map(|r| r.agency_id.as_str()).collect();
    assert_eq!(agencies, ["csc-rotherham", "police-sy", "health-rgh-ed"]);
    assert!(
        records
            .iter()
            .all(|r| r.policy_version == "england-2026.4" && r.child_id == csc.child_id)
    );
    h.node.stop(std::time::Duration::from_secs(5)).await;
}
