//! The AppendEntries transport over real gRPC on loopback, against a scripted peer: replies
//! alternate with requests on one long-lived stream, a peer without the stream gets unary calls,
//! and a call that timed out can never have its late reply read as the answer to a later one.
//!
//! The peer is mostly scripted (not a Raft node) so each request has a reply that identifies it:
//! a request whose `prev_log_id` is at [`CONFLICT_AT`] is answered `Conflict`, every other one
//! `Success`. The last test puts a real openraft follower behind the real `NodeService`, and
//! sends it the same requests over the stream and over the unary call an older leader uses.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{CommittedLeaderId, LogId, Vote};
use sealkv_crypto::Keystore;
use sealkv_crypto::applier::Applier;
use sealkv_raft::codec::{self, Blob};
use sealkv_raft::log_store::LogStore;
use sealkv_raft::network::{AppFuture, AppHandler, NetworkFactory, NodeServer, NodeService, client, pb};
use sealkv_raft::state_machine::{Shared, StateMachine};
use sealkv_raft::types::{Member, Raft, TypeConfig};
use sealkv_store::{Store, StoreOptions};
use tonic::{Request, Response, Status, Streaming};

/// Requests with a `prev_log_id` at this index are answered `Conflict`.
const CONFLICT_AT: u64 = 5;

#[derive(Default)]
struct Peer {
    /// Whether `AppendStream` is served (an older build answers `Unimplemented`).
    streams: bool,
    /// The next `Conflict` reply is held back this long, once.
    slow_conflict: AtomicBool,
    streams_opened: AtomicUsize,
    unary_calls: AtomicUsize,
}

impl Peer {
    async fn answer(&self, bytes: &[u8]) -> Result<Blob, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(bytes)?;
        let reply: AppendEntriesResponse<u64> = if rpc.prev_log_id.map(|l| l.index) == Some(CONFLICT_AT) {
            if self.slow_conflict.swap(false, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            AppendEntriesResponse::Conflict
        } else {
            AppendEntriesResponse::Success
        };
        codec::encode(&Ok::<_, openraft::error::RaftError<u64>>(reply))
    }
}

struct Service(Arc<Peer>);

#[tonic::async_trait]
impl pb::node_server::Node for Service {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.0.unary_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(self.0.answer(req.get_ref()).await?))
    }

    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send + 'static>>;

    async fn append_stream(&self, req: Request<Streaming<Blob>>) -> Result<Response<Self::AppendStreamStream>, Status> {
        if !self.0.streams {
            return Err(Status::unimplemented("AppendStream"));
        }
        self.0.streams_opened.fetch_add(1, Ordering::SeqCst);
        let replies = futures::stream::unfold((req.into_inner(), self.0.clone()), |(mut rx, peer)| async move {
            let bytes = rx.message().await.ok()??;
            let out = peer.answer(&bytes).await;
            Some((out, (rx, peer)))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, _: Request<Blob>) -> Result<Response<Blob>, Status> {
        Err(Status::unimplemented("vote"))
    }

    async fn snapshot(&self, _: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> {
        Err(Status::unimplemented("snapshot"))
    }

    async fn call(&self, _: Request<Blob>) -> Result<Response<Blob>, Status> {
        Err(Status::unimplemented("call"))
    }
}

/// Serves `peer` on a loopback port and returns its address.
async fn serve(peer: Arc<Peer>) -> String {
    serve_node(NodeServer::new(Service(peer))).await
}

async fn serve_node<S: pb::node_server::Node>(svc: NodeServer<S>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = futures::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
    addr
}

fn request(prev_index: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), prev_index)),
        entries: vec![],
        leader_commit: None,
    }
}

async fn connect(addr: String) -> impl RaftNetwork<TypeConfig> {
    NetworkFactory::default().new_client(2, &Member { name: "2".into(), addr }).await
}

fn ttl(ms: u64) -> RPCOption {
    RPCOption::new(Duration::from_millis(ms))
}

#[tokio::test]
async fn appends_and_replies_alternate_on_one_stream() {
    let peer = Arc::new(Peer { streams: true, ..Peer::default() });
    let mut conn = connect(serve(peer.clone()).await).await;
    for (prev, want) in [
        (1, AppendEntriesResponse::Success),
        (CONFLICT_AT, AppendEntriesResponse::Conflict),
        (2, AppendEntriesResponse::Success),
        (CONFLICT_AT, AppendEntriesResponse::Conflict),
    ] {
        assert_eq!(conn.append_entries(request(prev), ttl(5_000)).await.unwrap(), want, "reply to prev {prev}");
    }
    assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 1, "every append on the one stream");
    assert_eq!(peer.unary_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_unary_calls() {
    let peer = Arc::new(Peer { streams: false, ..Peer::default() });
    let mut conn = connect(serve(peer.clone()).await).await;
    for (prev, want) in [(1, AppendEntriesResponse::Success), (CONFLICT_AT, AppendEntriesResponse::Conflict)] {
        assert_eq!(conn.append_entries(request(prev), ttl(5_000)).await.unwrap(), want, "reply to prev {prev}");
    }
    assert_eq!(peer.unary_calls.load(Ordering::SeqCst), 2, "both appends went unary");
    assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_timed_out_append_never_answers_a_later_one() {
    let peer = Arc::new(Peer { streams: true, slow_conflict: AtomicBool::new(true), ..Peer::default() });
    let mut conn = connect(serve(peer.clone()).await).await;
    // Sent, then given up on while its (Conflict) reply is held back.
    let late = conn.append_entries(request(CONFLICT_AT), ttl(200)).await;
    assert!(late.is_err(), "the held-back append timed out: {late:?}");
    // The late Conflict must not be taken as this request's reply.
    assert_eq!(conn.append_entries(request(1), ttl(5_000)).await.unwrap(), AppendEntriesResponse::Success);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(conn.append_entries(request(2), ttl(5_000)).await.unwrap(), AppendEntriesResponse::Success);
    assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 2, "the timed-out stream was replaced, once");
}

/// openraft drops an append future on its own timeout; the dropped call's stream must go with it.
#[tokio::test]
async fn an_append_cancelled_by_its_caller_never_answers_a_later_one() {
    let peer = Arc::new(Peer { streams: true, slow_conflict: AtomicBool::new(true), ..Peer::default() });
    let mut conn = connect(serve(peer.clone()).await).await;
    let cancelled =
        tokio::time::timeout(Duration::from_millis(200), conn.append_entries(request(CONFLICT_AT), ttl(5_000))).await;
    assert!(cancelled.is_err(), "the caller gave up first");
    assert_eq!(conn.append_entries(request(1), ttl(5_000)).await.unwrap(), AppendEntriesResponse::Success);
    assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 2);
}

struct NoApp;

impl AppHandler for NoApp {
    fn call(&self, _: Blob) -> AppFuture<'_> {
        Box::pin(async { Err(Status::unimplemented("no application here")) })
    }
}

/// A real follower (node 2, fresh store) behind the real `NodeService`, both methods served.
#[tokio::test]
async fn a_real_follower_answers_on_the_stream_and_on_the_unary_call() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = Arc::new(Keystore::new());
    let opts = StoreOptions { keystore: keystore.clone(), encryption_enabled: false, ..StoreOptions::default() };
    let store = Arc::new(Store::open(dir.path().join("store"), opts).unwrap());
    let log = LogStore::open(store.database()).unwrap();
    let shared = Shared::new(store, keystore, Arc::new(Applier::unwired()), 2, dir.path()).unwrap();
    let sm = StateMachine::new(shared).unwrap();
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let raft = Raft::new(2, config, NetworkFactory::default(), log, sm).await.unwrap();
    let addr = serve_node(NodeService::server(raft.clone(), Arc::new(NoApp))).await;

    // Leader 1's first append: no previous entry, nothing to match.
    let empty = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let mut conn = connect(addr.clone()).await;
    assert_eq!(conn.append_entries(empty.clone(), ttl(5_000)).await.unwrap(), AppendEntriesResponse::Success);
    // The follower's log is empty, so an append after index 5 does not match.
    assert_eq!(conn.append_entries(request(CONFLICT_AT), ttl(5_000)).await.unwrap(), AppendEntriesResponse::Conflict);

    // What a leader without the stream sends: one unary call per append.
    let mut unary = client(sealkv_raft::network::channel(&addr).unwrap());
    for (req, want) in
        [(empty, AppendEntriesResponse::Success), (request(CONFLICT_AT), AppendEntriesResponse::Conflict)]
    {
        let reply = unary.append_entries(Request::new(codec::encode(&req).unwrap())).await.unwrap();
        let got: Result<AppendEntriesResponse<u64>, openraft::error::RaftError<u64>> =
            codec::decode(reply.get_ref()).unwrap();
        assert_eq!(got.unwrap(), want);
    }
    raft.shutdown().await.unwrap();
}

/// A slow target is not an unreachable one. openraft answers `Unreachable` with a 500 ms backoff
/// in which it sends that target nothing, heartbeats included; slow multi-MiB appends reported so
/// left followers without a heartbeat until one started an election. Only a target that cannot be
/// reached at all is `Unreachable`.
#[tokio::test]
async fn a_slow_target_is_a_network_error_and_a_closed_port_is_unreachable() {
    for streams in [true, false] {
        let peer = Arc::new(Peer { streams, slow_conflict: AtomicBool::new(true), ..Peer::default() });
        let mut conn = connect(serve(peer).await).await;
        let err = conn.append_entries(request(CONFLICT_AT), ttl(200)).await.unwrap_err();
        assert!(matches!(err, RPCError::Network(_)), "streams={streams}: {err:?}");
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut conn = connect(closed).await;
    let err = conn.append_entries(request(1), ttl(2_000)).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}
