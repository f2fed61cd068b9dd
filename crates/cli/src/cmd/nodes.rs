//! `halcyon nodes`: the nodes of a deployment from their heartbeats in the nodes bucket: whether each is
//! live, its version, duties, clock offset from NATS time and positions, and how the configurations of the
//! live nodes differ (policy, agencies, timescales, signals, binary), part by part.

use std::collections::{BTreeMap, BTreeSet};

use halcyon_bus::connect;
use halcyon_bus::nodes::{StoredHeartbeat, duty_holder, heartbeats};

use super::common::NatsArgs;
use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A node whose last heartbeat is older than this many seconds is listed as stopped.
    #[arg(long, default_value_t = 15)]
    live_within_secs: u64,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: NatsArgs,
}

/// For each part of the fingerprint on which live nodes differ: each live node's value.
fn differences(live: &[&StoredHeartbeat]) -> BTreeMap<String, BTreeMap<String, String>> {
    let parts: BTreeSet<&String> = live.iter().flat_map(|n| n.heartbeat.fingerprint.keys()).collect();
    parts
        .into_iter()
        .filter_map(|part| {
            let values: BTreeMap<String, String> = live
                .iter()
                .map(|n| {
                    (
                        n.heartbeat.node_id.clone(),
                        n.heartbeat
                            .fingerprint
                            .get(part)
                            .cloned()
                            .unwrap_or_else(|| "none".into()),
                    )
                })
                .collect();
            let distinct: BTreeSet<&String> = values.values().collect();
            (distinct.len() > 1).then(|| (part.clone(), values))
        })
        .collect()
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let client = connect(&args.nats.nats_url, &args.nats.credentials()?, "halcyon nodes").await?;
    let js = async_nats::jetstream::new(client);
    let kv = halcyon_bus::nodes::bucket(&js).await?;
    let all = heartbeats(&kv).await?;
    let keeper = duty_holder(&kv, halcyon_node::chain::DUTY).await?;
    // "Now" is the newest heartbeat's stored time (NATS's clock), so no local clock is trusted.
    let now = all.iter().map(|n| n.stored_ms).max().unwrap_or(0);
    let live_ms = (args.live_within_secs * 1000) as i64;
    let live: Vec<&StoredHeartbeat> = all.iter().filter(|n| now - n.stored_ms <= live_ms).collect();
    let diff = differences(&live);
    if args.json {
        let nodes: Vec<serde_json::Value> = all
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(&n.heartbeat).expect("a heartbeat serialises");
                v["live"] = serde_json::json!(now - n.stored_ms <= live_ms);
                v["heartbeat_age_ms"] = serde_json::json!(now - n.stored_ms);
                v
            })
            .collect();
        let out = serde_json::json!({
            "nodes": nodes,
            "checkpoint_keeper": keeper.as_ref().map(|(h, _, _)| h.node_id.clone()),
            "differences": diff,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    if all.is_empty() {
        println!("no node has written a heartbeat");
        return Ok(());
    }
    for n in &all {
        let h = &n.heartbeat;
        let age = (now - n.stored_ms) as f64 / 1000.0;
        let state = if now - n.stored_ms <= live_ms {
            "live"
        } else {
            "stopped"
        };
        let offset = h
            .clock_offset_ms
            .map_or_else(|| "unmeasured".to_owned(), |ms| format!("{ms:+} ms"));
        let duties = if h.duties.is_empty() {
            "none".to_owned()
        } else {
            h.duties.join(", ")
        };
        let projected: u64 = h.positions.values().sum();
        println!(
            "{:<20} {state:<8} heartbeat {age:.1} s before the newest   version {}   listen {}   duties: {duties}   clock {offset}   events projected {projected} over {} streams",
            h.node_id,
            h.version,
            h.listen,
            h.positions.len()
        );
    }
    match &keeper {
        Some((h, revision, _)) => println!("checkpoint keeper: {} (lease revision {revision})", h.node_id),
        None => println!("checkpoint keeper: none"),
    }
    if diff.is_empty() {
        println!("configuration: the same on every live node");
    } else {
        println!("configuration differs between live nodes:");
        for (part, values) in &diff {
            let each: Vec<String> = values.iter().map(|(node, v)| format!("{node} {v}")).collect();
            println!("  {part}: {}", each.join("; "));
        }
    }
    Ok(())
}
