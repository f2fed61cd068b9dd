//! A FHIR R4 read of the child protection flag, for NHS unscheduled-care systems that look for flags over
//! FHIR: `GET /fhir/R4/Flag?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|<NHS number>`.
//!
//! It is `CheckFlag` in another shape, not a second way in: the request becomes a `CheckFlagRequest` and
//! goes through the same gate (admission, authentication by bearer token or client certificate, the stated
//! purpose), the same policy decision, the same access record written before the answer, and the same
//! notification of the owning authority. The answer is a `searchset` Bundle holding what `CheckFlag`
//! returned to that caller and nothing more: a `Flag` for the child protection plan (or unborn plan) and one
//! for a looked-after period, each `active` while current and `inactive` once ended, with its period; the
//! owning authority as an `Organization` with its office-hours and out-of-hours numbers; the earlier checks
//! and whether the owner was told as extensions of each Flag; the policy version as a tag of the Bundle. A
//! child with no flag, or none this caller may see, is an empty Bundle. Every refusal is an
//! `OperationOutcome` with the HTTP status of the gRPC code (401, 403, 400, 429, 503…).
//!
//! Served on the gRPC port (same listener, same TLS), so a deployment exposes one API endpoint; the
//! request's context is in headers: `Authorization: Bearer <token>` (or the client certificate),
//! `X-Halcyon-Purpose` (a `Purpose` name, e.g. `PURPOSE_DIRECT_CARE`), optionally
//! `X-Halcyon-Acting-Person-Id` and `X-Halcyon-Acting-Person-Role`, `X-Halcyon-Min-Position`
//! (`STREAM:SEQUENCE`, comma-separated) and `X-Request-Id`. See docs/fhir.md.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use halcyon_grpc::pb;
use halcyon_schema::convert::format_timestamp;
use serde_json::{Value, json};
use tonic::Code;

use crate::query::Query;

/// The search this node answers.
pub const FLAG_PATH: &str = "/fhir/R4/Flag";
/// The server's capability statement.
pub const METADATA_PATH: &str = "/fhir/R4/metadata";
/// The one search parameter: the patient's identifier, `system|value`.
pub const SEARCH_PARAMETER: &str = "patient.identifier";
/// The NHS number's identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// Halcyon's own namespace for its codes, tags and extensions.
pub const NAMESPACE: &str = "https://halcyon.example/fhir";
/// HL7's flag categories (`safety` for child protection).
const FLAG_CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub const PURPOSE_HEADER: &str = "x-halcyon-purpose";
pub const ACTING_PERSON_ID_HEADER: &str = "x-halcyon-acting-person-id";
pub const ACTING_PERSON_ROLE_HEADER: &str = "x-halcyon-acting-person-role";
pub const MIN_POSITION_HEADER: &str = "x-halcyon-min-position";

/// The FHIR routes, to merge into the node's gRPC router (it has the fallback; this has none).
pub fn router(query: Query) -> Router {
    Router::new()
        .route(FLAG_PATH, get(search_flags).fallback(method_not_allowed))
        .route(
            METADATA_PATH,
            get(capability_statement).fallback(method_not_allowed),
        )
        .route("/fhir/R4/{*rest}", axum::routing::any(not_supported))
        .with_state(query)
}

/// `GET /fhir/R4/Flag?patient.identifier=…`: `CheckFlag` through the gate, answered as a Bundle.
async fn search_flags(State(query): State<Query>, request: Request) -> Response {
    let nhs_number = match nhs_number_searched(request.uri().query().unwrap_or_default()) {
        Ok(n) => n,
        Err((code, text)) => return outcome(StatusCode::BAD_REQUEST, code, &text, Code::InvalidArgument),
    };
    let context = match context_from(request.headers()) {
        Ok(c) => c,
        Err(text) => return outcome(StatusCode::BAD_REQUEST, "invalid", &text, Code::InvalidArgument),
    };
    let (parts, _) = request.into_parts();
    let message = pb::CheckFlagRequest {
        context: Some(context),
        nhs_number: nhs_number.clone(),
    };
    // Headers become the call's metadata (authorization, x-halcyon-agency, x-request-id) and the
    // connection's details (the client certificate) come along in the extensions.
    let call = tonic::Request::from_http(axum::http::Request::from_parts(parts, message));
    // Within the server's own limit on every call (which would answer in gRPC's terms, not FHIR's).
    match tokio::time::timeout(ANSWER_WITHIN, query.check_flag(call)).await {
        Ok(Ok(answer)) => fhir_json(StatusCode::OK, &bundle(answer.get_ref(), &nhs_number), Code::Ok),
        Ok(Err(status)) => refusal(&status),
        Err(_) => refusal(&tonic::Status::deadline_exceeded(format!(
            "no answer within {} s; none was given",
            ANSWER_WITHIN.as_secs()
        ))),
    }
}

/// How long a FHIR search may take before it is answered 504 with an OperationOutcome: under the node's
/// limit on every call on its port ([`crate::node::CALL_TIMEOUT`], 30 s), which would answer a FHIR client in gRPC terms.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(28);

/// The NHS number in `patient.identifier=https://fhir.nhs.uk/Id/nhs-number|<n>`; otherwise the
/// OperationOutcome issue code and why.
pub fn nhs_number_searched(query: &str) -> Result<String, (&'static str, String)> {
    let mut searched = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            SEARCH_PARAMETER if searched.is_some() => {
                return Err(("invalid", format!("{SEARCH_PARAMETER} is given more than once")));
            }
            SEARCH_PARAMETER => searched = Some(value.into_owned()),
            "_format"
                if matches!(
                    value.as_ref(),
                    "json" | "application/fhir+json" | "application/json"
                ) => {}
            "_format" => {
                return Err((
                    "not-supported",
                    format!("_format {value:?} is not served: this endpoint answers in JSON only"),
                ));
            }
            other => {
                return Err((
                    "not-supported",
                    format!("search parameter {other:?} is not supported: search by {SEARCH_PARAMETER} only"),
                ));
            }
        }
    }
    let searched = searched.ok_or_else(|| {
        (
            "required",
            format!("{SEARCH_PARAMETER} is required: {SEARCH_PARAMETER}={NHS_NUMBER_SYSTEM}|<NHS number>"),
        )
    })?;
    match searched.split_once('|') {
        Some((NHS_NUMBER_SYSTEM, value)) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Some((NHS_NUMBER_SYSTEM, _)) => Err((
            "required",
            format!("{SEARCH_PARAMETER} has no NHS number after the |"),
        )),
        Some((system, _)) => Err((
            "not-supported",
            format!("identifier system {system:?} is not searched here: only {NHS_NUMBER_SYSTEM}"),
        )),
        None => Err((
            "invalid",
            format!("{SEARCH_PARAMETER} must name its system: {NHS_NUMBER_SYSTEM}|<NHS number>"),
        )),
    }
}

/// The call's context from its headers. A missing purpose is left for the gate to refuse (after it has
/// authenticated the caller, as for every method); one that names no purpose is refused here.
pub fn context_from(headers: &HeaderMap) -> Result<pb::RequestContext, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|_| format!("header {name} is not plain text")),
        }
    };
    let mut context = pb::RequestContext::default();
    if let Some(purpose) = text(PURPOSE_HEADER)? {
        let known: Vec<&str> = (1..)
            .map_while(|n| pb::Purpose::try_from(n).ok())
            .map(|p| p.as_str_name())
            .collect();
        let purpose = pb::Purpose::from_str_name(&purpose.to_ascii_uppercase())
            .filter(|p| *p != pb::Purpose::Unspecified)
            .ok_or_else(|| {
                format!(
                    "header {PURPOSE_HEADER}: unknown purpose {purpose:?} (known: {})",
                    known.join(", ")
                )
            })?;
        context.purpose = purpose as i32;
    }
    context.acting_person_id = text(ACTING_PERSON_ID_HEADER)?.unwrap_or_default();
    context.acting_person_role = text(ACTING_PERSON_ROLE_HEADER)?.unwrap_or_default();
    if let Some(positions) = text(MIN_POSITION_HEADER)? {
        for position in positions.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (stream, sequence) = position
                .rsplit_once(':')
                .and_then(|(s, n)| Some((s.to_owned(), n.parse::<u64>().ok()?)))
                .ok_or_else(|| {
                    format!("header {MIN_POSITION_HEADER}: {position:?} is not STREAM:SEQUENCE")
                })?;
            context.min_positions.push(pb::Position { stream, sequence });
        }
    }
    Ok(context)
}

/// The searchset Bundle of what `CheckFlag` answered, for the NHS number searched.
pub fn bundle(status: &pb::FlagStatus, nhs_number: &str) -> Value {
    let owner = (!status.owning_agency_id.is_empty()).then(|| organization(status));
    let mut extensions = vec![json!({
        "url": format!("{NAMESPACE}/StructureDefinition/owner-notified"),
        "valueBoolean": status.owner_notified,
    })];
    extensions.extend(status.recent_accesses.iter().map(recent_access));
    let flag = |code: &str, display: &str, active: bool, start, end| {
        let mut period = serde_json::Map::new();
        if let Some(start) = start {
            period.insert("start".into(), json!(format_timestamp(start)));
        }
        if let Some(end) = end {
            period.insert("end".into(), json!(format_timestamp(end)));
        }
        let mut flag = json!({
            "resourceType": "Flag",
            "id": flag_id(&status.child_id, code),
            "extension": extensions,
            "status": if active { "active" } else { "inactive" },
            "category": [{
                "coding": [{"system": FLAG_CATEGORY_SYSTEM, "code": "safety", "display": "Safety"}],
            }],
            "code": {
                "coding": [{"system": format!("{NAMESPACE}/CodeSystem/status-flag"), "code": code, "display": display}],
                "text": display,
            },
            "subject": {
                "reference": format!("Patient/{}", status.child_id),
                "identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number},
            },
        });
        if !period.is_empty() {
            flag["period"] = Value::Object(period);
        }
        if owner.is_some() {
            flag["author"] = json!({
                "reference": format!("Organization/{}", status.owning_agency_id),
                "display": status.owning_agency_name,
            });
        }
        flag
    };
    let mut flags = Vec::new();
    let plan = status.child_protection_plan || status.unborn_plan;
    if plan || status.plan_started.is_some() || status.plan_ended.is_some() {
        let (code, display) = if status.unborn_plan {
            ("unborn-child-protection-plan", "Unborn child protection plan")
        } else {
            ("child-protection-plan", "Child protection plan")
        };
        flags.push(flag(
            code,
            display,
            plan,
            status.plan_started.as_ref(),
            status.plan_ended.as_ref(),
        ));
    }
    if status.looked_after || status.looked_after_started.is_some() || status.looked_after_ended.is_some() {
        flags.push(flag(
            "looked-after-child",
            "Looked-after child",
            status.looked_after,
            status.looked_after_started.as_ref(),
            status.looked_after_ended.as_ref(),
        ));
    }
    let total = flags.len();
    let mut entries: Vec<Value> = flags
        .into_iter()
        .map(|f| json!({"resource": f, "search": {"mode": "match"}}))
        .collect();
    if total > 0
        && let Some(owner) = owner
    {
        entries.push(json!({"resource": owner, "search": {"mode": "include"}}));
    }
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::now_v7().to_string(),
        "meta": {
            "lastUpdated": format_timestamp(&halcyon_schema::convert::timestamp_from_millis(
                halcyon_schema::clock::now_ms(),
            )),
            "tag": [{
                "system": format!("{NAMESPACE}/CodeSystem/policy-version"),
                "code": status.policy_version,
            }],
        },
        "type": "searchset",
        "total": total,
        "link": [{
            "relation": "self",
            // The `|` of a token search percent-encoded, as a URL must carry it.
            "url": format!("{FLAG_PATH}?{SEARCH_PARAMETER}={NHS_NUMBER_SYSTEM}%7C{nhs_number}"),
        }],
        "entry": entries,
    })
}

/// A flag's id: stable for the child and the kind of flag (a UUID, as FHIR ids allow).
fn flag_id(child_id: &str, code: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("{NAMESPACE}/Flag/{child_id}/{code}").as_bytes(),
    )
    .to_string()
}

/// The owning authority, with its office-hours and out-of-hours numbers.
fn organization(status: &pb::FlagStatus) -> Value {
    let mut telecom = Vec::new();
    let mut contact = Vec::new();
    for (rank, (number, when)) in [
        (&status.office_hours_phone, "Office hours"),
        (&status.out_of_hours_phone, "Out of hours"),
    ]
    .into_iter()
    .enumerate()
    {
        if number.is_empty() {
            continue;
        }
        let point = json!({"system": "phone", "value": number, "use": "work", "rank": rank + 1});
        telecom.push(point.clone());
        contact.push(json!({"purpose": {"text": when}, "telecom": [point]}));
    }
    let mut organization = json!({
        "resourceType": "Organization",
        "id": status.owning_agency_id,
        "identifier": [{"system": format!("{NAMESPACE}/agency-id"), "value": status.owning_agency_id}],
        "active": true,
        "name": status.owning_agency_name,
    });
    if !telecom.is_empty() {
        organization["telecom"] = Value::Array(telecom);
        organization["contact"] = Value::Array(contact);
    }
    organization
}

/// One earlier check of the child's flag, as a complex extension.
fn recent_access(access: &pb::FlagAccess) -> Value {
    let mut parts = vec![
        json!({"url": "agency", "valueReference": {
            "identifier": {"system": format!("{NAMESPACE}/agency-id"), "value": access.agency_id},
            "display": access.agency_name,
        }}),
        json!({"url": "role", "valueString": access.role}),
    ];
    if let Some(at) = &access.at {
        parts.push(json!({"url": "at", "valueDateTime": format_timestamp(at)}));
    }
    json!({"url": format!("{NAMESPACE}/StructureDefinition/recent-access"), "extension": parts})
}

/// `GET /fhir/R4/metadata`: what this server answers (no credentials: it says nothing about anyone).
async fn capability_statement() -> Response {
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_timestamp(&halcyon_schema::convert::timestamp_from_millis(
            halcyon_schema::clock::now_ms(),
        )),
        "publisher": "Halcyon",
        "kind": "instance",
        "software": {"name": "halcyon", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Halcyon: the child protection flag, under the partnership's sharing policy"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "description": "A bearer token (Authorization: Bearer) or a client certificate, and the purpose in X-Halcyon-Purpose; every search is recorded and the owning authority told.",
            },
            "resource": [{
                "type": "Flag",
                "interaction": [{"code": "search-type"}],
                "searchParam": [{
                    "name": SEARCH_PARAMETER,
                    "type": "token",
                    "documentation": format!("The child's NHS number: {NHS_NUMBER_SYSTEM}|<NHS number>"),
                }],
            }],
        }],
    });
    fhir_json(StatusCode::OK, &statement, Code::Ok)
}

async fn method_not_allowed() -> Response {
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "only GET is served here",
        Code::Unimplemented,
    )
}

async fn not_supported(request: Request) -> Response {
    outcome(
        StatusCode::NOT_FOUND,
        "not-supported",
        &format!(
            "{} is not served: this node answers {FLAG_PATH}?{SEARCH_PARAMETER}=… and {METADATA_PATH}",
            request.uri().path()
        ),
        Code::Unimplemented,
    )
}

/// A gRPC refusal as an OperationOutcome with the matching HTTP status.
fn refusal(status: &tonic::Status) -> Response {
    let (http, issue) = match status.code() {
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "login"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not-found"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
    };
    let mut text = status.message().to_owned();
    if status.code() == Code::InvalidArgument && text.starts_with("context") {
        text.push_str(&format!(
            " (over FHIR the context is stated in headers: {PURPOSE_HEADER}, {ACTING_PERSON_ID_HEADER}, {ACTING_PERSON_ROLE_HEADER}, {MIN_POSITION_HEADER})"
        ));
    }
    let mut response = outcome(http, issue, &text, status.code());
    if status.code() == Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// An OperationOutcome of one error.
fn outcome(http: StatusCode, issue: &str, diagnostics: &str, code: Code) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": issue, "diagnostics": diagnostics}],
    });
    fhir_json(http, &body, code)
}

/// A FHIR JSON answer; `code` is the gRPC code it corresponds to, for the node's call metrics.
fn fhir_json(http: StatusCode, body: &Value, code: Code) -> Response {
    let mut response = Response::new(Body::from(
        serde_json::to_vec(body).expect("JSON values serialise"),
    ));
    *response.status_mut() = http;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response.extensions_mut().insert(code);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_names_an_nhs_number_and_nothing_else() {
        let q = |s: &str| nhs_number_searched(s);
        assert_eq!(
            q("patient.identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9434765919").unwrap(),
            "9434765919"
        );
        assert_eq!(
            q("patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919&_format=json").unwrap(),
            "9434765919"
        );
        assert_eq!(q("").unwrap_err().0, "required");
        assert_eq!(q("patient.identifier=9434765919").unwrap_err().0, "invalid");
        assert_eq!(
            q("patient.identifier=https://example.org/mrn|1").unwrap_err().0,
            "not-supported"
        );
        assert_eq!(q("patient=123").unwrap_err().0, "not-supported");
        assert_eq!(
            q("_format=xml&patient.identifier=a|b").unwrap_err().0,
            "not-supported"
        );
        let twice = "patient.identifier=https://fhir.nhs.uk/Id/nhs-number|1&patient.identifier=https://fhir.nhs.uk/Id/nhs-number|2";
        assert_eq!(q(twice).unwrap_err().0, "invalid");
    }

    #[test]
    fn the_context_comes_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(context_from(&h).unwrap().purpose, 0, "missing: left to the gate");
        h.insert(PURPOSE_HEADER, HeaderValue::from_static("purpose_direct_care"));
        h.insert(ACTING_PERSON_ID_HEADER, HeaderValue::from_static("ed-nurse-17"));
        h.insert(
            MIN_POSITION_HEADER,
            HeaderValue::from_static("EVENTS_CSC_ROTHERHAM:42, EVENTS_POLICE_SY:7"),
        );
        let c = context_from(&h).unwrap();
        assert_eq!(c.purpose, pb::Purpose::DirectCare as i32);
        assert_eq!(c.acting_person_id, "ed-nurse-17");
        assert_eq!(c.min_positions.len(), 2);
        assert_eq!(c.min_positions[1].sequence, 7);
        h.insert(PURPOSE_HEADER, HeaderValue::from_static("curiosity"));
        let e = context_from(&h).unwrap_err();
        assert!(
            e.contains("PURPOSE_DIRECT_CARE") && e.contains("curiosity"),
            "{e}"
        );
        h.insert(PURPOSE_HEADER, HeaderValue::from_static("PURPOSE_UNSPECIFIED"));
        assert!(context_from(&h).is_err());
    }

    #[test]
    fn no_flag_is_an_empty_searchset() {
        let b = bundle(
            &pb::FlagStatus {
                policy_version: "p-1".into(),
                ..Default::default()
            },
            "9434765919",
        );
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 0);
        assert_eq!(b["entry"].as_array().unwrap().len(), 0);
        assert_eq!(b["meta"]["tag"][0]["code"], "p-1");
    }
}
