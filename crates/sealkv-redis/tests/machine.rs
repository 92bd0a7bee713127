//! The command machine on a real store: commands applied as entries (the apply path, with the
//! batch's read-your-writes) and read back through the leader's read path.

use sealkv_redis::cursor::Cursors;
use sealkv_redis::machine;
use sealkv_redis::reply::decode_replies;
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
        self.index += 1;
        let ts = (self.ms << 16) + self.index;
        let mut b = self.store.batch();
        let out = machine::apply(&mut b, ts, &entry::encode(groups)).unwrap();
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
    assert_eq!(n.r("DBSIZE"), Reply::Int(0));
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
    let left = n
        .store
        .scan(&sealkv_store::KeyRange::Prefix(vec![0xFF]), u64::MAX, 0, sealkv_store::Direction::Forward)
        .count();
    assert_eq!(left, 2, "only h's meta and its one field remain");
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
