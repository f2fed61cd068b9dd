//! Text renderings for people: a child's view as a dated list of facts with only the fields that survived.

use std::fmt::Write as _;

use halcyon_grpc::pb;
use halcyon_schema::Category;
use halcyon_schema::convert::format_timestamp;

/// The fields of a minimised event, `name: value`, skipping empty ones.
pub fn event_fields(event: &pb::Event) -> String {
    let value = serde_json::to_value(event).unwrap_or_default();
    let inner = value
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or_default();
    let mut parts = Vec::new();
    flatten("", &inner, &mut parts);
    parts.join("; ")
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            let items: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                .collect();
            out.push(format!("{prefix}: {}", items.join(", ")));
        }
        serde_json::Value::String(s) if !s.is_empty() => out.push(format!("{prefix}: {}", humanise(s))),
        serde_json::Value::Bool(true) => out.push(format!("{prefix}: yes")),
        serde_json::Value::Number(n) => out.push(format!("{prefix}: {n}")),
        _ => {}
    }
}

/// `PLAN_CATEGORY_SEXUAL_ABUSE` -> `sexual abuse`; other strings unchanged.
fn humanise(s: &str) -> String {
    let enum_prefixes = [
        "PLAN_CATEGORY_",
        "REFERRAL_OUTCOME_",
        "ATTENDANCE_REASON_",
        "EXPLOITATION_INDICATOR_",
        "INVOLVEMENT_KIND_",
        "LEGAL_STATUS_",
        "RAG_",
        "EXEMPTION_REASON_",
        "DATA_CATEGORY_",
    ];
    for p in enum_prefixes {
        if let Some(rest) = s.strip_prefix(p) {
            return rest.to_ascii_lowercase().replace('_', " ");
        }
    }
    s.to_owned()
}

pub fn view(view: &pb::ChildView) -> String {
    let mut out = String::new();
    let withheld: u32 = view.withheld.iter().map(|w| w.count).sum();
    let _ = writeln!(out, "child {}  (policy {})", view.child_id, view.policy_version);
    match &view.identity {
        Some(id) => {
            let _ = writeln!(
                out,
                "identity: {} {}, born {}, NHS number {}",
                id.given_name, id.family_name, id.date_of_birth, id.nhs_number
            );
        }
        None => out.push_str("identity: withheld\n"),
    }
    let _ = writeln!(out, "{} fact(s) shown, {withheld} withheld", view.facts.len());
    for f in &view.facts {
        let date = f.occurred_at.as_ref().map(format_timestamp).unwrap_or_default();
        let category = Category::from_wire(f.category)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let projection = pb::Projection::try_from(f.projection)
            .map(|p| {
                p.as_str_name()
                    .trim_start_matches("PROJECTION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:<18} {:<4} {:<30} [{projection}]",
            &date[..16.min(date.len())],
            f.agency_id,
            category,
            f.event_type
        );
        if let Some(event) = &f.event {
            let fields = event_fields(event);
            if !fields.is_empty() {
                let _ = writeln!(out, "        {fields}");
            }
        }
    }
    if withheld > 0 {
        out.push_str("withheld under:\n");
        for w in &view.withheld {
            let _ = writeln!(out, "  {:>3} x {}", w.count, w.rule);
        }
    }
    out
}

pub fn flag(f: &pb::FlagStatus) -> String {
    let mut out = String::new();
    let date = |t: &Option<halcyon_schema::convert::Timestamp>| {
        t.as_ref()
            .map(|t| format_timestamp(t)[..10].to_owned())
            .unwrap_or_else(|| "-".into())
    };
    let status = match (f.child_protection_plan, f.unborn_plan, f.looked_after) {
        (false, false, false) if f.plan_ended.is_some() => {
            "no current flag (a child protection plan ended)".to_owned()
        }
        (false, false, false) => "no flag".to_owned(),
        (cp, unborn, la) => [
            (cp, "CHILD PROTECTION PLAN"),
            (unborn, "UNBORN CHILD PROTECTION PLAN"),
            (la, "LOOKED AFTER"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(" + "),
    };
    let _ = writeln!(out, "flag: {status}  (policy {})", f.policy_version);
    if f.plan_started.is_some() || f.plan_ended.is_some() {
        let _ = writeln!(
            out,
            "  plan started {}, ended {}",
            date(&f.plan_started),
            date(&f.plan_ended)
        );
    }
    if f.looked_after_started.is_some() {
        let _ = writeln!(
            out,
            "  looked after from {}, to {}",
            date(&f.looked_after_started),
            date(&f.looked_after_ended)
        );
    }
    if !f.owning_agency_id.is_empty() {
        let _ = writeln!(
            out,
            "  owning authority: {} — office hours {}, out of hours {}",
            f.owning_agency_name,
            f.office_hours_phone,
            if f.out_of_hours_phone.is_empty() {
                "-"
            } else {
                &f.out_of_hours_phone
            }
        );
    }
    if f.owner_notified {
        out.push_str("  the owning authority has been notified of this check\n");
    }
    if !f.recent_accesses.is_empty() {
        let _ = writeln!(out, "  earlier checks of this flag (most recent first):");
        for a in &f.recent_accesses {
            let at = a.at.as_ref().map(format_timestamp).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "    {at}  {} ({}), {}", a.agency_name, a.agency_id, a.role);
        }
    }
    out
}
