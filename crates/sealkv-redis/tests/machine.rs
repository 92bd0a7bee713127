//! The command machine on a real store: commands applied as entries (the apply path, with the
//! batch's read-your-writes) and read back through the leader's read path.

use sealkv_redis::cursor::Cursors;
use sealkv_redis::machine;
use sealkv_redis::reply_list::decode_replies;
use sealkv_redis::rules::Rules;
use sealkv_redis::{Group, Reply, entry};
use sealkv_store::{Applied, Durability, Store, StoreOptions};

struct Node {
    _dir: tempfile::TempDir,
    store: Store,
    index: u64,
    ms: u64,
    cursors: Cursors,
}

fn args(s: &str) -> Vec<Vec<u8>> {
    s.split_whitespace().map(|a| a.as_bytes().to_vec()).collect()
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        Node { _dir: dir, store, index: 0, ms: 1_000_000, cursors: Cursors::default() }
    }

    /// Applies groups as one entry at the node's clock; the replies.
    fn apply(&mut self, groups: &[Group]) -> Vec<Reply> {
        self.apply_at(Rules::CURRENT, groups)
    }

    /// Applies groups as one entry proposed under `rules`.
    fn apply_at(&mut self, rules: Rules, groups: &[Group]) -> Vec<Reply> {
        self.index += 1;
        let ts = (self.ms << 16) + self.index;
        let mut b = self.store.batch();
        let out = machine::apply(&mut b, ts, &entry::encode_entry(rules, groups)).unwrap();
        b.commit(&Applied { index: self.index, log_id: vec![1] }, Durability::Buffered).unwrap();
        decode_replies(&out).unwrap()
    }

    fn w(&mut self, cmd: &str) -> Reply {
        self.apply(&[Group::single(args(cmd))]).remove(0)
    }

    fn r(&self, cmd: &str) -> Reply {
        machine::read(&self.store, self.ms, 7, &self.cursors, &[args(cmd)]).remove(0)
    }
}

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

fn strs(v: &[&str]) -> Reply {
    Reply::Array(v.iter().map(|s| bulk(s)).collect())
}

/// An entry is evaluated under the rules level it was proposed under, whatever the build: a bare
/// entry (from a build before levels) reads floats as that build did, so a node that applies it
/// after an upgrade agrees with the nodes that applied it before theirs.
#[test]
fn each_entry_runs_under_the_rules_it_was_proposed_under() {
    let mut n = Node::new();
    let cmds = ["ZADD z 0x10 hex", "ZADD z 1e400 big", "ZCOUNT z 0x1 +inf", "SET f 0x1p-2", "INCRBYFLOAT f 1"];
    let groups: Vec<Group> = cmds.iter().map(|c| Group::single(args(c))).collect();
    let not_float = Reply::err("ERR value is not a valid float");
    let old = n.apply_at(Rules::V1, &groups);
    assert_eq!(
        old,
        vec![
            not_float.clone(),
            Reply::Int(1),
            Reply::err("ERR min or max is not a float"),
            Reply::Ok,
            not_float.clone()
        ]
    );
    assert_eq!(n.r("ZSCORE z big"), Reply::Double(f64::INFINITY), "level 1 read 1e400 as infinity");
    n.w("DEL z");
    let new = n.apply_at(Rules::V2, &groups);
    assert_eq!(new, vec![Reply::Int(1), not_float, Reply::Int(1), Reply::Ok, bulk("1.25")]);
    assert_eq!(n.r("ZSCORE z hex"), Reply::Double(16.0));
    assert_eq!(n.r("ZCOUNT z 0x1 +inf"), Reply::Int(1), "reads run under the current rules");
}

/// Redis compares -0 and 0 as one score. Level 3 stores -0 as 0 and lets a zero range bound reach
/// both zeros; entries of earlier levels still store -0 as given and search from the bound's own
/// zero, so replicas agree on them, and reads find members an earlier level stored at -0.
#[test]
fn negative_zero_is_the_score_zero_from_level_3() {
    let mut n = Node::new();
    let at = |n: &mut Node, rules: Rules, cmd: &str| n.apply_at(rules, &[Group::single(args(cmd))]).remove(0);
    assert_eq!(at(&mut n, Rules::V2, "ZADD old 0 a -0 b 0 c"), Reply::Int(3));
    assert_eq!(n.r("ZRANGE old 0 -1"), strs(&["b", "a", "c"]), "level 2 sorted -0 below 0");
    assert_eq!(n.r("ZCOUNT old 0 0"), Reply::Int(3), "a read reaches the -0 a level 2 stored");
    assert_eq!(n.r("ZRANGEBYSCORE old -0 -0"), strs(&["b", "a", "c"]));
    assert_eq!(n.r("ZRANGEBYSCORE old (0 +inf"), strs(&[]));
    assert_eq!(at(&mut n, Rules::V2, "ZREMRANGEBYSCORE old 0 0"), Reply::Int(2), "level 2 left -0");
    assert_eq!(n.r("ZRANGE old 0 -1"), strs(&["b"]));

    assert_eq!(n.w("ZADD z 0 a -0 b 0 c -0.0 d"), Reply::Int(4));
    assert_eq!(n.r("ZRANGE z 0 -1"), strs(&["a", "b", "c", "d"]), "equal scores sort by member");
    assert_eq!(n.r("ZRANK z c"), Reply::Int(2));
    assert_eq!(n.r("ZCOUNT z -0 -0"), Reply::Int(4));
    assert_eq!(n.r("ZCOUNT z (0 +inf"), Reply::Int(0));
    assert_eq!(n.r("ZCOUNT z -inf (-0"), Reply::Int(0));
    assert_eq!(n.w("ZINCRBY z -0 e"), Reply::Double(0.0));
    assert_eq!(n.w("ZADD z INCR -0 e"), Reply::Double(0.0));
    assert_eq!(n.r("ZRANGE z 0 -1"), strs(&["a", "b", "c", "d", "e"]));
    assert_eq!(n.w("ZREMRANGEBYSCORE z 0 -0"), Reply::Int(5));
    assert_eq!(n.r("EXISTS z"), Reply::Int(0));
}

/// FLUSHALL takes one option from level 3, as in Redis; an entry of an earlier level still flushes
/// with the options after the first ignored, as it did on the replicas that applied it then.
#[test]
fn flushall_takes_one_option_from_level_3() {
    let mut n = Node::new();
    n.w("SET k v");
    assert_eq!(n.w("FLUSHDB ASYNC extra"), Reply::err("ERR syntax error"));
    assert_eq!(n.w("FLUSHALL SYNC SYNC"), Reply::err("ERR syntax error"));
    assert_eq!(n.r("DBSIZE"), Reply::Int(1));
    let old = n.apply_at(Rules::V2, &[Group::single(args("FLUSHDB ASYNC extra"))]);
    assert_eq!(old, vec![Reply::Ok]);
    assert_eq!(n.r("DBSIZE"), Reply::Int(0));
}

/// A count or rank whose sign picks a direction cannot be -2^63, whose negation does not fit:
/// Redis's range error (SRANDMEMBER and HRANDFIELD in Redis 7.0, LPOS RANK from 7.2; 7.0's LPOS
/// read it through an overflow).
#[test]
fn a_signed_count_of_minus_2_pow_63_is_out_of_range() {
    let mut n = Node::new();
    n.w("RPUSH l a b a");
    n.w("SADD s a b");
    n.w("HSET h a 1");
    let range =
        Reply::err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807");
    for cmd in [
        "LPOS l a RANK -9223372036854775808",
        "SRANDMEMBER s -9223372036854775808",
        "HRANDFIELD h -9223372036854775808",
    ] {
        assert_eq!(n.r(cmd), range, "{cmd}");
    }
    assert_eq!(n.r("LPOS l a RANK -9223372036854775807"), Reply::Nil);
    assert_eq!(n.r("LPOS l a RANK -1"), Reply::Int(2));
}

fn argv(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// A write the store cannot hold (a key and member whose encoding passes the store's key limit)
/// once halted apply on every replica: one client command stopped the cluster for good, since a
/// restart applies the same entry again. It is an error reply now, and the command leaves none of
/// its writes (MSET's first key, DEL's first delete, SUNIONSTORE's clearing of its destination);
/// the entry's other commands stand, in a transaction too, the key counts stay right, and apply
/// goes on.
#[test]
fn a_key_too_long_to_store_is_refused_and_the_command_leaves_nothing() {
    let mut n = Node::new();
    // Zero bytes take two bytes each in the store's key encoding.
    let long = vec![0u8; 33_000];
    let half = vec![0u8; 20_000];
    let too_long = Reply::err(
        "ERR key too long: sealkv stores a key, together with the hash field or set or sorted-set member it holds, in at most 65535 bytes (see docs/redis.md, Limits)",
    );
    let setup = n.apply(&[
        Group::single(args("SET gone 1")),
        Group::single(argv(&[b"SADD", b"wide", &half])),
        Group::single(argv(&[b"SADD", &half, b"x"])),
    ]);
    assert_eq!(setup, vec![Reply::Ok, Reply::Int(1), Reply::Int(1)]);
    let out = n.apply(&[
        Group::single(args("SET a 1")),
        Group::single(argv(&[b"SET", &long, b"v"])),
        Group::single(argv(&[b"MSET", b"m1", b"v", &long, b"v"])),
        Group::single(argv(&[b"DEL", b"gone", &long])),
        Group::single(argv(&[b"SUNIONSTORE", &half, b"wide"])),
        Group::single(argv(&[b"HSET", b"h", b"f1", b"v1", &long, b"v2"])),
        Group {
            watches: Vec::new(),
            cmds: vec![args("SET b 2"), argv(&[b"MSET", b"m2", b"v", &long, b"v"]), args("SET c 3")],
            exec: true,
        },
        Group::single(argv(&[b"GET", &long])),
    ]);
    let mut want = vec![Reply::Ok];
    want.extend(std::iter::repeat_n(too_long.clone(), 5));
    want.push(Reply::Array(vec![Reply::Ok, too_long.clone(), Reply::Ok]));
    want.push(too_long.clone());
    assert_eq!(out, want);
    assert_eq!(n.r("EXISTS m1 m2 h"), Reply::Int(0), "MSET's and HSET's first writes were taken back");
    assert_eq!(n.r("GET gone"), bulk("1"), "DEL's first delete was taken back");
    let dest = machine::read(&n.store, n.ms, 7, &n.cursors, &[argv(&[b"SMEMBERS", &half])]).remove(0);
    assert_eq!(dest, Reply::Set(vec![bulk("x")]), "SUNIONSTORE's clearing of its destination was taken back");
    assert_eq!(n.r("MGET a b c"), Reply::Array(vec![bulk("1"), bulk("2"), bulk("3")]));
    assert_eq!(n.r("DBSIZE"), Reply::Int(6), "gone, wide, the 20,000-byte key, a, b, c");
    assert_eq!(n.w("INCR a"), Reply::Int(2), "apply goes on");
}

/// A reply can be many times the size of the data (a key named again and again, random picks
/// with repeats, a transaction of many large reads). Every replica evaluates a transaction, so
/// one such reply once exhausted every replica's memory at the same entry, and again after each
/// restart. A command answers at most 1 GiB, and so does a transaction's reads together; a
/// write in the transaction still runs.
#[test]
fn replies_stop_at_the_reply_budget() {
    let mut n = Node::new();
    let too_large = Reply::err(
        "ERR reply too large: sealkv answers at most 1 GiB per command, and per MULTI/EXEC (see docs/redis.md, Limits)",
    );
    // Compared by size first, so a failure does not print a gigabyte.
    let refused = |r: Reply| {
        assert!(r.size() < 1024, "a reply of {} bytes", r.size());
        assert_eq!(r, too_large);
    };
    let member = vec![b'm'; 60_000];
    let eight_mib = vec![b'v'; 8 << 20];
    assert_eq!(n.w("SETRANGE k 8388607 x"), Reply::Int(8 << 20));
    let setup = n.apply(&[
        Group::single(argv(&[b"HSET", b"h", b"f", &eight_mib])),
        Group::single(argv(&[b"SADD", b"s", &member])),
        Group::single(argv(&[b"HSET", b"h2", &member, b"v"])),
    ]);
    assert_eq!(setup, vec![Reply::Int(1); 3]);
    // 129 copies of 8 MiB pass 1 GiB; random picks are counted before any is copied.
    refused(n.r(&format!("MGET{}", " k".repeat(129))));
    refused(n.r(&format!("HMGET h{}", " f".repeat(129))));
    refused(n.r("SRANDMEMBER s -20000"));
    refused(n.r("HRANDFIELD h2 -20000"));
    assert!(matches!(n.r("SRANDMEMBER s -1000"), Reply::Array(a) if a.len() == 1000));
    assert!(matches!(n.r(&format!("MGET{}", " k".repeat(100))), Reply::Array(a) if a.len() == 100));
    // 127 GETs of 8 MiB fit in 1 GiB; the reads after them do not, the write does.
    let mut cmds: Vec<Vec<Vec<u8>>> = (0..130).map(|_| args("GET k")).collect();
    cmds.push(args("SET after 1"));
    let mut out = n.apply(&[Group { watches: Vec::new(), cmds, exec: true }]);
    let Some(Reply::Array(mut replies)) = out.pop() else { panic!("not an EXEC reply") };
    assert_eq!(replies.len(), 131);
    assert_eq!(replies.pop(), Some(Reply::Ok));
    for r in replies.drain(127..) {
        refused(r);
    }
    assert!(replies.iter().all(|r| matches!(r, Reply::Bulk(v) if v.len() == 8 << 20)));
    assert_eq!(n.r("GET after"), bulk("1"));
}

/// The longest string Redis allows, 512 MiB, is stored behind its type tag; a SETRANGE to its
/// last byte once halted every replica.
#[test]
fn setrange_to_the_last_byte_redis_allows_is_stored() {
    let mut n = Node::new();
    assert_eq!(n.w("SETRANGE big 536870911 x"), Reply::Int(536_870_912));
    assert_eq!(n.r("GETRANGE big -2 -1"), Reply::Bulk(vec![0, b'x']));
    assert_eq!(n.w("APPEND big y"), Reply::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)"));
    assert_eq!(
        n.w("SETRANGE big 536870912 x"),
        Reply::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
}

#[test]
fn read_modify_write_commands_in_one_entry_see_each_other() {
    let mut n = Node::new();
    let out = n.apply(&[
        Group::single(args("INCR c")),
        Group::single(args("INCRBY c 5")),
        Group::single(args("SET s v NX")),
        Group::single(args("SET s w NX")),
    ]);
    assert_eq!(out, vec![Reply::Int(1), Reply::Int(6), Reply::Ok, Reply::Nil]);
    assert_eq!(n.r("GET c"), bulk("6"));
    assert_eq!(n.r("GET s"), bulk("v"));
    assert_eq!(n.w("LPUSH c x"), Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value"));
    assert_eq!(n.w("INCR s"), Reply::err("ERR value is not an integer or out of range"));
    assert_eq!(n.w("SET c 9223372036854775807"), Reply::Ok);
    assert_eq!(n.w("INCR c"), Reply::err("ERR increment or decrement would overflow"));
}

#[test]
fn exec_is_atomic_and_watch_aborts_on_a_change() {
    let mut n = Node::new();
    n.w("SET k 1");
    let v = match n.r("__VERSIONS k") {
        Reply::Array(v) => match v.first() {
            Some(Reply::Int(i)) => *i as u64,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let tx = Group { watches: vec![(b"k".to_vec(), v)], cmds: vec![args("INCR k"), args("GET k")], exec: true };
    assert_eq!(n.apply(std::slice::from_ref(&tx)), vec![Reply::Array(vec![Reply::Int(2), bulk("2")])]);
    // The same watch is stale now: the EXEC above changed k.
    assert_eq!(n.apply(&[tx]), vec![Reply::NilArray]);
    assert_eq!(n.r("GET k"), bulk("2"));
}

fn watch_version(n: &Node, key: &str) -> u64 {
    match n.r(&format!("__VERSIONS {key}")) {
        Reply::Array(v) => match v.first() {
            Some(Reply::Int(i)) => *i as u64,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn watch_aborts_when_a_watched_key_expires_before_exec_and_not_when_it_already_had() {
    let mut n = Node::new();
    n.w("SET k v PX 100");
    let live = watch_version(&n, "k");
    assert_ne!(live, 0);
    n.ms += 100;
    // Expired now, not swept: nothing was written, yet Redis counts the expiry as a change.
    let tx = |v| Group { watches: vec![(b"k".to_vec(), v)], cmds: vec![args("GET k")], exec: true };
    assert_eq!(n.apply(&[tx(live)]), vec![Reply::NilArray]);
    // Watched once already expired: EXEC runs.
    let expired = watch_version(&n, "k");
    assert_eq!(expired, 0);
    assert_eq!(n.apply(&[tx(expired)]), vec![Reply::Array(vec![Reply::Nil])]);
}

#[test]
fn expired_keys_read_as_absent_and_the_sweep_removes_them() {
    let mut n = Node::new();
    n.w("SET t v PX 100");
    n.w("HSET h f v");
    n.w("PEXPIRE h 100");
    assert_eq!(n.r("PTTL t"), Reply::Int(100));
    n.ms += 100;
    assert_eq!(n.r("GET t"), Reply::Nil);
    assert_eq!(n.r("HGET h f"), Reply::Nil);
    // As in Redis, an expired key counts until it is removed.
    assert_eq!(n.r("DBSIZE"), Reply::Int(2));
    // A new hash under an expired name does not inherit the old fields.
    assert_eq!(n.w("HSET h g w"), Reply::Int(1));
    assert_eq!(n.r("HGETALL h"), Reply::Map(vec![(bulk("g"), bulk("w"))]));
    // The sweep removes t (due) and drops h's stale index entry.
    let due = n
        .store
        .scan(&sealkv_store::KeyRange::Prefix(vec![0xFF, b'x']), u64::MAX, 0, sealkv_store::Direction::Forward)
        .count();
    assert_eq!(due, 1);
    let at = (n.ms).to_string();
    assert_eq!(n.w(&format!("__EXPIREDEL {at} t")), Reply::Int(1));
    assert_eq!(n.r("DBSIZE"), Reply::Int(1));
    let left = n
        .store
        .scan(&sealkv_store::KeyRange::Prefix(vec![0xFF]), u64::MAX, 0, sealkv_store::Direction::Forward)
        .count();
    assert_eq!(left, 3, "only h's meta, its one field and the keyspace counts remain");
}

#[test]
fn lists_sets_hashes_and_sorted_sets_behave_like_redis() {
    let mut n = Node::new();
    assert_eq!(n.w("RPUSH l a b c d"), Reply::Int(4));
    assert_eq!(n.w("LPUSH l z"), Reply::Int(5));
    assert_eq!(n.r("LRANGE l 0 -1"), strs(&["z", "a", "b", "c", "d"]));
    assert_eq!(n.r("LRANGE l -2 100"), strs(&["c", "d"]));
    assert_eq!(n.r("LINDEX l -1"), bulk("d"));
    assert_eq!(n.w("LINSERT l BEFORE b x"), Reply::Int(6));
    assert_eq!(n.w("LREM l 1 a"), Reply::Int(1));
    assert_eq!(n.r("LRANGE l 0 -1"), strs(&["z", "x", "b", "c", "d"]));
    assert_eq!(n.w("LTRIM l 1 -2"), Reply::Ok);
    assert_eq!(n.r("LRANGE l 0 -1"), strs(&["x", "b", "c"]));
    assert_eq!(n.w("LMOVE l l RIGHT LEFT"), bulk("c"));
    assert_eq!(n.r("LPOS l b"), Reply::Int(2));
    assert_eq!(n.w("RPOP l 5"), strs(&["b", "x", "c"]));
    assert_eq!(n.r("EXISTS l"), Reply::Int(0));

    assert_eq!(n.w("SADD s a b c a"), Reply::Int(3));
    assert_eq!(n.w("SADD t b c d"), Reply::Int(3));
    assert_eq!(n.r("SINTER s t"), Reply::Set(vec![bulk("b"), bulk("c")]));
    assert_eq!(n.w("SDIFFSTORE u s t"), Reply::Int(1));
    assert_eq!(n.r("SMEMBERS u"), Reply::Set(vec![bulk("a")]));
    assert_eq!(n.r("SINTERCARD 2 s t LIMIT 1"), Reply::Int(1));
    let Reply::Set(mut popped) = n.w("SPOP s 3") else { panic!("SPOP with a count answers a set") };
    popped.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(popped, vec![bulk("a"), bulk("b"), bulk("c")]);
    assert_eq!(n.r("EXISTS s"), Reply::Int(0));

    assert_eq!(n.w("HSET h a 1 b 2"), Reply::Int(2));
    assert_eq!(n.w("HINCRBY h a 10"), Reply::Int(11));
    assert_eq!(n.w("HDEL h a b zz"), Reply::Int(2));
    assert_eq!(n.r("TYPE h"), Reply::Simple("none".into()));

    assert_eq!(n.w("ZADD z 1 a 2 b 3 c"), Reply::Int(3));
    assert_eq!(n.w("ZADD z -1.5 neg"), Reply::Int(1));
    assert_eq!(n.r("ZRANGE z 0 -1"), strs(&["neg", "a", "b", "c"]));
    assert_eq!(n.r("ZRANGEBYSCORE z (1 +inf"), strs(&["b", "c"]));
    assert_eq!(n.r("ZRANGE z +inf -inf BYSCORE REV LIMIT 0 2"), strs(&["c", "b"]));
    assert_eq!(n.r("ZRANK z b"), Reply::Int(2));
    assert_eq!(n.r("ZREVRANK z b"), Reply::Int(1));
    assert_eq!(n.w("ZADD z XX GT CH 0 c 5 b"), Reply::Int(1));
    assert_eq!(n.r("ZSCORE z b"), Reply::Double(5.0));
    assert_eq!(n.w("ZPOPMIN z"), Reply::Array(vec![bulk("neg"), Reply::Double(-1.5)]));
    assert_eq!(n.w("ZREMRANGEBYSCORE z -inf 3"), Reply::Int(2));
    assert_eq!(n.r("ZCARD z"), Reply::Int(1));
}

#[test]
fn spop_picks_the_same_members_on_every_replica() {
    let mut a = Node::new();
    let mut b = Node::new();
    for n in [&mut a, &mut b] {
        n.w("SADD s a b c d e f g h");
    }
    assert_eq!(a.w("SPOP s 3"), b.w("SPOP s 3"));
    assert_eq!(a.r("SMEMBERS s"), b.r("SMEMBERS s"));
    assert_eq!(a.r("SCARD s"), Reply::Int(5));
}

#[test]
fn scan_cursors_page_through_every_key_once() {
    let mut n = Node::new();
    for i in 0..25 {
        n.w(&format!("SET k{i:02} v"));
    }
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let Reply::Array(v) = n.r(&format!("SCAN {cursor} COUNT 10")) else { panic!() };
        let [Reply::Bulk(c), Reply::Array(keys)] = v.as_slice() else { panic!() };
        seen.extend(keys.iter().cloned());
        cursor = String::from_utf8(c.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(n.r("SCAN 12345 COUNT 10"), Reply::err("ERR invalid cursor"));
    assert_eq!(n.r("KEYS k1*"), Reply::Array((10..20).map(|i| bulk(&format!("k{i}"))).collect()));
}

#[test]
fn bylex_over_mixed_scores_walks_as_redis_does() {
    // The members in score order are 7, hello, 9223372036854775807, "zz": not in lex order, so
    // what BYLEX returns is Redis's walk (answers from redis-server 7.0.15): start at the first
    // member >= min, skip the offset unchecked, stop at the first member > max.
    let mut n = Node::new();
    n.w("ZADD z -1 7 0 hello 1 9223372036854775807 2.5 zz");
    assert_eq!(n.r("ZRANGE z - [f2 BYLEX"), strs(&["7"]));
    assert_eq!(n.r("ZRANGE z - [f2 BYLEX LIMIT 2 100"), strs(&["9223372036854775807"]));
    assert_eq!(n.r("ZRANGEBYLEX z [8 +"), strs(&["hello", "9223372036854775807", "zz"]));
    assert_eq!(n.r("ZRANGE z [f2 - BYLEX REV"), strs(&["9223372036854775807", "hello", "7"]));
    // An empty range is empty whatever the members.
    assert_eq!(n.r("ZRANGEBYLEX z (a (a"), strs(&[]));
    assert_eq!(n.r("ZRANGEBYLEX z + -"), strs(&[]));
}

/// Every command form that can create, remove, expire or persist a key, over a few key names.
const COUNTED: &[&str] = &[
    "SET {a} v",
    "SET {a} v EX 100",
    "SET {a} v PX {t}",
    "SET {a} w KEEPTTL",
    "SET {a} v NX PX {t}",
    "SET {a} v XX",
    "SETNX {a} v",
    "PSETEX {a} {t} v",
    "GETSET {a} v",
    "GETDEL {a}",
    "GETEX {a} PERSIST",
    "GETEX {a} PX {t}",
    "GETEX {a} PXAT 1",
    "MSET {a} 1 {b} 2",
    "MSETNX {a} 1 {b} 2",
    "INCR {a}",
    "APPEND {a} x",
    "SETRANGE {a} 2 x",
    "DEL {a} {b}",
    "UNLINK {a}",
    "EXPIRE {a} 100",
    "PEXPIRE {a} {t}",
    "EXPIRE {a} 0",
    "PEXPIREAT {a} 1",
    "EXPIRE {a} 50 GT",
    "PERSIST {a}",
    "RENAME {a} {b}",
    "RENAMENX {a} {b}",
    "COPY {a} {b}",
    "COPY {a} {b} REPLACE",
    "HSET {a} f v g w",
    "HDEL {a} f",
    "HDEL {a} f g",
    "HINCRBY {a} f 1",
    "SADD {a} m n",
    "SREM {a} m",
    "SPOP {a}",
    "SPOP {a} 5",
    "SMOVE {a} {b} m",
    "SINTERSTORE {a} {b} {a}",
    "SUNIONSTORE {a} {b}",
    "SDIFFSTORE {a} {a} {b}",
    "LPUSH {a} x y",
    "RPUSHX {a} z",
    "LPOP {a}",
    "RPOP {a} 5",
    "LTRIM {a} 1 0",
    "LMOVE {a} {b} LEFT RIGHT",
    "RPOPLPUSH {a} {a}",
    "LREM {a} 0 x",
    "ZADD {a} 1 m 2 n",
    "ZINCRBY {a} 1 m",
    "ZREM {a} m",
    "ZPOPMIN {a}",
    "ZPOPMAX {a} 3",
    "ZREMRANGEBYRANK {a} 0 -1",
    "ZREMRANGEBYSCORE {a} -inf +inf",
    "FLUSHALL",
];

/// What DBSIZE and INFO keyspace should say, counted from the store itself: every meta record
/// present at the newest version (expired or not) and those of them with an expiry.
fn counted_by_hand(n: &Node) -> (i64, i64) {
    let meta = sealkv_store::KeyRange::Prefix(vec![0xFF, b'm']);
    let (mut keys, mut expires) = (0, 0);
    // `now_ms` 0 hides nothing that has an expiry.
    for r in n.store.scan(&meta, u64::MAX, 0, sealkv_store::Direction::Forward) {
        let (k, _) = r.unwrap();
        keys += 1;
        let v = n.store.version(&k, u64::MAX).unwrap().unwrap();
        if v.value.unwrap().1 != 0 {
            expires += 1;
        }
    }
    (keys, expires)
}

/// The due expiry index entries, as the leader's sweep proposes them.
fn sweep_of(n: &Node) -> Option<String> {
    let idx = sealkv_store::KeyRange::Prefix(vec![0xFF, b'x']);
    let mut cmd = String::from("__EXPIREDEL");
    for r in n.store.scan(&idx, u64::MAX, 0, sealkv_store::Direction::Forward) {
        let (k, _) = r.unwrap();
        let at = u64::from_be_bytes(k[2..10].try_into().unwrap());
        if at <= n.ms {
            cmd.push_str(&format!(" {at} {}", String::from_utf8(k[10..].to_vec()).unwrap()));
        }
    }
    (cmd != "__EXPIREDEL").then_some(cmd)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// The counts the apply path keeps equal a count of the store after every entry, whatever
    /// mix of creates, removals, expiries, sweeps, transactions and flushes the entry carried.
    #[test]
    fn keyspace_counts_match_the_store_after_every_entry(
        entries in proptest::collection::vec(
            (
                proptest::collection::vec((0..COUNTED.len(), 0..4usize, 0..4usize, 1..30u64), 1..4),
                proptest::bool::ANY,
                0..25u64,
                proptest::bool::ANY,
            ),
            1..40,
        )
    ) {
        let mut n = Node::new();
        let names = ["a", "b", "c", "d"];
        for (cmds, exec, advance, sweep) in entries {
            let cmds: Vec<Vec<Vec<u8>>> = cmds
                .iter()
                .map(|&(c, a, b, t)| {
                    args(&COUNTED[c].replace("{a}", names[a]).replace("{b}", names[b]).replace("{t}", &t.to_string()))
                })
                .collect();
            let mut groups: Vec<Group> = if exec {
                vec![Group { watches: Vec::new(), cmds, exec: true }]
            } else {
                cmds.into_iter().map(Group::single).collect()
            };
            if sweep && let Some(s) = sweep_of(&n) {
                groups.push(Group::single(args(&s)));
            }
            // Counted inside the entry too, after its writes (as DBSIZE inside MULTI is).
            match groups.last_mut() {
                Some(g) if g.exec => g.cmds.push(args("DBSIZE")),
                _ => groups.push(Group::single(args("DBSIZE"))),
            }
            let replies = n.apply(&groups);
            let (keys, expires) = counted_by_hand(&n);
            let in_entry = match replies.last() {
                Some(Reply::Array(v)) => v.last().cloned(),
                other => other.cloned(),
            };
            proptest::prop_assert_eq!(in_entry, Some(Reply::Int(keys)));
            proptest::prop_assert_eq!(n.r("DBSIZE"), Reply::Int(keys));
            proptest::prop_assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(keys), Reply::Int(expires)]));
            n.ms += advance;
        }
    }
}

#[test]
fn a_store_written_before_counts_were_kept_is_counted_once_then_kept() {
    let mut n = Node::new();
    n.w("SET a v EX 100");
    n.w("HSET h f v");
    n.w("SADD s m");
    // Take the record away, as in a store from before it existed.
    let mut b = n.store.batch();
    n.index += 1;
    b.delete(&[0xFF, b's'], (n.ms << 16) + n.index).unwrap();
    b.commit(&sealkv_store::Applied { index: n.index, log_id: vec![1] }, sealkv_store::Durability::Buffered).unwrap();
    assert_eq!(n.r("DBSIZE"), Reply::Int(3), "a read without the record counts the keys");
    assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(3), Reply::Int(1)]));
    // The next write that moves the counts writes the record, counted from the store.
    n.w("SET b v");
    assert!(n.store.version(&[0xFF, b's'], u64::MAX).unwrap().unwrap().value.is_some());
    assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(4), Reply::Int(1)]));
    n.w("DEL a");
    assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(3), Reply::Int(0)]));
}

#[test]
fn flushall_removes_every_record_and_keeps_a_zero_counts_record() {
    let mut n = Node::new();
    n.w("SET a v EX 100");
    n.w("HSET h f v g w");
    n.w("ZADD z 1 m");
    n.w("FLUSHALL");
    // Nothing of the keyspace is left but the counts record, which says zero: DBSIZE and the next
    // write read it instead of counting by a scan past every tombstone FLUSHALL wrote.
    let left: Vec<Vec<u8>> = n
        .store
        .scan(&sealkv_store::KeyRange::Prefix(vec![0xFF]), u64::MAX, 0, sealkv_store::Direction::Forward)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(left, vec![vec![0xFF, b's']]);
    assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(0), Reply::Int(0)]));
    n.w("SET b v EX 100");
    assert_eq!(n.r("__KEYSPACE"), Reply::Array(vec![Reply::Int(1), Reply::Int(1)]));
}

#[test]
fn a_corrupt_counts_record_halts_the_apply_and_answers_reads_with_an_error() {
    let mut n = Node::new();
    n.w("SET a v");
    let mut b = n.store.batch();
    n.index += 1;
    // Seven bytes: not a counts record.
    b.put(&[0xFF, b's'], (n.ms << 16) + n.index, &[0; 7], 0).unwrap();
    b.commit(&sealkv_store::Applied { index: n.index, log_id: vec![1] }, sealkv_store::Durability::Buffered).unwrap();
    let Reply::Error(e) = n.r("DBSIZE") else { panic!("DBSIZE answered from a corrupt record") };
    assert!(e.contains("corrupt Redis metadata (counts length)"), "{e}");
    let mut b = n.store.batch();
    let err = machine::apply(
        &mut b,
        (n.ms << 16) + n.index + 1,
        &entry::encode_entry(Rules::CURRENT, &[Group::single(args("SET c v"))]),
    );
    assert!(err.unwrap_err().contains("counts length"));
    // An entry that does not move the counts does not read the record.
    let mut b = n.store.batch();
    assert!(
        machine::apply(
            &mut b,
            (n.ms << 16) + n.index + 1,
            &entry::encode_entry(Rules::CURRENT, &[Group::single(args("SET a w"))])
        )
        .is_ok()
    );
}

/// A run of reads answers a prefix once its replies reach `RUN_REPLY_BYTES`, and never nothing:
/// the connection sends that prefix, then runs the rest.
#[test]
fn a_run_of_reads_stops_at_its_reply_bound_after_at_least_one() {
    let mut n = Node::new();
    let bound = machine::RUN_REPLY_BYTES;
    // 3 MiB strings: the bound is reached by the 11th GET (11 x 3 MiB > 32 MiB).
    assert_eq!(n.w("SETRANGE k 3145727 x"), Reply::Int(3 << 20));
    let run: Vec<Vec<Vec<u8>>> = (0..40).map(|_| args("GET k")).collect();
    let replies = machine::read(&n.store, n.ms, 7, &n.cursors, &run);
    let per = Reply::Bulk(vec![0; 3 << 20]).size();
    let want = bound.div_ceil(per) as usize;
    assert_eq!(replies.len(), want, "stops at the first reply that reaches the bound");
    assert!(replies.iter().all(|r| matches!(r, Reply::Bulk(b) if b.len() == 3 << 20)));
    // The rest, run again, answers what is left: nothing is lost or answered twice.
    let rest = machine::read(&n.store, n.ms, 7, &n.cursors, &run[want..]);
    assert_eq!(rest.len(), want.min(run.len() - want));
    // A single reply above the bound still comes back, alone.
    assert_eq!(n.w(&format!("SETRANGE big {} x", bound)), Reply::Int(bound as i64 + 1));
    let two = [args("GET big"), args("GET k")];
    let replies = machine::read(&n.store, n.ms, 7, &n.cursors, &two);
    assert!(matches!(replies.as_slice(), [Reply::Bulk(b)] if b.len() as u64 == bound + 1));
    // Small replies never stop a run.
    let small: Vec<Vec<Vec<u8>>> = (0..5000).map(|i| args(&format!("EXISTS k{i}"))).collect();
    assert_eq!(machine::read(&n.store, n.ms, 7, &n.cursors, &small).len(), 5000);
}
