//! `halcyon backup` and `halcyon restore`: a way back from losing the NATS cluster.
//!
//! A backup is a dated folder holding a JetStream snapshot of every Halcyon stream (each agency stream,
//! AUDIT, CHECKPOINTS: `<STREAM>/backup.json` and `<STREAM>/stream.tar.s2`, the layout of `nats stream
//! backup`), the signed checkpoints exported as JSON lines (a copy that does not depend on the CHECKPOINTS
//! snapshot), the configuration fingerprints of the live nodes, the agency registry, and `manifest.json`:
//! every file's SHA-256 and size, every stream's last sequence.
//!
//! A restore refuses a backup whose files do not match its manifest, restores each stream into a JetStream
//! that does not have it (all or nothing: a failure removes what it restored), checks that each came back
//! with the sequence it had, and with `--verify` checks every agency stream against the exported checkpoints
//! and the keyring (as `halcyon audit verify --checkpoints` does) before it reports success. An agency
//! stream altered after the backup was taken is refused by the manifest or, if the manifest was rewritten
//! to match, by the signatures (checkpoints cannot be made without a node's key), up to its last checkpoint.
//! AUDIT and CHECKPOINTS themselves carry no signature of their own yet: against someone who can rewrite
//! the backup and its manifest, only the agency streams are protected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use halcyon_bus::backup::{Snapshot, halcyon_streams, restore, snapshot};
use sha2::Digest as _;

use super::common::NatsArgs;
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The folder in which the dated backup folder (`halcyon-backup-<UTC time>`) is made.
    #[arg(long)]
    out: PathBuf,
    /// The agency registry to keep with the backup.
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = super::common::deploy_path("agencies.toml"))]
    agencies: PathBuf,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup folder made by `halcyon backup`.
    #[arg(long)]
    from: PathBuf,
    /// After restoring, verify every agency stream against the backup's exported checkpoints and the
    /// keyring; report success only if every stream is intact.
    #[arg(long, requires = "keyring")]
    verify: bool,
    /// The keyring the checkpoints are verified with (every node key with its validity dates).
    #[arg(long)]
    keyring: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: u32,
    halcyon_version: String,
    /// When the backup was taken (UTC, RFC 3339).
    taken_at: String,
    /// Stream name → last sequence at the snapshot.
    streams: BTreeMap<String, u64>,
    /// Relative path → (SHA-256 hex, bytes).
    files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileDigest {
    sha256: String,
    bytes: u64,
}

const MANIFEST: &str = "manifest.json";
const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        bytes: bytes.len() as u64,
    }
}

/// Writes `bytes` at `dir/rel` and records its digest.
fn put(dir: &Path, rel: &str, bytes: &[u8], files: &mut BTreeMap<String, FileDigest>) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    files.insert(rel.to_owned(), digest(bytes));
    Ok(())
}

pub async fn backup(args: BackupArgs) -> Result<(), Failure> {
    let registry = std::fs::read(&args.agencies)
        .with_context(|| format!("the agency registry {}", args.agencies.display()))
        .map_err(config_error)?;
    let client =
        halcyon_bus::connect(&args.nats.nats_url, &args.nats.credentials()?, "halcyon backup").await?;
    let js = async_nats::jetstream::new(client.clone());
    let taken_at = halcyon_schema::convert::format_timestamp(
        &halcyon_schema::convert::timestamp_from_millis(halcyon_schema::clock::now_ms()),
    );
    let dir = args
        .out
        .join(format!("halcyon-backup-{}", taken_at.replace(':', "")));
    if dir.exists() {
        return Err(config_error(anyhow!("{} exists already", dir.display())));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = BTreeMap::new();
    let mut streams = BTreeMap::new();
    // The checkpoints first: every one of them covers messages the snapshots below hold.
    let checkpoints = halcyon_bus::checkpoint::read_checkpoints(&js, None)
        .await
        .map_err(|e| anyhow!(e).context("reading CHECKPOINTS"))?;
    let mut lines = String::new();
    for c in &checkpoints.checkpoints {
        lines.push_str(&c.checkpoint.to_json());
        lines.push('\n');
    }
    put(&dir, CHECKPOINTS_FILE, lines.as_bytes(), &mut files)?;
    for info in halcyon_streams(&js).await? {
        let name = info.config.name.clone();
        let Snapshot { meta, data } = snapshot(&client, &name).await?;
        let last = meta["state"]["last_seq"].as_u64().unwrap_or(0);
        put(
            &dir,
            &format!("{name}/backup.json"),
            serde_json::to_string_pretty(&meta)?.as_bytes(),
            &mut files,
        )?;
        put(&dir, &format!("{name}/stream.tar.s2"), &data, &mut files)?;
        eprintln!("{name}: {last} messages, {} bytes of snapshot", data.len());
        streams.insert(name, last);
    }
    // Each live node's configuration fingerprint, from its last heartbeat.
    let kv = halcyon_bus::nodes::bucket(&js).await?;
    let fingerprints: BTreeMap<String, BTreeMap<String, String>> = halcyon_bus::nodes::heartbeats(&kv)
        .await?
        .into_iter()
        .map(|n| (n.heartbeat.node_id, n.heartbeat.fingerprint))
        .collect();
    put(
        &dir,
        "fingerprints.json",
        serde_json::to_string_pretty(&fingerprints)?.as_bytes(),
        &mut files,
    )?;
    put(&dir, "agencies.toml", &registry, &mut files)?;
    let manifest = Manifest {
        format: 1,
        halcyon_version: env!("CARGO_PKG_VERSION").to_owned(),
        taken_at,
        streams,
        files,
    };
    std::fs::write(dir.join(MANIFEST), serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("writing {}", dir.join(MANIFEST).display()))?;
    println!("{}", dir.display());
    eprintln!(
        "backed up {} streams and {} checkpoints into {}",
        manifest.streams.len(),
        checkpoints.checkpoints.len(),
        dir.display()
    );
    Ok(())
}

/// The manifest, with every file it lists checked against its digest.
fn checked_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("{}: cannot read it", path.display()))?,
    )
    .with_context(|| format!("{}: not a backup manifest", path.display()))?;
    let mut altered = Vec::new();
    for (rel, want) in &manifest.files {
        match std::fs::read(dir.join(rel)) {
            Ok(bytes) if digest(&bytes) == *want => {}
            Ok(_) => altered.push(format!("{rel} (its SHA-256 differs from the manifest's)")),
            Err(e) => altered.push(format!("{rel} ({e})")),
        }
    }
    for stream in manifest.streams.keys() {
        for part in ["backup.json", "stream.tar.s2"] {
            if !manifest.files.contains_key(&format!("{stream}/{part}")) {
                altered.push(format!("{stream}/{part} (not in the manifest)"));
            }
        }
    }
    if !altered.is_empty() {
        return Err(anyhow!(
            "the backup in {} was altered or is incomplete: {}; nothing was restored",
            dir.display(),
            altered.join(", ")
        ));
    }
    Ok(manifest)
}

pub async fn restore_backup(args: RestoreArgs) -> Result<(), Failure> {
    let manifest = checked_manifest(&args.from).map_err(config_error)?;
    let keys = match &args.keyring {
        Some(path) => Some(super::audit::verify::load_keyring(path).map_err(config_error)?),
        None => None,
    };
    let exported =
        super::audit::verify::load_exported(&args.from.join(CHECKPOINTS_FILE)).map_err(config_error)?;
    let client =
        halcyon_bus::connect(&args.nats.nats_url, &args.nats.credentials()?, "halcyon restore").await?;
    let js = async_nats::jetstream::new(client.clone());
    let present: Vec<String> = halcyon_bus::streams::all_stream_infos(&js)
        .await?
        .into_iter()
        .map(|i| i.config.name)
        .filter(|n| manifest.streams.contains_key(n))
        .collect();
    if !present.is_empty() {
        return Err(config_error(anyhow!(
            "these streams exist already: {}; a restore goes into a JetStream without them (delete them first, knowingly)",
            present.join(", ")
        )));
    }
    let mut restored_streams = Vec::new();
    for (name, last) in &manifest.streams {
        let one = async {
            let read = |part: &str| -> anyhow::Result<Vec<u8>> {
                let p = args.from.join(name).join(part);
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
            };
            let snapshot = Snapshot {
                meta: serde_json::from_slice(&read("backup.json")?)?,
                data: read("stream.tar.s2")?,
            };
            let state = restore(&client, &snapshot).await?;
            let restored = state["last_seq"].as_u64().unwrap_or(0);
            if restored != *last {
                return Err(anyhow!(
                    "{name}: restored up to sequence {restored}, but the backup holds up to {last}"
                ));
            }
            Ok(restored)
        };
        match one.await {
            Ok(restored) => {
                restored_streams.push(name.clone());
                eprintln!("{name}: restored, {restored} messages");
            }
            Err(e) => {
                // All or nothing: the streams this run restored are removed again, so the restore can be
                // run again once the cause is fixed.
                for done in restored_streams.iter().chain(std::iter::once(name)) {
                    let _ = js.delete_stream(done).await;
                }
                return Err(e
                    .context("the restore stopped; the streams it had restored were removed again")
                    .into());
            }
        }
    }
    if args.verify {
        let keys = keys.expect("--verify requires --keyring");
        let mut broken = Vec::new();
        for stream in manifest
            .streams
            .keys()
            .filter(|s| s.starts_with(halcyon_schema::subject::EVENTS_STREAM_PREFIX))
        {
            let v = halcyon_bus::checkpoint::verify_stream(&js, stream, &keys, &exported)
                .await
                .map_err(|e| anyhow!(e).context(format!("verifying {stream}")))?;
            println!("{}", v.report);
            if !v.is_intact() {
                broken.push(match v.report.first() {
                    Some(d) => format!("{stream} at {} ({})", d.position(), d.kind()),
                    None => format!("{stream} (unreadable checkpoints)"),
                });
            }
        }
        if !broken.is_empty() {
            return Err(anyhow!(
                "the restored history diverges from the backup's signed checkpoints: {}; do not start nodes on it",
                broken.join("; ")
            )
            .into());
        }
        println!(
            "restored {} streams from the backup taken at {}; every agency stream verified against {} signed checkpoints",
            manifest.streams.len(),
            manifest.taken_at,
            exported.len()
        );
        println!(
            "next: `halcyon streams apply --spec <your spec>` (creates the nodes bucket), then start the nodes"
        );
    } else {
        println!(
            "restored {} streams from the backup taken at {} (not verified: run with --verify --keyring)",
            manifest.streams.len(),
            manifest.taken_at
        );
        println!(
            "next: `halcyon streams apply --spec <your spec>` (creates the nodes bucket), then start the nodes"
        );
    }
    Ok(())
}
