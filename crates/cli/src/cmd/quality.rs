//! `halcyon quality --agency ID`: the data-quality report of one agency's own records (issue 20), read
//! from its stream alone — projected into a throwaway store, so the store's own checks (a correction of an
//! event the agency did not record, an unlink of a link it did not make) give the answers a node gives:
//!
//! - facts the agency withdrew as entered in error, and facts it corrected (with the correcting event);
//! - its events a node quarantined, with the reasons;
//! - identity repairs: identifier links it undid, NHS numbers it recorded as superseded;
//! - events recorded long after they occurred (`--late-days`, default 30): the bus stored them that much
//!   after the occurred-at the agency gave.
//!
//! Counts and lists by event id and position: no names, narratives or identifiers of children. The read is
//! recorded first, like every operator read of child data (`operator_read`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::anyhow;
use halcyon_projector::Projector;
use halcyon_review::rebuild::{Until, project_streams};
use halcyon_schema::convert::{format_timestamp, timestamp_from_millis};
use halcyon_schema::pb::event::Kind;
use halcyon_schema::{AgencyId, StreamName};
use serde_json::json;

use crate::cmd::operator_read::OperatorRead;
use crate::cmd::replay::OperatorNats;
use crate::{Failure, config_error};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    nats: OperatorNats,
    #[command(flatten)]
    read: OperatorRead,
    /// The agency whose records to report on (its stream only).
    #[arg(long)]
    agency: String,
    /// An event stored more than this many days after the occurred-at it gives counts as recorded late.
    #[arg(long, default_value_t = 30)]
    late_days: u32,
    /// The nodes' tolerance for future-dated events (the same quarantine decisions as a node).
    #[command(flatten)]
    future: crate::cmd::common::FutureToleranceArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One entry of a list: where the event is, and what about it.
#[derive(Debug, Clone)]
struct Item {
    position: String,
    event_id: String,
    detail: String,
}

impl Item {
    fn json(&self) -> serde_json::Value {
        json!({"position": self.position, "event_id": self.event_id, "detail": self.detail})
    }
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let agency: AgencyId = args
        .agency
        .parse()
        .map_err(|e| config_error(anyhow!("--agency {:?}: {e}", args.agency)))?;
    let stream = StreamName::for_agency(&agency).to_string();
    let js = args.nats.jetstream("halcyon quality").await?;
    if js.get_stream(&stream).await.is_err() {
        return Err(config_error(anyhow!(
            "agency {agency} has no stream {stream} on the server"
        )));
    }
    args.read
        .record(&js, "halcyon quality", halcyon_policy::Purpose::Audit, None)
        .await?;
    let projector = Arc::new(
        Projector::temporary()?
            .with_future_tolerance_ms(args.future.ms())
            .with_schema_version_max(args.future.schema_version_max()?),
    );
    let until = Until::Positions(BTreeMap::from([(stream.clone(), u64::MAX)]));
    let read = project_streams(&js, &projector, &until, &|_, _| {})
        .await
        .map_err(|e| anyhow!("{e}"))?;

    let (mut withdrawn, mut corrected, mut unlinked, mut superseded, mut late) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let late_ms = i64::from(args.late_days) * DAY_MS;
    for fact in projector.all_facts()? {
        let position = format!("{}:{}", fact.stream, fact.sequence);
        let item = |detail: String| Item {
            position: position.clone(),
            event_id: fact.envelope.event_id.clone(),
            detail,
        };
        match fact.kind() {
            Some(Kind::RecordCorrected(c)) if c.entered_in_error => withdrawn.push(item(format!(
                "withdraws {} as entered in error",
                c.corrected_event_id
            ))),
            Some(Kind::RecordCorrected(c)) => {
                corrected.push(item(format!("corrects {}", c.corrected_event_id)))
            }
            Some(Kind::IdentifierUnlinked(u)) => {
                unlinked.push(item(match (u.upn.is_empty(), u.local_id.is_empty()) {
                    (false, _) => "undoes a link of a UPN".to_owned(),
                    _ => format!("undoes a link of a {} local id", u.local_agency_id),
                }))
            }
            Some(Kind::NhsNumberSuperseded(_)) => {
                superseded.push(item("records an NHS number superseded".into()))
            }
            _ => {}
        }
        let delay = fact.stored_at_ms - fact.occurred_ms();
        if delay > late_ms {
            late.push(item(format!(
                "occurred {}, stored {} ({} days later)",
                format_timestamp(&timestamp_from_millis(fact.occurred_ms())),
                format_timestamp(&timestamp_from_millis(fact.stored_at_ms)),
                delay / DAY_MS
            )));
        }
    }
    let quarantined: Vec<Item> = projector
        .quarantine(None)?
        .into_iter()
        .map(|q| Item {
            position: format!("{}:{}", q.stream, q.sequence),
            event_id: q.event_id.clone().unwrap_or_default(),
            detail: q.reasons(),
        })
        .collect();
    let sections: [(&str, &str, &Vec<Item>); 6] = [
        ("entered_in_error", "withdrawn as entered in error", &withdrawn),
        ("corrected", "corrected", &corrected),
        ("quarantined", "quarantined by the nodes", &quarantined),
        ("links_undone", "identifier links undone", &unlinked),
        (
            "nhs_numbers_superseded",
            "NHS numbers recorded as superseded",
            &superseded,
        ),
        ("recorded_late", "recorded late", &late),
    ];
    if args.json {
        let mut out = serde_json::Map::new();
        out.insert("agency".into(), json!(agency.to_string()));
        out.insert("stream".into(), json!(stream));
        out.insert("events_read".into(), json!(read));
        out.insert("late_days".into(), json!(args.late_days));
        for (key, _, items) in sections {
            out.insert(
                key.into(),
                json!(items.iter().map(Item::json).collect::<Vec<_>>()),
            );
        }
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    println!("data quality of {agency}'s own records ({stream}, {read} events read)");
    for (_, title, items) in sections {
        let title = if title == "recorded late" {
            format!("recorded more than {} days after they occurred", args.late_days)
        } else {
            title.to_owned()
        };
        println!("  {title}: {}", items.len());
        for i in items.iter() {
            let id = if i.event_id.is_empty() { "?" } else { &i.event_id };
            println!("    {}  event {id}  {}", i.position, i.detail);
        }
    }
    Ok(())
}
