//! `sealkv server`: one node. Startup order: refusal guards (spec 03 §5) → Raft node → gRPC →
//! (first leader of a cluster encrypted from birth) bootstrap + both envelopes → client intake.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use sealkv_crypto::applier::Applier;
use sealkv_crypto::guards::{self, StartupInputs};
use sealkv_crypto::kek::{FileKek, KekProvider};
use sealkv_crypto::wire::EncryptionEntry;
use sealkv_crypto::{Keystore, full_node_id};
use sealkv_raft::command::Op;
use sealkv_raft::log_store::LogStore;
use sealkv_raft::network::{AppFuture, AppHandler, NetworkFactory, NodeService};
use sealkv_raft::timing::Timing;
use sealkv_raft::{Member, Raft, Shared, StateMachine, codec};
use sealkv_store::{Direction, KeyRange, Store, StoreOptions};

use crate::api::{self, ApiError, ClusterStatus, Envelope, MemberStatus, Request, Response, WriteOp};
use crate::coordinator::{Coordinator, Hold, now_ms};
use crate::encryption;
use crate::kek_timer::TimedKek;
use crate::redis;

/// Everything `sealkv server` is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// This node's name; its FNV-1a hash is the Raft and registry node id.
    #[arg(long)]
    pub node_id: String,
    /// Data directory (store, Raft log, sidecar, snapshots).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// gRPC listen address (Raft, KV and admin).
    #[arg(long, default_value = "127.0.0.1:7379")]
    pub listen_grpc: SocketAddr,
    /// Address other nodes reach this one at (defaults to --listen-grpc).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Redis (RESP2/RESP3) listen address; no Redis frontend without it.
    #[arg(long)]
    pub listen_redis: Option<SocketAddr>,
    /// Redis clients must AUTH with this password first (also read from SEALKV_REQUIREPASS, so
    /// it need not appear in the process list).
    #[arg(long, env = "SEALKV_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// The most Redis connections at once; more are refused with an error.
    #[arg(long, default_value_t = 16_384)]
    pub maxclients: usize,
    /// The largest Redis bulk argument in bytes (Redis `proto-max-bulk-len`).
    #[arg(long, default_value_t = 512 << 20)]
    pub proto_max_bulk_len: usize,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (see docs/runbook.md, Metrics).
    #[arg(long)]
    pub listen_metrics: Option<SocketAddr>,
    /// Initialize a new cluster with --initial-members (run on one node only).
    #[arg(long)]
    pub init: bool,
    /// `n1=host:port,n2=host:port,...` — the first voters.
    #[arg(long, value_delimiter = ',')]
    pub initial_members: Vec<String>,
    /// Encrypt: requires a KEK.
    #[arg(long)]
    pub encryption_enabled: bool,
    /// KEK file: exactly 32 raw bytes, mode 0600, outside the data dir.
    #[arg(long)]
    pub kek_file: Option<PathBuf>,
    /// KEK URI (pkcs11:… or aws-kms://…).
    #[arg(long, conflicts_with = "kek_file")]
    pub kek_uri: Option<String>,
    /// With --init: bootstrap DEKs and turn on both envelopes before serving any client.
    #[arg(long, requires = "encryption_enabled")]
    pub encrypt_from_birth: bool,
    /// Build a snapshot after this many applied entries. High by default, so the byte budget
    /// (`--snapshot-log-mib`) decides under load: a snapshot copies the whole store, and an entry
    /// carries from one command to thousands, so a count alone snapshots a busy node far too
    /// often (measured: the old default of 20 000 was reached 50 s into `scripts/bench-redis`'s
    /// load, and each node then wrote a 610 MB snapshot in the middle of the benchmark).
    #[arg(long, default_value_t = 200_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for followers that lag a little.
    #[arg(long, default_value_t = 5_000)]
    pub keep_logs: u64,
    /// Also build a snapshot once the log past the last one holds this many MiB (a write-heavy
    /// node packs many commands into each entry, so entries alone do not bound the log).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_log_mib: u64,
    /// Keep at most this many MiB of log behind a snapshot (and at most `--keep-logs` entries).
    #[arg(long, default_value_t = 64)]
    pub keep_log_mib: u64,
    /// Seconds between MVCC GC passes on this node (0: never collect); a long pass stretches
    /// the wait after it to 20x its duration.
    #[arg(long, default_value_t = 60)]
    pub gc_every_secs: u64,
    /// How far (seconds) the GC horizon trails the clock: longer than any single read runs.
    #[arg(long, default_value_t = 60)]
    pub gc_lag_secs: u64,
    /// Row cache size in MiB: the newest version of hot keys, opened, so reads and
    /// read-modify-write commands skip the LSM lookups and the decrypt. 0 turns it off.
    #[arg(long, default_value_t = sealkv_store::DEFAULT_ROW_CACHE_BYTES >> 20)]
    pub row_cache_mib: u64,
    /// Keep the row cache's versions sealed, as stored, and open every hit: no plaintext is held
    /// in memory between requests, at the cost of a decrypt per cached read (docs/storage.md).
    #[arg(long)]
    pub row_cache_sealed: bool,
}

/// Election timeouts. openraft 0.9 also uses the maximum as the followers' leader lease (they
/// refuse votes that long after a heartbeat), which the coordinator's read lease relies on.
pub(crate) const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub(crate) const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;

fn parse_members(list: &[String]) -> anyhow::Result<BTreeMap<u64, Member>> {
    let mut out = BTreeMap::new();
    for item in list {
        let (name, addr) =
            item.split_once('=').with_context(|| format!("--initial-members entry {item:?} is not NAME=HOST:PORT"))?;
        out.insert(full_node_id(name), Member { name: name.to_owned(), addr: addr.to_owned() });
    }
    Ok(out)
}

fn load_kek(args: &ServerArgs) -> anyhow::Result<Option<Arc<dyn KekProvider>>> {
    if let Some(uri) = &args.kek_uri {
        bail!(
            "--kek-uri {uri}: PKCS#11 and AWS KMS KEK providers are not built into this binary yet; use --kek-file PATH"
        );
    }
    match &args.kek_file {
        Some(p) => Ok(Some(Arc::new(FileKek::open(p)?))),
        None => Ok(None),
    }
}

/// Runs a node until SIGINT/SIGTERM (exit 0) or an apply halt (exit 3).
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let me = full_node_id(&args.node_id);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let sidecar_dir = sealkv_crypto::sidecar::Sidecar::dir(&args.data_dir);
    // Guards 1 and 2 need nothing opened; run them before touching the store.
    guards::sidecar_needs_flag(&sidecar_dir, args.encryption_enabled)?;
    let kek_unwraps = Arc::new(Timing::default());
    let kek = load_kek(&args)?.map(|k| -> Arc<dyn KekProvider> { Arc::new(TimedKek::new(k, kek_unwraps.clone())) });
    guards::kek_required(args.encryption_enabled, kek.is_some())?;

    let keystore = Arc::new(Keystore::new());
    let store = Arc::new(Store::open(
        args.data_dir.join("store"),
        StoreOptions {
            keystore: keystore.clone(),
            encryption_enabled: args.encryption_enabled,
            row_cache_bytes: args.row_cache_mib.saturating_mul(1 << 20),
            row_cache_sealed: args.row_cache_sealed,
            ..Default::default()
        },
    )?);
    let log = LogStore::open(store.database())?;
    let applied = store.applied()?.map(|a| a.index).unwrap_or(0);
    let snapshot_dir = args.data_dir.join("snapshots");
    let snapshot = sealkv_raft::state_machine::current(&snapshot_dir).ok().flatten();
    // Guard 6 and the epoch fence look at every member this node knows of: the applied
    // membership (the snapshot's, when the store was installed from one) and the initial members.
    let known: Vec<(u64, Member)> = {
        let (_, applied_membership) = sealkv_raft::state_machine::applied_position(&store)?;
        let mut m: Vec<(u64, Member)> = parse_members(&args.initial_members)?.into_iter().collect();
        m.extend(applied_membership.membership().nodes().map(|(id, n)| (*id, n.clone())));
        m
    };
    let members: Vec<(String, u64)> = {
        let mut m: Vec<(String, u64)> = known.iter().map(|(id, n)| (n.name.clone(), *id)).collect();
        m.sort();
        m.dedup();
        m
    };
    let peers: Vec<String> = {
        let mut p: Vec<String> = known.iter().filter(|(id, _)| *id != me).map(|(_, n)| n.addr.clone()).collect();
        p.sort();
        p.dedup();
        p
    };
    let snapshot_info = match &snapshot {
        Some(s) => Some(snapshot_header_info(&s.snapshot.path, s.meta.last_log_id.map(|l| l.index).unwrap_or(0))?),
        None => None,
    };
    let started = guards::run(StartupInputs {
        encryption_enabled: args.encryption_enabled,
        kek: kek.clone(),
        sidecar_dir: &sidecar_dir,
        full_node_id: me,
        members: &members,
        registry: &store.batch(),
        log: &log,
        applied_index: applied,
        snapshot: snapshot_info,
        keystore: keystore.clone(),
    })?;
    if let Some(sc) = started.sidecar.clone().as_mut() {
        encryption::fence(sc, &sidecar_dir, me, &peers).await?;
    }
    let applier = match (&kek, args.encryption_enabled) {
        (Some(k), true) => {
            Applier::unwired().with_kek(k.clone()).with_keystore(keystore.clone()).with_sidecar_dir(&sidecar_dir)?
        }
        _ => Applier::unwired(),
    };
    let shared = Shared::new(store.clone(), keystore, Arc::new(applier), me, &args.data_dir)?;
    shared.set_machine(Arc::new(RedisMachine));
    let sm = StateMachine::new(shared.clone())?;

    let config = Config {
        cluster_name: "sealkv".into(),
        heartbeat_interval: 150,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(args.snapshot_every),
        max_in_snapshot_log_to_keep: args.keep_logs,
        max_payload_entries: 512,
        ..Default::default()
    }
    .validate()?;
    let log_reader = log.clone();
    let append_rpcs = Arc::new(Timing::default());
    let raft = Raft::new(me, Arc::new(config), NetworkFactory::timed(append_rpcs.clone()), log, sm).await?;
    let coordinator = Arc::new(Coordinator::new(raft.clone(), shared.clone(), me));
    let advertise = args.advertise.clone().unwrap_or_else(|| args.listen_grpc.to_string());
    let redis_core = redis::Core::new(coordinator.clone(), shared.clone(), log_reader.flush_progress());
    let app = Arc::new(App {
        redis: redis_core.clone(),
        raft: raft.clone(),
        shared: shared.clone(),
        coordinator: coordinator.clone(),
        me,
        name: args.node_id.clone(),
        addr: advertise,
        kek: kek.clone().filter(|_| args.encryption_enabled),
        kek_unwraps,
        log: log_reader.clone(),
        append_rpcs,
    });

    let listener = tokio::net::TcpListener::bind(args.listen_grpc)
        .await
        .with_context(|| format!("cannot listen on --listen-grpc {}", args.listen_grpc))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let svc = NodeService::server(raft.clone(), app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream_from(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };

    let mut frontend = None;
    if let Some(addr) = args.listen_redis {
        raise_fd_limit();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --listen-redis {addr}"))?;
        let fe = Arc::new(redis::conn::Frontend {
            app: app.clone(),
            opts: redis::conn::Options {
                requirepass: args.requirepass.clone(),
                limits: sealkv_redis::resp::Limits { max_bulk: args.proto_max_bulk_len, ..Default::default() },
                maxclients: args.maxclients,
            },
            clients: Default::default(),
            started: std::time::Instant::now(),
            port: addr.port(),
            commands_processed: Default::default(),
            last_save: std::sync::atomic::AtomicU64::new(crate::coordinator::now_ms() / 1000),
        });
        frontend = Some(fe.clone());
        tokio::spawn(redis::conn::serve(fe, listener));
        tokio::spawn(redis::sweep::run(redis_core.clone()));
        tracing::info!(redis = %addr, auth = args.requirepass.is_some(), "redis frontend listening");
    }
    if let Some(addr) = args.listen_metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --listen-metrics {addr}"))?;
        let sources = Arc::new(crate::metrics::Sources { app: app.clone(), redis: frontend });
        tokio::spawn(crate::metrics::serve(listener, sources));
        tracing::info!(metrics = %addr, "prometheus metrics on /metrics");
    }

    if args.init && !raft.is_initialized().await? {
        let initial = parse_members(&args.initial_members)?;
        if !initial.contains_key(&me) {
            bail!("--init: --initial-members must include this node ({})", args.node_id);
        }
        raft.initialize(initial).await?;
        tracing::info!("initialized a new cluster");
    }
    if args.encrypt_from_birth && shared.cutover() == 0 {
        coordinator
            .hold(Hold::Birth, "the cluster is switching encryption on (encrypted from birth); retry in a moment");
        tokio::spawn(encryption::encrypt_from_birth(app.clone()));
    }
    if args.encryption_enabled {
        if started.sidecar.as_ref().is_some_and(|s| s.bootstrapped()) {
            coordinator.hold(Hold::Registration, "this node is registering its new writer epochs; retry in a moment");
        }
        tokio::spawn(encryption::registrar(app.clone()));
    }
    tracing::info!(node = %args.node_id, grpc = %args.listen_grpc, encryption = args.encryption_enabled, "sealkv server started");

    let budget = crate::log_budget::LogBudget {
        snapshot_after_bytes: args.snapshot_log_mib.saturating_mul(1 << 20),
        keep_bytes: args.keep_log_mib.saturating_mul(1 << 20),
    };
    tokio::spawn(crate::log_budget::run(raft.clone(), log_reader, budget));

    if args.gc_every_secs > 0 {
        let schedule = crate::gc::GcSchedule {
            every: Duration::from_secs(args.gc_every_secs),
            lag: Duration::from_secs(args.gc_lag_secs),
        };
        tokio::spawn(crate::gc::run(store.clone(), schedule));
    }

    let halted = watch_halt(raft.clone(), shared.clone());
    tokio::select! {
        h = halted => {
            let _ = stop_tx.send(true);
            let _ = store.persist();
            eprintln!("sealkv: {h}");
            std::process::exit(3);
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
        }
    }
    let _ = stop_tx.send(true);
    let _ = raft.shutdown().await;
    let _ = server.await;
    store.persist()?;
    Ok(())
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_core_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_core_stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

mod futures_core_stream {
    pub use futures::stream::{Stream, unfold};
}

fn snapshot_header_info(path: &std::path::Path, last_index: u64) -> anyhow::Result<guards::SnapshotInfo> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open snapshot {}", path.display()))?;
    let r = sealkv_store::SnapshotReader::new(std::io::BufReader::new(f))?;
    let cutover = r.header().encryption.as_ref().map(|e| e.raft_cutover_index).unwrap_or(0);
    Ok(guards::SnapshotInfo { last_index, raft_cutover_index: cutover })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Resolves with the halt line once the apply loop stopped.
///
/// Polled, not woken by `raft.metrics()` changes: the metrics change on every append, commit and
/// apply, and waking this task for each of them cost a thread switch per Raft round (~2 per
/// Redis write at low concurrency). A halt is noticed within [`HALT_POLL`].
async fn watch_halt(raft: Raft, shared: Arc<Shared>) -> String {
    let mut tick = tokio::time::interval(HALT_POLL);
    loop {
        tick.tick().await;
        if let Some(h) = shared.halted() {
            return h.to_string();
        }
        if let Err(e) = &raft.metrics().borrow().running_state {
            return format!("raft stopped: {e}");
        }
    }
}

/// How often [`watch_halt`] looks.
const HALT_POLL: Duration = Duration::from_millis(50);

/// Applies 0x08 command-batch entries with the Redis command machine.
struct RedisMachine;

impl sealkv_raft::Machine for RedisMachine {
    fn apply(&self, batch: &mut sealkv_store::ApplyBatch<'_>, ts: u64, body: &[u8]) -> Result<Vec<u8>, String> {
        sealkv_redis::machine::apply(batch, ts, body)
    }
}

/// Lifts the open-file soft limit to the hard limit: every Redis client is a descriptor.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass, which lives on our stack
    // for the duration of each call.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The node's application half: KV and admin calls.
pub struct App {
    /// The Redis frontend's leader half (proposer, cursors).
    pub(crate) redis: Arc<redis::Core>,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<Shared>,
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) me: u64,
    pub(crate) name: String,
    pub(crate) addr: String,
    /// The KEK, when the node runs with `--encryption-enabled` (otherwise `None`).
    pub(crate) kek: Option<Arc<dyn KekProvider>>,
    /// How long the KEK's unwraps took (`sealkv_encryption_kek_unwrap_seconds`).
    pub(crate) kek_unwraps: Arc<Timing>,
    /// The Raft log's reader half, for its size (`INFO replication`) and its append timing.
    pub(crate) log: LogStore,
    /// How long the AppendEntries this node sent as leader took, round trip.
    pub(crate) append_rpcs: Arc<Timing>,
}

impl AppHandler for App {
    fn call(&self, req: Vec<u8>) -> AppFuture<'_> {
        Box::pin(async move {
            let env: Envelope = codec::decode(&req)?;
            let resp = match self.handle(env).await {
                Ok(r) => r,
                Err(e) => Response::Error(e),
            };
            codec::encode(&resp)
        })
    }
}

fn write_ops(ops: Vec<WriteOp>) -> Result<Vec<Op>, ApiError> {
    if ops.is_empty() {
        return Err(ApiError::new("InvalidArgument", "a write needs at least one op"));
    }
    let now = now_ms();
    ops.into_iter()
        .map(|op| match op {
            WriteOp::Put { key, value, ttl_ms } => {
                check_key(&key)?;
                if value.len() > sealkv_store::MAX_VALUE_LEN {
                    let limit = sealkv_store::MAX_VALUE_LEN;
                    return Err(ApiError::new("InvalidArgument", format!("value over the {limit}-byte limit")));
                }
                let expire_at_ms = match ttl_ms {
                    Some(0) => return Err(ApiError::new("InvalidArgument", "ttl must be positive")),
                    Some(t) => now.saturating_add(t),
                    None => 0,
                };
                Ok(Op::Put { key, value, expire_at_ms })
            }
            WriteOp::Delete { key } => {
                check_key(&key)?;
                Ok(Op::Delete { key })
            }
        })
        .collect()
}

fn check_key(key: &[u8]) -> Result<(), ApiError> {
    if key.first() == Some(&sealkv_redis::layout::NS) {
        return Err(ApiError::new(
            "InvalidArgument",
            "keys starting with byte 0xFF are the Redis keyspace; write them through the Redis port",
        ));
    }
    if key.len() > sealkv_store::key::MAX_USER_KEY_LEN {
        return Err(ApiError::new(
            "InvalidArgument",
            format!("key longer than {} bytes", sealkv_store::key::MAX_USER_KEY_LEN),
        ));
    }
    Ok(())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new("Internal", e.to_string())
}

impl App {
    async fn handle(&self, env: Envelope) -> Result<Response, ApiError> {
        match env.request {
            Request::LocalStatus => Ok(Response::Local(self.local_status())),
            Request::ClusterStatus => self.cluster_status().await.map(Response::Cluster),
            Request::LocalEncryption => Ok(Response::LocalEncryption(encryption::local_state(self))),
            Request::EncryptionStatus => self.encryption_status().await.map(Response::Encryption),
            Request::Capability => Ok(Response::Capability(encryption::capability(self))),
            // Answered from this node's applied registry: the fence asks every peer and keeps
            // the highest row, so no leader is needed (a restarting node may be the one missing
            // for a quorum).
            Request::RegistryRows { full_node_id } => encryption::rows_for(self, full_node_id).map(Response::Rows),
            req => {
                if let Some(leader) = self.coordinator.leader_elsewhere()? {
                    if env.forwarded {
                        return Err(ApiError::new(
                            "NotLeader",
                            format!("forwarded to a node that is not the leader; the leader is at {leader}"),
                        ));
                    }
                    return api::call(&leader, req, true).await;
                }
                self.lead(req).await
            }
        }
    }

    async fn lead(&self, req: Request) -> Result<Response, ApiError> {
        match req {
            Request::Get { key } => {
                self.coordinator.read_barrier().await?;
                let v = self.shared.store.get(&key, u64::MAX, now_ms()).map_err(internal)?;
                Ok(Response::Value(v))
            }
            Request::Scan { prefix, limit } => {
                self.coordinator.read_barrier().await?;
                let mut out = Vec::new();
                for item in self.shared.store.scan(&KeyRange::Prefix(prefix), u64::MAX, now_ms(), Direction::Forward) {
                    out.push(item.map_err(internal)?);
                    if out.len() >= limit as usize {
                        break;
                    }
                }
                Ok(Response::Pairs(out))
            }
            Request::Write { ops } => {
                let ts = self.coordinator.write(write_ops(ops)?).await?;
                Ok(Response::Written { ts })
            }
            Request::Redis { write, body } => self.redis.lead_encoded(write, &body).await,
            Request::ReadIndex => Ok(Response::ReadIndex { index: self.coordinator.read_index().await? }),
            Request::Register { payload } => {
                match EncryptionEntry::decode(&payload) {
                    Ok(EncryptionEntry::Register(_)) => {}
                    _ => {
                        return Err(ApiError::new(
                            "InvalidArgument",
                            "only writer registrations may be proposed this way",
                        ));
                    }
                }
                self.coordinator.propose_internal(payload).await?;
                Ok(Response::Ok)
            }
            Request::RotateDek { purpose } => encryption::rotate(self, &purpose).await,
            Request::AddLearner { name, addr } => {
                let id = full_node_id(&name);
                encryption::admit(self, id, &addr).await?;
                self.raft.add_learner(id, Member { name, addr }, true).await.map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::Promote { name } => {
                let id = full_node_id(&name);
                let addr =
                    self.raft.metrics().borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone());
                let Some(addr) = addr else {
                    return Err(ApiError::new(
                        "InvalidArgument",
                        format!(
                            "{name} is not a member; add it first with `sealkv admin cluster add-learner {name} HOST:PORT`"
                        ),
                    ));
                };
                encryption::admit(self, id, &addr).await?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::Remove { name } => {
                let id = full_node_id(&name);
                let m = self.raft.metrics().borrow().membership_config.clone();
                let change = if m.membership().voter_ids().any(|v| v == id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await.map_err(internal)?;
                Ok(Response::Ok)
            }
            Request::LocalStatus
            | Request::ClusterStatus
            | Request::LocalEncryption
            | Request::EncryptionStatus
            | Request::Capability
            | Request::RegistryRows { .. } => Err(internal("answered without the leader")),
        }
    }

    fn local_status(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow().clone();
        let voter = m.membership_config.membership().voter_ids().any(|v| v == self.me);
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Follower if voter => "follower",
            openraft::ServerState::Follower | openraft::ServerState::Learner => "learner",
            openraft::ServerState::Shutdown => "shutdown",
        };
        MemberStatus {
            id: self.name.clone(),
            role: role.into(),
            address: self.addr.clone(),
            applied_index: Some(m.last_applied.map(|l| l.index).unwrap_or(0)),
            voter,
            raft_cutover_index: Some(self.shared.cutover()),
            storage_envelope: Some(self.shared.store.storage_envelope_since().is_some()),
            halted: self.shared.halted().map(|h| h.to_string()),
            serving: Some(self.coordinator.is_open()),
        }
    }

    /// Asks every member (this one answers itself through `local`) with a 2 s limit each.
    async fn probe_members<T>(
        &self,
        req: Request,
        local: impl Fn(&App) -> T,
        pick: impl Fn(Response) -> Option<T>,
    ) -> Vec<(u64, Member, Option<T>)> {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let nodes: Vec<(u64, Member)> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let probes = nodes.into_iter().map(|(id, n)| {
            let req = req.clone();
            let (local, pick) = (&local, &pick);
            async move {
                if id == self.me {
                    return (id, n, Some(local(self)));
                }
                let r = tokio::time::timeout(Duration::from_secs(2), api::call(&n.addr, req, true)).await;
                let got = match r {
                    Ok(Ok(resp)) => pick(resp),
                    _ => None,
                };
                (id, n, got)
            }
        });
        futures::future::join_all(probes).await
    }

    async fn encryption_status(&self) -> Result<api::EncryptionStatus, ApiError> {
        let answers = self
            .probe_members(Request::LocalEncryption, encryption::local_state, |r| match r {
                Response::LocalEncryption(s) => Some(s),
                _ => None,
            })
            .await;
        let mut nodes = Vec::new();
        let mut unreachable = Vec::new();
        for (_, n, s) in answers {
            match s {
                Some(s) => nodes.push(s),
                None => unreachable.push(n.name),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        unreachable.sort();
        Ok(api::EncryptionStatus { nodes, unreachable, registry: encryption::all_rows(self)? })
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        let m = self.raft.metrics().borrow().clone();
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let mut members = Vec::new();
        let mut leader = None;
        let answers = self
            .probe_members(Request::LocalStatus, App::local_status, |r| match r {
                Response::Local(s) => Some(s),
                _ => None,
            })
            .await;
        for (id, n, s) in answers {
            if Some(id) == m.current_leader {
                leader = Some(n.name.clone());
            }
            members.push(s.unwrap_or(MemberStatus {
                id: n.name.clone(),
                role: "unreachable".into(),
                address: n.addr.clone(),
                applied_index: None,
                voter: voters.contains(&id),
                raft_cutover_index: None,
                storage_envelope: None,
                halted: None,
                serving: None,
            }));
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ClusterStatus { leader, term: m.current_term, members })
    }
}
