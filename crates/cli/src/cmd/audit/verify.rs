//! `halcyon audit verify`: tamper evidence. Re-derives each agency stream's hash chain, and the AUDIT
//! stream's (the access log), from its stored messages and checks every signed checkpoint (from CHECKPOINTS and, optionally, an exported copy),
//! printing per stream either "intact up to N" or the first divergent position and what differs; exits 1
//! if any stream diverges. `halcyon audit checkpoints export` writes the checkpoints as JSON lines for
//! safekeeping elsewhere; `halcyon audit checkpoints keygen` makes a node's key pair.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use async_nats::jetstream;
use halcyon_bus::checkpoint::{CheckpointError, read_checkpoints, verify_stream};
use halcyon_ledger::{Checkpoint, Keyring, PublicKey, SigningKey};
use halcyon_schema::subject::AUDIT_STREAM;
use halcyon_schema::{AgencyId, StreamName};

use crate::cmd::common::NatsArgs;
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify only this stream (e.g. EVENTS_POLICE_SY, or AUDIT for the access log); every agency stream and
    /// AUDIT when absent.
    #[arg(long, conflicts_with = "agency")]
    stream: Option<String>,
    /// Verify only this agency's stream (e.g. police-sy).
    #[arg(long)]
    agency: Option<String>,
    /// A public key trusted to sign checkpoints (repeatable: one per node key).
    #[arg(long = "public-key", required_unless_present = "keyring")]
    public_keys: Vec<PathBuf>,
    /// The keyring file: every node's checkpoint public key with its validity dates; a checkpoint signed
    /// outside its key's dates is refused.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Also check the checkpoints of an exported copy (`halcyon audit checkpoints export`), so a checkpoint
    /// stream that lost or changed checkpoints is caught too.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// One JSON object per stream instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: NatsArgs,
}

/// Checkpoint keys and their safekeeping.
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointsCommand {
    /// Write the signed checkpoints as JSON lines, to keep a copy outside NATS (`verify --checkpoints`).
    Export(Box<ExportArgs>),
    /// Make an ed25519 checkpoint key pair: FILE (secret, for a node, mode 0600) and FILE.pub (for verifiers).
    Keygen(KeygenArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only this stream's checkpoints; all when absent.
    #[arg(long)]
    stream: Option<String>,
    /// Where to write the JSON lines (`-`: standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The secret key's file; the public key goes to FILE.pub. Neither may exist yet.
    #[arg(long)]
    out: PathBuf,
}

/// Reads a node's checkpoint signing key; the error names the file and what is wrong.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("checkpoint key {}: cannot read it", path.display()))?;
    SigningKey::parse(&text).map_err(|e| anyhow!("checkpoint key {}: {e}", path.display()))
}

/// Reads a checkpoint public key; the error names the file and what is wrong.
pub fn load_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("public key {}: cannot read it", path.display()))?;
    PublicKey::parse(&text).map_err(|e| anyhow!("public key {}: {e}", path.display()))
}

/// Reads a keyring file (every node's checkpoint public key with its validity dates); the error names the
/// file, the entry and what is wrong.
pub fn load_keyring(path: &Path) -> anyhow::Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("keyring {}: cannot read it", path.display()))?;
    Keyring::from_toml(&text)
        .map(|(ring, _)| ring)
        .map_err(|e| anyhow!("keyring {}: {e}", path.display()))
}

/// Reads an exported copy: one checkpoint per line; the error names the line.
pub fn load_exported(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("exported checkpoints {}: cannot read them", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Checkpoint::from_json(l)
                .map_err(|e| anyhow!("exported checkpoints {}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut keys = Keyring::default();
    for path in &args.public_keys {
        keys.add(load_public_key(path).map_err(config_error)?);
    }
    if let Some(path) = &args.keyring {
        keys.extend(&load_keyring(path).map_err(config_error)?);
    }
    let exported = match &args.checkpoints {
        Some(path) => load_exported(path).map_err(config_error)?,
        None => Vec::new(),
    };
    let js = connect(&args.nats).await?;
    let mut existing = halcyon_bus::list_event_streams(&js).await?;
    if js.get_stream(AUDIT_STREAM).await.is_ok() {
        existing.push(AUDIT_STREAM.to_owned());
    }
    let wanted = match (&args.stream, &args.agency) {
        (Some(s), _) => vec![s.clone()],
        (None, Some(a)) => {
            let agency: AgencyId = a
                .parse()
                .map_err(|e| config_error(anyhow!("agency {a:?}: {e}")))?;
            vec![StreamName::for_agency(&agency).as_str().to_owned()]
        }
        (None, None) => existing.clone(),
    };
    for s in &wanted {
        if !existing.contains(s) {
            return Err(config_error(anyhow!(
                "unknown stream {s}; the streams on {} are: {}",
                args.nats.nats_url,
                if existing.is_empty() {
                    "(none)".to_owned()
                } else {
                    existing.join(", ")
                }
            )));
        }
    }
    let mut diverged = Vec::new();
    for stream in &wanted {
        let verification = match verify_stream(&js, stream, &keys, &exported).await {
            Ok(v) => v,
            Err(CheckpointError::UnknownStream { stream }) => {
                return Err(anyhow!("stream {stream} disappeared during verification").into());
            }
            Err(e) => return Err(anyhow!(e).context(format!("verifying {stream}")).into()),
        };
        let report = &verification.report;
        if args.json {
            println!("{}", json(&verification));
        } else {
            println!("{report}");
            for (sequence, reason) in &verification.unreadable {
                println!("  unreadable checkpoint message {sequence} in CHECKPOINTS: {reason}");
            }
            if report.n_checkpoints == 0 && report.n_messages > 0 {
                println!(
                    "  warning: no checkpoint covers this stream; is a node with a checkpoint key running?"
                );
            }
        }
        if !verification.is_intact() {
            diverged.push(match report.first() {
                Some(d) => format!("{stream} at {} ({})", d.position(), d.kind()),
                None => format!("{stream} (unreadable checkpoints)"),
            });
        }
    }
    if diverged.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "history diverges from its signed checkpoints: {}",
            diverged.join("; ")
        )
        .into())
    }
}

fn json(v: &halcyon_bus::checkpoint::Verification) -> serde_json::Value {
    let r = &v.report;
    let divergence = |d: &halcyon_ledger::Divergence| serde_json::json!({"position": d.position(), "kind": d.kind(), "detail": d.to_string()});
    serde_json::json!({
        "stream": r.stream,
        "intact": v.is_intact(),
        "verified_up_to": r.verified_up_to,
        "n_messages": r.n_messages,
        "n_checkpoints": r.n_checkpoints,
        "n_unchecked": r.n_unchecked,
        "first": r.first().map(divergence),
        "divergences": r.divergences.iter().map(divergence).collect::<Vec<_>>(),
        "unreadable_checkpoints": v.unreadable.iter().map(|(s, reason)| serde_json::json!({"sequence": s, "reason": reason})).collect::<Vec<_>>(),
    })
}

async fn connect(nats: &NatsArgs) -> Result<jetstream::Context, Failure> {
    let client = halcyon_bus::connect(&nats.nats_url, &nats.credentials()?, "halcyon audit verify").await?;
    Ok(jetstream::new(client))
}

pub async fn checkpoints(command: CheckpointsCommand) -> Result<(), Failure> {
    match command {
        CheckpointsCommand::Export(args) => export(*args).await,
        CheckpointsCommand::Keygen(args) => keygen(&args.out),
    }
}

async fn export(args: ExportArgs) -> Result<(), Failure> {
    let js = connect(&args.nats).await?;
    if let Some(s) = &args.stream {
        let mut existing = halcyon_bus::list_event_streams(&js).await?;
        existing.push(AUDIT_STREAM.to_owned());
        if !existing.contains(s) {
            return Err(config_error(anyhow!(
                "unknown stream {s}; the agency streams are: {}",
                existing.join(", ")
            )));
        }
    }
    let read = read_checkpoints(&js, args.stream.as_deref())
        .await
        .map_err(|e| anyhow!(e).context("reading CHECKPOINTS"))?;
    let mut text = String::new();
    for c in &read.checkpoints {
        text.push_str(&c.checkpoint.to_json());
        text.push('\n');
    }
    if args.out == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!(
            "{} checkpoints written to {}",
            read.checkpoints.len(),
            args.out.display()
        );
    }
    if !read.unreadable.is_empty() {
        let list: Vec<String> = read
            .unreadable
            .iter()
            .map(|(s, reason)| format!("{s} ({reason})"))
            .collect();
        return Err(anyhow!(
            "CHECKPOINTS holds messages that are not checkpoints, not exported: {}",
            list.join(", ")
        )
        .into());
    }
    Ok(())
}

fn keygen(out: &Path) -> Result<(), Failure> {
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(config_error(anyhow!(
                "{} exists; not overwriting a key",
                p.display()
            )));
        }
    }
    let key = SigningKey::from_seed(rand::random());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(out)
        .and_then(|mut f| f.write_all(key.to_file_text().as_bytes()))
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(&public_path, key.public_key().to_file_text())
        .with_context(|| format!("writing {}", public_path.display()))?;
    println!(
        "key id {}: secret key {} (for the node's --checkpoint-key), public key {} (for verifiers)",
        key.public_key().key_id(),
        out.display(),
        public_path.display()
    );
    Ok(())
}
