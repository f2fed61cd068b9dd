//! `halcyon audit chronology`: the integrated multi-agency chronology of a child (the model and how it is
//! reconstructed from the streams: `halcyon_review::chronology`), rendered as text, CSV or one
//! self-contained HTML page (`chronology/html.rs`). Each moment is decided with the policy in force then
//! (`--policy-history`, as `audit as-of`), and the renderings mark each moment a new policy came into force.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use halcyon_policy::{Policy, PolicyHistory};
use halcyon_projector::SignalSpec;
pub use halcyon_review::chronology::{
    Access, Because, Breach, ChildMatch, Chronology, ChronologyRequest, Entry, Lane, Period, PolicyMark,
    SignalMark, reconstruct, reconstruct_held,
};
use halcyon_schema::Category;
use halcyon_schema::convert::{format_timestamp, parse_timestamp, timestamp_from_millis, timestamp_millis};

use crate::cmd::common::{deploy_path, load_registry};
use crate::cmd::replay::OperatorNats;
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
    /// Who reads and why (recorded in the access log first).
    #[command(flatten)]
    read: crate::cmd::operator_read::OperatorRead,
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
    /// Which policy file was in force when (see the file); each moment of the chronology is decided with
    /// the one in force then.
    #[arg(long, env = "HALCYON_POLICY_HISTORY", default_value_os_t = deploy_path("policy/history.toml"))]
    policy_history: PathBuf,
    /// Decide every moment with this policy file instead, whatever the history says.
    #[arg(long)]
    policy: Option<PathBuf>,
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
    #[command(flatten)]
    review_store: crate::cmd::common::ReviewStoreArgs,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let child = ChildMatch::parse(&args.child).map_err(|e| config_error(anyhow!("--child: {e}")))?;
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
    let policies = match &args.policy {
        Some(path) => PolicyHistory::single(Policy::load(path).map_err(|e| config_error(anyhow!("{e}")))?),
        None => PolicyHistory::load(&args.policy_history).map_err(|e| config_error(anyhow!("{e}")))?,
    };
    let timescales = args.timescales.load().map_err(config_error)?;
    let signal_spec = SignalSpec::new(args.signals.load().map_err(config_error)?, &registry);
    let js = args.nats.jetstream("halcyon audit chronology").await?;
    let named = match &child {
        ChildMatch::Nhs(n) => halcyon_schema::ChildId::from_nhs(n),
        ChildMatch::Id(id) => *id,
    };
    args.read
        .record(
            &js,
            "halcyon audit chronology",
            halcyon_policy::Purpose::StatutoryReview,
            Some(named),
        )
        .await?;

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
    let request = ChronologyRequest {
        child,
        as_of_ms,
        registry: &registry,
        policies: &policies,
        timescales: &timescales,
        signal_spec: &signal_spec,
        future_tolerance_ms: args.future.ms(),
        now_ms: halcyon_schema::clock::now_ms(),
    };
    let chronology = match args
        .review_store
        .current(&js, args.future.ms(), &progress)
        .await?
    {
        Some(store) => reconstruct_held(&store, &request)?,
        None => reconstruct(&js, &request, &progress).await?,
    };
    bar.finish_and_clear();
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

/// The words of a chronology: text, CSV, and the phrases the HTML page shares with them.
pub trait Render {
    fn signal_text(&self, s: &SignalMark) -> String;
    fn lanes_text(&self, known: &[Option<i64>]) -> String;
    fn write_signal(&self, out: &mut dyn Write, s: &SignalMark) -> std::io::Result<()>;
    fn write_marks_until(
        &self,
        out: &mut dyn Write,
        breaches: &mut std::iter::Peekable<std::slice::Iter<'_, Breach>>,
        signals: &mut std::iter::Peekable<std::slice::Iter<'_, SignalMark>>,
        policies: &mut std::iter::Peekable<std::vec::IntoIter<(i64, usize)>>,
        until_ms: i64,
    ) -> std::io::Result<()>;
    fn policy_text(&self, policy: usize) -> String;
    fn policies_text(&self) -> String;
    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()>;
    fn write_breach(&self, out: &mut dyn Write, b: &Breach) -> std::io::Result<()>;
    fn breach_text(&self, b: &Breach) -> String;
    fn write_csv(&self, out: &mut dyn Write) -> std::io::Result<()>;
    fn title(&self) -> String;
    fn subtitle(&self) -> String;
    fn periods_text(&self, periods: &[Period]) -> String;
}

impl Render for Chronology {
    /// `SIGNAL S02 exploitation indicators co-occur (co-occurrence, 42 days): cites facts 3, 4, 5, 6;
    /// reviewed by mash-rotherham`.
    fn signal_text(&self, s: &SignalMark) -> String {
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
    fn lanes_text(&self, known: &[Option<i64>]) -> String {
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

    /// Writes the breaches and signals that happened at or before `until_ms`, and the policies that came into
    /// force by the moment after it (a fact that occurred as a policy came into force is decided under it),
    /// that are not written yet.
    fn write_marks_until(
        &self,
        out: &mut dyn Write,
        breaches: &mut std::iter::Peekable<std::slice::Iter<'_, Breach>>,
        signals: &mut std::iter::Peekable<std::slice::Iter<'_, SignalMark>>,
        policies: &mut std::iter::Peekable<std::vec::IntoIter<(i64, usize)>>,
        until_ms: i64,
    ) -> std::io::Result<()> {
        loop {
            let next_breach = breaches.peek().map(|b| b.at_ms).filter(|t| *t <= until_ms);
            let next_signal = signals.peek().map(|s| s.at_ms).filter(|t| *t <= until_ms);
            let next_policy = policies
                .peek()
                .map(|(t, _)| *t)
                .filter(|t| *t <= until_ms.saturating_add(1));
            let first = [next_breach, next_signal].into_iter().flatten().min();
            match (next_policy, first) {
                (Some(p), first) if first.is_none_or(|t| p <= t) => {
                    let (at_ms, policy) = policies.next().expect("peeked");
                    writeln!(
                        out,
                        "   =  {}  {:<18} {}",
                        time(at_ms),
                        "(sharing policy)",
                        self.policy_text(policy)
                    )?;
                }
                _ => match (next_breach, next_signal) {
                    (Some(b), Some(s)) if s < b => self.write_signal(out, signals.next().expect("peeked"))?,
                    (Some(_), _) => self.write_breach(out, breaches.next().expect("peeked"))?,
                    (None, Some(_)) => self.write_signal(out, signals.next().expect("peeked"))?,
                    (None, None) => return Ok(()),
                },
            }
        }
    }

    /// `POLICY england-2026.2 (england.toml) in force: visibility from here on decided under it`.
    fn policy_text(&self, policy: usize) -> String {
        let p = &self.policies[policy];
        format!(
            "POLICY {} ({}) in force: visibility from here on decided under it",
            p.version, p.file
        )
    }

    /// `policy england-2026.2`, or with several `policies england-2026.1 from …, england-2026.2 from …`.
    fn policies_text(&self) -> String {
        let none_at_first = self.facts.first().is_some_and(|f| f.policy.is_none());
        match self.policies.as_slice() {
            [] => "no policy in force".to_owned(),
            [one] if !none_at_first => format!("policy {}", one.version),
            several => format!(
                "policies {}",
                several
                    .iter()
                    .map(|p| match p.in_force_from_ms {
                        Some(t) => format!("{} from {}", p.version, time(t)),
                        None => p.version.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
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
        let mut policies = self.policy_changes().into_iter().peekable();
        for (i, f) in self.facts.iter().enumerate() {
            // A signal fires at its completing fact's moment: listed after that fact.
            self.write_marks_until(out, &mut breaches, &mut signals, &mut policies, f.occurred_ms - 1)?;
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
            if let Some(c) = &f.corrected {
                writeln!(
                    out,
                    "      {} by {} at {}: struck through from then on",
                    if c.entered_in_error {
                        "ENTERED IN ERROR"
                    } else {
                        "CORRECTED"
                    },
                    c.correction_event_id,
                    time(c.corrected_at_ms),
                )?;
            }
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
        self.write_marks_until(out, &mut breaches, &mut signals, &mut policies, i64::MAX)?;
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
    /// met 2 working days late, by ReferralDecisionRecorded <id> at …`.
    fn breach_text(&self, b: &Breach) -> String {
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
        s.push_str(&format!("; {}", b.late_phrase));
        if let Some((event_type, event_id, at_ms)) = &b.closed_by {
            s.push_str(&format!(", by {event_type} {event_id} at {}", time(*at_ms)));
        }
        s
    }

    fn write_csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
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
                match &f.corrected {
                    None => f.event_type.clone(),
                    Some(c) => format!(
                        "{} ({} by {} at {})",
                        f.event_type,
                        if c.entered_in_error {
                            "entered in error"
                        } else {
                            "corrected"
                        },
                        c.correction_event_id,
                        time(c.corrected_at_ms)
                    ),
                },
                f.case_id.clone(),
                f.recorded_ms.map(time).unwrap_or_default(),
                time(f.stored_ms),
                format!("{}:{}", f.stream, f.sequence),
                f.event_id.clone(),
            ];
            row.extend(f.visible.iter().map(|p| self.periods_text(p)));
            csv_row(out, &row)?;
        }
        for (at_ms, policy) in self.policy_changes() {
            let mut row = vec![
                "policy".to_owned(),
                time(at_ms),
                String::new(),
                String::new(),
                self.policy_text(policy),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                self.policies[policy].version.clone(),
            ];
            row.extend(self.lanes.iter().map(|_| String::new()));
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

    fn title(&self) -> String {
        format!("Multi-agency chronology of child {}", self.child)
    }

    fn subtitle(&self) -> String {
        format!(
            "NHS number {}; {} facts from {} agencies; {} accesses; {} deadline breaches; {} signals; {}; {}; generated {}",
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
            self.policies_text(),
            match self.as_of_ms {
                Some(t) => format!("as of {}", time(t)),
                None => "everything the streams held".to_owned(),
            },
            time(self.generated_ms),
        )
    }

    /// `from T` / `from T until U`, several joined with `, `; entitling events and policies named.
    fn periods_text(&self, periods: &[Period]) -> String {
        periods
            .iter()
            .map(|p| {
                let mut s = format!("from {}", time(p.from_ms));
                if let Some(u) = p.until_ms {
                    s.push_str(&format!(" until {}", time(u)));
                }
                match p.because {
                    Some(Because::Fact(b)) => s.push_str(&format!(" (on {})", self.facts[b].event_type)),
                    Some(Because::Policy) => {
                        s.push_str(&format!(" (on policy {})", self.policies[p.policy].version))
                    }
                    None => {}
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
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
}
