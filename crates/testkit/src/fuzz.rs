//! A seeded mutation fuzzer for envelopes, shared by the fuzz tests: bit flips, truncations, duplicated and
//! dropped fields, wrong wire types, random varints, random strings, and nesting at and around the protobuf
//! decoder's recursion limit in each part of the envelope (itself, `actor`, `child`, the event's kind).

use halcyon_schema::pb;
use prost::Message;
use rand::Rng;
use rand_chacha::ChaCha20Rng;

/// prost's recursion limit (`prost::encoding::DecodeContext`): how many nested messages or groups a
/// decode may enter.
pub const DECODER_DEPTH_LIMIT: usize = 100;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint((u64::from(field) << 3) | u64::from(wire), out);
}

/// An unknown field (number 999) holding `depth` nested groups: decoding it enters `depth` levels.
fn nested_groups(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        tag(999, 3, &mut out);
    }
    for _ in 0..depth {
        tag(999, 4, &mut out);
    }
    out
}

/// `message` with `extra` appended inside it (as unknown fields of that message).
fn with_unknown(message: &impl Message, extra: &[u8]) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    bytes.extend_from_slice(extra);
    bytes
}

/// A length-delimited field `field` holding `inner`.
fn length_delimited(field: u32, inner: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(inner.len() as u64, out);
    out.extend_from_slice(inner);
}

/// The parts [`nested_in`] can nest groups in.
pub const PARTS: [&str; 4] = ["envelope", "actor", "child", "event kind"];

/// The envelope with groups nested `depth` deep inside one of its parts, at the decoder's depth for that
/// part: the envelope itself, `actor` (field 6), `child` (field 7), or the event's kind (field 11 → kind).
pub fn nested_in(e: &pb::Envelope, part: usize, depth: usize) -> Vec<u8> {
    let groups = nested_groups(depth);
    match part {
        0 => with_unknown(e, &groups),
        1 | 2 => {
            let mut without = e.clone();
            let inner = if part == 1 {
                with_unknown(without.actor.take().as_ref().unwrap(), &groups)
            } else {
                with_unknown(without.child.take().as_ref().unwrap(), &groups)
            };
            let mut bytes = without.encode_to_vec();
            length_delimited(if part == 1 { 6 } else { 7 }, &inner, &mut bytes);
            bytes
        }
        _ => {
            // Inside the event kind's own message: Event { kind = N: message }.
            let mut without = e.clone();
            let event = without.event.take().unwrap();
            let kind = event.kind.as_ref().unwrap();
            let kind_bytes = event.encode_to_vec();
            // The kind is the event's only field: re-frame its payload with the groups appended.
            let (field, payload) = split_field(&kind_bytes);
            let _ = kind;
            let mut inner = payload.to_vec();
            inner.extend_from_slice(&groups);
            let mut event_bytes = Vec::new();
            length_delimited(field, &inner, &mut event_bytes);
            let mut bytes = without.encode_to_vec();
            length_delimited(11, &event_bytes, &mut bytes);
            bytes
        }
    }
}

/// The field number and payload of a message holding one length-delimited field.
fn split_field(bytes: &[u8]) -> (u32, &[u8]) {
    let mut buf = bytes;
    let key = prost::encoding::decode_varint(&mut buf).unwrap();
    let len = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
    ((key >> 3) as u32, &buf[..len])
}

pub fn mutate(rng: &mut ChaCha20Rng, e: &pb::Envelope) -> (Vec<u8>, &'static str) {
    let bytes = e.encode_to_vec();
    match rng.random_range(0..10) {
        0 => {
            let mut b = bytes;
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            (b, "bit flips")
        }
        1 => {
            let n = rng.random_range(0..bytes.len());
            (bytes[..n].to_vec(), "truncated")
        }
        2 => {
            // A field sent twice: the envelope's bytes, then one of its fields again.
            let mut b = bytes.clone();
            let mut again = pb::Envelope::default();
            match rng.random_range(0..4) {
                0 => again.child = e.child.clone(),
                1 => again.event = e.event.clone(),
                2 => again.agency_id = e.agency_id.clone(),
                _ => again.occurred_at = e.occurred_at,
            }
            b.extend_from_slice(&again.encode_to_vec());
            (b, "duplicated field")
        }
        3 => {
            let mut d = e.clone();
            match rng.random_range(0..6) {
                0 => d.event = None,
                1 => d.child = None,
                2 => d.actor = None,
                3 => d.recorded_at = None,
                4 => d.event_id.clear(),
                _ => d.category = 0,
            }
            (d.encode_to_vec(), "dropped field")
        }
        4 => {
            // A known message field sent as a varint, or a string field sent as a nested message.
            let mut b = bytes;
            let field = [6u32, 7, 11, 4][rng.random_range(0..4)];
            tag(field, 0, &mut b);
            varint(rng.random(), &mut b);
            (b, "wrong wire type")
        }
        5 => {
            let mut b = bytes;
            tag(rng.random_range(1..20), 0, &mut b);
            varint(rng.random(), &mut b);
            (b, "random varint")
        }
        6 => {
            let mut d = e.clone();
            let s: String = (0..rng.random_range(0..300))
                .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect();
            match rng.random_range(0..5) {
                0 => d.case_id = s,
                1 => d.child.as_mut().unwrap().given_name = s,
                2 => d.child.as_mut().unwrap().local_id = s,
                3 => d.actor.as_mut().unwrap().practitioner_id = s,
                _ => d.child.as_mut().unwrap().date_of_birth = s,
            }
            (d.encode_to_vec(), "random string")
        }
        7 | 8 => {
            // Nesting at and around the decoder's limit, in each part.
            let part = rng.random_range(0..4);
            let below = [1, 2, 2, 3, 3, 4][part.min(3)];
            let depth = DECODER_DEPTH_LIMIT - below + rng.random_range(0..4) - 1;
            (nested_in(e, part, depth), "deep nesting")
        }
        _ => (bytes, "unmutated"),
    }
}
