//! `halcyon audit chronology`: the integrated multi-agency chronology of a child — every fact in time order
//! with its originating agency and category, for each agency from when it could see it, and the accesses
//! to the child's record — as text, CSV or one self-contained HTML page (`chronology/html.rs`).
//!
//! The facts come from the streams, not from a node: the agency streams are projected into a throwaway
//! store (`project_streams`, the path of `rebuild --as-of` and as-of reconstruction), so no node has to be
//! stopped or trusted, the identity links and ordering are the projector's own, and `--as-of` gives the
//! chronology as it stood at a moment. Visibility is the standing view of each registered agency (purpose
//! safeguarding, as `ViewSpec` derives it): walking the child's facts in (occurred at, agency, sequence)
//! order, the views are derived again with the policy once per change of the child's sharing state, and
//! an agency "could see" a fact from the moment the fact occurred or the moment the change that entitled
//! it occurred (until a later change withdrew it). Accesses are the AUDIT stream's records about the child.
//!
//! Statutory deadline breaches are marked on the time axis when they first happened (the first moment after
//! the due time), with the rule, the start fact, how late and what closed them: the child's deadlines as
//! they stood at `--as-of` (or now), derived by the deadline projection's own code (`as_of::deadlines_at`,
//! as `audit as-of` shows them). An agency could know of a breach once it could see the start fact.
//! Multi-agency signals are marked when they first fired (`as_of::signals_at`, the signal projection's
//! own derivation), citing facts by their number in the chronology, with the agencies that could receive
//! each and from when: addressed by the rule (its kind, or the lead authority then) and entitled by the
//! policy to the signal category (safeguarding) on the child's sharing state then.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use halcyon_grpc::pb;
use halcyon_policy::Policy;
use halcyon_policy::{AgencyKind, Principal, Purpose, Role};
use halcyon_projector::{Fact, Identifier, Projector, SharingState, SignalSpec, StoredSignal, ViewSpec};
use halcyon_review::access_trail::{LocatedRecord, access_records};
use halcyon_review::as_of::{DeadlineThen, Standing, deadlines_at, signal_permit, signals_at};
use halcyon_review::rebuild::{Until, project_streams};
use halcyon_schema::convert::{format_timestamp, parse_timestamp, timestamp_from_millis, timestamp_millis};
use halcyon_schema::{Category, ChildId, EventKindExt, Registry};

use crate::cmd::common::{deploy_path, load_registry};
use crate::cmd::replay::{ChildMatch, OperatorNats};
use crate::{Failure, config_error};

mod html;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Csv,
    /// One self-contained page: inline CSS and script, no external references, printable.
    Html,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    nats: OperatorNats,
    /// The child: an NHS number or a halcyon child id.
    #[arg(long)]
    child: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The chronology as it stood then: only messages the server had stored by this time (RFC 3339 or a
    /// date), and accesses recorded by then.
    #[arg(long)]
    as_of: Option<String>,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    #[arg(long, env = "HALCYON_POLICY", default_value_os_t = deploy_path("policy/england.toml"))]
    policy: PathBuf,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
    /// The statutory timescales deadline breaches are derived with (the node's).
    #[command(flatten)]
    timescales: crate::cmd::deadlines::TimescaleArgs,
    /// The signal rules signals are derived with (the node's).
    #[command(flatten)]
    signals: crate::cmd::signals::SignalArgs,
    /// The nodes' tolerance for future-dated events.
    #[command(flatten)]
    future: crate::cmd::common::FutureToleranceArgs,
}

/// One agency's lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub agency: String,
    /// The registry's name, or the id for an agency that is not registered.
    pub name: String,
}

/// A stretch of time during which an agency could see a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    /// `None`: still visible at the end of the chronology.
    pub until_ms: Option<i64>,
    /// The fact (index into `facts`) whose arrival entitled the agency, when not the fact itself.
    pub because: Option<usize>,
}

/// One fact of the chronology.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub occurred_ms: i64,
    /// When the agency's system recorded it, as the envelope says.
    pub recorded_ms: Option<i64>,
    /// When the NATS server stored it: from then on Halcyon held it.
    pub stored_ms: i64,
    pub agency: String,
    pub case_id: String,
    pub category: Option<Category>,
    pub event_type: String,
    pub event_id: String,
    pub stream: String,
    pub sequence: u64,
    /// For each lane (same order as `Chronology::lanes`), when that agency could see this fact.
    pub visible: Vec<Vec<Period>>,
}

/// One access to the child's record, from the AUDIT stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub at_ms: i64,
    pub agency: String,
    pub role: String,
    pub purpose: String,
    pub method: String,
    pub outcome: String,
    pub facts_disclosed: u32,
    pub facts_withheld: u32,
    pub categories: Vec<Category>,
    pub break_glass: bool,
    pub record_id: String,
    pub audit_sequence: u64,
}

/// A statutory deadline breached, marked when it first was.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// When it was first breached: the first millisecond after its due time.
    pub at_ms: i64,
    /// `T01/<start event id>`.
    pub key: String,
    pub rule_id: String,
    pub rule_name: String,
    /// `1 working day`.
    pub limit: String,
    /// The agency whose deadline it was: the one that recorded the start fact.
    pub agency: String,
    pub case_id: String,
    pub start_event_type: String,
    pub start_event_id: String,
    /// The start fact (index into `facts`).
    pub start_fact: Option<usize>,
    pub due_ms: i64,
    /// `still open`, `met late`, `stopped late`, `superseded late`.
    pub state: String,
    /// How late: to the fact that closed it, or to the end of the chronology while open.
    pub late: String,
    /// The fact that closed it: (event type, event id, occurred at).
    pub closed_by: Option<(String, String, i64)>,
    /// For each lane (same order as `Chronology::lanes`), from when that agency could know of the breach:
    /// from when it was breached or from when the agency could see the start fact, whichever was later.
    pub known: Vec<Option<i64>>,
}

/// A multi-agency signal, marked when it first fired.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalMark {
    /// When it first fired: the occurred-at of the fact that completed its pattern.
    pub at_ms: i64,
    /// `S02/<event id of the completing fact>`.
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub rule_kind: String,
    pub window_days: u32,
    /// The facts it cites (indexes into `facts`), in its order; the last completed it.
    pub cited: Vec<usize>,
    /// `reviewed by mash-rotherham`, the latest outcome recorded.
    pub outcome: Option<String>,
    /// For each lane (same order as `Chronology::lanes`), from when that agency could receive it.
    pub known: Vec<Option<i64>>,
}

/// The whole chronology of one child.
#[derive(Debug, Clone, PartialEq)]
pub struct Chronology {
    pub child: ChildId,
    pub nhs_number: Option<String>,
    pub lanes: Vec<Lane>,
    pub facts: Vec<Entry>,
    pub accesses: Vec<Access>,
    /// Deadline breaches, in the order they first happened.
    pub breaches: Vec<Breach>,
    /// Multi-agency signals, in the order they first fired.
    pub signals: Vec<SignalMark>,
    pub policy_version: String,
    /// `None`: everything the streams held.
    pub as_of_ms: Option<i64>,
    pub generated_ms: i64,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let child_match = ChildMatch::parse(&args.child).map_err(|e| config_error(anyhow!("--child: {e}")))?;
    let as_of_ms = args
        .as_of
        .as_deref()
        .map(|s| {
            parse_timestamp(s)
                .map(|t| timestamp_millis(&t))
                .map_err(|e| config_error(anyhow!("--as-of: {e}")))
        })
        .transpose()?;
    let registry = load_registry(&args.agencies)?;
    let policy = Arc::new(Policy::load(&args.policy).map_err(|e| config_error(anyhow!("{e}")))?);
    let timescales = args.timescales.load().map_err(config_error)?;
    let signal_spec = SignalSpec::new(args.signals.load().map_err(config_error)?, &registry);
    let js = args.nats.jetstream("halcyon audit chronology").await?;

    let projector = Arc::new(Projector::temporary()?.with_future_tolerance_ms(args.future.ms()));
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("reading the streams {bar:40} {pos}/{len} events {per_sec}")
            .expect("template"),
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let until = as_of_ms.map_or(Until::End, Until::StoredAt);
    let read = project_streams(&js, &projector, &until, &progress)
        .await
        .map_err(|e| anyhow!("projecting the streams: {e}"))?;
    bar.finish_and_clear();
    let child = match &child_match {
        ChildMatch::Nhs(nhs) => projector.resolve(&Identifier::Nhs(nhs.clone()))?,
        ChildMatch::Id(id) => *id,
    };
    let facts = projector.facts(&child)?;
    if facts.is_empty() {
        return Err(anyhow!(
            "no facts about that child in the streams ({read} events read){}",
            if as_of_ms.is_some() { " by --as-of" } else { "" }
        )
        .into());
    }
    let records = access_records(&js)
        .await
        .map_err(|e| anyhow!("reading the AUDIT stream: {e}"))?;
    let accesses = records
        .into_iter()
        .filter_map(|r| access_about(r, child))
        .filter(|a| as_of_ms.is_none_or(|t| a.at_ms <= t))
        .collect();
    let generated_ms = now_ms();
    let until_ms = as_of_ms.unwrap_or(generated_ms);
    let deadlines = deadlines_at(&projector, &timescales, child, &facts, until_ms)?;
    let signals = signals_at(&signal_spec, &facts, until_ms);
    let spec = ViewSpec::new(policy.clone(), &registry);
    let chronology = Chronology::build(&spec, &registry, child, &facts, accesses, as_of_ms, generated_ms)
        .with_breaches(&deadlines)
        .with_signals(&spec, &signal_spec, &facts, &signals.signals, until_ms);
    tracing::info!(
        facts = chronology.facts.len(),
        accesses = chronology.accesses.len(),
        breaches = chronology.breaches.len(),
        signals = chronology.signals.len(),
        lanes = chronology.lanes.len(),
        "chronology built"
    );

    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match args.format {
        Format::Text => chronology.write_text(&mut out)?,
        Format::Csv => chronology.write_csv(&mut out)?,
        Format::Html => out.write_all(html::render(&chronology).as_bytes())?,
    }
    out.flush().context("writing the chronology")?;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The access an AUDIT record describes, if it is about `child`.
fn access_about(located: LocatedRecord, child: ChildId) -> Option<Access> {
    let r = located.record;
    if r.child_id != child.to_string() {
        return None;
    }
    Some(Access {
        at_ms: r.at.as_ref().map(timestamp_millis).unwrap_or_default(),
        purpose: pb::Purpose::try_from(r.purpose)
            .map(|p| wire_name(p.as_str_name(), "PURPOSE_"))
            .unwrap_or_else(|_| "?".into()),
        outcome: pb::AccessOutcome::try_from(r.outcome)
            .map(|o| wire_name(o.as_str_name(), "ACCESS_OUTCOME_"))
            .unwrap_or_else(|_| "?".into()),
        categories: r
            .categories_disclosed
            .iter()
            .filter_map(|c| Category::from_wire(*c))
            .collect(),
        break_glass: r.break_glass_relied_on || !r.break_glass_reason.is_empty(),
        agency: r.agency_id,
        role: r.role,
        method: r.method,
        facts_disclosed: r.facts_disclosed,
        facts_withheld: r.facts_withheld,
        record_id: r.record_id,
        audit_sequence: located.sequence,
    })
}

/// `PURPOSE_SAFEGUARDING` → `safeguarding`.
fn wire_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

impl Chronology {
    /// The chronology of `child` from its facts (in stored order) and the accesses to its record.
    pub fn build(
        spec: &ViewSpec,
        registry: &Registry,
        child: ChildId,
        facts: &[Fact],
        accesses: Vec<Access>,
        as_of_ms: Option<i64>,
        generated_ms: i64,
    ) -> Self {
        let mut lanes: Vec<Lane> = spec
            .agencies
            .iter()
            .map(|(id, _)| Lane {
                agency: id.to_string(),
                name: registry
                    .get(id)
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| id.to_string()),
            })
            .collect();
        for agency in facts
            .iter()
            .map(|f| &f.envelope.agency_id)
            .chain(accesses.iter().map(|a| &a.agency))
        {
            if !lanes.iter().any(|l| &l.agency == agency) {
                lanes.push(Lane {
                    agency: agency.clone(),
                    name: agency.clone(),
                });
            }
        }
        let visible = visibility(spec, facts, &lanes);
        let entries = facts
            .iter()
            .zip(visible)
            .map(|(f, visible)| Entry {
                occurred_ms: f.occurred_ms(),
                recorded_ms: f.envelope.recorded_at.as_ref().map(timestamp_millis),
                stored_ms: f.stored_at_ms,
                agency: f.envelope.agency_id.clone(),
                case_id: f.envelope.case_id.clone(),
                category: Category::from_wire(f.envelope.category),
                event_type: f.kind().map(|k| k.type_name()).unwrap_or("(none)").to_owned(),
                event_id: f.envelope.event_id.clone(),
                stream: f.stream.clone(),
                sequence: f.sequence,
                visible,
            })
            .collect();
        let nhs_number = facts
            .iter()
            .filter_map(|f| f.envelope.child.as_ref())
            .map(|c| c.nhs_number.clone())
            .find(|n| !n.is_empty());
        let mut accesses = accesses;
        accesses.sort_by_key(|a| (a.at_ms, a.audit_sequence));
        Self {
            child,
            nhs_number,
            lanes,
            facts: entries,
            accesses,
            breaches: Vec::new(),
            signals: Vec::new(),
            policy_version: spec.policy.version().to_owned(),
            as_of_ms,
            generated_ms,
        }
    }

    /// Marks the deadlines among `deadlines` that had been breached, when each first was.
    pub fn with_breaches(mut self, deadlines: &[DeadlineThen]) -> Self {
        let by_event: HashMap<&str, usize> = self
            .facts
            .iter()
            .enumerate()
            .map(|(i, f)| (f.event_id.as_str(), i))
            .collect();
        let mut breaches: Vec<Breach> = deadlines
            .iter()
            .filter(|d| d.standing.is_breach())
            .filter_map(|d| {
                let at_ms = d.first_breached_ms?;
                let start = d.deadline.started_by.clone().unwrap_or_default();
                let start_fact = by_event.get(start.event_id.as_str()).copied();
                let known = match start_fact {
                    None => vec![None; self.lanes.len()],
                    Some(i) => self.facts[i]
                        .visible
                        .iter()
                        .map(|periods| {
                            periods
                                .iter()
                                .find(|p| p.until_ms.is_none_or(|u| u > at_ms))
                                .map(|p| p.from_ms.max(at_ms))
                        })
                        .collect(),
                };
                let state = match (d.standing, d.ending()) {
                    (Standing::MetLate, _) => "met late",
                    (_, halcyon_projector::deadlines::Ending::Superseded) => "superseded late",
                    (Standing::StoppedLate, _) => "stopped late",
                    _ => "still open",
                };
                Some(Breach {
                    at_ms,
                    key: d.key(),
                    rule_id: d.deadline.rule_id.clone(),
                    rule_name: d.rule_name.clone(),
                    limit: d.limit.clone(),
                    agency: start.agency_id,
                    case_id: start.case_id,
                    start_event_type: start.event_type,
                    start_event_id: start.event_id,
                    start_fact,
                    due_ms: d.deadline.due_at_ms,
                    state: state.to_owned(),
                    late: d.margin.map(|m| m.to_string()).unwrap_or_default(),
                    closed_by: d
                        .deadline
                        .ended_by
                        .as_ref()
                        .map(|f| (f.event_type.clone(), f.event_id.clone(), f.at_ms)),
                    known,
                })
            })
            .collect();
        breaches.sort_by(|a, b| (a.at_ms, &a.key).cmp(&(b.at_ms, &b.key)));
        self.breaches = breaches;
        self
    }

    /// Marks `signals` (the child's, from `facts`, up to `until_ms`) when each first fired, with the lanes
    /// whose agency could receive it and from when: the first moment from its firing (the firing, or a
    /// later fact that changed the child's sharing state) at which the rule addressed the agency's standing
    /// principal and the policy entitled it to the signal category for safeguarding.
    pub fn with_signals(
        mut self,
        view_spec: &ViewSpec,
        signal_spec: &SignalSpec,
        facts: &[Fact],
        signals: &[StoredSignal],
        until_ms: i64,
    ) -> Self {
        let by_event: HashMap<&str, usize> = self
            .facts
            .iter()
            .enumerate()
            .map(|(i, f)| (f.event_id.as_str(), i))
            .collect();
        let kinds: HashMap<&str, AgencyKind> = view_spec
            .agencies
            .iter()
            .map(|(id, kind)| (id.as_str(), *kind))
            .collect();
        let mut marks = Vec::new();
        for s in signals {
            let Some(rule) = signal_spec.rules.get(&s.rule_id) else {
                continue;
            };
            // The moments the answer can change: the firing, then each later fact.
            let mut moments: Vec<i64> = std::iter::once(s.fired_at_ms)
                .chain(
                    facts
                        .iter()
                        .map(Fact::occurred_ms)
                        .filter(|t| *t > s.fired_at_ms && *t <= until_ms),
                )
                .collect();
            moments.sort_unstable();
            moments.dedup();
            let states: Vec<(i64, SharingState)> = moments
                .iter()
                .map(|t| (*t, SharingState::derive_until(facts, *t)))
                .collect();
            let known = self
                .lanes
                .iter()
                .map(|lane| {
                    let kind = *kinds.get(lane.agency.as_str())?;
                    let agency: halcyon_schema::AgencyId = lane.agency.parse().ok()?;
                    let principal = Principal {
                        agency: agency.clone(),
                        kind,
                        role: if kind == AgencyKind::Mash {
                            Role::MashMember
                        } else {
                            Role::Practitioner
                        },
                    };
                    states.iter().find_map(|(t, state)| {
                        let lead = state.owner.as_ref() == Some(&agency);
                        (rule.addresses(kind, lead)
                            && signal_permit(
                                &view_spec.policy,
                                signal_spec.rules.category(),
                                &principal,
                                Purpose::Safeguarding,
                                &state.for_agency(&agency),
                                *t,
                            )
                            .is_some())
                        .then_some(*t)
                    })
                })
                .collect();
            marks.push(SignalMark {
                at_ms: s.fired_at_ms,
                id: s.id(),
                rule_id: s.rule_id.clone(),
                rule_name: rule.name.clone(),
                rule_kind: rule.kind.as_str().to_owned(),
                window_days: rule.window_days,
                cited: s
                    .facts
                    .iter()
                    .filter_map(|f| by_event.get(f.event_id.as_str()).copied())
                    .collect(),
                outcome: s.outcome.as_ref().map(|o| {
                    let name = halcyon_grpc::pb::SignalOutcome::try_from(o.outcome)
                        .map(|v| wire_name(v.as_str_name(), "SIGNAL_OUTCOME_").replace('_', " "))
                        .unwrap_or_else(|_| "?".into());
                    format!("{name} by {}", o.agency_id)
                }),
                known,
            });
        }
        marks.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        self.signals = marks;
        self
    }

    /// `SIGNAL S02 exploitation indicators co-occur (co-occurrence, 42 days): cites facts 3, 4, 5, 6;
    /// reviewed by mash-rotherham`.
    pub fn signal_text(&self, s: &SignalMark) -> String {
        let cited: Vec<String> = s.cited.iter().map(|i| (i + 1).to_string()).collect();
        let mut text = format!(
            "SIGNAL {} {} ({}, {} days): cites facts {}",
            s.rule_id,
            s.rule_name,
            s.rule_kind,
            s.window_days,
            cited.join(", ")
        );
        match &s.outcome {
            Some(o) => text.push_str(&format!("; {o}")),
            None => text.push_str("; no outcome recorded"),
        }
        text
    }

    /// `mash-rotherham from …; csc-rotherham from …`, or `nobody`.
    pub fn lanes_text(&self, known: &[Option<i64>]) -> String {
        let known: Vec<String> = self
            .lanes
            .iter()
            .zip(known)
            .filter_map(|(lane, from)| from.map(|t| format!("{} from {}", lane.agency, time(t))))
            .collect();
        if known.is_empty() {
            "nobody".to_owned()
        } else {
            known.join("; ")
        }
    }

    fn write_signal(&self, out: &mut dyn Write, s: &SignalMark) -> std::io::Result<()> {
        writeln!(
            out,
            "   *  {}  {:<18} {}",
            time(s.at_ms),
            "(multi-agency)",
            self.signal_text(s)
        )?;
        writeln!(out, "      could receive it: {}", self.lanes_text(&s.known))
    }

    /// Writes the breaches and signals that happened at or before `until_ms` and are not written yet.
    fn write_marks_until(
        &self,
        out: &mut dyn Write,
        breaches: &mut std::iter::Peekable<std::slice::Iter<'_, Breach>>,
        signals: &mut std::iter::Peekable<std::slice::Iter<'_, SignalMark>>,
        until_ms: i64,
    ) -> std::io::Result<()> {
        loop {
            let next_breach = breaches.peek().map(|b| b.at_ms).filter(|t| *t <= until_ms);
            let next_signal = signals.peek().map(|s| s.at_ms).filter(|t| *t <= until_ms);
            match (next_breach, next_signal) {
                (Some(b), Some(s)) if s < b => self.write_signal(out, signals.next().expect("peeked"))?,
                (Some(_), _) => self.write_breach(out, breaches.next().expect("peeked"))?,
                (None, Some(_)) => self.write_signal(out, signals.next().expect("peeked"))?,
                (None, None) => return Ok(()),
            }
        }
    }

    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.title())?;
        writeln!(out, "{}", self.subtitle())?;
        writeln!(out)?;
        writeln!(
            out,
            "Facts ({}), in the order they occurred; deadline breaches ({}) marked ! when they first happened, \
             signals ({}) marked * when they first fired",
            self.facts.len(),
            self.breaches.len(),
            self.signals.len()
        )?;
        let mut breaches = self.breaches.iter().peekable();
        let mut signals = self.signals.iter().peekable();
        for (i, f) in self.facts.iter().enumerate() {
            // A signal fires at its completing fact's moment: listed after that fact.
            self.write_marks_until(out, &mut breaches, &mut signals, f.occurred_ms - 1)?;
            writeln!(
                out,
                "{:>4}  {}  {:<18} {:<4} {:<30} case {}  event {}  held from {}",
                i + 1,
                time(f.occurred_ms),
                f.agency,
                f.category.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                f.event_type,
                f.case_id,
                f.event_id,
                time(f.stored_ms),
            )?;
            let mut seen = Vec::new();
            let mut unseen = Vec::new();
            for (lane, periods) in self.lanes.iter().zip(&f.visible) {
                if periods.is_empty() {
                    unseen.push(lane.agency.as_str());
                } else {
                    seen.push(format!("{} {}", lane.agency, self.periods_text(periods)));
                }
            }
            writeln!(
                out,
                "      visible to: {}",
                if seen.is_empty() {
                    "nobody".to_owned()
                } else {
                    seen.join("; ")
                }
            )?;
            if !unseen.is_empty() {
                writeln!(out, "      never visible to: {}", unseen.join(", "))?;
            }
        }
        self.write_marks_until(out, &mut breaches, &mut signals, i64::MAX)?;
        writeln!(out)?;
        writeln!(out, "Accesses to the child's record ({})", self.accesses.len())?;
        for a in &self.accesses {
            writeln!(out, "      {}", access_text(a))?;
        }
        Ok(())
    }

    fn write_breach(&self, out: &mut dyn Write, b: &Breach) -> std::io::Result<()> {
        writeln!(
            out,
            "   !  {}  {:<18} {}",
            time(b.at_ms),
            b.agency,
            self.breach_text(b)
        )?;
        writeln!(out, "      could know of it: {}", self.lanes_text(&b.known))
    }

    /// `BREACH T01 referral decision (1 working day): due …, started by ReferralReceived <id> (fact 3);
    /// met late, 2 working days (1 d 10 h) late, by ReferralDecisionRecorded <id> at …`.
    pub fn breach_text(&self, b: &Breach) -> String {
        let mut s = format!(
            "BREACH {} {} ({}): due {}, started by {} {}",
            b.rule_id,
            b.rule_name,
            b.limit,
            time(b.due_ms),
            b.start_event_type,
            b.start_event_id
        );
        if let Some(i) = b.start_fact {
            s.push_str(&format!(" (fact {})", i + 1));
        }
        s.push_str(&format!("; {}, {} late", b.state, b.late));
        if let Some((event_type, event_id, at_ms)) = &b.closed_by {
            s.push_str(&format!(", by {event_type} {event_id} at {}", time(*at_ms)));
        }
        s
    }

    pub fn write_csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut header: Vec<String> = [
            "row",
            "at",
            "agency",
            "category",
            "event",
            "case_id",
            "recorded_at",
            "stored_at",
            "position",
            "id",
        ]
        .map(str::to_owned)
        .to_vec();
        header.extend(self.lanes.iter().map(|l| format!("visible_to:{}", l.agency)));
        csv_row(out, &header)?;
        for f in &self.facts {
            let mut row = vec![
                "fact".to_owned(),
                time(f.occurred_ms),
                f.agency.clone(),
                f.category.map(|c| c.to_string()).unwrap_or_default(),
                f.event_type.clone(),
                f.case_id.clone(),
                f.recorded_ms.map(time).unwrap_or_default(),
                time(f.stored_ms),
                format!("{}:{}", f.stream, f.sequence),
                f.event_id.clone(),
            ];
            row.extend(f.visible.iter().map(|p| self.periods_text(p)));
            csv_row(out, &row)?;
        }
        for b in &self.breaches {
            let mut row = vec![
                "breach".to_owned(),
                time(b.at_ms),
                b.agency.clone(),
                String::new(),
                self.breach_text(b),
                b.case_id.clone(),
                String::new(),
                String::new(),
                String::new(),
                b.key.clone(),
            ];
            row.extend(
                b.known
                    .iter()
                    .map(|from| from.map(|t| format!("from {}", time(t))).unwrap_or_default()),
            );
            csv_row(out, &row)?;
        }
        for sig in &self.signals {
            let mut row = vec![
                "signal".to_owned(),
                time(sig.at_ms),
                String::new(),
                String::new(),
                self.signal_text(sig),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                sig.id.clone(),
            ];
            row.extend(
                sig.known
                    .iter()
                    .map(|from| from.map(|t| format!("from {}", time(t))).unwrap_or_default()),
            );
            csv_row(out, &row)?;
        }
        for a in &self.accesses {
            let mut row = vec![
                "access".to_owned(),
                time(a.at_ms),
                a.agency.clone(),
                categories_text(&a.categories),
                access_event(a),
                String::new(),
                String::new(),
                String::new(),
                format!("AUDIT:{}", a.audit_sequence),
                a.record_id.clone(),
            ];
            row.extend(self.lanes.iter().map(|_| String::new()));
            csv_row(out, &row)?;
        }
        Ok(())
    }

    pub fn title(&self) -> String {
        format!("Multi-agency chronology of child {}", self.child)
    }

    pub fn subtitle(&self) -> String {
        format!(
            "NHS number {}; {} facts from {} agencies; {} accesses; {} deadline breaches; {} signals; policy {}; {}; generated {}",
            self.nhs_number.as_deref().unwrap_or("not recorded"),
            self.facts.len(),
            self.facts
                .iter()
                .map(|f| &f.agency)
                .collect::<BTreeSet<_>>()
                .len(),
            self.accesses.len(),
            self.breaches.len(),
            self.signals.len(),
            self.policy_version,
            match self.as_of_ms {
                Some(t) => format!("as of {}", time(t)),
                None => "everything the streams held".to_owned(),
            },
            time(self.generated_ms),
        )
    }

    /// `from T` / `from T until U`, several joined with `, `; entitling events named.
    pub fn periods_text(&self, periods: &[Period]) -> String {
        periods
            .iter()
            .map(|p| {
                let mut s = format!("from {}", time(p.from_ms));
                if let Some(u) = p.until_ms {
                    s.push_str(&format!(" until {}", time(u)));
                }
                if let Some(b) = p.because {
                    s.push_str(&format!(" (on {})", self.facts[b].event_type));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every fact's periods of visibility to every lane's agency, under its standing entitlements.
///
/// The child's facts are walked in their stored (occurred at, agency, sequence) order. While the sharing
/// state stays the same, each decision stays the same, so the views are derived once per run of facts with
/// an unchanged state (once per entitlement change), on the facts up to the end of the run.
fn visibility(spec: &ViewSpec, facts: &[Fact], lanes: &[Lane]) -> Vec<Vec<Vec<Period>>> {
    let mut out = vec![vec![Vec::new(); lanes.len()]; facts.len()];
    let by_event: HashMap<&str, usize> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| (f.envelope.event_id.as_str(), i))
        .collect();
    let lane_of: HashMap<&str, usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (l.agency.as_str(), i))
        .collect();
    // (lane, fact) → when it became visible and because of which fact.
    let mut open: HashMap<(usize, usize), (i64, Option<usize>)> = HashMap::new();
    let states: Vec<SharingState> = (0..facts.len())
        .map(|i| SharingState::derive(&facts[..=i]))
        .collect();
    let mut run_start = 0;
    for end in 0..facts.len() {
        if end + 1 < facts.len() && states[end + 1] == states[end] {
            continue;
        }
        let moment = facts[run_start].occurred_ms();
        let views = spec.derive(&facts[..=end]);
        let mut now = BTreeSet::new();
        for view in &views.agencies {
            let Some(&lane) = lane_of.get(view.agency.as_str()) else {
                continue;
            };
            for entry in views.entries(view.agency.as_str()) {
                if let Some(&fact) = by_event.get(entry.event_id.as_str()) {
                    now.insert((lane, fact));
                }
            }
        }
        for &(lane, fact) in &now {
            open.entry((lane, fact)).or_insert_with(|| {
                if fact >= run_start {
                    (facts[fact].occurred_ms(), None)
                } else {
                    (moment, Some(run_start))
                }
            });
        }
        let closed: Vec<(usize, usize)> = open.keys().filter(|k| !now.contains(k)).copied().collect();
        for key in closed {
            let (from_ms, because) = open.remove(&key).expect("open");
            if from_ms < moment {
                out[key.1][key.0].push(Period {
                    from_ms,
                    until_ms: Some(moment),
                    because,
                });
            }
        }
        run_start = end + 1;
    }
    for ((lane, fact), (from_ms, because)) in open {
        out[fact][lane].push(Period {
            from_ms,
            until_ms: None,
            because,
        });
    }
    for per_fact in &mut out {
        for periods in per_fact {
            periods.sort_by_key(|p| p.from_ms);
        }
    }
    out
}

/// RFC 3339, UTC.
pub fn time(ms: i64) -> String {
    format_timestamp(&timestamp_from_millis(ms))
}

fn categories_text(categories: &[Category]) -> String {
    categories
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GetChildView permitted (safeguarding; 3 disclosed, 2 withheld)`.
fn access_event(a: &Access) -> String {
    format!(
        "{} {} ({}; {} disclosed, {} withheld){}",
        a.method,
        a.outcome,
        a.purpose,
        a.facts_disclosed,
        a.facts_withheld,
        if a.break_glass { "; BREAK-GLASS" } else { "" }
    )
}

fn access_text(a: &Access) -> String {
    format!(
        "{}  {:<18} {:<14} {}  categories [{}]  record {} (AUDIT:{})",
        time(a.at_ms),
        a.agency,
        a.role,
        access_event(a),
        categories_text(&a.categories),
        a.record_id,
        a.audit_sequence
    )
}

/// One RFC 4180 row: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_row(out: &mut dyn Write, fields: &[String]) -> std::io::Result<()> {
    let cells: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect();
    out.write_all(cells.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        let mut out = Vec::new();
        csv_row(&mut out, &["a".into(), "b,c".into(), "say \"hi\"".into()]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
        );
    }

    fn fact(sequence: u64, agency: &str, occurred_ms: i64, kind: pb::event::Kind) -> Fact {
        let category = kind.default_category();
        Fact {
            stream: format!("EVENTS_{sequence}"),
            sequence,
            stored_at_ms: occurred_ms + 60_000,
            envelope: pb::Envelope {
                event_id: format!("00000000-0000-7000-8000-00000000000{sequence}"),
                case_id: format!("CASE-{sequence}"),
                agency_id: agency.into(),
                occurred_at: Some(timestamp_from_millis(occurred_ms)),
                category: category.to_pb() as i32,
                child: Some(pb::ChildIdentifiers {
                    nhs_number: "9434765919".into(),
                    ..Default::default()
                }),
                event: Some(pb::Event { kind: Some(kind) }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_agency_sees_a_fact_from_when_it_occurred_or_from_the_fact_that_entitled_it() {
        use pb::event::Kind;
        let registry = Registry::from_toml(
            &std::fs::read_to_string(halcyon_testkit::workspace_root().join("deploy/agencies.toml")).unwrap(),
        )
        .unwrap();
        let spec = ViewSpec::new(Arc::new(Policy::england()), &registry);
        let (t1, t2, t3) = (1_000_000, 2_000_000, 3_000_000);
        let facts = vec![
            fact(
                1,
                "school-oakwood",
                t1,
                Kind::AttendanceConcernRecorded(Default::default()),
            ),
            fact(
                2,
                "police-sy",
                t2,
                Kind::MissingEpisodeReported(Default::default()),
            ),
            fact(
                3,
                "csc-rotherham",
                t3,
                Kind::AgencyCheckRequested(Default::default()),
            ),
        ];
        let child = ChildId::from_nhs(&"9434765919".parse().unwrap());
        let c = Chronology::build(&spec, &registry, child, &facts, Vec::new(), None, 0);
        assert_eq!(c.lanes.len(), registry.len(), "one lane per registered agency");
        let lane = |agency: &str| c.lanes.iter().position(|l| l.agency == agency).unwrap();
        let attendance = &c.facts[0].visible;
        // Its own agency from when it occurred.
        assert_eq!(
            attendance[lane("school-oakwood")],
            vec![Period {
                from_ms: t1,
                until_ms: None,
                because: None
            }]
        );
        // Police once it had a case of its own about the child (D9: missing or exploitation).
        assert_eq!(
            attendance[lane("police-sy")],
            vec![Period {
                from_ms: t2,
                until_ms: None,
                because: Some(1)
            }]
        );
        // The MASH once the referral came to it.
        assert_eq!(
            attendance[lane("mash-rotherham")],
            vec![Period {
                from_ms: t3,
                until_ms: None,
                because: Some(2)
            }]
        );
        assert!(attendance[lane("vol-safe-haven")].is_empty());
        // The views agree with the policy's own derivation on the whole history.
        let views = spec.derive(&facts);
        for (i, entry) in c.facts.iter().enumerate() {
            for (l, periods) in c.lanes.iter().zip(&entry.visible) {
                let now = views.agencies.iter().any(|a| {
                    a.agency == l.agency
                        && views
                            .entries(&a.agency)
                            .iter()
                            .any(|e| e.event_id == facts[i].envelope.event_id)
                });
                assert_eq!(
                    now,
                    periods.last().is_some_and(|p| p.until_ms.is_none()),
                    "fact {i}, {}",
                    l.agency
                );
            }
        }
    }

    #[test]
    fn wire_names_read_as_words() {
        assert_eq!(wire_name("PURPOSE_SAFEGUARDING", "PURPOSE_"), "safeguarding");
    }
}
