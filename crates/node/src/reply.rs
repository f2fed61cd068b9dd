//! Child views leave the node as protobuf bytes encoded once per decision.
//!
//! A decided view is kept (see [`crate::view_memo::ViewMemo`]) already encoded, so a call that reuses it neither
//! clones a `ChildView` nor encodes it again: the answer is those bytes followed by the encoding of the
//! positions it reflects. Two encodings of the same message type, one after the other, decode as their
//! merge (protobuf's rule for concatenation), and the decided view never carries positions, so the bytes on
//! the wire decode to exactly the `ChildView` the generated service would have sent. Clients see no
//! difference; `tests/tests/e2e/leak.rs` checks every answer over gRPC.
//!
//! `routes.rs` serves `FindChild` and `GetChildView` with [`ViewCodec`].

use std::marker::PhantomData;

use bytes::Bytes;
use halcyon_grpc::pb;
use prost::Message as _;
use tonic::codec::{Codec, EncodeBuf, Encoder};

use tonic::Status;

/// A `ChildView` as it goes on the wire: the decided view, encoded without positions, and the positions.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewReply {
    /// `ChildView` bytes with no `positions`.
    pub view: Bytes,
    pub positions: Vec<pb::Position>,
}

impl ViewReply {
    /// The encoding of `view`, which must have no positions (they are added per answer).
    pub fn encode_view(view: &pb::ChildView) -> Bytes {
        debug_assert!(view.positions.is_empty(), "positions are added per answer");
        Bytes::from(view.encode_to_vec())
    }

    /// The message these bytes stand for.
    pub fn to_view(&self) -> Result<pb::ChildView, prost::DecodeError> {
        let mut view = pb::ChildView::decode(self.view.clone())?;
        view.positions = self.positions.clone();
        Ok(view)
    }

    fn write(self, dst: &mut impl bytes::BufMut) {
        dst.put_slice(&self.view);
        pb::ChildView {
            positions: self.positions,
            ..Default::default()
        }
        .encode_raw(dst);
    }
}

/// Decodes requests as prost does; encodes [`ViewReply`]s by copying their bytes.
#[derive(Debug)]
pub struct ViewCodec<U>(PhantomData<U>);

impl<U> Default for ViewCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for ViewCodec<U> {
    type Encode = ViewReply;
    type Decode = U;
    type Encoder = ViewEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ViewEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug, Default)]
pub struct ViewEncoder;

impl Encoder for ViewEncoder {
    type Item = ViewReply;
    type Error = Status;

    fn encode(&mut self, item: ViewReply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.view.len() + 64 * item.positions.len());
        item.write(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_decode_to_the_view_with_its_positions() {
        let view = pb::ChildView {
            child_id: "c-1".into(),
            policy_version: "england-2026.4".into(),
            withheld: vec![pb::Withheld {
                rule: "D4".into(),
                count: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let positions = vec![
            pb::Position {
                stream: "EVENTS_POLICE_SY".into(),
                sequence: 7,
            },
            pb::Position {
                stream: "EVENTS_CSC_ROTHERHAM".into(),
                sequence: 40,
            },
        ];
        let reply = ViewReply {
            view: ViewReply::encode_view(&view),
            positions: positions.clone(),
        };
        let mut wire = Vec::new();
        reply.clone().write(&mut wire);
        let whole = pb::ChildView { positions, ..view };
        assert_eq!(
            wire,
            whole.encode_to_vec(),
            "the same bytes as encoding the whole view"
        );
        assert_eq!(pb::ChildView::decode(wire.as_slice()).unwrap(), whole);
        assert_eq!(reply.to_view().unwrap(), whole);
    }
}
