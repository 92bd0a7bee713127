//! Running groups of commands: at apply (every replica, same answers) and for reads on the
//! leader.

use sealkv_store::{ApplyBatch, Store};

use crate::cmd;
use crate::cursor::Cursors;
use crate::db::{BatchDb, Db, DbError, ReadDb, settle_counts};
use crate::entry::{self, Group};
use crate::keyspace::Ctx;
use crate::layout::{self, CountDelta};
use crate::reply::{self, Reply};

/// What the apply hook runs for 0x08 entries: applies an entry body at commit timestamp `ts`,
/// returning the encoded replies (one per group), or why apply must halt (a malformed body, a
/// store failure).
pub fn apply(batch: &mut ApplyBatch<'_>, ts: u64, body: &[u8]) -> Result<Vec<u8>, String> {
    let groups = entry::decode(body).map_err(|e| e.to_string())?;
    let mut replies = Vec::with_capacity(groups.len());
    let mut delta = CountDelta::default();
    for (i, g) in groups.iter().enumerate() {
        // Every group gets its own deterministic seed, so two SPOPs in one entry differ.
        let seed = ts.rotate_left(17) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut db = BatchDb::new(batch, ts, seed, &mut delta);
        replies.push(run_group(&mut db, None, g).map_err(|e| e.to_string())?);
    }
    settle_counts(batch, ts, delta).map_err(|e| e.to_string())?;
    Ok(reply::encode_replies(&replies))
}

/// Runs one group: a single command's reply, or an EXEC's array (null when a watched key
/// changed since it was watched).
pub fn run_group(db: &mut dyn Db, cursors: Option<&Cursors>, g: &Group) -> Result<Reply, DbError> {
    if g.exec {
        for (k, v) in &g.watches {
            if db.version(&layout::meta_key(k))? != *v {
                return Ok(Reply::NilArray);
            }
        }
    }
    let mut ctx = Ctx::new(db, cursors);
    let mut out = Vec::with_capacity(g.cmds.len());
    for c in &g.cmds {
        out.push(cmd::execute(&mut ctx, c)?);
    }
    Ok(if g.exec { Reply::Array(out) } else { out.into_iter().next().unwrap_or(Reply::Nil) })
}

/// Runs read-only commands against the applied store (on the leader, after a read barrier),
/// all against one cut of it. A store failure answers that command with an error.
pub fn read(store: &Store, now_ms: u64, seed: u64, cursors: &Cursors, cmds: &[Vec<Vec<u8>>]) -> Vec<Reply> {
    let mut db = ReadDb::new(store, now_ms, seed);
    let mut ctx = Ctx::new(&mut db, Some(cursors));
    cmds.iter()
        .map(|c| match cmd::execute(&mut ctx, c) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "read failed");
                Reply::err(format!("ERR sealkv: {e}"))
            }
        })
        .collect()
}
