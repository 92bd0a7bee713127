//! The gRPC transport: one service per node (`sealkv.Node`) carrying openraft's RPCs, snapshot
//! streams and the application's calls (KV and admin, handled by the server crate through
//! [`AppHandler`]).
//!
//! AppendEntries travel on one long-lived bidirectional stream per leader→follower connection
//! (`AppendStream`): openraft 0.9 sends a target one AppendEntries at a time and waits for its
//! reply, so requests and replies simply alternate on the stream. Why a stream and not a unary
//! call per entry: a unary call costs a new HTTP/2 stream each time (request headers, response
//! headers and trailers, a server task per call), and at one entry per ~12 Redis commands that
//! was a visible share of every write's CPU. A target that does not know the stream (an older
//! build) answers `Unimplemented`, and the connection falls back to the unary `AppendEntries`.
//!
//! Snapshots stream as a client-streaming call: the first message is the bincode
//! `(Vote, SnapshotMeta)`, every later one a chunk of the spec 02 §8 file, so neither side ever
//! holds a whole snapshot in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use openraft::Vote;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{Snapshot, SnapshotMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{self, Blob, MAX_MESSAGE_LEN};
use crate::timing::Timing;
use crate::types::{Member, Raft, TypeConfig};

/// Generated client and server of `sealkv.Node`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sealkv.Node.rs"));
}

pub use pb::node_client::NodeClient;
pub use pb::node_server::NodeServer;

/// Snapshot chunk size on the wire.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// A lazily connected channel to `addr` (`host:port`).
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A client with sealkv's message limits.
pub fn client(ch: Channel) -> NodeClient<Channel> {
    NodeClient::new(ch).max_decoding_message_size(MAX_MESSAGE_LEN).max_encoding_message_size(MAX_MESSAGE_LEN)
}

/// Makes a connection per target.
#[derive(Debug, Default, Clone)]
pub struct NetworkFactory {
    append_rpcs: Arc<Timing>,
}

impl NetworkFactory {
    /// A factory whose connections time every AppendEntries round trip into `append_rpcs`.
    pub fn timed(append_rpcs: Arc<Timing>) -> Self {
        NetworkFactory { append_rpcs }
    }
}

/// A connection to one target node.
pub struct Connection {
    target: u64,
    addr: String,
    client: Option<NodeClient<Channel>>,
    append_rpcs: Arc<Timing>,
    /// The open AppendEntries stream, between exchanges. An exchange takes it out and puts it
    /// back only once its reply arrived, so a call cancelled midway (openraft's own timeout)
    /// drops the stream with it, and a reply can never be read as the answer to a later request.
    /// In a mutex only because openraft needs a `Sync` connection and a tonic stream is not; it
    /// is never locked, only moved in and out.
    append: Option<std::sync::Mutex<AppendStream>>,
    /// The target answered `Unimplemented` to the stream: it predates it, so use unary calls.
    unary_appends: bool,
}

/// One open AppendEntries stream: requests go out on `tx`, their replies come back in order.
struct AppendStream {
    tx: mpsc::Sender<Blob>,
    rx: Streaming<Blob>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            client: None,
            append_rpcs: self.append_rpcs.clone(),
            append: None,
            unary_appends: false,
        }
    }
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> Unreachable {
    Unreachable::new(e)
}

/// Only a target that cannot be reached is `Unreachable`: openraft answers that with a backoff
/// (500 ms) during which it sends that target nothing, heartbeats included. A call that ran out of
/// time (`DeadlineExceeded` here, or `Cancelled` when the target's own deadline fired) reached a
/// live but slow target, as a multi-MiB append does; backing off then left followers without a
/// heartbeat long enough to start an election after large writes. As a plain network error it
/// is retried at once, like openraft's own per-RPC timeout.
fn status_err(s: &Status) -> RPCError<u64, Member, RaftError<u64>> {
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(unreachable(s)),
        _ => RPCError::Network(NetworkError::new(s)),
    }
}

impl Connection {
    fn client(&mut self) -> Result<NodeClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let ch = channel(&self.addr).map_err(|e| unreachable(&e))?;
        let c = client(ch);
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn unary<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &mut self,
        which: Which,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<u64, Member, RaftError<u64>>> {
        let mut c = self.client().map_err(RPCError::Unreachable)?;
        let bytes = codec::encode(req).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let mut r = Request::new(bytes);
        r.set_timeout(timeout);
        let resp = match which {
            Which::Append => c.append_entries(r).await,
            Which::Vote => c.vote(r).await,
        };
        let resp = resp.map_err(|s| status_err(&s))?;
        let out: Result<Resp, RaftError<u64>> =
            codec::decode(resp.get_ref()).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        out.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends one AppendEntries on the stream (opening it if none is open) and waits for its reply,
    /// within `timeout`. Any failure drops the stream; the next call opens a new one. `None`: the
    /// target does not serve the stream.
    async fn streamed_append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Option<AppendEntriesResponse<u64>>, RPCError<u64, Member, RaftError<u64>>> {
        let bytes = codec::encode(rpc).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let reply = match tokio::time::timeout(timeout, self.exchange(bytes)).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(status_err(&Status::deadline_exceeded("AppendEntries timed out"))),
        };
        let out: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
            codec::decode(&reply).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        out.map(Some).map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// One request and its reply on the stream; `None` if the target does not serve it.
    async fn exchange(&mut self, bytes: Blob) -> Result<Option<Blob>, RPCError<u64, Member, RaftError<u64>>> {
        let mut stream = match self.append.take() {
            Some(s) => s.into_inner().unwrap_or_else(|p| p.into_inner()),
            None => {
                let mut c = self.client().map_err(RPCError::Unreachable)?;
                // One request in the channel at a time is all the alternation needs.
                let (tx, requests) = mpsc::channel(1);
                match c.append_stream(Request::new(requests)).await {
                    Ok(r) => AppendStream { tx, rx: r.into_inner() },
                    Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(None),
                    Err(s) => return Err(status_err(&s)),
                }
            }
        };
        if let Err(e) = stream.tx.send(bytes).await {
            return Err(RPCError::Unreachable(unreachable(&e)));
        }
        match stream.rx.message().await {
            Ok(Some(reply)) => {
                self.append = Some(std::sync::Mutex::new(stream));
                Ok(Some(reply))
            }
            Ok(None) => Err(status_err(&Status::unavailable("the AppendEntries stream ended"))),
            Err(s) => Err(status_err(&s)),
        }
    }

    async fn send_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let mut c = self.client().map_err(StreamingError::Unreachable)?;
        let head =
            codec::encode(&(vote, &snapshot.meta)).map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
        let file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let chunks = futures::stream::unfold(Some(file), |state| async move {
            let mut f = state?;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            let mut filled = 0;
            while filled < buf.len() {
                match f.read(buf.get_mut(filled..).unwrap_or_default()).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    // A read error ends the stream short; the receiver's CRC check refuses it.
                    Err(_) => return None,
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            Some((buf, Some(f)))
        });
        let stream = futures::stream::once(async move { head }).chain(chunks);
        let resp = c.snapshot(Request::new(stream)).await.map_err(|s| match s.code() {
            tonic::Code::Unavailable => StreamingError::Unreachable(unreachable(&s)),
            _ => StreamingError::Network(NetworkError::new(&s)),
        })?;
        let out: Result<SnapshotResponse<u64>, Fatal<u64>> =
            codec::decode(resp.get_ref()).map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
        out.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Which {
    Append,
    Vote,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let started = Instant::now();
        let streamed =
            if self.unary_appends { None } else { self.streamed_append(&rpc, option.hard_ttl()).await.transpose() };
        let out = match streamed {
            Some(out) => out,
            None => {
                if !self.unary_appends {
                    // Debug, not info: openraft makes a connection per read barrier, too.
                    tracing::debug!(target = self.target, "target has no AppendEntries stream; using unary calls");
                    self.unary_appends = true;
                }
                self.unary(Which::Append, &rpc, option.hard_ttl()).await
            }
        };
        self.append_rpcs.observe(started);
        out
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.unary(Which::Vote, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        tokio::select! {
            r = self.send_snapshot(vote, snapshot) => r,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

/// A boxed future of an application call.
pub type AppFuture<'a> = Pin<Box<dyn Future<Output = Result<Blob, Status>> + Send + 'a>>;

/// The application half of the service (KV and admin calls), implemented by the server.
pub trait AppHandler: Send + Sync + 'static {
    /// Handles one call; request and response encodings are the handler's.
    fn call(&self, req: Blob) -> AppFuture<'_>;
}

/// The server half of `sealkv.Node`.
pub struct NodeService {
    raft: Raft,
    app: Arc<dyn AppHandler>,
}

impl NodeService {
    /// A service for `raft` and `app`, with sealkv's message limits.
    pub fn server(raft: Raft, app: Arc<dyn AppHandler>) -> NodeServer<NodeService> {
        NodeServer::new(NodeService { raft, app })
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    }
}

/// One AppendEntries, on either method: decoded, handed to openraft, its result encoded.
async fn answer_append(raft: &Raft, bytes: &[u8]) -> Result<Blob, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(bytes)?;
    codec::encode(&raft.append_entries(rpc).await)
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Blob>, Status> {
    Ok(Response::new(codec::encode(v)?))
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(answer_append(&self.raft, req.get_ref()).await?))
    }

    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send + 'static>>;

    /// Answers each AppendEntries on the stream in turn. A message that does not decode, or a
    /// reply that does not encode, ends the stream with that error; the leader opens a new one.
    async fn append_stream(&self, req: Request<Streaming<Blob>>) -> Result<Response<Self::AppendStreamStream>, Status> {
        let replies = futures::stream::unfold(Some((req.into_inner(), self.raft.clone())), |state| async move {
            let (mut requests, raft) = state?;
            let out = match requests.message().await {
                Ok(Some(bytes)) => answer_append(&raft, &bytes).await,
                Ok(None) => return None,
                Err(s) => Err(s),
            };
            let next = out.is_ok().then_some((requests, raft));
            Some((out, next))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let rpc: VoteRequest<u64> = codec::decode(req.get_ref())?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn snapshot(&self, req: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> {
        let mut stream = req.into_inner();
        let head = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<u64>, SnapshotMeta<u64, Member>) = codec::decode(&head)?;
        let file = self.raft.begin_receiving_snapshot().await.map_err(|e| Status::internal(e.to_string()))?;
        let mut out = tokio::fs::File::create(&file.path).await.map_err(|e| Status::internal(e.to_string()))?;
        while let Some(chunk) = stream.message().await? {
            out.write_all(&chunk).await.map_err(|e| Status::internal(e.to_string()))?;
        }
        out.sync_all().await.map_err(|e| Status::internal(e.to_string()))?;
        drop(out);
        let res = self.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: file }).await;
        reply(&res)
    }

    async fn call(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(self.app.call(req.into_inner()).await?))
    }
}
