//! The gRPC codec: every message is one opaque byte string.
//!
//! openraft's RPCs are serde types; we carry them bincode-encoded inside gRPC frames instead of
//! mirroring every openraft type in protobuf (spec 04: "carry them as bytes inside tonic
//! messages"). Decoding the bytes is the receiver's job and is bounded there ([`decode`]).

use bincode::Options;
use bytes::{Buf, BufMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// One message.
pub type Blob = Vec<u8>;

/// The largest gRPC message a node accepts or sends (a Raft append of up to 64 MiB of payloads).
pub const MAX_MESSAGE_LEN: usize = 64 << 20;

/// Encodes and decodes [`Blob`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlobCodec;

impl Codec for BlobCodec {
    type Encode = Blob;
    type Decode = Blob;
    type Encoder = BlobCodec;
    type Decoder = BlobCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BlobCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BlobCodec
    }
}

impl Encoder for BlobCodec {
    type Item = Blob;
    type Error = Status;

    fn encode(&mut self, item: Blob, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BlobCodec {
    type Item = Blob;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Blob>, Status> {
        // tonic has already bounded the frame by `max_decoding_message_size`. Copied into
        // uninitialised capacity: every AppendEntries passes here, so no zero-fill first.
        let mut out = Vec::with_capacity(src.remaining());
        out.put(src);
        Ok(Some(out))
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_MESSAGE_LEN as u64)
}

/// Serializes an RPC value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    options().serialize(value).map_err(|e| Status::internal(format!("encode: {e}")))
}

/// Deserializes an RPC value. Total: a malformed or hostile message is an `invalid_argument`
/// status, and no length prefix can make it allocate more than [`MAX_MESSAGE_LEN`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    options().deserialize(bytes).map_err(|e| Status::invalid_argument(format!("decode: {e}")))
}
