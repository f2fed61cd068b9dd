//! `just bench --scale` (issue 19): the same measurements at two sizes of history, in the same run, so that
//! what grows with the history shows as a ratio. For each size: the seeded scenario's events published in
//! chunks, one access record per event in AUDIT (about the same child, at a later time, by an agency of the
//! registry); a rebuild of the read models a node keeps (views, deadlines, signals) beside a bare sled
//! `apply_batch` of the same messages; the rebuild's peak memory growth; sled's bytes beside the streams';
//! and then a real node on those streams, asked about children with a typical history (the median number
//! of facts): `GetChildView`, `ListAccess` and `ListBreaches` over gRPC through the audit gate, and the
//! as-of reconstruction and the chronology from the node's own read models (`Reconstruction::held`,
//! `chronology::reconstruct_held`), each call timed.
//!
//! The streams are on a server with JetStream's default sync (the node is told to accept it): the figures
//! are about what an answer costs as the history grows, not about the disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt as _;
use halcyon_bus::{StreamSpec, list_event_streams, ordered_messages};
use halcyon_grpc::pb;
use halcyon_grpc::pb::audit_service_client::AuditServiceClient;
use halcyon_grpc::pb::deadline_service_client::DeadlineServiceClient;
use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_policy::{AgencyKind, Policy, Principal, Purpose, Role};
use halcyon_projector::{DeadlineSpec, Identifier, Projector, SignalSpec, ViewSpec};
use halcyon_review::as_of::Reconstruction;
use halcyon_review::chronology::{ChildMatch, ChronologyRequest, reconstruct_held};
use halcyon_review::rebuild::{Until, project_streams};
use halcyon_schema::subject::AUDIT_STREAM;
use halcyon_schema::{ChildId, NhsNumber, Registry};
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message as _;
use tonic::Request;

use super::projection::{fill, print_bytes_by_prefix, proc_status_kb, reset_peak_rss};
use super::{Report, figure};

/// Children generated at a time.
const CHUNK_CHILDREN: usize = 2_000;
/// Access records per AUDIT message (a node's group commit holds one to a few dozen).
const RECORDS_PER_MESSAGE: usize = 20;
/// Children with a typical history asked about, and calls per method.
const TYPICAL_CHILDREN: usize = 20;
const CALLS: usize = 200;
/// The reviews are heavier: fewer calls.
const REVIEW_CALLS: usize = 60;

pub(super) struct Scale<'a> {
    pub agencies: &'a ScenarioAgencies,
    pub registry: &'a Registry,
    pub window: usize,
    pub sizes: Vec<usize>,
}

/// What one size measured.
struct Measured {
    events: usize,
    stream_bytes: u64,
    audit_records: usize,
    rebuild_rate: f64,
    bare_rate: f64,
    rss_before_mib: f64,
    rss_growth_mib: f64,
    sled_bytes: u64,
    index_rate: f64,
    /// One as-of reconstruction by replaying the streams (what `audit as-of` does without a review store), s.
    replay_as_of_secs: f64,
    /// Per method: (p50, p99) in µs.
    calls: BTreeMap<&'static str, (f64, f64)>,
}

impl Scale<'_> {
    pub async fn rows(&self, report: &mut Report) -> anyhow::Result<()> {
        let mut measured = Vec::new();
        for &n in &self.sizes {
            eprintln!("scale: {} events", figure(n as f64));
            measured.push(self.measure(n).await?);
        }
        for m in &measured {
            let n = figure(m.events as f64);
            report.row(
                &format!("scale.{n}.rebuild(views,deadlines,signals)"),
                m.rebuild_rate,
                "events/s",
                "bare_sled_apply_batch(same messages)",
                m.bare_rate,
            );
            report.row(
                &format!("scale.{n}.rebuild.peak_rss_growth"),
                m.rss_growth_mib,
                "MiB",
                "VmRSS_before_rebuild",
                m.rss_before_mib,
            );
            report.row(
                &format!("scale.{n}.sled_size_on_disk"),
                m.sled_bytes as f64 / 1e6,
                "MB",
                "stream_bytes(state.bytes)",
                m.stream_bytes as f64 / 1e6,
            );
            report.row(
                &format!("scale.{n}.as_of.replaying_the_streams(one call)"),
                m.replay_as_of_secs * 1e6,
                "µs",
                "as_of.p50(from the read models)",
                m.calls["as_of"].0,
            );
            report.row(
                &format!(
                    "scale.{n}.access_index({} records)",
                    figure(m.audit_records as f64)
                ),
                m.index_rate,
                "records/s",
                "rebuild(events/s)",
                m.rebuild_rate,
            );
        }
        let (Some(small), Some(large)) = (measured.first(), measured.last()) else {
            return Ok(());
        };
        if measured.len() > 1 {
            for (method, (p50, p99)) in &large.calls {
                let (b50, b99) = small.calls[method];
                let (nl, ns) = (figure(large.events as f64), figure(small.events as f64));
                report.row(
                    &format!("scale.{nl}.{method}.p50"),
                    *p50,
                    "µs",
                    &format!("at {ns}"),
                    b50,
                );
                report.row(
                    &format!("scale.{nl}.{method}.p99"),
                    *p99,
                    "µs",
                    &format!("at {ns}"),
                    b99,
                );
            }
        } else {
            for (method, (p50, p99)) in &large.calls {
                let n = figure(large.events as f64);
                report.row(&format!("scale.{n}.{method}.p99"), *p99, "µs", "p50", *p50);
            }
        }
        Ok(())
    }

    async fn measure(&self, n_events: usize) -> anyhow::Result<Measured> {
        let server = NatsServer::start_with(Auth::Open, false);
        let client = halcyon_bus::connect(&server.url(), &Default::default(), "halcyon-bench-scale").await?;
        let js = jetstream::new(client.clone());
        let spec = StreamSpec::single_server();
        halcyon_bus::streams::apply(&js, &spec, self.registry.iter().map(|a| &a.id)).await?;

        // The history: events, and one access record per event.
        let started = Instant::now();
        let mut published = 0usize;
        let mut facts_per_child: Vec<(NhsNumber, usize)> = Vec::new();
        let mut records = 0usize;
        for chunk in 0.. {
            if published >= n_events {
                break;
            }
            let config = ScenarioConfig {
                seed: 19_000 + chunk as u64,
                children: CHUNK_CHILDREN,
                ..Default::default()
            };
            let scenario = Scenario::generate(&config, self.agencies);
            let mut envelopes = scenario.envelopes;
            envelopes.truncate(n_events - published);
            fill(&client, &envelopes, self.window).await?;
            published += envelopes.len();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for e in &envelopes {
                *counts
                    .entry(e.child.as_ref().map(|c| c.nhs_number.clone()).unwrap_or_default())
                    .or_default() += 1;
            }
            for child in &scenario.children {
                if let Some(&count) = counts.get(child.nhs.as_str()) {
                    facts_per_child.push((child.nhs.clone(), count));
                }
            }
            records += publish_accesses(&js, &envelopes).await?;
        }
        let mut stream_bytes = 0u64;
        for name in list_event_streams(&js).await? {
            stream_bytes += js.get_stream(&name).await?.info().await?.state.bytes;
        }
        eprintln!(
            "  published {} events ({:.0} MB) and {} access records in {:.1} s",
            figure(published as f64),
            stream_bytes as f64 / 1e6,
            figure(records as f64),
            started.elapsed().as_secs_f64()
        );

        // The rebuild a node makes of them, memory and bytes.
        let peak_reset = reset_peak_rss();
        let rss_before = proc_status_kb("VmRSS")?;
        let dir = tempfile::tempdir().context("a temp dir for the rebuild")?;
        let projector = Arc::new(self.read_models(Projector::open(dir.path())?));
        let started = Instant::now();
        let applied = project_streams(&js, &projector, &Until::End, &|_, _| {}).await?;
        projector.flush()?;
        let rebuild_secs = started.elapsed().as_secs_f64();
        let peak = proc_status_kb("VmHWM")?;
        if applied as usize != published {
            bail!("the rebuild applied {applied} events, {published} were published");
        }
        let sled_bytes = projector.size_on_disk()?;
        let started = Instant::now();
        let indexed = halcyon_review::access_trail::index_audit(&js, &projector).await?;
        let index_rate = indexed as f64 / started.elapsed().as_secs_f64();
        print_bytes_by_prefix(&projector)?;
        drop(projector);
        eprintln!(
            "  rebuild: {} events/s; sled {:.0} MB for {:.0} MB of stream ({:.2}×); peak RSS growth {:.0} MiB{}",
            figure(published as f64 / rebuild_secs),
            sled_bytes as f64 / 1e6,
            stream_bytes as f64 / 1e6,
            sled_bytes as f64 / stream_bytes as f64,
            (peak.saturating_sub(rss_before)) as f64 / 1024.0,
            if peak_reset {
                ""
            } else {
                " (VmHWM could not be reset)"
            }
        );
        let bare_rate = bare_sled(&js).await?;
        eprintln!("  bare sled apply_batch: {} events/s", figure(bare_rate));
        let started = Instant::now();
        let replayed = halcyon_review::as_of::reconstruct(
            &js,
            halcyon_schema::clock::now_ms(),
            halcyon_schema::validate::CLOCK_TOLERANCE_MS,
        )
        .await?;
        let replay_as_of_secs = started.elapsed().as_secs_f64();
        drop(replayed);
        eprintln!("  as-of by replaying the streams: {replay_as_of_secs:.1} s");

        // A node on the same streams, and calls about children with a typical history.
        let data = tempfile::tempdir().context("a temp dir for the node")?;
        let mut config = super::query::node_config(self.registry, &server.url(), data.path())?;
        config.allow_unsynced_jetstream = true;
        let node = halcyon_node::Node::start(config).await?;
        let mut ends = Vec::new();
        for name in list_event_streams(&js).await? {
            let last = js.get_stream(&name).await?.info().await?.state.last_sequence;
            ends.push((name, last));
        }
        node.projector()
            .wait_for(&ends, Duration::from_secs(900))
            .await
            .context("waiting for the node to project the streams")?;
        // Views, deadlines and signals are derived after the facts are applied: wait for them too.
        while node.projector().views_stale()? {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let audit_last = js
            .get_stream(AUDIT_STREAM)
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        let mut indexed = node.projector().subscribe_access_position();
        tokio::time::timeout(Duration::from_secs(900), indexed.wait_for(|p| *p >= audit_last))
            .await
            .context("waiting for the node to index AUDIT")??;
        let calls = self.calls(&node, &facts_per_child).await?;
        node.stop(Duration::from_secs(10)).await;
        Ok(Measured {
            events: published,
            stream_bytes,
            audit_records: records,
            rebuild_rate: published as f64 / rebuild_secs,
            bare_rate,
            rss_before_mib: rss_before as f64 / 1024.0,
            rss_growth_mib: peak.saturating_sub(rss_before) as f64 / 1024.0,
            sled_bytes,
            index_rate,
            replay_as_of_secs,
            calls,
        })
    }

    /// The read models a node keeps.
    fn read_models(&self, p: Projector) -> Projector {
        p.with_views(ViewSpec::new(Arc::new(Policy::england()), self.registry))
            .with_deadlines(DeadlineSpec::new(Arc::new(
                halcyon_timescales::Timescales::england(),
            )))
            .with_signals(SignalSpec::new(
                Arc::new(halcyon_signals::SignalRules::england()),
                self.registry,
            ))
    }

    /// p50 and p99 of each method for children with the median number of facts.
    async fn calls(
        &self,
        node: &halcyon_node::Node,
        facts_per_child: &[(NhsNumber, usize)],
    ) -> anyhow::Result<BTreeMap<&'static str, (f64, f64)>> {
        let mut counts: Vec<usize> = facts_per_child.iter().map(|(_, n)| *n).collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        let url = format!("http://{}", node.addr);
        let mut query = QueryServiceClient::connect(url.clone()).await?;
        // Typical children the caller (police, safeguarding) is shown something of.
        let mut typical: Vec<(ChildId, NhsNumber)> = Vec::new();
        for (nhs, n) in facts_per_child {
            if *n != median {
                continue;
            }
            let child = ChildId::from_nhs(nhs);
            if query
                .get_child_view(authorised(
                    pb::GetChildViewRequest {
                        context: Some(context(Purpose::Safeguarding)),
                        child_id: child.to_string(),
                    },
                    "demo-police-sy",
                ))
                .await
                .is_ok()
            {
                typical.push((child, nhs.clone()));
            }
            if typical.len() == TYPICAL_CHILDREN {
                break;
            }
        }
        if typical.is_empty() {
            bail!("no child with the median history ({median} facts) is shown to the police");
        }
        eprintln!(
            "  {} children with the typical history ({median} facts) asked about",
            typical.len()
        );
        let mut audit = AuditServiceClient::connect(url.clone()).await?;
        let mut deadlines = DeadlineServiceClient::connect(url.clone()).await?;
        let mut out = BTreeMap::new();

        let mut timed = Vec::new();
        for i in 0..CALLS {
            let child = typical[i % typical.len()].0.to_string();
            let sent = Instant::now();
            query
                .get_child_view(authorised(
                    pb::GetChildViewRequest {
                        context: Some(context(Purpose::Safeguarding)),
                        child_id: child,
                    },
                    "demo-police-sy",
                ))
                .await?;
            timed.push(sent.elapsed());
        }
        out.insert("get_child_view", percentiles(timed));

        let mut timed = Vec::new();
        for i in 0..CALLS {
            let child = typical[i % typical.len()].0.to_string();
            let sent = Instant::now();
            let listed = audit
                .list_access(authorised(
                    pb::ListAccessRequest {
                        context: Some(context(Purpose::Audit)),
                        child_id: child,
                        ..Default::default()
                    },
                    "demo-privacy-officer",
                ))
                .await?
                .into_inner();
            timed.push(sent.elapsed());
            if listed.records.is_empty() {
                bail!("ListAccess found no record about a child the bench wrote records about");
            }
        }
        out.insert("list_access", percentiles(timed));

        let mut timed = Vec::new();
        for i in 0..CALLS {
            let child = typical[i % typical.len()].0.to_string();
            let sent = Instant::now();
            deadlines
                .list_breaches(authorised(
                    pb::ListBreachesRequest {
                        context: Some(context(Purpose::Safeguarding)),
                        child_id: child,
                        ..Default::default()
                    },
                    "demo-police-sy",
                ))
                .await?;
            timed.push(sent.elapsed());
        }
        out.insert("list_breaches", percentiles(timed));

        // The reviews, from the node's own read models.
        let store = node.projector();
        let policy = Policy::england();
        let timescales = halcyon_timescales::Timescales::england();
        let signal_spec = SignalSpec::new(Arc::new(halcyon_signals::SignalRules::england()), self.registry);
        let police = Principal {
            agency: "police-sy".parse().expect("agency id"),
            kind: AgencyKind::Police,
            role: Role::Practitioner,
        };
        let now = halcyon_schema::clock::now_ms();
        let mut timed = Vec::new();
        for i in 0..REVIEW_CALLS {
            let (child, nhs) = &typical[i % typical.len()];
            let (store, policy, timescales, signal_spec, police) =
                (store.clone(), &policy, &timescales, &signal_spec, &police);
            let sent = Instant::now();
            tokio::task::block_in_place(|| -> anyhow::Result<()> {
                let then = Reconstruction::held(store, now);
                let held = then.child(&Identifier::Nhs(nhs.clone()))?;
                let child = held.filter(|h| h == child).context("the typical child is held")?;
                let seen = then
                    .could_see(policy, self.registry, police, Purpose::Safeguarding, child)?
                    .context("the child has facts")?;
                std::hint::black_box(then.deadlines(timescales, &seen)?);
                std::hint::black_box(then.signals(
                    signal_spec,
                    policy,
                    police,
                    Purpose::Safeguarding,
                    &seen,
                )?);
                Ok(())
            })?;
            timed.push(sent.elapsed());
        }
        out.insert("as_of", percentiles(timed));

        let policies = halcyon_policy::PolicyHistory::single(policy);
        let mut timed = Vec::new();
        for i in 0..REVIEW_CALLS {
            let child = typical[i % typical.len()].0;
            let request = ChronologyRequest {
                child: ChildMatch::Id(child),
                as_of_ms: None,
                registry: self.registry,
                policies: &policies,
                timescales: &timescales,
                signal_spec: &signal_spec,
                future_tolerance_ms: halcyon_schema::validate::CLOCK_TOLERANCE_MS,
                now_ms: now,
            };
            let sent = Instant::now();
            let chronology = tokio::task::block_in_place(|| reconstruct_held(&store, &request))?;
            timed.push(sent.elapsed());
            if chronology.accesses.is_empty() {
                bail!("the chronology of a child with access records shows none");
            }
        }
        out.insert("chronology", percentiles(timed));
        for (method, (p50, p99)) in &out {
            eprintln!("    {method:<16} p50 {p50:>9.0} µs  p99 {p99:>9.0} µs");
        }
        Ok(out)
    }
}

fn context(purpose: Purpose) -> pb::RequestContext {
    pb::RequestContext {
        purpose: purpose.to_pb() as i32,
        ..Default::default()
    }
}

fn authorised<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

fn percentiles(mut timed: Vec<Duration>) -> (f64, f64) {
    timed.sort();
    let at = |q: f64| timed[((timed.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// One access record per event: about the event's child, a day after it was recorded, by an agency of the
/// scenario, written as a node writes them (several to an AUDIT message). Returns the records written.
async fn publish_accesses(js: &jetstream::Context, envelopes: &[pb::Envelope]) -> anyhow::Result<usize> {
    let mut acks = Vec::new();
    for group in envelopes.chunks(RECORDS_PER_MESSAGE) {
        let records: Vec<pb::AccessRecord> = group
            .iter()
            .filter_map(|e| {
                let nhs: NhsNumber = e.child.as_ref()?.nhs_number.parse().ok()?;
                let at = e
                    .recorded_at
                    .as_ref()
                    .map_or(0, halcyon_schema::convert::timestamp_millis)
                    + 86_400_000;
                Some(pb::AccessRecord {
                    record_id: halcyon_schema::EventId::new().to_string(),
                    at: Some(halcyon_schema::convert::timestamp_from_millis(at)),
                    agency_id: e.agency_id.clone(),
                    role: "practitioner".into(),
                    principal_id: format!("bench-{}", e.agency_id),
                    purpose: Purpose::Safeguarding.to_pb() as i32,
                    method: "GetChildView".into(),
                    child_id: ChildId::from_nhs(&nhs).to_string(),
                    outcome: pb::AccessOutcome::Permitted as i32,
                    facts_disclosed: 3,
                    node_id: "bench".into(),
                    ..Default::default()
                })
            })
            .collect();
        let n = records.len();
        let agency = &group[0].agency_id;
        let payload = pb::AccessRecords { records }.encode_to_vec();
        acks.push((
            n,
            js.publish(
                halcyon_schema::subject::audit_subject(&agency.parse()?),
                payload.into(),
            )
            .await?,
        ));
    }
    let mut written = 0;
    for (n, ack) in acks {
        ack.await?;
        written += n;
    }
    Ok(written)
}

/// The bare write: every agency stream's messages read into memory, then `apply_batch` of 1,000 into a
/// fresh sled in a temp dir (with the node's page cache) under the keys the projector files them under
/// (child, occurred at, agency, sequence: `keys::fact`, made before the clock starts), then a flush;
/// messages/s of the writing alone.
async fn bare_sled(js: &jetstream::Context) -> anyhow::Result<f64> {
    let mut rows: Vec<(Vec<u8>, bytes::Bytes)> = Vec::new();
    for name in list_event_streams(js).await? {
        let last = js.get_stream(&name).await?.info().await?.state.last_sequence;
        if last == 0 {
            continue;
        }
        let mut messages = std::pin::pin!(ordered_messages(js, &name, 1).await?);
        while let Some(m) = messages.next().await {
            let m = m?;
            let e = pb::Envelope::decode(m.payload.as_ref())?;
            let nhs: NhsNumber = e
                .child
                .as_ref()
                .map(|c| c.nhs_number.as_str())
                .unwrap_or("")
                .parse()?;
            let occurred = e
                .occurred_at
                .as_ref()
                .map_or(0, halcyon_schema::convert::timestamp_millis);
            let key =
                halcyon_projector::keys::fact(&ChildId::from_nhs(&nhs), occurred, &e.agency_id, m.sequence);
            rows.push((key, m.payload));
            if m.sequence >= last {
                break;
            }
        }
    }
    let n = rows.len();
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let dir = tempfile::tempdir().context("a temp dir for sled")?;
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(halcyon_projector::store::SLED_CACHE_BYTES_DEFAULT)
            .open()?;
        let tree = db.open_tree("model")?;
        let started = Instant::now();
        for chunk in rows.chunks(1000) {
            let mut batch = sled::Batch::default();
            for (k, v) in chunk {
                batch.insert(k.as_slice(), v.as_ref());
            }
            tree.apply_batch(batch)?;
        }
        db.flush()?;
        Ok(n as f64 / started.elapsed().as_secs_f64())
    })
    .await?
}
