//! Running groups of commands: at apply (every replica, same answers) and for reads on the
//! leader.

use sealkv_store::{ApplyBatch, Store};

use crate::cmd;
use crate::cursor::Cursors;
use crate::db::{BatchDb, Db, DbError, ReadDb, settle_counts};
use crate::entry::{self, Group};
use crate::keyspace::Ctx;
use crate::layout::{self, CountDelta};
use crate::reply::Reply;
use crate::reply_list;
use crate::rules::Rules;

/// What the apply hook runs for 0x08 entries: applies an entry body at commit timestamp `ts`,
/// returning the encoded replies (one per group), or why apply must halt (a malformed body, a
/// store failure).
pub fn apply(batch: &mut ApplyBatch<'_>, ts: u64, body: &[u8]) -> Result<Vec<u8>, String> {
    let (rules, groups) = entry::decode_entry(body).map_err(|e| e.to_string())?;
    let mut replies = Vec::with_capacity(groups.len());
    let mut delta = CountDelta::default();
    for (i, g) in groups.iter().enumerate() {
        // Every group gets its own deterministic seed, so two SPOPs in one entry differ.
        let seed = ts.rotate_left(17) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut db = BatchDb::new(batch, ts, seed, &mut delta);
        replies.push(run_group(&mut db, None, rules, g).map_err(|e| e.to_string())?);
    }
    settle_counts(batch, ts, delta).map_err(|e| e.to_string())?;
    Ok(reply_list::encode_replies(&replies))
}

/// Runs one group under `rules`: a single command's reply, or an EXEC's array (null when a
/// watched key changed since it was watched).
pub fn run_group(db: &mut dyn Db, cursors: Option<&Cursors>, rules: Rules, g: &Group) -> Result<Reply, DbError> {
    if g.exec {
        for (k, v) in &g.watches {
            if db.version(&layout::meta_key(k))? != *v {
                return Ok(Reply::NilArray);
            }
        }
    }
    let mut ctx = Ctx::new(db, cursors, rules);
    if rules.group_reply_budget() {
        ctx = ctx.sharing_reply_budget();
    }
    let mut out = Vec::with_capacity(g.cmds.len());
    for c in &g.cmds {
        out.push(cmd::execute(&mut ctx, c)?);
    }
    Ok(if g.exec { Reply::Array(out) } else { out.into_iter().next().unwrap_or(Reply::Nil) })
}

/// How many arguments a run of fast reads may carry in all and still count as short: about a
/// millisecond of point reads. A longer pipeline of GETs runs off the async workers like a walk.
pub const SHORT_RUN_ARGS: usize = 512;

/// Whether a run of reads for [`read`] may take long: a command that is not
/// [`fast`](cmd::Spec::fast) (or not known), or more than [`SHORT_RUN_ARGS`] arguments in all.
/// The server runs such a run where it cannot stall the node's other tasks.
pub fn may_take_long<C: AsRef<[Vec<u8>]>>(cmds: &[C]) -> bool {
    cmds.iter().map(|c| c.as_ref().len()).sum::<usize>() > SHORT_RUN_ARGS
        || cmds.iter().any(|c| !c.as_ref().first().and_then(|n| cmd::lookup(n)).is_some_and(cmd::Spec::fast))
}

/// How many reply bytes (as [`Reply::size`] counts them) a run of reads produces before it
/// stops. A pipeline of reads has no other bound: 1,000 GETs of a 100 MiB string would be
/// 100 GB of replies in the node's memory at once, and a client that never reads them could
/// take a node down that way. [`read`] stops once its replies reach this, and the connection
/// sends them before it runs the rest; it also sends what it holds once that reaches this, so a
/// connection holds at most this much of unsent replies, plus the one reply that crossed it
/// (itself within [`crate::keyspace::REPLY_BUDGET`]). Half of the 64 MiB a forwarded read's
/// replies may take in one gRPC message.
pub const RUN_REPLY_BYTES: u64 = 32 << 20;

/// Runs read-only commands against the applied store (after a read barrier), all against one
/// cut of it. A store failure answers that command with an error. Answers a prefix of `cmds`:
/// all of them, or as many as it took to reach [`RUN_REPLY_BYTES`] (at least one); the caller
/// runs the rest once it has sent these replies.
pub fn read<C: AsRef<[Vec<u8>]>>(store: &Store, now_ms: u64, seed: u64, cursors: &Cursors, cmds: &[C]) -> Vec<Reply> {
    let mut db = ReadDb::new(store, now_ms, seed);
    let mut ctx = Ctx::new(&mut db, Some(cursors), Rules::CURRENT);
    let mut out = Vec::with_capacity(cmds.len());
    let mut bytes = 0u64;
    for c in cmds {
        if bytes >= RUN_REPLY_BYTES {
            break;
        }
        let reply = match cmd::execute(&mut ctx, c.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "read failed");
                Reply::err(format!("ERR sealkv: {e}"))
            }
        };
        bytes = bytes.saturating_add(reply.size());
        out.push(reply);
    }
    out
}

#[cfg(test)]
mod walk_tests {
    use super::{SHORT_RUN_ARGS, may_take_long};

    fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn point_reads_are_short_but_walks_unknown_commands_and_long_runs_may_take_long() {
        assert!(!may_take_long(&[cmd(&["GET", "k"]), cmd(&["hget", "h", "f"]), cmd(&["ZSCORE", "z", "m"])]));
        for walk in [
            &["KEYS", "*"][..],
            &["scan", "0"],
            &["RANDOMKEY"],
            &["HGETALL", "h"],
            &["LRANGE", "l", "0", "-1"],
            &["zrank", "z", "m"],
            &["SUNION", "a", "b"],
            &["NOSUCH", "x"],
        ] {
            assert!(may_take_long(&[cmd(&["GET", "k"]), cmd(walk)]), "{walk:?}");
        }
        let gets: Vec<_> = (0..SHORT_RUN_ARGS / 2).map(|_| cmd(&["GET", "k"])).collect();
        assert!(!may_take_long(&gets));
        let more: Vec<_> = (0..SHORT_RUN_ARGS / 2 + 1).map(|_| cmd(&["GET", "k"])).collect();
        assert!(may_take_long(&more));
    }

    /// COMMAND INFO says which reads are fast, as Redis does (GET is, KEYS and HGETALL are not).
    #[test]
    fn command_info_flags_fast_reads_as_redis_does() {
        let flags = |name: &str| match crate::cmd::lookup(name.as_bytes()).map(crate::cmd::Spec::info) {
            Some(crate::reply::Reply::Array(a)) => match a.get(2) {
                Some(crate::reply::Reply::Set(f)) => f.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let fast = crate::reply::Reply::Simple("fast".into());
        assert!(flags("get").contains(&fast) && flags("hmget").contains(&fast) && flags("ping").contains(&fast));
        assert!(!flags("keys").contains(&fast) && !flags("hgetall").contains(&fast) && !flags("set").contains(&fast));
        assert!(flags("keys").contains(&crate::reply::Reply::Simple("readonly".into())));
    }
}
