//! JetStream stream snapshots and restores (`$JS.API.STREAM.SNAPSHOT` / `$JS.API.STREAM.RESTORE`), as the
//! `nats` CLI takes them: the server streams a snapshot (an s2-compressed tar of the stream's store, kept
//! opaque here) in chunks that the client acknowledges one by one, then an empty message; a restore sends
//! the snapshot back in chunks, each acknowledged, then an empty message, and the server answers with the
//! restored stream's state. async-nats has no client for these; the protocol is the server's JetStream API.
//!
//! The server checks every message's checksum while it restores (and while it snapshots, with `jsck`), so a
//! damaged snapshot is refused by the server, not half restored.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::BusError;

/// Bytes per snapshot chunk the server sends (what the `nats` CLI asks for).
const SNAPSHOT_CHUNK: usize = 128 * 1024;
/// Bytes per restore chunk sent to the server.
const RESTORE_CHUNK: usize = 64 * 1024;
/// How long to wait for the next chunk, or a chunk's acknowledgement.
const CHUNK_WAIT: Duration = Duration::from_secs(30);
/// How long the server may take to unpack a restored stream.
const RESTORE_WAIT: Duration = Duration::from_secs(600);

/// One stream's snapshot: the server's description of it (config and state, JSON as the server gave it)
/// and the snapshot bytes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `{"config": …, "state": …}`: what a restore sends back.
    pub meta: serde_json::Value,
    pub data: Vec<u8>,
}

fn api_error(what: &str, reply: &serde_json::Value) -> Option<BusError> {
    reply.get("error").map(|e| BusError::NotDurable {
        detail: format!(
            "{what}: {} (code {})",
            e.get("description").and_then(|d| d.as_str()).unwrap_or("error"),
            e.get("err_code")
                .or_else(|| e.get("code"))
                .unwrap_or(&serde_json::Value::Null)
        ),
    })
}

fn parse(what: &str, payload: &[u8]) -> Result<serde_json::Value, BusError> {
    serde_json::from_slice(payload).map_err(|e| BusError::NotDurable {
        detail: format!("{what}: the server's answer is not JSON: {e}"),
    })
}

/// Takes a snapshot of `stream`, checking every message's checksum as the server reads it.
pub async fn snapshot(client: &async_nats::Client, stream: &str) -> Result<Snapshot, BusError> {
    let what = format!("snapshot of {stream}");
    let inbox = client.new_inbox();
    // Subscribed before asking, so that no chunk can arrive before anyone listens.
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| BusError::NotDurable {
            detail: format!("{what}: {e}"),
        })?;
    let request = serde_json::json!({
        "deliver_subject": inbox,
        "no_consumers": true,
        "chunk_size": SNAPSHOT_CHUNK,
        "jsck": true,
    });
    let reply = client
        .request(
            format!("$JS.API.STREAM.SNAPSHOT.{stream}"),
            Bytes::from(request.to_string()),
        )
        .await
        .map_err(|e| BusError::NotDurable {
            detail: format!("{what}: {e}"),
        })?;
    let reply = parse(&what, &reply.payload)?;
    if let Some(e) = api_error(&what, &reply) {
        return Err(e);
    }
    let meta = serde_json::json!({ "config": reply["config"], "state": reply["state"] });
    let mut data = Vec::new();
    loop {
        let chunk = tokio::time::timeout(CHUNK_WAIT, chunks.next())
            .await
            .map_err(|_| BusError::NotDurable {
                detail: format!("{what}: no chunk for {CHUNK_WAIT:?}"),
            })?
            .ok_or_else(|| BusError::NotDurable {
                detail: format!("{what}: the subscription ended"),
            })?;
        if let Some(status) = chunk.status
            && status.as_u16() != 204
        {
            return Err(BusError::NotDurable {
                detail: format!(
                    "{what}: the server stopped with {status} {}",
                    chunk.description.unwrap_or_default()
                ),
            });
        }
        // Every chunk carries a subject to acknowledge it on; the server's last message, empty, does not.
        if chunk.reply.is_none() && chunk.payload.is_empty() {
            break;
        }
        data.extend_from_slice(&chunk.payload);
        if let Some(reply) = chunk.reply {
            client
                .publish(reply, Bytes::new())
                .await
                .map_err(|e| BusError::NotDurable {
                    detail: format!("{what}: acknowledging a chunk: {e}"),
                })?;
        }
    }
    Ok(Snapshot { meta, data })
}

/// Restores a snapshot as the stream it was taken of (which must not exist); returns the restored stream's
/// state as the server reports it.
pub async fn restore(
    client: &async_nats::Client,
    snapshot: &Snapshot,
) -> Result<serde_json::Value, BusError> {
    let stream = snapshot.meta["config"]["name"]
        .as_str()
        .ok_or_else(|| BusError::NotDurable {
            detail: "restore: the snapshot's description names no stream".into(),
        })?
        .to_owned();
    let what = format!("restore of {stream}");
    let fail = |detail: String| BusError::NotDurable {
        detail: format!("{what}: {detail}"),
    };
    let reply = client
        .request(
            format!("$JS.API.STREAM.RESTORE.{stream}"),
            Bytes::from(snapshot.meta.to_string()),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let reply = parse(&what, &reply.payload)?;
    if let Some(e) = api_error(&what, &reply) {
        return Err(e);
    }
    let deliver = reply["deliver_subject"]
        .as_str()
        .ok_or_else(|| fail("the server gave no subject to send the snapshot to".into()))?
        .to_owned();
    for chunk in snapshot.data.chunks(RESTORE_CHUNK) {
        let ack = client
            .send_request(
                deliver.clone(),
                async_nats::Request::new()
                    .payload(Bytes::copy_from_slice(chunk))
                    .timeout(Some(CHUNK_WAIT)),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !ack.payload.is_empty()
            && let Some(e) = api_error(&what, &parse(&what, &ack.payload)?)
        {
            return Err(e);
        }
    }
    let done = client
        .send_request(
            deliver,
            async_nats::Request::new()
                .payload(Bytes::new())
                .timeout(Some(RESTORE_WAIT)),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let done = parse(&what, &done.payload)?;
    if let Some(e) = api_error(&what, &done) {
        return Err(e);
    }
    Ok(done["state"].clone())
}

/// The Halcyon streams a backup covers: every agency stream, AUDIT and CHECKPOINTS (the nodes bucket holds
/// only heartbeats and leases, which a restored deployment writes afresh).
pub async fn halcyon_streams(js: &jetstream::Context) -> Result<Vec<jetstream::stream::Info>, BusError> {
    let mut streams: Vec<_> = crate::streams::all_stream_infos(js)
        .await?
        .into_iter()
        .filter(|i| {
            let n = i.config.name.as_str();
            n.starts_with(halcyon_schema::subject::EVENTS_STREAM_PREFIX)
                || n == halcyon_schema::subject::AUDIT_STREAM
                || n == crate::checkpoint::CHECKPOINT_STREAM
        })
        .collect();
    streams.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    Ok(streams)
}
