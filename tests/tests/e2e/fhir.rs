//! Issue 21: the FHIR R4 read of the child protection flag, tried by an outside client (Python's urllib) and
//! validated by an independent FHIR library (`fhir.resources` 6.4.0, FHIR 4.0.1, in the suite's own virtual
//! environment; tests/python/fhir_flag.py), against a real node and NATS.
//!
//! What it must be is `CheckFlag` in FHIR's shape: the Bundle is read back into a `FlagStatus` here (the
//! test's own mapping, [`flag_status_of`], which also refuses any element it does not expect) and compared
//! with what `CheckFlag` answers the same caller; the scenario's own facts (the plan's start, the authority's
//! numbers) are checked as literals. One access record per search, naming the practitioner from the
//! headers and the request id; the owning authority told on its watch; refusals as OperationOutcomes with no
//! record.

use crate::common;
use crate::stock_clients::{python, run_client, venv};

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use halcyon_schema::ChildId;
use halcyon_schema::convert::parse_timestamp;
use halcyon_testkit::workspace_root;
use serde_json::{Value, json};

const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
const NS: &str = "https://halcyon.example/fhir";
const ED_TOKEN: &str = "demo-health-rgh-ed";

/// The search path for an NHS number (`|` percent-encoded, as a careful client sends it).
fn search(nhs: &str) -> String {
    format!("/fhir/R4/Flag?patient.identifier={NHS_SYSTEM}%7C{nhs}")
}

/// Runs tests/python/fhir_flag.py with `requests`; its answers by name.
async fn fhir(h: &common::Harness, venv: &std::path::Path, requests: Value) -> Value {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(workspace_root().join("tests/python/fhir_flag.py"))
        .arg(requests.to_string());
    run_client(h, cmd, Duration::from_secs(180)).await
}

/// Waits until the node's index of flag accesses holds `n` for the child (it follows AUDIT).
async fn wait_flag_accesses(h: &common::Harness, child: ChildId, n: usize) {
    for _ in 0..200 {
        if h.node.projector().recent_flag_accesses(child, 25).unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not index {n} flag accesses of the child");
}

/// The test's own reading of a Flag search Bundle back into what `CheckFlag` answers. Every element it
/// meets must be one it knows: an extra element in any resource fails the test.
fn flag_status_of(bundle: &Value, nhs: &str) -> pb::FlagStatus {
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let time = |v: &Value| Some(parse_timestamp(v.as_str().unwrap()).unwrap());
    assert_eq!(
        keys(bundle),
        ["entry", "id", "link", "meta", "resourceType", "total", "type"]
    );
    assert_eq!(bundle["type"], "searchset");
    let mut status = pb::FlagStatus {
        policy_version: bundle["meta"]["tag"][0]["code"].as_str().unwrap().to_owned(),
        ..Default::default()
    };
    assert_eq!(
        bundle["meta"]["tag"][0]["system"],
        format!("{NS}/CodeSystem/policy-version")
    );
    let entries = bundle["entry"].as_array().unwrap();
    let flags: Vec<&Value> = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(bundle["total"], flags.len());
    let mut accesses_seen: Option<Vec<pb::FlagAccess>> = None;
    for flag in &flags {
        assert_eq!(flag["resourceType"], "Flag");
        let mut expected_keys = vec![
            "category",
            "code",
            "extension",
            "id",
            "resourceType",
            "status",
            "subject",
        ];
        if flag.get("period").is_some() {
            expected_keys.push("period");
        }
        if flag.get("author").is_some() {
            expected_keys.push("author");
        }
        expected_keys.sort();
        assert_eq!(keys(flag), expected_keys, "{flag}");
        assert_eq!(
            flag["category"],
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "safety", "display": "Safety"}]}])
        );
        let child_id = flag["subject"]["reference"]
            .as_str()
            .unwrap()
            .strip_prefix("Patient/")
            .unwrap();
        status.child_id = child_id.to_owned();
        assert_eq!(
            flag["subject"]["identifier"],
            json!({"system": NHS_SYSTEM, "value": nhs})
        );
        let active = match flag["status"].as_str().unwrap() {
            "active" => true,
            "inactive" => false,
            other => panic!("flag status {other}"),
        };
        let coding = &flag["code"]["coding"][0];
        assert_eq!(coding["system"], format!("{NS}/CodeSystem/status-flag"));
        let (start, end) = (&flag["period"]["start"], &flag["period"]["end"]);
        match coding["code"].as_str().unwrap() {
            "child-protection-plan" => {
                status.child_protection_plan = active;
                status.plan_started = start.is_string().then(|| time(start)).flatten();
                status.plan_ended = end.is_string().then(|| time(end)).flatten();
            }
            "unborn-child-protection-plan" => {
                status.unborn_plan = active;
                status.plan_started = start.is_string().then(|| time(start)).flatten();
                status.plan_ended = end.is_string().then(|| time(end)).flatten();
            }
            "looked-after-child" => {
                status.looked_after = active;
                status.looked_after_started = start.is_string().then(|| time(start)).flatten();
                status.looked_after_ended = end.is_string().then(|| time(end)).flatten();
            }
            other => panic!("flag code {other}"),
        }
        let mut accesses = Vec::new();
        for extension in flag["extension"].as_array().unwrap() {
            let url = extension["url"].as_str().unwrap();
            if url == format!("{NS}/StructureDefinition/owner-notified") {
                status.owner_notified = extension["valueBoolean"].as_bool().unwrap();
            } else if url == format!("{NS}/StructureDefinition/recent-access") {
                let part = |name: &str| {
                    extension["extension"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["url"] == name)
                        .unwrap_or_else(|| panic!("recent-access without {name}: {extension}"))
                        .clone()
                };
                let agency = part("agency");
                assert_eq!(
                    agency["valueReference"]["identifier"]["system"],
                    format!("{NS}/agency-id")
                );
                accesses.push(pb::FlagAccess {
                    agency_id: agency["valueReference"]["identifier"]["value"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    agency_name: agency["valueReference"]["display"].as_str().unwrap().to_owned(),
                    role: part("role")["valueString"].as_str().unwrap().to_owned(),
                    at: time(&part("at")["valueDateTime"]),
                });
            } else {
                panic!("unexpected extension {url}");
            }
        }
        // Every flag of the child carries the same earlier accesses.
        if let Some(seen) = &accesses_seen {
            assert_eq!(seen, &accesses);
        }
        status.recent_accesses = accesses.clone();
        accesses_seen = Some(accesses);
        if let Some(author) = flag.get("author") {
            status.owning_agency_id = author["reference"]
                .as_str()
                .unwrap()
                .strip_prefix("Organization/")
                .unwrap()
                .to_owned();
            status.owning_agency_name = author["display"].as_str().unwrap().to_owned();
        }
    }
    let included: Vec<&Value> = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(
        flags.len() + included.len(),
        entries.len(),
        "every entry is a match or an include"
    );
    assert!(included.len() <= 1, "at most the owning authority is included");
    if let Some(org) = included.first() {
        assert_eq!(
            keys(org),
            [
                "active",
                "contact",
                "id",
                "identifier",
                "name",
                "resourceType",
                "telecom"
            ]
        );
        assert_eq!(org["resourceType"], "Organization");
        assert_eq!(org["id"], status.owning_agency_id.as_str());
        assert_eq!(org["name"], status.owning_agency_name.as_str());
        assert_eq!(
            org["identifier"],
            json!([{"system": format!("{NS}/agency-id"), "value": status.owning_agency_id}])
        );
        let phone = |purpose: &str| {
            let contact = org["contact"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["purpose"]["text"] == purpose)
                .unwrap_or_else(|| panic!("no {purpose} contact: {org}"));
            let number = contact["telecom"][0]["value"].as_str().unwrap().to_owned();
            assert!(
                org["telecom"]
                    .as_array()
                    .unwrap()
                    .contains(&contact["telecom"][0]),
                "the contact's number is among the organisation's"
            );
            number
        };
        status.office_hours_phone = phone("Office hours");
        status.out_of_hours_phone = phone("Out of hours");
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_flag_read_is_check_flag_and_validates_as_fhir_r4() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python 3 on this machine; the FHIR validation needs python3 with venv");
        return;
    };
    let venv = tokio::task::spawn_blocking(move || venv(&python)).await.unwrap();
    let h = common::Harness::start().await;
    let s = common::children(1);
    let child = &s.children[0];
    assert!(child.on_plan);
    let nhs = child.nhs.to_string();
    let plan_started = s
        .envelopes
        .iter()
        .find(|e| {
            e.event
                .as_ref()
                .and_then(|e| e.kind.as_ref())
                .map(halcyon_schema::EventKindExt::type_name)
                == Some("ChildProtectionPlanStarted")
        })
        .and_then(|e| e.occurred_at)
        .expect("the scenario's child is on a plan");
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut client = h.client().await;
    let mut owner_watch = client
        .watch(common::authorised(
            pb::WatchRequest {
                context: Some(common::context(Purpose::Safeguarding, &[])),
                ..Default::default()
            },
            "demo-csc-rotherham",
        ))
        .await
        .unwrap()
        .into_inner();
    let check = || pb::CheckFlagRequest {
        context: Some(common::context(Purpose::DirectCare, &after)),
        nhs_number: nhs.clone(),
    };

    // An earlier check over gRPC, so that the FHIR answer has an earlier access to carry.
    let first = client
        .check_flag(common::authorised(check(), ED_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let child_id: ChildId = first.child_id.parse().unwrap();
    wait_flag_accesses(&h, child_id, 1).await;
    let before = check_records(&h).await.len();

    let ed_headers = json!({
        "Authorization": format!("Bearer {ED_TOKEN}"),
        "X-Halcyon-Purpose": "PURPOSE_DIRECT_CARE",
        "X-Halcyon-Acting-Person-Id": "ed-nurse-17",
        "X-Halcyon-Acting-Person-Role": "Emergency department nurse",
        "X-Request-Id": "fhir-flag-read-1",
    });
    let out = fhir(
        &h,
        &venv,
        json!([{"name": "ed", "path": search(&nhs), "headers": ed_headers}]),
    )
    .await;
    let ed = &out["ed"];
    assert_eq!(ed["status"], 200, "{ed}");
    eprintln!(
        "the Bundle: {}",
        serde_json::to_string_pretty(&ed["body"]).unwrap()
    );

    // Exactly one access record, naming the practitioner and the request, the owner notified.
    let records = check_records(&h).await;
    assert_eq!(records.len(), before + 1, "one access record for the search");
    let record = records.last().unwrap();
    assert_eq!(record.method, "CheckFlag");
    assert_eq!(record.agency_id, "health-rgh-ed");
    assert_eq!(record.purpose, pb::Purpose::DirectCare as i32);
    assert_eq!(record.child_id, child_id.to_string());
    assert_eq!(record.outcome, pb::AccessOutcome::Permitted as i32);
    assert_eq!(record.acting_person_id, "ed-nurse-17");
    assert_eq!(record.acting_person_role, "Emergency department nurse");
    assert_eq!(record.request_id, "fhir-flag-read-1");
    assert_eq!(record.notified_agency_ids, ["csc-rotherham"]);
    let mut notified = Vec::new();
    while notified.len() < 2 {
        let event = tokio::time::timeout(common::SETTLE_WAIT, owner_watch.next())
            .await
            .expect("the owning authority is told of both checks")
            .unwrap()
            .unwrap();
        if let Some(pb::watch_event::Kind::Access(n)) = event.kind {
            notified.push(n);
        }
    }
    let fhir_notice = &notified[1];
    assert_eq!(
        (fhir_notice.method.as_str(), fhir_notice.by_agency_id.as_str()),
        ("CheckFlag", "health-rgh-ed")
    );
    assert_eq!(fhir_notice.child_id, child_id.to_string());
    assert_eq!(fhir_notice.at, record.at);

    // The same caller's CheckFlag now; the Bundle read back is that answer, less the FHIR check itself
    // among the earlier accesses (it was made after the Bundle).
    wait_flag_accesses(&h, child_id, 2).await;
    let now = client
        .check_flag(common::authorised(check(), ED_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.recent_accesses.len(), 2);
    assert_eq!(
        now.recent_accesses[0].at, record.at,
        "the FHIR check is the most recent"
    );
    let mut expected = now.clone();
    expected.recent_accesses.remove(0);
    let read_back = flag_status_of(&ed["body"], &nhs);
    assert_eq!(read_back, expected);
    // And against the scenario, not only the node: the plan's start, the authority, its numbers.
    assert!(read_back.child_protection_plan && !read_back.unborn_plan && !read_back.looked_after);
    assert_eq!(read_back.plan_started, Some(plan_started));
    assert_eq!(read_back.plan_ended, None);
    assert_eq!(read_back.owning_agency_id, "csc-rotherham");
    assert_eq!(read_back.office_hours_phone, "01632 960001");
    assert_eq!(read_back.out_of_hours_phone, "01632 960002");
    assert!(read_back.owner_notified);
    assert_eq!(read_back.recent_accesses.len(), 1);
    assert_eq!(read_back.recent_accesses[0].agency_id, "health-rgh-ed");
    assert_eq!(read_back.recent_accesses[0].at, first_record_at(&records, &first));

    // Refusals and a child Halcyon does not know, from the same outside client.
    let before = check_records(&h).await.len();
    let with = |extra: Value| {
        let mut headers = json!({"Authorization": format!("Bearer {ED_TOKEN}"), "X-Halcyon-Purpose": "PURPOSE_DIRECT_CARE"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                headers.as_object_mut().unwrap().remove(k);
            } else {
                headers[k] = v.clone();
            }
        }
        headers
    };
    let out = fhir(
        &h,
        &venv,
        json!([
            {"name": "no_credentials", "path": search(&nhs), "headers": with(json!({"Authorization": null}))},
            {"name": "unknown_token", "path": search(&nhs), "headers": with(json!({"Authorization": "Bearer not-a-token"}))},
            {"name": "no_purpose", "path": search(&nhs), "headers": with(json!({"X-Halcyon-Purpose": null}))},
            {"name": "unknown_purpose", "path": search(&nhs), "headers": with(json!({"X-Halcyon-Purpose": "curiosity"}))},
            {"name": "other_system", "path": "/fhir/R4/Flag?patient.identifier=https://example.org/mrn%7C12345", "headers": with(json!({}))},
            {"name": "no_parameter", "path": "/fhir/R4/Flag", "headers": with(json!({}))},
            {"name": "unknown_child", "path": search("9990000018"), "headers": with(json!({}))},
            // The voluntary sector's D1 box is "–": the child's flag is none of its business.
            {"name": "denied_caller", "path": search(&nhs), "headers": with(json!({"Authorization": "Bearer demo-vol-safe-haven"}))},
            {"name": "metadata", "path": "/fhir/R4/metadata", "headers": {}},
        ]),
    )
    .await;
    let refused = |name: &str, status: u16, code: &str, says: &str| {
        let answer = &out[name];
        assert_eq!(answer["status"], status, "{name}: {answer}");
        assert_eq!(answer["body"]["resourceType"], "OperationOutcome", "{name}");
        assert_eq!(answer["body"]["issue"][0]["code"], code, "{name}: {answer}");
        let diagnostics = answer["body"]["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diagnostics.to_lowercase().contains(says),
            "{name}: {diagnostics:?} does not say {says:?}"
        );
    };
    refused("no_credentials", 401, "login", "no credentials");
    assert_eq!(out["no_credentials"]["www_authenticate"], "Bearer");
    refused("unknown_token", 401, "login", "");
    refused("no_purpose", 400, "invalid", "x-halcyon-purpose");
    refused("unknown_purpose", 400, "invalid", "curiosity");
    refused("other_system", 400, "not-supported", "https://example.org/mrn");
    refused("no_parameter", 400, "required", "patient.identifier");
    let unknown = &out["unknown_child"];
    assert_eq!(unknown["status"], 200);
    assert_eq!(unknown["body"]["total"], 0);
    assert_eq!(unknown["body"]["entry"], json!([]));
    // A caller the table does not entitle gets the answer for a child Halcyon does not know: no Flag, no
    // Organization, nothing that says the child is known.
    let denied = &out["denied_caller"];
    assert_eq!(denied["status"], 200, "{denied}");
    assert_eq!(denied["body"]["total"], 0);
    assert_eq!(denied["body"]["entry"], json!([]));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&denied["body"]), keys(&unknown["body"]));
    assert_eq!(denied["body"]["meta"]["tag"], unknown["body"]["meta"]["tag"]);
    assert_eq!(out["metadata"]["body"]["resourceType"], "CapabilityStatement");
    assert_eq!(out["metadata"]["body"]["fhirVersion"], "4.0.1");
    // Only the searches that reached the policy wrote a record: the unknown child, as not found; the
    // voluntary sector's, as denied.
    let records = check_records(&h).await;
    assert_eq!(records.len(), before + 2, "refused calls write no access record");
    let outcomes: Vec<(&str, i32)> = records[before..]
        .iter()
        .map(|r| (r.agency_id.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("health-rgh-ed", pb::AccessOutcome::NotFound as i32),
            ("vol-safe-haven", pb::AccessOutcome::Denied as i32)
        ]
    );
    h.node.stop(Duration::from_secs(5)).await;
}

/// The access records of flag checks (the owner's open watch writes its own records as it delivers).
async fn check_records(h: &common::Harness) -> Vec<pb::AccessRecord> {
    let mut records = common::audit_records(&h.nats).await;
    records.retain(|r| r.method != "Watch");
    assert!(records.iter().all(|r| r.method == "CheckFlag"), "{records:?}");
    records
}

/// When the access record of the gRPC check `answer` was written (the first CheckFlag record of its child).
fn first_record_at(
    records: &[pb::AccessRecord],
    answer: &pb::FlagStatus,
) -> Option<halcyon_schema::convert::Timestamp> {
    records
        .iter()
        .find(|r| r.method == "CheckFlag" && r.child_id == answer.child_id)
        .and_then(|r| r.at)
}

/// Over mutual TLS the FHIR read takes the agency from the client certificate, as gRPC calls do: the
/// emergency department's certificate reads the flag (and waits for the positions in
/// `X-Halcyon-Min-Position`); claiming another agency with it is refused 403; without a certificate the
/// handshake fails and nothing is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_the_agency_comes_from_the_client_certificate() {
    use crate::mtls::{ca, leaf};
    use rcgen::DnType;
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python 3 on this machine; the FHIR validation needs python3 with venv");
        return;
    };
    let venv = tokio::task::spawn_blocking(move || venv(&python)).await.unwrap();
    let nats = halcyon_testkit::NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let agencies = ca("Halcyon agencies CA");
    let (server_cert, server_key) = leaf(
        &agencies,
        vec!["localhost".into()],
        &[(DnType::CommonName, "node")],
    );
    let (ed_cert, ed_key) = leaf(
        &agencies,
        vec![],
        &[
            (DnType::OrganizationName, "health-rgh-ed"),
            (DnType::OrganizationalUnitName, "practitioner"),
            (DnType::CommonName, "ed-terminal-3"),
        ],
    );
    let write = |name: &str, pem: &str| {
        let path = data.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let mut config = common::node_config(&nats, &data.path().join("node"));
    config.tls = Some(halcyon_node::tls::TlsSettings {
        cert: write("server.pem", &server_cert),
        key: write("server.key", &server_key),
        client_ca: write("ca.pem", &agencies.pem),
        crls: Vec::new(),
    });
    let node = common::start_node(config).await.unwrap();
    let s = common::children(1);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let positions: Vec<String> = after
        .iter()
        .map(|p| format!("{}:{}", p.stream, p.sequence))
        .collect();
    let headers =
        json!({"X-Halcyon-Purpose": "PURPOSE_DIRECT_CARE", "X-Halcyon-Min-Position": positions.join(",")});
    let mut claims = headers.clone();
    claims["X-Halcyon-Agency"] = json!("csc-rotherham");
    let run = |cert: bool| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(workspace_root().join("tests/python/fhir_flag.py"))
            .arg(
                json!([
                    {"name": "ed", "path": search(&nhs), "headers": headers},
                    {"name": "claims_csc", "path": search(&nhs), "headers": claims},
                ])
                .to_string(),
            )
            .env("HALCYON_GRPC", node.addr.to_string())
            .env("HALCYON_FHIR_CA", data.path().join("ca.pem"));
        if cert {
            cmd.env("HALCYON_FHIR_CERT", write("ed.pem", &ed_cert))
                .env("HALCYON_FHIR_KEY", write("ed.key", &ed_key));
        }
        async move {
            let stdout = tokio::task::spawn_blocking(move || {
                crate::stock_clients::run_within(&mut cmd, Duration::from_secs(180))
            })
            .await
            .unwrap();
            serde_json::from_str::<Value>(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
        }
    };
    let out = run(true).await;
    let ed = &out["ed"];
    assert_eq!(ed["status"], 200, "{ed}");
    let status = flag_status_of(&ed["body"], &nhs);
    assert!(status.child_protection_plan);
    assert_eq!(status.owning_agency_id, "csc-rotherham");
    assert_eq!(out["claims_csc"]["status"], 403, "{out}");
    assert_eq!(out["claims_csc"]["body"]["issue"][0]["code"], "forbidden");
    let records = common::audit_records(&nats).await;
    let checks: Vec<&pb::AccessRecord> = records.iter().filter(|r| r.method == "CheckFlag").collect();
    assert_eq!(checks.len(), 1, "one record: the refused claim wrote none");
    assert_eq!(
        checks[0].agency_id, "health-rgh-ed",
        "the agency is the certificate's"
    );

    let out = run(false).await;
    assert_eq!(out["ed"]["status"], 0, "no certificate, no answer: {out}");
    node.stop(Duration::from_secs(5)).await;
}
