//! The control API's wire types: what the gateway sends an agent and what the agent answers.
//!
//! Serialization lives here, at the boundary, and nowhere else: the agent converts these into
//! its own types ([`crate::tls::AgentIdentity`], protocol
//! ids) as it takes them in. The API is served over TLS only, to the one client certificate
//! the agent was launched to trust (the gateway's), and the gateway pins the agent's own
//! certificate once the agent has proved it holds the launch's token (see
//! [`crate::control_tls`]); the token itself never crosses the network.
//!
//! | method and path        | body → answer                         | who            |
//! |------------------------|---------------------------------------|----------------|
//! | `POST /v1/hello`       | [`HelloRequest`] → [`Hello`]          | any            |
//! | `POST /v1/job`         | [`JobSpec`] → `{}`                    | every agent    |
//! | `POST /v1/listen`      | [`ListenRequest`] → [`ListenResponse`] | relays, sinks  |
//! | `POST /v1/route`       | [`RouteRequest`] → `{}`               | sources        |
//! | `POST /v1/objects`     | [`SinkObjects`] → `{}`                | sinks          |
//! | `POST /v1/dispatch`    | [`Dispatch`] → `{}`                   | sources        |
//! | `GET /v1/events?after=N&wait_ms=M` | → [`EventsResponse`]      | every agent    |
//! | `GET /v1/metrics`      | → [`AgentMetrics`]                    | every agent    |
//! | `POST /v1/shutdown`    | → `{}`, then the process exits        | every agent    |
//! | `POST /v1/probe/listen` | [`ProbeListen`] → [`ListenResponse`] | any (no job)   |
//! | `POST /v1/probe/send`  | [`ProbeRequest`] → [`ProbeResult`]    | any (no job)   |

use std::net::SocketAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Version of this API; the gateway refuses agents that speak another.
pub const API_VERSION: u32 = 4;

/// The environment variable a launched agent reads its launch token from (never a flag, so
/// it does not show in `ps`): the secret it proves itself to the gateway with.
pub const TOKEN_ENV: &str = "SKYX_AGENT_TOKEN";

/// The environment variable a launched agent reads the gateway's control certificate from
/// (DER, base64): the one client its control API serves.
pub const GATEWAY_CERT_ENV: &str = "SKYX_AGENT_GATEWAY_CERT";

/// What an agent prints as its first line on stdout once its control API listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    pub control: SocketAddr,
    pub pid: u32,
}

/// The gateway's first word to an agent: a fresh nonce for the agent to prove itself with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HelloRequest {
    pub nonce: Base64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub api_version: u32,
    pub name: String,
    pub agent_version: String,
    /// [`crate::control_tls::proof`] of the nonce and the agent's control certificate under
    /// the launch's token.
    pub proof: Base64,
}

/// How chunks travel between agents.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// N TCP connections per hop, each opened by the hop handshake (both agents prove they
    /// hold the job's hop key) and then carrying frames as they are: chunks are sealed end to
    /// end when the job has a chunk key, so a relay forwards them without decrypting anything.
    #[default]
    Tcp,
    /// N TCP connections per hop, each mutual TLS with the job CA: every hop decrypts and
    /// re-encrypts (what skyx did before chunks were sealed; for comparison, or to hide the
    /// frame headers too).
    Tls,
    /// One QUIC connection per hop with N streams (QUIC's own TLS 1.3, the same job CA).
    Quic,
}

/// How sources encode chunks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum CompressionSpec {
    Off,
    /// zstd at `level` on every chunk that shrinks.
    Zstd {
        level: i32,
    },
    /// zstd at `level`, but an object whose first chunk does not shrink by a few percent is
    /// sent raw from then on (incompressible data costs no more CPU than it must).
    Auto {
        level: i32,
    },
}

/// Bytes that travel as a base64 string in JSON (certificates and keys, DER). Decoding
/// happens with the rest of the body, so a malformed value is a malformed request.
#[derive(Clone, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

impl std::fmt::Debug for Base64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys travel in these: never print the bytes.
        write!(f, "Base64({} bytes)", self.0.len())
    }
}

impl Serialize for Base64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Base64)
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// The job's certificate and key for this agent (DER; see [`crate::tls::AgentIdentity`]).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityWire {
    #[serde(rename = "cert_der_b64")]
    pub cert: Base64,
    #[serde(rename = "key_der_b64")]
    pub key: Base64,
    #[serde(rename = "ca_der_b64")]
    pub ca: Base64,
}

impl std::fmt::Debug for IdentityWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityWire { .. }")
    }
}

/// An object a source reads chunks of. It comes with the dispatch of its chunks: a source keeps
/// nothing about objects between dispatches, so what it holds never grows with the job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceObject {
    pub object: u32,
    pub src_key: String,
    pub size: u64,
    /// The version the copy listed (the store's etag; a GCS generation; a local file's
    /// identity): every chunk is read pinned to it, so an object changed at the source during
    /// the copy fails instead of landing as a mix of two versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An object a sink writes chunks of. The gateway registers it before any of its chunks is
/// dispatched and has the sink forget it once the object is finished, so a sink holds only the
/// objects of the gateway's window, never the whole job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkObject {
    pub object: u32,
    pub dst_key: String,
    pub size: u64,
    /// The chunk size the object was cut with: a chunk's offset says its part number.
    pub chunk_size: u64,
    /// What the written object carries (system properties, user metadata, mtime).
    #[serde(default, skip_serializing_if = "skyx_store::Properties::is_empty")]
    pub properties: skyx_store::Properties,
    /// The multipart upload the gateway opened for it; absent for an object written whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

/// Objects a sink starts and stops writing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkObjects {
    pub add: Vec<SinkObject>,
    /// Objects the gateway is done with (complete, or failed and aborted).
    #[serde(default)]
    pub forget: Vec<u32>,
}

/// The job an agent takes part in. Installed once, before anything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub job: u64,
    pub identity: IdentityWire,
    /// The key every agent of the job proves it holds before a data connection carries a byte
    /// (see [`crate::keys`]).
    pub hop_key: Base64,
    /// The key sources seal chunks with and sinks open them with; relays are never given it.
    /// Absent: chunks travel unsealed (`--encrypt off`).
    #[serde(default)]
    pub chunk_key: Option<Base64>,
    pub transport: Transport,
    pub compression: CompressionSpec,
    /// The store sources read from (`s3://bucket`, `file:///`, ...); only sources use it.
    pub source_store: Option<String>,
    /// The store sinks write to; only sinks use it.
    pub sink_store: Option<String>,
    /// How sources reach their store, when the user configured that end (its own account,
    /// endpoint, anonymous access); absent, an agent uses its own environment.
    #[serde(default)]
    pub source_settings: Option<skyx_store::StoreConfig>,
    /// How sinks reach theirs, likewise.
    #[serde(default)]
    pub sink_settings: Option<skyx_store::StoreConfig>,
    /// Chunks a source reads from its store at once per route.
    pub read_concurrency: usize,
    /// Chunks a sink writes to its store at once per route.
    pub write_concurrency: usize,
    /// How sinks write objects (storage class, encryption), over their own or the job's
    /// settings; sent apart so an agent keeps its own credentials.
    #[serde(default)]
    pub sink_write: skyx_store::WriteOptions,
    /// This agent's share of `--tpslimit`: requests per second to each store it opens.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// This agent's share of `--bwlimit`: bytes per second it reads from the source.
    #[serde(default)]
    pub read_bytes_per_second: Option<f64>,
    /// How long a sink retries a write its store refused for a reason that may pass, from the
    /// bytes it holds, before refusing the chunk and telling the gateway. Absent: the agent's
    /// default ([`DEFAULT_SINK_RETRY_MS`]).
    #[serde(default)]
    pub sink_retry_ms: Option<u64>,
}

/// How long a sink retries a transiently refused write when the job does not say.
pub const DEFAULT_SINK_RETRY_MS: u64 = 60_000;

/// The next agent on a route.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct NextHop {
    pub addr: SocketAddr,
    pub connections: u32,
}

/// One way out of an agent on a route: the next hop, and which of a broadcast's destinations
/// are behind it. A relay or source with several branches *forks*: it sends each chunk to every
/// branch behind one of the chunk's destinations, so a byte crosses each link once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Branch {
    /// The id this branch reports under (`Lost`, `RouteDown`, its `RouteMetrics`): a route's
    /// own id on a chain; one id per link on a tree, so the gateway knows which link it was.
    pub route: u32,
    pub next: NextHop,
    /// Bit `i`: destination `i` is behind it (see `skyx_protocol::Dests`); 0: every one.
    #[serde(default)]
    pub dests: u16,
}

/// Open a data listener for `route`: a relay (forwarding to the `onward` branches) or a sink
/// (no branch). Each route gets its own listener, so a relay knows where every chunk it
/// receives goes without the frames carrying routes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenRequest {
    pub route: u32,
    #[serde(default)]
    pub onward: Vec<Branch>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenResponse {
    /// The address the previous hop connects to.
    pub addr: SocketAddr,
}

/// Make this agent the source of `route`, sending to the `onward` branches (at least one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteRequest {
    pub route: u32,
    pub onward: Vec<Branch>,
}

/// One chunk for a source to read and send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkOrder {
    pub chunk: u64,
    pub object: u32,
    pub offset: u64,
    pub len: u64,
    /// The destinations it is for (bit `i`: destination `i`); 0: every one.
    #[serde(default)]
    pub dests: u16,
}

/// Chunks for a source to send on `route`, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dispatch {
    pub route: u32,
    /// Every object the chunks belong to, once.
    pub objects: Vec<SourceObject>,
    pub chunks: Vec<ChunkOrder>,
}

/// Something that happened at an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum AgentEvent {
    /// (sink) The chunk was verified end to end and written to the destination store.
    Landed {
        chunk: u64,
        object: u32,
        /// The part it was written as, with the store's receipt; absent for whole objects.
        part: Option<PartWire>,
        raw_len: u64,
        raw_crc32c: u32,
        /// For an object written whole, how the sink checked what the store holds (from the
        /// put's answer, or by reading it back): the gateway needs no request of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verified: Option<Verification>,
    },
    /// (sink) The destination refused the chunk's write: at once when `permanent` (the store
    /// says retrying cannot help: a name too long, no space, no permission), else after the
    /// sink's own retries ran out. The chunk was refused to the previous hop, which does not
    /// resend it; the gateway fails the object or sends the chunk again.
    WriteFailed {
        chunk: u64,
        object: u32,
        /// The route the chunk came on (a report about an earlier dispatch is stale).
        route: u32,
        permanent: bool,
        why: String,
    },
    /// (source or relay) The chunk could not be delivered to the next hop (every attempt failed or the
    /// hop is down): the gateway should send it again, perhaps another way.
    Lost { chunk: u64, route: u32, why: String },
    /// (source) The chunk cannot be read from the source store; retrying will not help.
    Unreadable {
        chunk: u64,
        object: u32,
        why: String,
        /// The object is no longer the version the copy listed.
        #[serde(default)]
        changed: bool,
    },
    /// Every connection of this route's next hop failed; nothing more goes out on it.
    RouteDown { route: u32, why: String },
    /// Worth telling the user, not fatal (e.g. a sink's write failed and will be retried).
    Warning { message: String },
}

/// How an object was checked at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Size, and the store's CRC32C equals the CRC32C of the chunks the source read.
    Crc32c,
    /// Size, and the store's MD5 equals the MD5 of the bytes read at the source.
    Md5,
    /// Size, and the object read back has the CRC32C of the chunks the source read.
    ReadBack,
    /// Size only: the store exposes no comparable checksum (every chunk was still verified
    /// end to end on its way).
    Size,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartWire {
    pub part_number: u32,
    pub etag: String,
}

/// Counters since the job was installed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentMetrics {
    /// Bytes read from the source store.
    pub store_read_bytes: u64,
    /// Bytes written to the destination store.
    pub store_written_bytes: u64,
    /// Bytes this agent put on the wire, per route it sends on (frames, headers included,
    /// resends included: what egress is billed for).
    pub routes: Vec<RouteMetrics>,
    /// Raw bytes of the chunks handed to the next hop (before compression).
    pub raw_bytes_sent: u64,
    /// Chunks refused by this agent's listeners as corrupt (and resent by the sender).
    pub corrupt_chunks_received: u64,
    /// CPU time the agent process has used (user + system), where the OS tells (Linux).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// The agent process's peak resident memory, where the OS tells (Linux).
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// (a sink) The most objects it held registered at once.
    #[serde(default)]
    pub objects_held_peak: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteMetrics {
    pub route: u32,
    pub wire_bytes: u64,
    /// Of `wire_bytes`, chunks sent again on this hop (lost or corrupted on it).
    #[serde(default)]
    pub resent_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventsResponse {
    /// Pass as `after` next time.
    pub next: u64,
    pub events: Vec<AgentEvent>,
    pub metrics: AgentMetrics,
}

/// An error answer: every non-2xx response carries one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: String,
}

/// Open a probe listener (see the agent's `probe` module) that accepts connections for `accept_for_s`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeListen {
    pub accept_for_s: f64,
}

/// Measure the path from this agent to a probe listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeRequest {
    pub addr: SocketAddr,
    pub connections: u32,
    pub seconds: f64,
}

/// What a probe measured: bytes the listener received over the span from the first to the
/// last byte, and round-trip times of 8-byte pings on an idle connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeResult {
    pub connections: u32,
    pub bytes: u64,
    pub seconds: f64,
    pub gbps: f64,
    pub rtt_ms_min: f64,
    pub rtt_ms_median: f64,
}

/// `POST /v1/stage`: a pipeline stage to run on the agent's machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRequest {
    pub stage: String,
    pub region: String,
    /// Run with `sh -c`, in its own process group.
    pub command: String,
    /// (name, location) of each input: a local directory is read where it is; a store prefix
    /// is brought down to the machine first. The command finds it in `SKYX_INPUT_<name>`.
    pub inputs: Vec<(String, String)>,
    /// Where the output goes: a local directory the command writes directly, or a store prefix
    /// its output is taken up to after it succeeds. The command writes to `SKYX_OUTPUT`.
    pub output: String,
}

/// Where a stage is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StageState {
    /// No stage was started.
    Idle,
    Running,
    Succeeded,
    Failed {
        why: String,
    },
}

/// `GET /v1/stage`: the stage's state and the end of its log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageStatus {
    #[serde(flatten)]
    pub state: StageState,
    pub log_tail: String,
}
