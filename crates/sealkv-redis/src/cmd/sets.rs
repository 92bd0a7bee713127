//! Set commands: one element per member (`sub = member`, empty value).

use std::collections::BTreeSet;

use super::Args;
use super::keys::{element_scan, empty_page, scan_elements};
use crate::keyspace::{Ctx, Fail, Res, count_of, fail, int, msg, non_negative, parse_signed_count, upper};
use crate::layout::{Kind, Meta};
use crate::reply::Reply;

/// Indexes into `len` items for a random pick of `count` (None: no count given). A positive
/// count picks distinct items (at most `len`), a negative one may repeat.
pub(super) fn random_picks(ctx: &mut Ctx<'_>, len: usize, count: Option<i64>) -> Option<Vec<usize>> {
    let count = count?;
    if len == 0 {
        return Some(Vec::new());
    }
    if count < 0 {
        let n = count.unsigned_abs().min(1 << 24) as usize;
        return Some((0..n).map(|_| (ctx.random() % len as u64) as usize).collect());
    }
    let n = (count as u64).min(len as u64) as usize;
    // Partial Fisher–Yates over the indexes.
    let mut idx: Vec<usize> = (0..len).collect();
    for i in 0..n {
        let j = i + (ctx.random() % (len - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n);
    Some(idx)
}

/// The members of a live set (WRONGTYPE for another type, empty if absent).
pub(super) fn members(ctx: &Ctx<'_>, key: &[u8]) -> Result<Vec<Vec<u8>>, Fail> {
    if ctx.lookup_kind(key, Kind::Set)?.is_none() {
        return Ok(Vec::new());
    }
    ctx.elements(key, b"", false).map(|r| r.map(|(m, _)| m)).collect()
}

/// Adds members; how many were new.
fn add(ctx: &mut Ctx<'_>, key: &[u8], ms: &[Vec<u8>]) -> Result<i64, Fail> {
    let live = ctx.lookup_for_write(key, Some(Kind::Set))?;
    let mut n = count_of(&live);
    let mut added = 0;
    for m in ms {
        // Reads see this batch's writes, so a member repeated in one SADD counts once.
        if ctx.element(key, m)?.is_some() {
            continue;
        }
        ctx.put_element(key, m, b"")?;
        n += 1;
        added += 1;
    }
    // Members that were all there already change nothing (and so do not trip a WATCH).
    if added > 0 {
        let expire = live.map_or(0, |l| l.expire);
        ctx.save(key, &Meta::Set(n), expire, expire)?;
    }
    Ok(added)
}

/// Removes members; how many were there.
fn rem(ctx: &mut Ctx<'_>, key: &[u8], ms: &[Vec<u8>]) -> Result<i64, Fail> {
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::Set))? else { return Ok(0) };
    let mut n = live.count();
    let mut removed = 0;
    for m in ms {
        if ctx.element(key, m)?.is_some() {
            ctx.delete_element(key, m)?;
            n = n.saturating_sub(1);
            removed += 1;
        }
    }
    ctx.save_or_remove(key, Meta::Set(n), &live)?;
    Ok(removed)
}

pub(super) fn sadd(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(add(ctx, a.get(1), a.from(2))?))
}

pub(super) fn srem(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(rem(ctx, a.get(1), a.from(2))?))
}

pub(super) fn smembers(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Set(members(ctx, a.get(1))?.into_iter().map(Reply::Bulk).collect()))
}

fn is_member(ctx: &Ctx<'_>, key: &[u8], m: &[u8]) -> Result<bool, Fail> {
    Ok(ctx.lookup_kind(key, Kind::Set)?.is_some() && ctx.element(key, m)?.is_some())
}

pub(super) fn sismember(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(i64::from(is_member(ctx, a.get(1), a.get(2))?)))
}

pub(super) fn smismember(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut out = Vec::new();
    for m in a.from(2) {
        out.push(Reply::Int(i64::from(is_member(ctx, a.get(1), m)?)));
    }
    Ok(Reply::Array(out))
}

pub(super) fn scard(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(count_of(&ctx.lookup_kind(a.get(1), Kind::Set)?) as i64))
}

fn count_arg(a: &Args<'_>) -> Result<Option<i64>, Fail> {
    match a.from(2) {
        [] => Ok(None),
        [c] => Ok(Some(parse_signed_count(c)?)),
        _ => fail(msg::SYNTAX),
    }
}

pub(super) fn spop(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let count = a.pop_count(2)?;
    let all = members(ctx, key)?;
    let picks = random_picks(ctx, all.len(), Some(count.unwrap_or(1) as i64)).unwrap_or_default();
    let chosen: Vec<Vec<u8>> = picks.into_iter().filter_map(|i| all.get(i).cloned()).collect();
    rem(ctx, key, &chosen)?;
    Ok(match count {
        None => Reply::opt(chosen.into_iter().next()),
        Some(_) => Reply::Set(chosen.into_iter().map(Reply::Bulk).collect()),
    })
}

pub(super) fn srandmember(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let count = count_arg(a)?;
    let all = members(ctx, a.get(1))?;
    match random_picks(ctx, all.len(), count) {
        None => {
            if all.is_empty() {
                return Ok(Reply::Nil);
            }
            let i = (ctx.random() % all.len() as u64) as usize;
            Ok(Reply::opt(all.get(i).cloned()))
        }
        Some(p) => {
            // A negative count picks with repeats: the reply can be far larger than the set.
            ctx.reply_fits(p.iter().filter_map(|&i| all.get(i)).map(|m| m.len() as u64).sum())?;
            Ok(Reply::Array(p.into_iter().filter_map(|i| all.get(i).cloned()).map(Reply::Bulk).collect()))
        }
    }
}

pub(super) fn smove(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (src, dst, m) = (a.get(1), a.get(2), a.get(3));
    // As in Redis: an absent source answers 0 before either type is checked.
    let Some(s) = ctx.lookup_for_write(src, None)? else { return Ok(Reply::Int(0)) };
    if s.meta.kind() != Kind::Set {
        return fail(msg::WRONGTYPE);
    }
    ctx.lookup_for_write(dst, Some(Kind::Set))?;
    if ctx.element(src, m)?.is_none() {
        return Ok(Reply::Int(0));
    }
    if src != dst {
        rem(ctx, src, std::slice::from_ref(&m.to_vec()))?;
        add(ctx, dst, std::slice::from_ref(&m.to_vec()))?;
    }
    Ok(Reply::Int(1))
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(ctx: &Ctx<'_>, keys: &[Vec<u8>], op: Op) -> Result<BTreeSet<Vec<u8>>, Fail> {
    let mut acc: Option<BTreeSet<Vec<u8>>> = None;
    for k in keys {
        let s: BTreeSet<Vec<u8>> = members(ctx, k)?.into_iter().collect();
        acc = Some(match (acc, op) {
            (None, _) => s,
            (Some(a), Op::Inter) => a.intersection(&s).cloned().collect(),
            (Some(a), Op::Union) => a.union(&s).cloned().collect(),
            (Some(a), Op::Diff) => a.difference(&s).cloned().collect(),
        });
    }
    Ok(acc.unwrap_or_default())
}

fn combine_reply(ctx: &mut Ctx<'_>, a: &Args<'_>, op: Op) -> Res {
    Ok(Reply::Set(combine(ctx, a.from(1), op)?.into_iter().map(Reply::Bulk).collect()))
}

fn combine_store(ctx: &mut Ctx<'_>, a: &Args<'_>, op: Op) -> Res {
    let dst = a.get(1);
    let result = combine(ctx, a.from(2), op)?;
    ctx.delete_key(dst)?;
    if result.is_empty() {
        return Ok(Reply::Int(0));
    }
    for m in &result {
        ctx.put_element(dst, m, b"")?;
    }
    ctx.save(dst, &Meta::Set(result.len() as u64), 0, 0)?;
    Ok(Reply::Int(result.len() as i64))
}

pub(super) fn sinter(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_reply(ctx, a, Op::Inter)
}
pub(super) fn sunion(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_reply(ctx, a, Op::Union)
}
pub(super) fn sdiff(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_reply(ctx, a, Op::Diff)
}
pub(super) fn sinterstore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_store(ctx, a, Op::Inter)
}
pub(super) fn sunionstore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_store(ctx, a, Op::Union)
}
pub(super) fn sdiffstore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    combine_store(ctx, a, Op::Diff)
}

pub(super) fn sintercard(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let n = match int(a.get(1)) {
        Some(n) if n > 0 => n as usize,
        _ => return fail("ERR numkeys should be greater than 0"),
    };
    let keys = a.from(2);
    if keys.len() < n {
        return fail("ERR Number of keys can't be greater than number of args");
    }
    let (keys, rest) = keys.split_at(n);
    // Options in order, as Redis reads them: a bad LIMIT is reported before a later bad option.
    let mut limit = 0;
    let mut opts = rest.iter();
    while let Some(o) = opts.next() {
        match opts.next() {
            Some(l) if upper(o) == b"LIMIT" => limit = non_negative(l, "ERR LIMIT can't be negative")?,
            _ => return fail(msg::SYNTAX),
        }
    }
    let card = combine(ctx, keys, Op::Inter)?.len();
    Ok(Reply::Int(if limit > 0 { card.min(limit) } else { card } as i64))
}

pub(super) fn sscan(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let Some((cursor, o)) = element_scan(ctx, a, Kind::Set)? else { return Ok(empty_page()) };
    scan_elements(ctx, a.get(1), b"", cursor, &o, |m, _, out| out.push(Reply::Bulk(m)))
}
