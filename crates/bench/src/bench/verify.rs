//! Verify rows: `halcyon audit verify`'s work (read every agency stream from NATS, re-derive its hash chain,
//! check every signed checkpoint) over at least 100,000 scenario events, beside bare SHA-256 over the same
//! payload bytes in memory; also the ledger's verification in memory (checkpoints already read and parsed,
//! messages already in memory: signatures, fingerprints and chain only) and the bare ordered read of
//! the same streams, which together say where verify's time goes.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use halcyon_bus::checkpoint::{ChainMessage, begin_term, chain_messages, publish_checkpoint, verify_stream};
use halcyon_bus::list_event_streams;
use halcyon_ledger::{Keyring, Recorder, SigningKey, Verifier};
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::{Publishing, Report, figure, median, scenario_envelopes};

/// Messages per checkpoint, as a node cuts them by default.
const CHECKPOINT_EVERY: usize = 1_000;

pub(super) struct Verify<'a> {
    pub agencies: &'a ScenarioAgencies,
    pub window: usize,
    pub rounds: usize,
}

impl Verify<'_> {
    pub async fn rows(&self, report: &mut Report, n_events: usize) -> anyhow::Result<()> {
        let server = NatsServer::start_with(Auth::Open, false);
        let client = Publishing {
            agencies: self.agencies,
            window: self.window,
        }
        .fresh(&server)
        .await?;
        let js = jetstream::new(client.clone());
        fill(&client, &scenario_envelopes(self.agencies, n_events), self.window).await?;

        // Record the chains and checkpoints as a node does, keeping the stored messages for the baselines.
        let key = SigningKey::from_seed([42; 32]);
        let keys = Keyring::new([key.public_key()]);
        let mut streams: Vec<(String, Vec<ChainMessage>)> = Vec::new();
        let term = begin_term(&js, "bench-node", 1).await?;
        for name in list_event_streams(&js).await? {
            let messages = read_all(&js, &name).await?;
            let mut recorder = Recorder::new(&name);
            for (i, m) in messages.iter().enumerate() {
                recorder.push(&m.stored())?;
                if (i + 1).is_multiple_of(CHECKPOINT_EVERY) || i + 1 == messages.len() {
                    let checkpoint = recorder.cut(&key, "bench-node", 0).expect("something new");
                    publish_checkpoint(&js, &checkpoint, term).await?;
                }
            }
            streams.push((name, messages));
        }
        let n: usize = streams.iter().map(|(_, m)| m.len()).sum();
        let bytes: usize = streams
            .iter()
            .flat_map(|(_, m)| m.iter().map(|m| m.payload.len()))
            .sum();
        if n != n_events {
            bail!("the streams hold {n} events, expected {n_events}");
        }
        eprintln!(
            "  {} events, {:.1} MB of payload, checkpoints every {CHECKPOINT_EVERY}",
            figure(n as f64),
            bytes as f64 / 1e6
        );

        let (mut verified, mut hashed, mut in_memory, mut read) = (vec![], vec![], vec![], vec![]);
        for _ in 0..self.rounds {
            let started = Instant::now();
            for (name, messages) in &streams {
                let v = verify_stream(&js, name, &keys, &[]).await?;
                if !v.is_intact() || v.report.n_messages != messages.len() as u64 {
                    bail!("verify of {name} did not come out clean: {}", v.report);
                }
            }
            verified.push(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for (_, messages) in &streams {
                for m in messages {
                    black_box(Sha256::digest(black_box(&m.payload[..])));
                }
            }
            hashed.push(started.elapsed().as_secs_f64());

            let mut checkpoints = Vec::new();
            for (name, _) in &streams {
                let read = halcyon_bus::checkpoint::read_checkpoints(&js, Some(name)).await?;
                checkpoints.push(read.checkpoints.into_iter().map(|c| c.checkpoint).collect());
            }
            let started = Instant::now();
            for ((name, messages), checkpoints) in streams.iter().zip(checkpoints) {
                let mut verifier = Verifier::new(name, checkpoints, vec![], &keys);
                for m in messages {
                    verifier.push(&m.stored())?;
                }
                if !verifier.finish().is_intact() {
                    bail!("in-memory verify of {name} did not come out clean");
                }
            }
            in_memory.push(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for (name, messages) in &streams {
                let got = read_all(&js, name).await?;
                if got.len() != messages.len() {
                    bail!(
                        "ordered read of {name}: {} of {} messages",
                        got.len(),
                        messages.len()
                    );
                }
            }
            read.push(started.elapsed().as_secs_f64());
            eprintln!(
                "  verify {:.2} s, bare sha256 {:.3} s, in-memory verify {:.3} s, ordered read {:.2} s",
                verified.last().expect("a round"),
                hashed.last().expect("a round"),
                in_memory.last().expect("a round"),
                read.last().expect("a round"),
            );
        }
        let (verified, hashed) = (median(verified), median(hashed));
        let (in_memory, read) = (median(in_memory), median(read));
        let (rate, mb) = (|secs: f64| n as f64 / secs, |secs: f64| bytes as f64 / 1e6 / secs);
        let size = figure(n as f64);
        let sha = format!("bare_sha256(payloads).{size}");
        report.row(
            &format!("verify.{size}"),
            rate(verified),
            "events/s",
            &sha,
            rate(hashed),
        );
        report.row(&format!("verify.{size}"), mb(verified), "MB/s", &sha, mb(hashed));
        report.row(
            &format!("ledger_verify_in_memory.{size}"),
            rate(in_memory),
            "events/s",
            &sha,
            rate(hashed),
        );
        report.row(
            &format!("verify.{size}"),
            rate(verified),
            "events/s",
            &format!("js_ordered_read_with_headers.{size}"),
            rate(read),
        );
        Ok(())
    }
}

/// Every stored message of `stream`, through the ordered reader verify uses.
async fn read_all(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<ChainMessage>> {
    let mut info = js.get_stream(stream).await?;
    let state = info.info().await?.state.clone();
    let mut out = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return Ok(out);
    }
    let mut messages = std::pin::pin!(chain_messages(js, stream, 1, None).await?);
    while let Some(m) = messages.next().await {
        let m = m?;
        let done = m.sequence >= state.last_sequence;
        out.push(m);
        if done {
            break;
        }
    }
    Ok(out)
}

/// Fills the agency streams with each envelope under its event id (`Nats-Msg-Id`, as the publisher sends
/// it), `window` acknowledgements outstanding.
async fn fill(
    client: &async_nats::Client,
    envelopes: &[halcyon_grpc::pb::Envelope],
    window: usize,
) -> anyhow::Result<()> {
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(window)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let mut in_flight = VecDeque::with_capacity(window);
    for e in envelopes {
        let publish = PublishMessage::build()
            .payload(e.encode_to_vec().into())
            .message_id(&e.event_id);
        let ack = js
            .send_publish(Scenario::subject(e), publish)
            .await
            .context("publishing to fill the streams")?;
        in_flight.push_back(ack);
        if in_flight.len() >= window
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await?;
        }
    }
    for ack in in_flight {
        ack.await?;
    }
    Ok(())
}
