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
