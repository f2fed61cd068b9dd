//! The audit gate, method by method (issue 15): every method of every service — the list is checked against
//! the compiled contract, so a new method without a row here fails — is refused the same way without
//! credentials, without a purpose (where it takes one), and beyond the node's admission limit; and every
//! method that answers about a child has written its access record to the AUDIT stream by the time its
//! answer arrives, an empty answer included.

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb::{
    self, audit_service_client::AuditServiceClient, deadline_service_client::DeadlineServiceClient,
    query_service_client::QueryServiceClient, signal_service_client::SignalServiceClient,
};
use halcyon_node::{Node, NodeConfig};
use halcyon_policy::Purpose;
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Every method of every service, with whether it takes a purpose (a request context).
const METHODS: &[(&str, bool)] = &[
    ("QueryService/FindChild", true),
    ("QueryService/GetChildView", true),
    ("QueryService/GetChronology", true),
    ("QueryService/CheckFlag", true),
    ("QueryService/Watch", true),
    ("QueryService/GetPositions", false),
    ("QueryService/ListQuarantine", false),
    ("AuditService/ListAccess", true),
    ("DeadlineService/ListBreaches", true),
    ("SignalService/ListSignals", true),
];

#[derive(Clone)]
struct Ask<'a> {
    token: Option<&'a str>,
    context: Option<pb::RequestContext>,
    child_id: &'a str,
    nhs: &'a str,
}

fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(token) => common::authorised(message, token),
        None => tonic::Request::new(message),
    }
}

/// Calls `method`; a watch is opened, and closed once it is accepted.
async fn call(channel: &Channel, method: &str, ask: &Ask<'_>) -> Result<(), Status> {
    let (token, context) = (ask.token, ask.context.clone());
    let child_id = ask.child_id.to_owned();
    let mut query = QueryServiceClient::new(channel.clone());
    match method {
        "QueryService/FindChild" => query
            .find_child(request(
                pb::FindChildRequest {
                    context,
                    identifier: Some(pb::find_child_request::Identifier::NhsNumber(ask.nhs.into())),
                },
                token,
            ))
            .await
            .map(drop),
        "QueryService/GetChildView" => query
            .get_child_view(request(pb::GetChildViewRequest { context, child_id }, token))
            .await
            .map(drop),
        "QueryService/GetChronology" => query
            .get_chronology(request(
                pb::GetChronologyRequest {
                    context,
                    child_id,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "QueryService/CheckFlag" => query
            .check_flag(request(
                pb::CheckFlagRequest {
                    context,
                    nhs_number: ask.nhs.into(),
                },
                token,
            ))
            .await
            .map(drop),
        "QueryService/Watch" => query
            .watch(request(
                pb::WatchRequest {
                    context,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "QueryService/GetPositions" => query
            .get_positions(request(pb::GetPositionsRequest {}, token))
            .await
            .map(drop),
        "QueryService/ListQuarantine" => query
            .list_quarantine(request(pb::ListQuarantineRequest::default(), token))
            .await
            .map(drop),
        "AuditService/ListAccess" => AuditServiceClient::new(channel.clone())
            .list_access(request(
                pb::ListAccessRequest {
                    context,
                    child_id,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "DeadlineService/ListBreaches" => DeadlineServiceClient::new(channel.clone())
            .list_breaches(request(
                pb::ListBreachesRequest {
                    context,
                    child_id,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "SignalService/ListSignals" => SignalServiceClient::new(channel.clone())
            .list_signals(request(
                pb::ListSignalsRequest {
                    context,
                    child_id,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

#[test]
fn the_list_holds_every_method_of_the_contract() {
    let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut contract: Vec<String> = fds
        .file
        .iter()
        .flat_map(|f| &f.service)
        .flat_map(|s| s.method.iter().map(move |m| format!("{}/{}", s.name(), m.name())))
        .collect();
    contract.sort();
    let mut listed: Vec<String> = METHODS.iter().map(|(m, _)| (*m).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, contract, "a method of proto/ has no row in this test");
}

async fn channel(node: &Node) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_refused_the_same_way_at_the_gate() {
    let h = common::Harness::start().await;
    let ch = channel(&h.node).await;
    let child = halcyon_schema::ChildId::from_nhs(&"9434765919".parse().unwrap()).to_string();
    let base = Ask {
        token: Some("demo-csc-rotherham"),
        context: Some(common::context(Purpose::Safeguarding, &[])),
        child_id: &child,
        nhs: "9434765919",
    };
    let mut refusals = Vec::new();
    for (method, takes_purpose) in METHODS {
        let unauthenticated = call(
            &ch,
            method,
            &Ask {
                token: None,
                ..base.clone()
            },
        )
        .await;
        refusals.push((
            format!("{method} without credentials"),
            unauthenticated,
            Code::Unauthenticated,
        ));
        let bad_token = call(
            &ch,
            method,
            &Ask {
                token: Some("not-a-token"),
                ..base.clone()
            },
        )
        .await;
        refusals.push((
            format!("{method} with an unknown token"),
            bad_token,
            Code::Unauthenticated,
        ));
        if *takes_purpose {
            let no_purpose = call(
                &ch,
                method,
                &Ask {
                    context: None,
                    ..base.clone()
                },
            )
            .await;
            refusals.push((
                format!("{method} without a purpose"),
                no_purpose,
                Code::InvalidArgument,
            ));
        }
    }
    let mut messages = std::collections::BTreeMap::<(i32, bool), std::collections::BTreeSet<String>>::new();
    for (what, answer, code) in &refusals {
        let status = answer.as_ref().expect_err(what);
        assert_eq!(status.code(), *code, "{what}: {status:?}");
        messages
            .entry((*code as i32, what.contains("unknown token")))
            .or_default()
            .insert(status.message().to_owned());
    }
    for ((code, _), texts) in &messages {
        assert_eq!(
            texts.len(),
            1,
            "{code:?} refusals differ between methods: {texts:?}"
        );
    }
    h.node.stop(Duration::from_secs(5)).await;

    // A node admitting nothing: every method, each one, is shed.
    let data = tempfile::tempdir().unwrap();
    let full = common::start_node(NodeConfig {
        concurrency_max: 0,
        ..common::node_config(&h.nats, data.path())
    })
    .await
    .unwrap();
    let ch = channel(&full).await;
    for (method, _) in METHODS {
        let status = call(&ch, method, &base).await.expect_err(method);
        assert_eq!(status.code(), Code::ResourceExhausted, "{method}: {status:?}");
        assert!(
            status.message().contains("concurrency limit"),
            "{method}: {status:?}"
        );
    }
    full.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_that_answers_about_children_has_recorded_the_access_when_the_answer_arrives() {
    let h = common::Harness::start().await;
    let s = common::children(2);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let ch = channel(&h.node).await;
    let nhs = s.children[0].nhs.to_string();
    let child = halcyon_schema::ChildId::from_nhs(&s.children[0].nhs).to_string();
    // Calls that were answered (or refused by the policy) with their access record on AUDIT, per method.
    let mut recorded: std::collections::BTreeMap<&str, usize> = Default::default();
    for (agency, purpose) in [
        ("csc-rotherham", Purpose::Safeguarding),
        ("health-rgh-ed", Purpose::DirectCare),
        ("vol-safe-haven", Purpose::Safeguarding),
        // The access log is read only for audit or a statutory review.
        ("csc-rotherham", Purpose::Audit),
    ] {
        let token = format!("demo-{agency}");
        let ask = Ask {
            token: Some(&token),
            context: Some(common::context(purpose, &after)),
            child_id: &child,
            nhs: &nhs,
        };
        for (method, takes_purpose) in METHODS {
            let name = method.split('/').nth(1).unwrap();
            if !takes_purpose || name == "Watch" {
                continue;
            }
            let before = common::audit_records(&h.nats).await.len();
            let answer = call(&ch, method, &ask).await;
            // Answered, or refused by the policy (NOT_FOUND): the record is already on the stream. A request
            // refused as malformed (INVALID_ARGUMENT: a purpose the access log is not read for) disclosed
            // nothing and records nothing.
            let records = common::audit_records(&h.nats).await;
            let new: Vec<_> = records[before..].iter().filter(|r| r.method == name).collect();
            match &answer {
                Err(status) if status.code() == Code::InvalidArgument => {
                    assert!(
                        new.is_empty(),
                        "{agency} {name}: a refused request recorded nothing disclosed"
                    )
                }
                _ => {
                    assert!(
                        !new.is_empty() && new.iter().all(|r| r.agency_id == agency),
                        "{agency} {name} answered {answer:?} with no access record"
                    );
                    *recorded.entry(name).or_default() += 1;
                }
            }
        }
    }
    for (method, takes_purpose) in METHODS {
        let name = method.split('/').nth(1).unwrap();
        if *takes_purpose && name != "Watch" {
            assert!(
                recorded.get(name).copied().unwrap_or(0) > 0,
                "{name} was never answered, so its record was never checked"
            );
        }
    }

    // A watch records each event before it is sent.
    let mut query = QueryServiceClient::new(ch.clone());
    let mut watch = common::watch(&mut query, "demo-csc-rotherham").await;
    let more = Scenario::generate(
        &ScenarioConfig {
            children: 1,
            seed: 7,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    common::publish_as_agencies(&h.nats.url(), &more.envelopes).await;
    let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap();
    let records = common::audit_records(&h.nats).await;
    assert!(
        records
            .iter()
            .any(|r| r.method == "Watch" && r.child_id == event.child_id && r.agency_id == "csc-rotherham"),
        "the watch event arrived before its access record"
    );
    h.node.stop(Duration::from_secs(5)).await;
}
