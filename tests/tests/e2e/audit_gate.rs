//! Issue 6: the audit gate. One access record per call that reads about a child, denials and misses
//! included, each with the policy version; with the AUDIT stream unreachable, calls fail UNAVAILABLE with no
//! data, and recover when it returns.

use crate::common;

use std::time::Duration;

use halcyon_grpc::pb;
use halcyon_policy::Purpose;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_is_recorded_and_an_audit_outage_fails_closed() {
    let mut h = common::Harness::start().await;
    let s = common::children(2);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let mut client = h.client().await;

    // Concurrent calls from every agency, a denial-heavy one, and a miss.
    let calls = [
        ("csc-rotherham", Purpose::Safeguarding),
        ("police-sy", Purpose::LawEnforcement),
        ("health-rgh-ed", Purpose::DirectCare),
        ("health-gp-clifton", Purpose::DirectCare),
        ("school-oakwood", Purpose::Safeguarding),
        ("mash-rotherham", Purpose::Safeguarding),
        ("yjs-rotherham", Purpose::Safeguarding),
        ("vol-safe-haven", Purpose::Safeguarding),
    ];
    let answers = futures::future::join_all(calls.iter().map(|(agency, purpose)| {
        let mut client = client.clone();
        let (nhs, after) = (nhs.clone(), after.clone());
        async move { common::find_by_nhs(&mut client, agency, &nhs, *purpose, &after).await }
    }))
    .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let miss = common::find_by_nhs(&mut client, "police-sy", "9990000018", Purpose::Safeguarding, &[])
        .await
        .unwrap_err();
    assert_eq!(miss.code(), tonic::Code::NotFound);

    let records = common::audit_records(&h.nats).await;
    assert_eq!(records.len(), calls.len() + 1, "one record per call");
    assert!(
        records
            .iter()
            .all(|r| r.policy_version == "england-2026.4" && !r.record_id.is_empty())
    );
    let outcome = |agency: &str| records.iter().find(|r| r.agency_id == agency).unwrap().outcome();
    assert_eq!(outcome("csc-rotherham"), pb::AccessOutcome::Permitted);
    let not_found = records
        .iter()
        .filter(|r| r.outcome() == pb::AccessOutcome::NotFound)
        .count();
    assert_eq!(not_found, 1);
    let withheld: u32 = records.iter().map(|r| r.facts_withheld).sum();
    assert!(withheld > 0, "denials are recorded too");

    // The AUDIT stream becomes unreachable: no answer, no data.
    h.nats.kill();
    let refused = common::find_by_nhs(&mut client, "csc-rotherham", &nhs, Purpose::Safeguarding, &[])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("nothing disclosed"),
        "{}",
        refused.message()
    );

    // It returns: calls succeed again.
    h.nats.start_again();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match common::find_by_nhs(&mut client, "csc-rotherham", &nhs, Purpose::Safeguarding, &[]).await {
            Ok(view) => {
                assert!(!view.facts.is_empty());
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(tokio::time::Instant::now() < deadline, "did not recover");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    h.node.stop(Duration::from_secs(5)).await;
}
