//! Server-level commands answered by the connection itself: PING, ECHO, HELLO, AUTH, SELECT,
//! TIME, CLIENT, COMMAND, CONFIG, SAVE, LASTSAVE and INFO (whose replication section shows the
//! Raft role, whose persistence section shows the storage engine's background work, and whose
//! encryption section shows key ids and envelope state, never key bytes).

use std::sync::atomic::Ordering;

use openraft::ServerState;
use sealkv_redis::cmd::{self, Args, COMMANDS};
use sealkv_redis::keyspace::{glob, msg, upper};
use sealkv_redis::rules::Rules;
use sealkv_redis::{Group, Reply};

use super::conn::{Client, Frontend, State, password_ok};
use super::route;
use crate::encryption;

/// The Redis version sealkv reports, for clients that check features by version.
pub const REDIS_VERSION: &str = "7.2.0";

/// Runs PING, ECHO, HELLO, AUTH, SELECT, TIME, CLIENT, COMMAND, CONFIG, SAVE, LASTSAVE or INFO.
pub async fn server_command(fe: &Frontend, st: &mut State, args: &[Vec<u8>]) -> Reply {
    let name = Args(args).get(0).to_ascii_lowercase();
    match name.as_slice() {
        b"ping" => match args.len() {
            1 => Reply::Simple("PONG".into()),
            2 => Reply::bulk(Args(args).get(1)),
            _ => cmd::wrong_arity("ping"),
        },
        b"echo" => Reply::bulk(Args(args).get(1)),
        // Only database 0 exists; the index is parsed first, as Redis does.
        b"select" => match sealkv_redis::keyspace::int(Args(args).get(1)) {
            None => Reply::err(sealkv_redis::keyspace::msg::NOT_INT),
            Some(0) => Reply::Ok,
            Some(i) if i32::try_from(i).is_err() => Reply::err(msg::out_of_range(i32::MIN.into(), i32::MAX.into())),
            Some(_) => Reply::err("ERR DB index is out of range"),
        },
        b"time" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Reply::Array(vec![Reply::bulk(now.as_secs().to_string()), Reply::bulk(now.subsec_micros().to_string())])
        }
        b"auth" => auth(fe, st, args.get(1..).unwrap_or_default()),
        b"hello" => hello(fe, st, args),
        b"client" => client(fe, st, args),
        b"command" => command(args),
        b"config" => config(fe, args),
        b"info" => info(fe, args).await,
        b"save" => save(fe).await,
        b"lastsave" => Reply::Int(fe.last_save.load(Ordering::Relaxed) as i64),
        _ => cmd::unknown(args),
    }
}

/// SAVE: writes every memtable of this node's store out as tables and answers once they are on
/// disk. Unlike Redis there is no dump file to write: every acknowledged write is already durable
/// in the journal. What SAVE changes is where the data sits, so the work of flushing it is done
/// now rather than inside whatever the node does next (docs/runbook.md, 'SAVE'). This node only,
/// as in Redis, where each replica saves itself.
async fn save(fe: &Frontend) -> Reply {
    let store = fe.app.shared.store.clone();
    let flushed = match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(join) => Err(join.to_string()),
    };
    match flushed {
        Ok(()) => {
            fe.last_save.store(crate::coordinator::now_ms() / 1000, Ordering::Relaxed);
            Reply::Ok
        }
        Err(e) => {
            tracing::error!(error = %e, "SAVE failed");
            Reply::err(format!("ERR SAVE failed: {e}"))
        }
    }
}

fn auth(fe: &Frontend, st: &mut State, creds: &[Vec<u8>]) -> Reply {
    // Redis checks the argument count before whether a password is set.
    if creds.len() > 2 {
        return Reply::err("ERR syntax error");
    }
    let Some(expected) = &fe.opts.requirepass else {
        return Reply::err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    };
    let (user, pass) = match creds {
        [p] => (&b"default"[..], p.as_slice()),
        [u, p] => (u.as_slice(), p.as_slice()),
        _ => return Reply::err("ERR syntax error"),
    };
    if user == b"default" && password_ok(expected, pass) {
        st.authed = true;
        Reply::Ok
    } else {
        Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn hello(fe: &Frontend, st: &mut State, args: &[Vec<u8>]) -> Reply {
    let mut proto = if st.resp3 { 3 } else { 2 };
    let mut i = 1;
    if args.len() > 1 {
        match std::str::from_utf8(Args(args).get(1)).ok().and_then(|s| s.parse::<i64>().ok()) {
            Some(p @ (2 | 3)) => proto = p,
            Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut setname = None;
    while i < args.len() {
        match upper(Args(args).get(i)).as_slice() {
            b"AUTH" if i + 2 < args.len() => {
                let r = auth(fe, st, args.get(i + 1..i + 3).unwrap_or_default());
                if r.is_error() {
                    return r;
                }
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                setname = Some(Args(args).get(i + 1).to_vec());
                i += 2;
            }
            _ => {
                return Reply::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(Args(args).get(i))
                ));
            }
        }
    }
    if !st.authed {
        return Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(n) = setname {
        if let Err(e) = set_name(&st.client, &n) {
            return e;
        }
    }
    st.resp3 = proto == 3;
    st.client.resp.store(proto as u8, Ordering::Relaxed);
    let role = if matches!(fe.app.redis.coordinator.leader_elsewhere(), Ok(None)) { "master" } else { "replica" };
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Int(proto)),
        (Reply::bulk("id"), Reply::Int(st.client.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk(role)),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}

fn set_name(c: &Client, n: &[u8]) -> Result<(), Reply> {
    if n.iter().any(|b| *b <= b' ' || *b > b'~') {
        return Err(Reply::err("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    if let Ok(mut name) = c.name.lock() {
        *name = n.to_vec();
    }
    Ok(())
}

fn client_line(c: &Client) -> String {
    let name = c.name.lock().map(|n| String::from_utf8_lossy(&n).into_owned()).unwrap_or_default();
    let (last, cmd) = c.last_cmd.lock().map(|l| *l).unwrap_or((c.created, "NULL"));
    let (lib, ver) = c.lib.lock().map(|l| l.clone()).unwrap_or_default();
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        c.id,
        c.addr,
        c.laddr,
        name,
        c.created.elapsed().as_secs(),
        last.elapsed().as_secs(),
        cmd,
        c.resp.load(Ordering::Relaxed),
        lib,
        ver
    )
}

fn client(fe: &Frontend, st: &mut State, args: &[Vec<u8>]) -> Reply {
    let sub = upper(Args(args).get(1));
    let n = args.len();
    match (sub.as_slice(), n) {
        (b"ID", 2) => Reply::Int(st.client.id as i64),
        (b"GETNAME", 2) => {
            let name = st.client.name.lock().map(|n| n.clone()).unwrap_or_default();
            if name.is_empty() { Reply::Nil } else { Reply::Bulk(name) }
        }
        (b"SETNAME", 3) => match set_name(&st.client, Args(args).get(2)) {
            Ok(()) => Reply::Ok,
            Err(e) => e,
        },
        (b"SETINFO", 4) => {
            let v = String::from_utf8_lossy(Args(args).get(3)).replace([' ', '\n', '\r'], "");
            let mut lib = match st.client.lib.lock() {
                Ok(l) => l,
                Err(_) => return Reply::Ok,
            };
            match upper(Args(args).get(2)).as_slice() {
                b"LIB-NAME" => lib.0 = v,
                b"LIB-VER" => lib.1 = v,
                _ => {
                    return Reply::err(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(Args(args).get(2))
                    ));
                }
            }
            Reply::Ok
        }
        (b"INFO", 2) => Reply::bulk(format!("{}\n", client_line(&st.client))),
        (b"LIST", _) => {
            let mut ids: Option<Vec<u64>> = None;
            let mut i = 2;
            while i < n {
                match upper(Args(args).get(i)).as_slice() {
                    b"TYPE" if i + 1 < n => i += 2,
                    b"ID" => {
                        let parsed: Option<Vec<u64>> = args
                            .get(i + 1..)
                            .unwrap_or_default()
                            .iter()
                            .map(|a| std::str::from_utf8(a).ok().and_then(|s| s.parse().ok()))
                            .collect();
                        match parsed {
                            Some(v) if !v.is_empty() => ids = Some(v),
                            _ => return Reply::err("ERR Invalid client ID"),
                        }
                        i = n;
                    }
                    _ => return Reply::err("ERR syntax error"),
                }
            }
            let mut s = String::new();
            for c in fe.clients.all() {
                if ids.as_ref().is_none_or(|v| v.contains(&c.id)) {
                    s.push_str(&client_line(&c));
                    s.push('\n');
                }
            }
            Reply::bulk(s)
        }
        (b"KILL", 2) => subcommand_error("CLIENT", Args(args).get(1), CLIENT_SUBCOMMANDS),
        (b"KILL", 3) => {
            // Old form: CLIENT KILL addr:port.
            let target = String::from_utf8_lossy(Args(args).get(2)).into_owned();
            match fe.clients.all().into_iter().find(|c| c.addr == target) {
                Some(c) => {
                    kill(st, &c);
                    Reply::Ok
                }
                None => Reply::err("ERR No such client"),
            }
        }
        (b"KILL", _) => {
            let mut by_id = None;
            let mut by_addr = None;
            let mut skipme = true;
            let mut i = 2;
            while i + 1 < n {
                let v = Args(args).get(i + 1);
                match upper(Args(args).get(i)).as_slice() {
                    b"ID" => match std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()) {
                        Some(id) => by_id = Some(id),
                        None => return Reply::err("ERR client-id should be greater than 0"),
                    },
                    b"ADDR" => by_addr = Some(String::from_utf8_lossy(v).into_owned()),
                    b"SKIPME" => match upper(v).as_slice() {
                        b"YES" => skipme = true,
                        b"NO" => skipme = false,
                        _ => return Reply::err("ERR syntax error"),
                    },
                    _ => return Reply::err("ERR syntax error"),
                }
                i += 2;
            }
            if i != n {
                return Reply::err("ERR syntax error");
            }
            let mut killed = 0;
            for c in fe.clients.all() {
                let hit = by_id.is_none_or(|id| c.id == id) && by_addr.as_ref().is_none_or(|a| c.addr == *a);
                if hit && !(skipme && c.id == st.client.id) {
                    kill(st, &c);
                    killed += 1;
                }
            }
            Reply::Int(killed)
        }
        (b"NO-EVICT" | b"NO-TOUCH", 3) => Reply::Ok,
        (b"HELP", 2) => Reply::Array(
            [
                "CLIENT <subcommand>",
                "ID",
                "GETNAME",
                "SETNAME <name>",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "INFO",
                "LIST [ID id ...]",
                "KILL <addr> | KILL [ID id] [ADDR addr] [SKIPME yes|no]",
            ]
            .iter()
            .map(|s| Reply::Simple((*s).into()))
            .collect(),
        ),
        _ => subcommand_error("CLIENT", Args(args).get(1), CLIENT_SUBCOMMANDS),
    }
}

/// The CLIENT subcommands served; any other is unknown.
const CLIENT_SUBCOMMANDS: &[&str] =
    &["ID", "GETNAME", "SETNAME", "SETINFO", "INFO", "LIST", "KILL", "NO-EVICT", "NO-TOUCH", "HELP"];
/// The CONFIG subcommands served.
const CONFIG_SUBCOMMANDS: &[&str] = &["GET", "SET", "RESETSTAT"];
/// The COMMAND subcommands served.
const COMMAND_SUBCOMMANDS: &[&str] = &["COUNT", "LIST", "INFO", "DOCS"];

/// Redis 7's reply to a subcommand it cannot run: its arity error (`'client|setname'`) for one it
/// knows, `unknown subcommand` (named as sent) for one it does not.
fn subcommand_error(command: &str, sub: &[u8], known: &[&str]) -> Reply {
    let name = String::from_utf8_lossy(sub);
    if known.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
        Reply::err(format!(
            "ERR wrong number of arguments for '{}|{}' command",
            command.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ))
    } else {
        Reply::err(format!("ERR unknown subcommand '{name}'. Try {command} HELP."))
    }
}

fn kill(st: &mut State, c: &Client) {
    if c.id == st.client.id {
        // Killing yourself: the reply is sent, then the connection closes.
        st.quit = true;
    } else {
        c.kill();
    }
}

fn command(args: &[Vec<u8>]) -> Reply {
    let visible = || COMMANDS.iter().filter(|c| c.class != cmd::Class::Internal);
    match upper(Args(args).get(1)).as_slice() {
        b"" => Reply::Array(visible().map(|c| c.info()).collect()),
        b"COUNT" if args.len() == 2 => Reply::Int(visible().count() as i64),
        b"COUNT" => subcommand_error("COMMAND", Args(args).get(1), COMMAND_SUBCOMMANDS),
        b"LIST" => Reply::Array(visible().map(|c| Reply::bulk(c.name)).collect()),
        b"INFO" => {
            let names = args.get(2..).unwrap_or_default();
            if names.is_empty() {
                return Reply::Array(visible().map(|c| c.info()).collect());
            }
            Reply::Array(
                names
                    .iter()
                    .map(|n| match cmd::lookup(n) {
                        Some(s) if s.class != cmd::Class::Internal => s.info(),
                        _ => Reply::NilArray,
                    })
                    .collect(),
            )
        }
        // Documentation is not served; an empty map is what redis-cli expects from a server
        // without docs, and it then falls back to its built-in help.
        b"DOCS" => Reply::Map(Vec::new()),
        _ => subcommand_error("COMMAND", Args(args).get(1), COMMAND_SUBCOMMANDS),
    }
}

fn config_values(fe: &Frontend) -> Vec<(&'static str, String)> {
    vec![
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxclients", fe.opts.maxclients.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("timeout", "0".into()),
        ("tcp-keepalive", "0".into()),
        ("port", fe.port.to_string()),
        ("proto-max-bulk-len", fe.opts.limits.max_bulk.to_string()),
        ("cluster-enabled", "no".into()),
        ("requirepass", if fe.opts.requirepass.is_some() { "********".into() } else { String::new() }),
    ]
}

fn config(fe: &Frontend, args: &[Vec<u8>]) -> Reply {
    match upper(Args(args).get(1)).as_slice() {
        b"GET" if args.len() >= 3 => {
            let mut out = Vec::new();
            for (k, v) in config_values(fe) {
                if args.get(2..).unwrap_or_default().iter().any(|p| glob(&p.to_ascii_lowercase(), k.as_bytes())) {
                    out.push((Reply::bulk(k), Reply::bulk(v)));
                }
            }
            Reply::Map(out)
        }
        b"SET" if args.len() >= 4 && args.len() % 2 == 0 => {
            // sealkv's settings are fixed at start (flags); CONFIG SET accepts only a value equal
            // to the current one, so scripts that assert a setting keep working and nothing is
            // silently ignored.
            let current = config_values(fe);
            for pair in args.get(2..).unwrap_or_default().chunks_exact(2) {
                let (k, v) = (String::from_utf8_lossy(&pair[0]).to_lowercase(), &pair[1]);
                match current.iter().find(|(n, _)| *n == k) {
                    Some((_, cur)) if cur.as_bytes() == v.as_slice() => {}
                    Some(_) => {
                        return Reply::err(format!(
                            "ERR CONFIG SET failed (possibly related to argument '{k}') - sealkv sets this with a server flag at start"
                        ));
                    }
                    None => {
                        return Reply::err(format!("ERR Unknown option or number of arguments for CONFIG SET - '{k}'"));
                    }
                }
            }
            Reply::Ok
        }
        b"RESETSTAT" if args.len() == 2 => Reply::Ok,
        _ => subcommand_error("CONFIG", Args(args).get(1), CONFIG_SUBCOMMANDS),
    }
}

async fn info(fe: &Frontend, args: &[Vec<u8>]) -> Reply {
    let wanted: Vec<String> =
        args.get(1..).unwrap_or_default().iter().map(|a| String::from_utf8_lossy(a).to_lowercase()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let app = &fe.app;
    let mut out = String::new();
    if want("server") {
        section(
            &mut out,
            "Server",
            &[
                ("redis_version", &REDIS_VERSION),
                ("sealkv_version", &env!("CARGO_PKG_VERSION")),
                ("sealkv_command_rules", &Rules::CURRENT.byte()),
                ("redis_mode", &"standalone"),
                ("os", &std::env::consts::OS),
                ("arch_bits", &64),
                ("process_id", &std::process::id()),
                ("tcp_port", &fe.port),
                ("uptime_in_seconds", &fe.started.elapsed().as_secs()),
            ],
        );
    }
    if want("clients") {
        section(&mut out, "Clients", &[("connected_clients", &fe.clients.len()), ("maxclients", &fe.opts.maxclients)]);
    }
    if want("stats") {
        let rows = app.shared.store.row_cache_stats();
        section(
            &mut out,
            "Stats",
            &[
                ("total_commands_processed", &fe.commands_processed.load(Ordering::Relaxed)),
                ("row_cache_hits", &rows.hits),
                ("row_cache_misses", &rows.misses),
                ("row_cache_bytes", &rows.bytes),
                ("row_cache_holds", &if app.shared.store.row_cache_sealed() { "sealed" } else { "opened" }),
            ],
        );
    }
    if want("persistence") {
        let e = app.shared.store.engine_stats();
        section(
            &mut out,
            "Persistence",
            &[
                ("loading", &0),
                ("last_save_time", &fe.last_save.load(Ordering::Relaxed)),
                ("memtable_bytes", &e.memtable_bytes),
                ("flushes_pending", &e.flushes_pending),
                ("compactions_running", &e.compactions_running),
                ("compactions_completed", &e.compactions_completed),
                ("journal_files", &e.journal_files),
            ],
        );
    }
    if want("replication") {
        let m = app.raft.metrics().borrow().clone();
        let raft_role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let leader = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.name.clone()))
            .unwrap_or_default();
        let voters = m.membership_config.membership().voter_ids().count();
        let log = app.log.sizes(|s| s.usage());
        let leading = raft_role == "leader";
        section(
            &mut out,
            "Replication",
            &[
                ("role", &if leading { "master" } else { "slave" }),
                ("raft_role", &raft_role),
                ("raft_node", &app.name),
                ("raft_leader", &leader),
                ("raft_term", &m.current_term),
                ("raft_last_applied", &m.last_applied.map(|l| l.index).unwrap_or(0)),
                ("raft_voters", &voters),
                ("connected_slaves", &if leading { voters.saturating_sub(1) } else { 0 }),
                ("raft_snapshot_index", &m.snapshot.map_or(0, |l| l.index)),
                ("raft_last_purged", &m.purged.map_or(0, |l| l.index)),
                ("raft_log_entries", &log.entries),
                ("raft_log_bytes", &log.bytes),
            ],
        );
    }
    if want("encryption") {
        let e = encryption::local_state(app);
        section(
            &mut out,
            "Encryption",
            &[
                ("encryption_enabled", &if e.enabled { "yes" } else { "no" }),
                ("storage_envelope", &if e.storage_envelope { "on" } else { "off" }),
                ("raft_envelope_cutover_index", &e.raft_cutover_index),
                ("active_storage_dek_id", &e.active_storage),
                ("active_raft_dek_id", &e.active_raft),
                ("loaded_deks", &e.keys.len()),
            ],
        );
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        if let Ok(r) = route(&fe.app.redis, false, vec![Group::single(vec![b"__keyspace".to_vec()])]).await
            && let Some(Reply::Array(counts)) = r.first()
            && let [Reply::Int(keys), Reply::Int(expires)] = counts.as_slice()
            && *keys > 0
        {
            out.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
        }
        out.push_str("\r\n");
    }
    Reply::Bulk(out.into_bytes())
}

/// Appends one INFO section as Redis lays it out: a `# Title` line, a `field:value` line per field,
/// and a blank line.
fn section(out: &mut String, title: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "# {title}\r\n");
    for (name, value) in fields {
        let _ = write!(out, "{name}:{value}\r\n");
    }
    out.push_str("\r\n");
}
