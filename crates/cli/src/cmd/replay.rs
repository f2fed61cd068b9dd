//! `halcyon replay`: an operator streams events from the agency streams, decoded, as JSON lines or an
//! aligned table. Selects by agency, child (NHS number or halcyon child id), case, sequence range and
//! stored-time range. Streams are read with ordered consumers and merged by stored time with one message
//! per stream held at a time, so memory stays constant however long the history.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream;
use halcyon_bus::{Credentials, RawMessage, list_event_streams};
use halcyon_grpc::pb;
pub use halcyon_review::replay::{ChildMatch, Replay, Selection, Summary, derived_child};
use halcyon_schema::convert::{format_timestamp, parse_timestamp, timestamp_from_millis, timestamp_millis};
use halcyon_schema::{AgencyId, CaseId, Category, EventKindExt, StreamName};

use super::common::{deploy_path, load_registry};
use crate::{Failure, config_error};

/// Where NATS is, as the operator (who may read every stream; agencies may not).
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorNats {
    /// NATS server URL.
    #[arg(long, env = "HALCYON_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user; reading streams needs the operator's permissions.
    #[arg(long, env = "HALCYON_NATS_USER", default_value = "operator")]
    pub nats_user: String,
    #[arg(long, env = "HALCYON_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Passwords by NATS user (TOML `user = "password"`, e.g. deploy/nats/dev-credentials.toml), used when
    /// --nats-password is not given.
    #[arg(long, env = "HALCYON_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
}

impl OperatorNats {
    fn password(&self) -> Result<Option<String>, Failure> {
        if let Some(p) = &self.nats_password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.credentials else {
            return Ok(None);
        };
        let src = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the credentials file {}", path.display()))
            .map_err(config_error)?;
        let passwords: BTreeMap<String, String> = toml::from_str(&src)
            .with_context(|| path.display().to_string())
            .map_err(config_error)?;
        passwords.get(&self.nats_user).cloned().map(Some).ok_or_else(|| {
            config_error(anyhow!(
                "no password for NATS user {} in {}",
                self.nats_user,
                path.display()
            ))
        })
    }

    /// A JetStream context as the operator; unreachable servers and refused logins are named.
    pub async fn jetstream(&self, name: &str) -> Result<jetstream::Context, Failure> {
        let credentials = match self.password()? {
            Some(p) => Credentials::user(&self.nats_user, &p),
            None => Credentials::default(),
        };
        let client = halcyon_bus::connect(&self.nats_url, &credentials, name)
            .await
            .map_err(|e| anyhow!("{e} (is nats-server running there, and are the credentials right?)"))?;
        Ok(jetstream::new(client))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: position, stored time, subject and the envelope in proto3 JSON.
    Json,
    /// Fixed-width columns, one event per line, without personal data.
    Table,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub nats: OperatorNats,
    /// Who reads and why (recorded in the access log first).
    #[command(flatten)]
    pub read: crate::cmd::operator_read::OperatorRead,
    /// Only this agency's stream (repeatable); every agency stream when absent.
    #[arg(long = "agency", value_name = "AGENCY_ID")]
    pub agency: Vec<String>,
    /// Only events about this child: an NHS number or a halcyon child id. Events filed under a UPN or an
    /// agency-local id match the child id those identifiers derive (links are not followed).
    #[arg(long)]
    pub child: Option<String>,
    /// Only events of this case (the agency's case id, the last token of the subject).
    #[arg(long)]
    pub case: Option<String>,
    /// First stream sequence to read (in each stream read).
    #[arg(long, value_name = "SEQUENCE")]
    pub from_seq: Option<u64>,
    /// Last stream sequence to read (in each stream read).
    #[arg(long, value_name = "SEQUENCE")]
    pub to_seq: Option<u64>,
    /// Only events the server stored at or after this time (RFC 3339 or a date).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events the server stored at or before this time (RFC 3339 or a date).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// The agency registry, to tell an unknown agency from one without a stream yet.
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    pub agencies: PathBuf,
    /// Do not draw a progress bar or print the summary.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_time(flag: &str, s: &str) -> Result<i64, Failure> {
    parse_timestamp(s)
        .map(|t| timestamp_millis(&t))
        .map_err(|e| config_error(anyhow!("--{flag}: {e}")))
}

impl Args {
    /// Checks the arguments that need no server.
    fn selection(&self) -> Result<Selection, Failure> {
        let child = self
            .child
            .as_deref()
            .map(ChildMatch::parse)
            .transpose()
            .map_err(|e| config_error(anyhow!("--child: {e}")))?;
        let case = self
            .case
            .as_deref()
            .map(str::parse::<CaseId>)
            .transpose()
            .map_err(|e| config_error(anyhow!("--case: {e}")))?;
        let since_ms = self
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?;
        if let (Some(a), Some(b)) = (since_ms, until_ms)
            && a > b
        {
            return Err(config_error(anyhow!("--since is after --until")));
        }
        if let (Some(a), Some(b)) = (self.from_seq, self.to_seq)
            && a > b
        {
            return Err(config_error(anyhow!("--from-seq is after --to-seq")));
        }
        Ok(Selection {
            streams: Vec::new(),
            child,
            case,
            from_seq: self.from_seq,
            to_seq: self.to_seq,
            since_ms,
            until_ms,
        })
    }
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut selection = args.selection()?;
    let registry = if args.agency.is_empty() {
        None
    } else {
        Some(load_registry(&args.agencies)?)
    };
    let js = args.nats.jetstream("halcyon replay").await?;
    let named = args
        .child
        .as_deref()
        .and_then(|c| ChildMatch::parse(c).ok())
        .map(|c| match c {
            ChildMatch::Nhs(n) => halcyon_schema::ChildId::from_nhs(&n),
            ChildMatch::Id(id) => id,
        });
    args.read
        .record(&js, "halcyon replay", halcyon_policy::Purpose::Audit, named)
        .await?;
    let existing = list_event_streams(&js).await?;
    for id in &args.agency {
        let agency: AgencyId = id
            .parse()
            .map_err(|e| config_error(anyhow!("--agency {id:?}: {e}")))?;
        let stream = StreamName::for_agency(&agency).to_string();
        if !existing.contains(&stream) {
            let known: Vec<String> = registry
                .iter()
                .flat_map(|r| r.iter())
                .map(|a| a.id.to_string())
                .collect();
            let registered = known.iter().any(|k| k == id);
            return Err(config_error(if registered {
                anyhow!("agency {id} has no stream {stream} on the server yet (run `halcyon streams apply`)")
            } else {
                anyhow!("unknown agency {id:?} (known: {})", known.join(", "))
            }));
        }
        selection.streams.push(stream);
    }
    if selection.streams.is_empty() {
        selection.streams = existing;
    }
    selection.streams.sort();
    selection.streams.dedup();

    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} read {per_sec} eta {eta}")
            .expect("template"),
    );
    let started = Instant::now();
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let progress = |read: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(read);
    };
    let result = replay(&js, &selection, args.format, &mut out, &progress).await;
    let flushed = out.flush();
    bar.finish_and_clear();
    let broken_pipe = |e: &anyhow::Error| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    };
    let summary = match result {
        Ok(s) => s,
        // The reader went away (`| head`): not a failure.
        Err(e) if broken_pipe(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match flushed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing to standard output")?,
    }
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "replayed {} of {} events read from {} stream(s) in {secs:.1} s ({:.0} events/s)",
            summary.written,
            summary.read,
            summary.streams,
            summary.read as f64 / secs.max(1e-9),
        );
    }
    Ok(())
}

/// Streams the selected events into `out`, merged across streams by (stored time, stream, sequence);
/// `progress(read, total)` as messages are read.
pub async fn replay(
    js: &jetstream::Context,
    selection: &Selection,
    format: Format,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Summary> {
    let mut replay = Replay::open(js, selection).await?;
    progress(0, replay.total);
    if format == Format::Table {
        writeln!(out, "{}", table_header())?;
    }
    let mut line = Vec::with_capacity(4096);
    let mut reported = 0;
    while let Some((m, envelope)) = replay.next().await? {
        line.clear();
        match format {
            Format::Json => json_line(&mut line, &m, envelope.as_ref())?,
            Format::Table => table_line(&mut line, &m, envelope.as_ref())?,
        }
        out.write_all(&line)?;
        let read = replay.summary().read;
        if read >= reported + 256 {
            reported = read;
            progress(read, replay.total.max(read));
        }
    }
    let summary = replay.summary();
    progress(summary.read, replay.total.max(summary.read));
    Ok(summary)
}

fn stored_at(m: &RawMessage) -> String {
    format_timestamp(&timestamp_from_millis(m.stored_at_ms))
}

/// `{"stream":…,"sequence":…,"subject":…,"stored_at":…,"envelope":{…}}` or, for a message that does not
/// decode, `"error"` in place of the envelope.
fn json_line(
    line: &mut Vec<u8>,
    m: &RawMessage,
    envelope: Result<&pb::Envelope, &prost::DecodeError>,
) -> Result<(), std::io::Error> {
    line.extend_from_slice(b"{\"stream\":");
    serde_json::to_writer(&mut *line, &m.stream)?;
    write!(line, ",\"sequence\":{},\"subject\":", m.sequence)?;
    serde_json::to_writer(&mut *line, &m.subject)?;
    line.extend_from_slice(b",\"stored_at\":");
    serde_json::to_writer(&mut *line, &stored_at(m))?;
    match envelope {
        Ok(e) => {
            line.extend_from_slice(b",\"envelope\":");
            serde_json::to_writer(&mut *line, e)?;
        }
        Err(e) => {
            line.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut *line, &format!("not an envelope: {e}"))?;
        }
    }
    line.extend_from_slice(b"}\n");
    Ok(())
}

/// Column widths of the table; wider values push the row out rather than being cut.
const COLUMNS: [(&str, usize); 7] = [
    ("POSITION", 26),
    ("STORED AT", 24),
    ("AGENCY", 18),
    ("CASE", 14),
    ("OCCURRED AT", 24),
    ("CAT", 4),
    ("EVENT", 30),
];

fn table_header() -> String {
    let mut s = String::new();
    for (name, width) in COLUMNS {
        s.push_str(&format!("{name:<width$} "));
    }
    s.push_str("CHILD");
    s
}

/// One table row: no names or identifiers of the child beyond the pseudonymous halcyon child id.
fn table_line(
    line: &mut Vec<u8>,
    m: &RawMessage,
    envelope: Result<&pb::Envelope, &prost::DecodeError>,
) -> Result<(), std::io::Error> {
    let position = format!("{}:{}", m.stream, m.sequence);
    let cells: [String; 7] = match envelope {
        Ok(e) => [
            position,
            stored_at(m),
            e.agency_id.clone(),
            e.case_id.clone(),
            e.occurred_at.as_ref().map(format_timestamp).unwrap_or_default(),
            Category::from_wire(e.category)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            e.event
                .as_ref()
                .and_then(|ev| ev.kind.as_ref())
                .map(|k| k.type_name().to_owned())
                .unwrap_or_else(|| "(no event)".into()),
        ],
        Err(_) => [
            position,
            stored_at(m),
            m.subject.clone(),
            String::new(),
            String::new(),
            String::new(),
            "(undecodable)".into(),
        ],
    };
    for ((_, width), cell) in COLUMNS.iter().zip(cells.iter()) {
        write!(line, "{cell:<width$} ")?;
    }
    let child = envelope
        .ok()
        .and_then(|e| e.child.as_ref().and_then(|c| derived_child(e, c)))
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    writeln!(line, "{child}")?;
    Ok(())
}
