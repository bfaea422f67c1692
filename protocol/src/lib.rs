//! The skyx chunk protocol, sans-IO.
//!
//! - [`frame`]: the wire format of chunks and acknowledgements; [`FrameDecoder`] decodes a
//!   byte stream of them, reading large payloads into buffers of their own ([`buffers`]: a pool
//!   of them, used again).
//! - [`codec`]: zstd per chunk when it shrinks the chunk, raw otherwise; end-to-end checksums.
//! - [`sender`] / [`receiver`]: the per-hop state machines. Inputs arrive through `handle_*`
//!   methods (time is passed in), outputs leave through `poll_*` methods. No sockets, no clock,
//!   no runtime: the agent's async code drives them, and tests drive them with a simulated
//!   lossy link and a virtual clock.
//! - [`seal`]: chunks sealed end to end (AES-256-GCM) under a key only sources and sinks hold.
//! - [`liveness`]: whether a connection still works, judged from the receiver's heartbeats.

pub mod buffers;
pub mod codec;
mod decoder;
pub mod frame;
pub mod liveness;
pub mod receiver;
pub mod seal;
pub mod sender;

pub use buffers::BufferPool;
pub use codec::{Compression, DecodeError, decode_chunk, encode_chunk};
pub use decoder::{FrameDecoder, ReadInto};
pub use frame::{ChunkId, ChunkRef, Codec, DataFrame, Dests, Frame, FrameError, JobId, NackReason};
pub use liveness::{Liveness, Stall};
pub use receiver::{Receiver, ReceiverEvent, Role};
pub use seal::{ChunkKey, SEAL_OVERHEAD, open_chunk, seal_chunk};
pub use sender::{Failure, Sender, SenderConfig, SenderEvent};
