//! The RESP listener and one task per connection: parse whatever arrived (pipelines included),
//! answer connection commands here, send each run of consecutive data commands to the leader as
//! one request, and write all replies back in order.
//!
//! Memory: a connection holds no read buffer while idle (it is dropped once drained), a bulk
//! length or argument count above the limits is refused from its header, at most
//! [`machine::RUN_REPLY_BYTES`] of unsent replies (plus the one reply that crossed it), and the
//! number of connections is capped (`--maxclients`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use sealkv_redis::cmd::{self, Class};
use sealkv_redis::machine;
use sealkv_redis::resp::{self, Limits};
use sealkv_redis::{Group, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::{error_reply, info, route, route_run};
use crate::node::App;

/// Frontend settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--requirepass`: clients must AUTH first.
    pub requirepass: Option<String>,
    /// Request-size limits.
    pub limits: Limits,
    /// `--maxclients`.
    pub maxclients: usize,
}

/// What a node's RESP frontend shares across connections.
pub struct Frontend {
    /// The node; its `redis` half routes and leads the commands.
    pub(crate) app: Arc<App>,
    pub(crate) opts: Options,
    pub(crate) clients: Clients,
    pub(crate) started: Instant,
    pub(crate) port: u16,
    pub(crate) commands_processed: AtomicU64,
    /// Unix seconds of this node's last successful SAVE (its start until the first), for LASTSAVE.
    pub(crate) last_save: AtomicU64,
}

/// One connected client, as CLIENT LIST shows it.
pub struct Client {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) laddr: String,
    pub(crate) name: Mutex<Vec<u8>>,
    pub(crate) lib: Mutex<(String, String)>,
    pub(crate) created: Instant,
    pub(crate) last_cmd: Mutex<(Instant, &'static str)>,
    pub(crate) resp: AtomicU8,
    pub(crate) kill: Notify,
    pub(crate) killed: AtomicBool,
}

/// Connected clients of this node.
#[derive(Default)]
pub struct Clients {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<Client>>>,
}

impl Clients {
    fn register(&self, addr: SocketAddr, laddr: String) -> Arc<Client> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let c = Arc::new(Client {
            id,
            addr: addr.to_string(),
            laddr,
            name: Mutex::new(Vec::new()),
            lib: Mutex::new(Default::default()),
            created: Instant::now(),
            last_cmd: Mutex::new((Instant::now(), "NULL")),
            resp: AtomicU8::new(2),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
        });
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, c.clone());
        c
    }

    fn unregister(&self, id: u64) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// How many are connected.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// All clients, by id.
    pub fn all(&self) -> Vec<Arc<Client>> {
        let mut v: Vec<Arc<Client>> = self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

impl Client {
    /// Closes the connection at its next wakeup.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_one();
    }
}

/// Accepts connections until the process ends.
pub async fn serve(fe: Arc<Frontend>, listener: TcpListener) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, mostly: back off instead of spinning.
                tracing::warn!(error = %e, "redis accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if fe.clients.len() >= fe.opts.maxclients {
            let _ = sock.try_write(b"-ERR max number of clients reached\r\n");
            continue;
        }
        let _ = sock.set_nodelay(true);
        let fe = fe.clone();
        tokio::spawn(async move { connection(fe, sock, peer).await });
    }
}

/// A command queued by MULTI, run at EXEC in its place.
enum Queued {
    /// A data command: all of them go to the leader in one Raft entry.
    Data(Vec<Vec<u8>>),
    /// A connection command (PING, ECHO, SELECT, CLIENT, INFO, …), answered by this node.
    Local(Vec<Vec<u8>>),
}

/// Per-connection protocol state.
pub(crate) struct State {
    pub(crate) resp3: bool,
    pub(crate) authed: bool,
    multi: Option<Vec<Queued>>,
    multi_failed: bool,
    watches: Vec<(Vec<u8>, u64)>,
    pub(crate) quit: bool,
    pub(crate) client: Arc<Client>,
}

async fn connection(fe: Arc<Frontend>, sock: tokio::net::TcpStream, peer: SocketAddr) {
    let laddr = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let client = fe.clients.register(peer, laddr);
    let (mut rd, mut wr) = sock.into_split();
    let mut st = State {
        resp3: false,
        authed: fe.opts.requirepass.is_none(),
        multi: None,
        multi_failed: false,
        watches: Vec::new(),
        quit: false,
        client: client.clone(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            r = rd.readable() => if r.is_err() { break },
            _ = client.kill.notified() => break,
        }
        if client.killed.load(Ordering::Acquire) {
            break;
        }
        let want = buf.len().clamp(16 << 10, 4 << 20);
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        // `read_buf`, not `try_read_buf`: a read that leaves the buffer partly empty has drained
        // the socket, and tokio then clears its readiness, so the next `readable()` waits for new
        // bytes. `try_read_buf` keeps the readiness until a read fails with WouldBlock, which cost
        // a second, empty `recvfrom` per request at `-P 1` (measured: 2.05 `recvfrom` per reply,
        // 1.15 after). A read that cannot complete at once (a spurious wakeup) is dropped: its
        // WouldBlock has cleared the readiness, and `readable()` waits without holding a buffer.
        match rd.read_buf(&mut buf).now_or_never() {
            Some(Ok(0) | Err(_)) => break,
            Some(Ok(_)) => {}
            None => {
                if buf.is_empty() {
                    buf = Vec::new();
                }
                continue;
            }
        }
        let mut cmds = VecDeque::new();
        let mut used = 0;
        let mut protocol_error = None;
        loop {
            match resp::parse(buf.get(used..).unwrap_or_default(), &fe.opts.limits) {
                Ok(Some((args, n))) => {
                    used += n;
                    if !args.is_empty() {
                        cmds.push_back(args);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        buf.drain(..used);
        let mut cmds = process(&fe, &mut st, cmds, &mut out).await;
        let mut gone = false;
        while !cmds.is_empty() {
            // `out` reached its bound with commands left: send it before answering them.
            if wr.write_all(&out).await.is_err() {
                gone = true;
                break;
            }
            out.clear();
            cmds = process(&fe, &mut st, cmds, &mut out).await;
        }
        if gone {
            break;
        }
        if let Some(e) = &protocol_error {
            // As Redis does: answer the protocol error and close; nothing after it is trusted.
            Reply::err(e.0.clone()).write_to(&mut out, st.resp3);
            st.quit = true;
        }
        if wr.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
        if out.capacity() > 64 << 10 {
            out = Vec::new();
        }
        if st.quit {
            break;
        }
        if buf.is_empty() {
            // Idle connections hold no buffer.
            buf = Vec::new();
        }
    }
    let _ = wr.shutdown().await;
    fe.clients.unregister(client.id);
}

fn is(args: &[Vec<u8>], names: &[&str]) -> bool {
    args.first().is_some_and(|n| names.iter().any(|x| n.eq_ignore_ascii_case(x.as_bytes())))
}

/// Answers parsed commands in order into `out`, until `out` holds
/// [`machine::RUN_REPLY_BYTES`]: returns the commands not answered yet, which the caller runs
/// once it has sent `out`.
async fn process(
    fe: &Frontend,
    st: &mut State,
    cmds: VecDeque<Vec<Vec<u8>>>,
    out: &mut Vec<u8>,
) -> VecDeque<Vec<Vec<u8>>> {
    // CLIENT LIST shows the last command; it is recorded once per read, not per command.
    let mut last = "";
    let rest = answer(fe, st, cmds, out, &mut last).await;
    if !last.is_empty()
        && let Ok(mut l) = st.client.last_cmd.lock()
    {
        *l = (Instant::now(), last);
    }
    rest
}

async fn answer(
    fe: &Frontend,
    st: &mut State,
    mut cmds: VecDeque<Vec<Vec<u8>>>,
    out: &mut Vec<u8>,
    last: &mut &'static str,
) -> VecDeque<Vec<Vec<u8>>> {
    while let Some(args) = cmds.pop_front() {
        if st.quit {
            return VecDeque::new();
        }
        fe.commands_processed.fetch_add(1, Ordering::Relaxed);
        *last = cmd::lookup(args.first().map(Vec::as_slice).unwrap_or_default()).map_or("unknown", |s| s.name);
        if !st.authed && !is(&args, &["auth", "hello", "quit"]) {
            Reply::err("NOAUTH Authentication required.").write_to(out, st.resp3);
            continue;
        }
        if let Some(queue) = st.multi.as_mut()
            && !is(&args, &["exec", "discard", "multi", "watch", "quit", "reset"])
        {
            match cmd::check(&args) {
                Err(r) => {
                    st.multi_failed = true;
                    r.write_to(out, st.resp3);
                }
                // Connection commands are queued too, as Redis queues them, and answered at EXEC
                // in their place among the data commands' replies.
                Ok(spec) if spec.class == Class::Conn => {
                    queue.push(Queued::Local(args));
                    Reply::Simple("QUEUED".into()).write_to(out, st.resp3);
                }
                Ok(_) => {
                    queue.push(Queued::Data(args));
                    Reply::Simple("QUEUED".into()).write_to(out, st.resp3);
                }
            }
            continue;
        }
        let spec = match cmd::check(&args) {
            Ok(s) => s,
            Err(r) => {
                r.write_to(out, st.resp3);
                continue;
            }
        };
        if spec.class == Class::Conn {
            let r = connection_command(fe, st, &args).await;
            r.write_to(out, st.resp3);
            continue;
        }
        // A run of consecutive data commands of one class goes to the leader as one request.
        // A run of writes stays within one Raft entry, so only a command that is too big on its
        // own is refused, never the pipeline it came in.
        let write = spec.class == Class::Write;
        let first = Group::single(args);
        let mut size = first.size();
        let mut groups = vec![first];
        while let Some(next) = cmds.front() {
            let same = st.multi.is_none()
                && st.authed
                && cmd::check(next).is_ok_and(|s| s.class == spec.class && s.class != Class::Conn);
            if !same {
                break;
            }
            let next_size = Group::single_size(next);
            if write && size + next_size > super::proposer::MAX_JOB_BYTES {
                break;
            }
            size += next_size;
            if let Some(a) = cmds.pop_front() {
                groups.push(Group::single(a));
            }
        }
        let n = groups.len();
        // The run's first command was counted when it was taken; the others count once answered.
        let answered = match route_run(&fe.app.redis, write, groups).await {
            Ok((replies, rest)) => {
                replies.iter().for_each(|r| r.write_to(out, st.resp3));
                // A run of reads stopped at its reply bound: the rest runs after these are sent.
                for g in rest.into_iter().rev() {
                    g.cmds.into_iter().rev().for_each(|c| cmds.push_front(c));
                }
                replies.len()
            }
            Err(e) => {
                let r = error_reply(&e);
                (0..n).for_each(|_| r.write_to(out, st.resp3));
                n
            }
        };
        fe.commands_processed.fetch_add(answered.saturating_sub(1) as u64, Ordering::Relaxed);
        if out.len() as u64 >= machine::RUN_REPLY_BYTES {
            // Send what is held before answering more, whatever produced it, so a pipeline's
            // replies never pile up in memory (see `machine::RUN_REPLY_BYTES`).
            return cmds;
        }
    }
    VecDeque::new()
}

/// Runs a connection-level command.
async fn connection_command(fe: &Frontend, st: &mut State, args: &[Vec<u8>]) -> Reply {
    let name = args.first().map(|n| n.to_ascii_lowercase()).unwrap_or_default();
    match name.as_slice() {
        b"multi" => {
            if st.multi.is_some() {
                return Reply::err("ERR MULTI calls can not be nested");
            }
            st.multi = Some(Vec::new());
            st.multi_failed = false;
            Reply::Ok
        }
        b"discard" => match st.multi.take() {
            None => Reply::err("ERR DISCARD without MULTI"),
            Some(_) => {
                st.watches.clear();
                Reply::Ok
            }
        },
        b"exec" => {
            let Some(queued) = st.multi.take() else { return Reply::err("ERR EXEC without MULTI") };
            let watches = std::mem::take(&mut st.watches);
            if st.multi_failed {
                st.multi_failed = false;
                return Reply::err("EXECABORT Transaction discarded because of previous errors.");
            }
            // The data commands go to the leader as one entry (even none: the watches are
            // checked there); the connection commands' replies are slotted in between.
            let mut cmds = Vec::new();
            let mut slots = Vec::with_capacity(queued.len());
            for q in queued {
                match q {
                    Queued::Data(a) => {
                        cmds.push(a);
                        slots.push(None);
                    }
                    Queued::Local(a) => slots.push(Some(a)),
                }
            }
            let group = Group { watches, cmds, exec: true };
            let replies = match route(&fe.app.redis, true, vec![group]).await {
                Ok(mut r) => match r.pop() {
                    Some(Reply::Array(replies)) => replies,
                    // A watched key changed (nil), or the entry failed as a whole.
                    other => return other.unwrap_or(Reply::NilArray),
                },
                Err(e) => return error_reply(&e),
            };
            let mut data = replies.into_iter();
            let mut out = Vec::with_capacity(slots.len());
            for slot in slots {
                out.push(match slot {
                    // One reply per data command; a missing one is a bug, never a silent nil.
                    None => data
                        .next()
                        .unwrap_or_else(|| Reply::err("ERR internal: EXEC answered fewer commands than it ran")),
                    // EXEC has already taken the watches: a queued UNWATCH has nothing left to clear.
                    Some(a) if is(&a, &["unwatch"]) => Reply::Ok,
                    Some(a) => info::server_command(fe, st, &a).await,
                });
            }
            Reply::Array(out)
        }
        b"watch" => {
            if st.multi.is_some() {
                return Reply::err("ERR WATCH inside MULTI is not allowed");
            }
            let keys: Vec<Vec<u8>> = args.get(1..).unwrap_or_default().to_vec();
            let mut q = vec![b"__versions".to_vec()];
            q.extend(keys.iter().cloned());
            match route(&fe.app.redis, false, vec![Group::single(q)]).await {
                Ok(r) => match r.first() {
                    Some(Reply::Array(vs)) => {
                        for (k, v) in keys.into_iter().zip(vs) {
                            let Reply::Int(v) = v else { continue };
                            // A key watched twice keeps its first version.
                            if !st.watches.iter().any(|(w, _)| *w == k) {
                                st.watches.push((k, *v as u64));
                            }
                        }
                        Reply::Ok
                    }
                    Some(Reply::Error(e)) => Reply::Error(e.clone()),
                    _ => Reply::err("ERR WATCH failed"),
                },
                Err(e) => error_reply(&e),
            }
        }
        b"unwatch" => {
            st.watches.clear();
            Reply::Ok
        }
        b"reset" => {
            st.multi = None;
            st.multi_failed = false;
            st.watches.clear();
            st.resp3 = false;
            st.client.resp.store(2, Ordering::Relaxed);
            st.authed = fe.opts.requirepass.is_none();
            if let Ok(mut n) = st.client.name.lock() {
                n.clear();
            }
            Reply::Simple("RESET".into())
        }
        b"quit" => {
            st.quit = true;
            Reply::Ok
        }
        _ => info::server_command(fe, st, args).await,
    }
}

/// Checks a password in constant time.
pub(crate) fn password_ok(expected: &str, given: &[u8]) -> bool {
    let e = expected.as_bytes();
    let mut diff = e.len() ^ given.len();
    for (i, b) in given.iter().enumerate() {
        diff |= usize::from(e.get(i % e.len().max(1)).copied().unwrap_or(0) ^ b);
    }
    diff == 0
}
