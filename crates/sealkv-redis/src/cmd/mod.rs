//! The command table: every command's arity, whether it writes, its key positions (COMMAND
//! INFO), and the function that runs it. Connection commands (PING, MULTI, CLIENT, …) are
//! listed so COMMAND and arity checks see them, but run in the server's connection loop.

mod hashes;
mod keys;
mod lists;
mod sets;
mod strings;
mod zsets;

use std::collections::HashMap;
use std::sync::OnceLock;

use sealkv_store::StoreError;

use crate::db::{DbError, Mark};
use crate::keyspace::{Ctx, Fail, Res, msg};
use crate::reply::Reply;

/// A command's arguments (index 0 is its name).
pub struct Args<'a>(pub &'a [Vec<u8>]);

impl<'a> Args<'a> {
    /// Argument `i`, empty if absent (arity is checked before a command runs).
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.0.get(i).map(Vec::as_slice).unwrap_or_default()
    }

    /// Arguments from `i` on.
    pub fn from(&self, i: usize) -> &'a [Vec<u8>] {
        self.0.get(i..).unwrap_or_default()
    }

    /// How many arguments, the name included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The optional non-negative count of LPOP/RPOP/ZPOPMIN/ZPOPMAX at position `i` (the last
    /// argument): `None` when absent.
    pub fn pop_count(&self, i: usize) -> Result<Option<usize>, Fail> {
        match self.from(i) {
            [] => Ok(None),
            [c] => crate::keyspace::non_negative(c, crate::keyspace::msg::NOT_POSITIVE).map(Some),
            _ => crate::keyspace::fail(crate::keyspace::msg::SYNTAX),
        }
    }

    /// The command name as sent.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(self.get(0)).into_owned()
    }
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads: on the leader after a read barrier.
    Read,
    /// Writes: through Raft, evaluated at apply on every replica.
    Write,
    /// Connection and server commands: in the connection loop.
    Conn,
    /// Sent by the node itself (expiry sweep, WATCH versions); refused from clients.
    Internal,
}

type Run = fn(&mut Ctx<'_>, &Args<'_>) -> Res;

/// One command.
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: exact if positive, at least |n| if negative (the name counts).
    pub arity: i32,
    /// Where it runs.
    pub class: Class,
    /// First key position, last (negative from the end), step — as COMMAND INFO reports them.
    pub keys: (i32, i32, i32),
    run: Option<Run>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spec({})", self.name)
    }
}

impl Spec {
    /// Whether the command's cost is bounded whatever the size of the data (Redis's `fast`
    /// flag): connection commands, and the reads of one key's value, metadata or named elements.
    /// Everything else may walk a collection or the keyspace, so the server runs it off the
    /// async workers (a read of a million keys must not hold up Raft heartbeats).
    pub fn fast(&self) -> bool {
        match self.class {
            Class::Conn | Class::Internal => true,
            Class::Read => FAST_READS.contains(&self.name),
            Class::Write => false,
        }
    }

    /// Whether `n` arguments (name included) fit the arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity >= 0 { n == self.arity } else { n >= -self.arity }
    }

    /// COMMAND INFO's entry for this command.
    pub fn info(&self) -> Reply {
        let mut flags = Vec::new();
        match self.class {
            Class::Write => flags.push(Reply::Simple("write".into())),
            Class::Read => flags.push(Reply::Simple("readonly".into())),
            Class::Conn | Class::Internal => {}
        }
        if self.fast() {
            flags.push(Reply::Simple("fast".into()));
        }
        Reply::Array(vec![
            Reply::bulk(self.name),
            Reply::Int(i64::from(self.arity)),
            Reply::Set(flags),
            Reply::Int(i64::from(self.keys.0)),
            Reply::Int(i64::from(self.keys.1)),
            Reply::Int(i64::from(self.keys.2)),
            Reply::Set(Vec::new()),
            Reply::Set(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
        ])
    }
}

/// The reads whose cost does not grow with a collection or the keyspace: a string's value or
/// length, a key's metadata, named elements, element counts kept in the meta record. Not here
/// (so they walk): KEYS, SCAN and the element scans, RANDOMKEY, whole-collection reads, ranges,
/// set algebra, LPOS, and ZRANK/ZCOUNT (which walk the score index).
const FAST_READS: &[&str] = &[
    "dbsize",
    "exists",
    "type",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "get",
    "mget",
    "strlen",
    "getrange",
    "substr",
    "hget",
    "hmget",
    "hlen",
    "hexists",
    "hstrlen",
    "llen",
    "lindex",
    "sismember",
    "smismember",
    "scard",
    "zscore",
    "zmscore",
    "zcard",
];

const fn spec(name: &'static str, arity: i32, class: Class, keys: (i32, i32, i32), run: Option<Run>) -> Spec {
    Spec { name, arity, class, keys, run }
}

use Class::{Conn, Internal, Read, Write};

const K1: (i32, i32, i32) = (1, 1, 1);
const KALL: (i32, i32, i32) = (1, -1, 1);
const K12: (i32, i32, i32) = (1, 2, 1);
const NOKEY: (i32, i32, i32) = (0, 0, 0);

/// Every command sealkv answers.
pub static COMMANDS: &[Spec] = &[
    // connection and server (run by the connection loop)
    spec("ping", -1, Conn, NOKEY, None),
    spec("echo", 2, Conn, NOKEY, None),
    spec("hello", -1, Conn, NOKEY, None),
    spec("auth", -2, Conn, NOKEY, None),
    spec("quit", -1, Conn, NOKEY, None),
    spec("reset", 1, Conn, NOKEY, None),
    spec("select", 2, Conn, NOKEY, None),
    spec("client", -2, Conn, NOKEY, None),
    spec("command", -1, Conn, NOKEY, None),
    spec("info", -1, Conn, NOKEY, None),
    spec("config", -2, Conn, NOKEY, None),
    spec("time", 1, Conn, NOKEY, None),
    spec("save", 1, Conn, NOKEY, None),
    spec("lastsave", 1, Conn, NOKEY, None),
    spec("multi", 1, Conn, NOKEY, None),
    spec("exec", 1, Conn, NOKEY, None),
    spec("discard", 1, Conn, NOKEY, None),
    spec("watch", -2, Conn, KALL, None),
    spec("unwatch", 1, Conn, NOKEY, None),
    // keyspace
    spec("dbsize", 1, Read, NOKEY, Some(keys::dbsize)),
    spec("flushall", -1, Write, NOKEY, Some(keys::flushall)),
    spec("flushdb", -1, Write, NOKEY, Some(keys::flushall)),
    spec("del", -2, Write, KALL, Some(keys::del)),
    spec("unlink", -2, Write, KALL, Some(keys::del)),
    spec("exists", -2, Read, KALL, Some(keys::exists)),
    spec("type", 2, Read, K1, Some(keys::type_)),
    spec("expire", -3, Write, K1, Some(keys::expire)),
    spec("pexpire", -3, Write, K1, Some(keys::pexpire)),
    spec("expireat", -3, Write, K1, Some(keys::expireat)),
    spec("pexpireat", -3, Write, K1, Some(keys::pexpireat)),
    spec("ttl", 2, Read, K1, Some(keys::ttl)),
    spec("pttl", 2, Read, K1, Some(keys::pttl)),
    spec("expiretime", 2, Read, K1, Some(keys::expiretime)),
    spec("pexpiretime", 2, Read, K1, Some(keys::pexpiretime)),
    spec("persist", 2, Write, K1, Some(keys::persist)),
    spec("keys", 2, Read, NOKEY, Some(keys::keys)),
    spec("scan", -2, Read, NOKEY, Some(keys::scan)),
    spec("rename", 3, Write, K12, Some(keys::rename)),
    spec("renamenx", 3, Write, K12, Some(keys::renamenx)),
    spec("randomkey", 1, Read, NOKEY, Some(keys::randomkey)),
    spec("copy", -3, Write, K12, Some(keys::copy)),
    spec("__expiredel", -1, Internal, NOKEY, Some(keys::expiredel)),
    spec("__versions", -1, Internal, NOKEY, Some(keys::versions)),
    spec("__keyspace", 1, Internal, NOKEY, Some(keys::keyspace)),
    // strings
    spec("get", 2, Read, K1, Some(strings::get)),
    spec("set", -3, Write, K1, Some(strings::set)),
    spec("setnx", 3, Write, K1, Some(strings::setnx)),
    spec("setex", 4, Write, K1, Some(strings::setex)),
    spec("psetex", 4, Write, K1, Some(strings::psetex)),
    spec("getset", 3, Write, K1, Some(strings::getset)),
    spec("getdel", 2, Write, K1, Some(strings::getdel)),
    spec("getex", -2, Write, K1, Some(strings::getex)),
    spec("mget", -2, Read, KALL, Some(strings::mget)),
    spec("mset", -3, Write, (1, -1, 2), Some(strings::mset)),
    spec("msetnx", -3, Write, (1, -1, 2), Some(strings::msetnx)),
    spec("incr", 2, Write, K1, Some(strings::incr)),
    spec("decr", 2, Write, K1, Some(strings::decr)),
    spec("incrby", 3, Write, K1, Some(strings::incrby)),
    spec("decrby", 3, Write, K1, Some(strings::decrby)),
    spec("incrbyfloat", 3, Write, K1, Some(strings::incrbyfloat)),
    spec("append", 3, Write, K1, Some(strings::append)),
    spec("strlen", 2, Read, K1, Some(strings::strlen)),
    spec("getrange", 4, Read, K1, Some(strings::getrange)),
    spec("substr", 4, Read, K1, Some(strings::getrange)),
    spec("setrange", 4, Write, K1, Some(strings::setrange)),
    // hashes
    spec("hset", -4, Write, K1, Some(hashes::hset)),
    spec("hmset", -4, Write, K1, Some(hashes::hset)),
    spec("hsetnx", 4, Write, K1, Some(hashes::hsetnx)),
    spec("hget", 3, Read, K1, Some(hashes::hget)),
    spec("hmget", -3, Read, K1, Some(hashes::hmget)),
    spec("hgetall", 2, Read, K1, Some(hashes::hgetall)),
    spec("hdel", -3, Write, K1, Some(hashes::hdel)),
    spec("hlen", 2, Read, K1, Some(hashes::hlen)),
    spec("hexists", 3, Read, K1, Some(hashes::hexists)),
    spec("hincrby", 4, Write, K1, Some(hashes::hincrby)),
    spec("hincrbyfloat", 4, Write, K1, Some(hashes::hincrbyfloat)),
    spec("hkeys", 2, Read, K1, Some(hashes::hkeys)),
    spec("hvals", 2, Read, K1, Some(hashes::hvals)),
    spec("hstrlen", 3, Read, K1, Some(hashes::hstrlen)),
    spec("hrandfield", -2, Read, K1, Some(hashes::hrandfield)),
    spec("hscan", -3, Read, K1, Some(hashes::hscan)),
    // lists
    spec("lpush", -3, Write, K1, Some(lists::lpush)),
    spec("rpush", -3, Write, K1, Some(lists::rpush)),
    spec("lpushx", -3, Write, K1, Some(lists::lpushx)),
    spec("rpushx", -3, Write, K1, Some(lists::rpushx)),
    spec("lpop", -2, Write, K1, Some(lists::lpop)),
    spec("rpop", -2, Write, K1, Some(lists::rpop)),
    spec("llen", 2, Read, K1, Some(lists::llen)),
    spec("lrange", 4, Read, K1, Some(lists::lrange)),
    spec("lindex", 3, Read, K1, Some(lists::lindex)),
    spec("lset", 4, Write, K1, Some(lists::lset)),
    spec("lrem", 4, Write, K1, Some(lists::lrem)),
    spec("ltrim", 4, Write, K1, Some(lists::ltrim)),
    spec("linsert", 5, Write, K1, Some(lists::linsert)),
    spec("lpos", -3, Read, K1, Some(lists::lpos)),
    spec("lmove", 5, Write, K12, Some(lists::lmove)),
    spec("rpoplpush", 3, Write, K12, Some(lists::rpoplpush)),
    // sets
    spec("sadd", -3, Write, K1, Some(sets::sadd)),
    spec("srem", -3, Write, K1, Some(sets::srem)),
    spec("smembers", 2, Read, K1, Some(sets::smembers)),
    spec("sismember", 3, Read, K1, Some(sets::sismember)),
    spec("smismember", -3, Read, K1, Some(sets::smismember)),
    spec("scard", 2, Read, K1, Some(sets::scard)),
    spec("spop", -2, Write, K1, Some(sets::spop)),
    spec("srandmember", -2, Read, K1, Some(sets::srandmember)),
    spec("smove", 4, Write, K12, Some(sets::smove)),
    spec("sinter", -2, Read, KALL, Some(sets::sinter)),
    spec("sunion", -2, Read, KALL, Some(sets::sunion)),
    spec("sdiff", -2, Read, KALL, Some(sets::sdiff)),
    spec("sinterstore", -3, Write, KALL, Some(sets::sinterstore)),
    spec("sunionstore", -3, Write, KALL, Some(sets::sunionstore)),
    spec("sdiffstore", -3, Write, KALL, Some(sets::sdiffstore)),
    spec("sintercard", -3, Read, NOKEY, Some(sets::sintercard)),
    spec("sscan", -3, Read, K1, Some(sets::sscan)),
    // sorted sets
    spec("zadd", -4, Write, K1, Some(zsets::zadd)),
    spec("zrem", -3, Write, K1, Some(zsets::zrem)),
    spec("zscore", 3, Read, K1, Some(zsets::zscore)),
    spec("zmscore", -3, Read, K1, Some(zsets::zmscore)),
    spec("zincrby", 4, Write, K1, Some(zsets::zincrby)),
    spec("zcard", 2, Read, K1, Some(zsets::zcard)),
    spec("zcount", 4, Read, K1, Some(zsets::zcount)),
    spec("zrange", -4, Read, K1, Some(zsets::zrange)),
    spec("zrangebyscore", -4, Read, K1, Some(zsets::zrangebyscore)),
    spec("zrevrange", -4, Read, K1, Some(zsets::zrevrange)),
    spec("zrevrangebyscore", -4, Read, K1, Some(zsets::zrevrangebyscore)),
    spec("zrangebylex", -4, Read, K1, Some(zsets::zrangebylex)),
    spec("zrank", -3, Read, K1, Some(zsets::zrank)),
    spec("zrevrank", -3, Read, K1, Some(zsets::zrevrank)),
    spec("zpopmin", -2, Write, K1, Some(zsets::zpopmin)),
    spec("zpopmax", -2, Write, K1, Some(zsets::zpopmax)),
    spec("zremrangebyscore", 4, Write, K1, Some(zsets::zremrangebyscore)),
    spec("zremrangebyrank", 4, Write, K1, Some(zsets::zremrangebyrank)),
    spec("zscan", -3, Read, K1, Some(zsets::zscan)),
];

/// The spec of a command by name, any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    static MAP: OnceLock<HashMap<&'static str, &'static Spec>> = OnceLock::new();
    let map = MAP.get_or_init(|| COMMANDS.iter().map(|s| (s.name, s)).collect());
    // Every command runs through here (twice: at the receiving node and at apply), so the name
    // is lowercased on the stack; no command name is longer than 32 bytes.
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    map.get(std::str::from_utf8(lower).ok()?).copied()
}

/// Redis's reply to a command it does not know.
pub fn unknown(args: &[Vec<u8>]) -> Reply {
    let name = args.first().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
    let mut tail = String::new();
    for a in args.iter().skip(1).take(3) {
        tail.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
    }
    Reply::err(format!("ERR unknown command '{name}', with args beginning with: {tail}"))
}

/// Redis's reply to a wrong argument count.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::err(wrong_arity_message(name))
}

/// The text of that reply; Redis names the command in lowercase, whatever case it was sent in.
fn wrong_arity_message(name: &str) -> String {
    format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase())
}

/// Checks that the arguments from `from` on come in pairs (MSET, HSET). Redis checks this when
/// the command runs, not when it is queued, so inside MULTI an odd count fails that command
/// alone instead of aborting the transaction.
fn pairs(a: &Args<'_>, from: usize) -> Result<(), Fail> {
    if a.len().saturating_sub(from) % 2 != 0 {
        return crate::keyspace::fail(wrong_arity_message(&a.name()));
    }
    Ok(())
}

/// Checks a client command before it is queued or sent: unknown, internal, connection-level
/// or wrong arity give the reply to send instead.
pub fn check(args: &[Vec<u8>]) -> Result<&'static Spec, Reply> {
    let Some(spec) = args.first().and_then(|n| lookup(n)) else { return Err(unknown(args)) };
    if spec.class == Class::Internal {
        return Err(unknown(args));
    }
    if !spec.arity_ok(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    Ok(spec)
}

/// Runs a data command (read or write) against `ctx`. A store failure is an `Err`: apply
/// halts on it, a read answers with an error reply. A write the store refuses for its size
/// (a key and member whose encoding is too long, a value too large) is answered with an error
/// instead, and the command's earlier writes are taken back: the refusal depends only on the
/// command and the state, so every replica answers it alike, and a client cannot halt the
/// cluster with a long key.
pub fn execute(ctx: &mut Ctx<'_>, args: &[Vec<u8>]) -> Result<Reply, DbError> {
    let Some(spec) = args.first().and_then(|n| lookup(n)) else { return Ok(unknown(args)) };
    let Some(run) = spec.run else { return Ok(unknown(args)) };
    if !spec.arity_ok(args.len()) {
        return Ok(wrong_arity(spec.name));
    }
    if spec.class == Class::Write && !ctx.db.writable() {
        return Err(DbError::ReadOnly);
    }
    // A read past a group's spent reply budget is not run at all; a write always is (its reply is
    // small, and skipping it would change what the group writes).
    if spec.class == Class::Read && ctx.reply_room() == 0 {
        return Ok(Reply::err(msg::REPLY_TOO_LARGE));
    }
    // A command that names no key (FLUSHALL, the leader's expiry sweep) writes only keys the
    // store already holds, which it can always hold again; FLUSHALL's mark would keep a copy of
    // every key in the keyspace.
    let mark = if spec.keys == NOKEY { Mark::NONE } else { ctx.db.mark() };
    let reply = match run(ctx, &Args(args)) {
        Err(Fail::Db(DbError::Store(e))) if e.is_refusal() => {
            ctx.db.undo(mark);
            refused(&e)
        }
        out => {
            ctx.db.keep(mark);
            match out {
                Ok(r) => r,
                Err(Fail::Reply(m)) => Reply::Error(m),
                Err(Fail::Db(e)) => return Err(e),
            }
        }
    };
    if !ctx.charge_reply(&reply) && spec.class == Class::Read {
        return Ok(Reply::err(msg::REPLY_TOO_LARGE));
    }
    Ok(reply)
}

/// The answer to a write the store refused ([`StoreError::is_refusal`]).
fn refused(e: &StoreError) -> Reply {
    Reply::err(match e {
        StoreError::ValueTooLarge { .. } => "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        _ => {
            "ERR key too long: sealkv stores a key, together with the hash field or set or sorted-set member it holds, in at most 65535 bytes (see docs/redis.md, Limits)"
        }
    })
}
