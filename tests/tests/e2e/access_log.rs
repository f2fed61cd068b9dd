//! Issue 6: configured accesses reach the owning agency's access list. An unscheduled-care flag check is in
//! the owning authority's access log for the child; another agency sees only its own calls; a privacy
//! officer sees all; reading the log is itself recorded.

use crate::common;

use std::time::Duration;

use halcyon_grpc::pb::{self, audit_service_client::AuditServiceClient};
use halcyon_policy::Purpose;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_who_looked_at_its_child() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut query = h.client().await;
    let check = pb::CheckFlagRequest {
        context: Some(common::context(Purpose::DirectCare, &after)),
        nhs_number: s.children[0].nhs.to_string(),
    };
    let flag = query
        .check_flag(common::authorised(check, "demo-health-rgh-ed"))
        .await
        .unwrap()
        .into_inner();
    common::find_by_nhs(
        &mut query,
        "school-oakwood",
        &s.children[0].nhs.to_string(),
        Purpose::Safeguarding,
        &[],
    )
    .await
    .unwrap();

    let mut audit = AuditServiceClient::connect(format!("http://{}", h.node.addr))
        .await
        .unwrap();
    let list = |token: &str| {
        common::authorised(
            pb::ListAccessRequest {
                context: Some(common::context(Purpose::Audit, &[])),
                child_id: flag.child_id.clone(),
                ..Default::default()
            },
            token,
        )
    };
    let methods = |records: &[pb::AccessRecord]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.agency_id.clone(), r.method.clone()))
            .collect()
    };
    let owner = audit
        .list_access(list("demo-csc-rotherham"))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        methods(&owner).contains(&("health-rgh-ed".into(), "CheckFlag".into())),
        "the owner sees the A&E check: {:?}",
        methods(&owner)
    );
    let school = audit
        .list_access(list("demo-school-oakwood"))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(
        methods(&school),
        vec![("school-oakwood".to_string(), "FindChild".to_string())],
        "only its own calls"
    );
    let officer = audit
        .list_access(list("demo-privacy-officer"))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        officer.len() > owner.len(),
        "the privacy officer sees everything, the owner's own reading included"
    );
    assert!(
        officer.iter().any(|r| r.method == "ListAccess"),
        "reading the log is recorded"
    );
    h.node.stop(Duration::from_secs(5)).await;
}

/// Issue 19: the access log is listed from the node's index of AUDIT, a page at a time. The calls are made
/// here, in a known order; the pages, read back to front, are exactly those calls (the listing's own records
/// come after the first page's token and are not in it), and each filter selects what the calls say it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_pages_back_through_a_childs_accesses() {
    let h = common::Harness::start().await;
    let s = common::children(2);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut query = h.client().await;
    let nhs = |i: usize| s.children[i].nhs.to_string();
    let calls = [
        ("police-sy", "FindChild"),
        ("school-oakwood", "FindChild"),
        ("csc-rotherham", "FindChild"),
        ("police-sy", "FindChild"),
        ("health-rgh-ed", "CheckFlag"),
        ("school-oakwood", "FindChild"),
        ("csc-rotherham", "FindChild"),
    ];
    let mut child = String::new();
    for (agency, method) in calls {
        if method == "CheckFlag" {
            let check = pb::CheckFlagRequest {
                context: Some(common::context(Purpose::DirectCare, &after)),
                nhs_number: nhs(0),
            };
            child = query
                .check_flag(common::authorised(check, &format!("demo-{agency}")))
                .await
                .unwrap()
                .into_inner()
                .child_id;
        } else {
            // Recorded whatever it answers (a school may be refused).
            let _ = common::find_by_nhs(&mut query, agency, &nhs(0), Purpose::Safeguarding, &after).await;
        }
    }
    // Another child's access, which no listing of the first child may hold.
    common::find_by_nhs(&mut query, "police-sy", &nhs(1), Purpose::Safeguarding, &after)
        .await
        .unwrap();

    let mut audit = AuditServiceClient::connect(format!("http://{}", h.node.addr))
        .await
        .unwrap();
    let mut list = async |req: pb::ListAccessRequest| {
        audit
            .list_access(common::authorised(
                pb::ListAccessRequest {
                    context: Some(common::context(Purpose::Audit, &[])),
                    ..req
                },
                "demo-privacy-officer",
            ))
            .await
            .unwrap()
            .into_inner()
    };
    let methods = |records: &[pb::AccessRecord]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.agency_id.clone(), r.method.clone()))
            .collect()
    };
    let expected: Vec<(String, String)> = calls
        .iter()
        .map(|(a, m)| (a.to_string(), m.to_string()))
        .collect();

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListAccessRequest {
            child_id: child.clone(),
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
        pages.push(methods(&page.records));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "the pages end: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![
            expected[4..7].to_vec(),
            expected[1..4].to_vec(),
            expected[0..1].to_vec()
        ],
        "the most recent page first, each oldest first"
    );

    // One principal: the police's calls, about both children, in the order made.
    let whole = list(pb::ListAccessRequest {
        child_id: child.clone(),
        ..Default::default()
    })
    .await
    .records;
    assert_eq!(
        methods(&whole[..7]),
        expected,
        "the first page of a fresh listing: every call, oldest first"
    );
    let police = whole[0].principal_id.clone();
    assert!(!police.is_empty());
    let by_police = list(pb::ListAccessRequest {
        principal_id: police.clone(),
        ..Default::default()
    })
    .await
    .records;
    let children: Vec<bool> = by_police.iter().map(|r| r.child_id == child).collect();
    assert_eq!(
        children,
        vec![true, true, false],
        "two calls about the child, then one about the other"
    );
    assert!(by_police.iter().all(|r| r.principal_id == police));

    // A period: from the second call to the fourth, inclusive, for the school only.
    let at = |r: &pb::AccessRecord| r.at.unwrap();
    let school_in_period = list(pb::ListAccessRequest {
        child_id: child.clone(),
        agency_id: "school-oakwood".into(),
        from: Some(at(&whole[1])),
        to: Some(at(&whole[3])),
        ..Default::default()
    })
    .await
    .records;
    assert_eq!(
        methods(&school_in_period),
        vec![("school-oakwood".to_string(), "FindChild".to_string())],
        "the school's first call is in the period, its second is not"
    );
    let bad = audit
        .list_access(common::authorised(
            pb::ListAccessRequest {
                context: Some(common::context(Purpose::Audit, &[])),
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "demo-privacy-officer",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    h.node.stop(Duration::from_secs(5)).await;
}
