//! List commands. Elements sit at `sub = BE64(i)` for `head ≤ i < tail`: pushes and pops at
//! either end, LINDEX and LSET are point operations; LRANGE is one range scan. LREM and LINSERT
//! shift elements and cost O(n), as they do in Redis.

use super::Args;
use super::strings::range;
use crate::keyspace::{Ctx, Fail, Live, Res, fail, msg, non_negative, parse_int, parse_signed_count, upper};
use crate::layout::{self, Kind, LIST_MID, Meta};
use crate::reply::Reply;

fn window(l: &Live) -> (u64, u64) {
    match l.meta {
        Meta::List { head, tail } => (head, tail),
        _ => (LIST_MID, LIST_MID),
    }
}

fn len_of(l: &Live) -> usize {
    let (h, t) = window(l);
    (t - h) as usize
}

fn elem(ctx: &Ctx<'_>, key: &[u8], i: u64) -> Result<Option<Vec<u8>>, Fail> {
    ctx.element(key, &i.to_be_bytes())
}

/// Pushes values at one end; the new length. `only_existing`: LPUSHX/RPUSHX.
fn push(ctx: &mut Ctx<'_>, key: &[u8], values: &[Vec<u8>], left: bool, only_existing: bool) -> Result<i64, Fail> {
    let live = ctx.lookup_for_write(key, Some(Kind::List))?;
    if only_existing && live.is_none() {
        return Ok(0);
    }
    let live = live.unwrap_or(Live { meta: Meta::List { head: LIST_MID, tail: LIST_MID }, expire: 0 });
    let (mut head, mut tail) = window(&live);
    for v in values {
        if left {
            head = head.checked_sub(1).ok_or(Fail::Reply("ERR list is full".into()))?;
            ctx.put_element(key, &head.to_be_bytes(), v)?;
        } else {
            ctx.put_element(key, &tail.to_be_bytes(), v)?;
            tail = tail.checked_add(1).ok_or(Fail::Reply("ERR list is full".into()))?;
        }
    }
    ctx.save(key, &Meta::List { head, tail }, live.expire, live.expire)?;
    Ok((tail - head) as i64)
}

/// Pops up to `n` values from one end.
fn pop(ctx: &mut Ctx<'_>, key: &[u8], n: usize, left: bool) -> Result<Option<Vec<Vec<u8>>>, Fail> {
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::List))? else { return Ok(None) };
    let (mut head, mut tail) = window(&live);
    let mut out = Vec::new();
    while out.len() < n && head < tail {
        let i = if left { head } else { tail - 1 };
        let v = elem(ctx, key, i)?.ok_or(Fail::Reply("ERR list element missing".into()))?;
        ctx.delete_element(key, &i.to_be_bytes())?;
        if left {
            head += 1;
        } else {
            tail -= 1;
        }
        out.push(v);
    }
    ctx.save_or_remove(key, Meta::List { head, tail }, &live)?;
    Ok(Some(out))
}

fn push_cmd(ctx: &mut Ctx<'_>, a: &Args<'_>, left: bool, x: bool) -> Res {
    Ok(Reply::Int(push(ctx, a.get(1), a.from(2), left, x)?))
}

pub(super) fn lpush(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    push_cmd(ctx, a, true, false)
}
pub(super) fn rpush(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    push_cmd(ctx, a, false, false)
}
pub(super) fn lpushx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    push_cmd(ctx, a, true, true)
}
pub(super) fn rpushx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    push_cmd(ctx, a, false, true)
}

fn pop_cmd(ctx: &mut Ctx<'_>, a: &Args<'_>, left: bool) -> Res {
    // LPOP and RPOP take at most a count; Redis answers more with its arity error when the
    // command runs (SPOP and ZPOPMIN answer a syntax error, in `pop_count`).
    if a.len() > 3 {
        return fail(super::wrong_arity_message(&a.name()));
    }
    let count = a.pop_count(2)?;
    let got = pop(ctx, a.get(1), count.unwrap_or(1), left)?;
    Ok(match (count, got) {
        (None, Some(v)) => Reply::opt(v.into_iter().next()),
        (None, None) => Reply::Nil,
        (Some(_), None) => Reply::NilArray,
        (Some(_), Some(v)) => Reply::Array(v.into_iter().map(Reply::Bulk).collect()),
    })
}

pub(super) fn lpop(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    pop_cmd(ctx, a, true)
}
pub(super) fn rpop(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    pop_cmd(ctx, a, false)
}

pub(super) fn llen(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(ctx.lookup_kind(a.get(1), Kind::List)?.map_or(0, |l| len_of(&l) as i64)))
}

/// Values at positions `s..=e` (relative to head).
fn slice(ctx: &Ctx<'_>, key: &[u8], head: u64, s: usize, e: usize) -> Result<Vec<Vec<u8>>, Fail> {
    let lo = layout::list_key(key, head + s as u64);
    let hi = layout::list_key(key, head + e as u64);
    ctx.db
        .scan(std::ops::Bound::Included(lo), std::ops::Bound::Included(hi), false)
        .map(|r| r.map(|(_, v)| v).map_err(Fail::from))
        .collect()
}

/// Every value of a live list, head first.
fn values(ctx: &Ctx<'_>, key: &[u8], live: &Live) -> Result<Vec<Vec<u8>>, Fail> {
    let (head, tail) = window(live);
    if head == tail {
        return Ok(Vec::new());
    }
    slice(ctx, key, head, 0, (tail - head - 1) as usize)
}

pub(super) fn lrange(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (s, e) = (parse_int(a.get(2))?, parse_int(a.get(3))?);
    let Some(live) = ctx.lookup_kind(a.get(1), Kind::List)? else { return Ok(Reply::Array(Vec::new())) };
    let Some((s, e)) = range(s, e, len_of(&live)) else { return Ok(Reply::Array(Vec::new())) };
    let (head, _) = window(&live);
    Ok(Reply::Array(slice(ctx, a.get(1), head, s, e)?.into_iter().map(Reply::Bulk).collect()))
}

/// The absolute index of list position `i` (negative from the tail), if inside.
fn position(live: &Live, i: i64) -> Option<u64> {
    let (head, tail) = window(live);
    let len = (tail - head) as i64;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then(|| head + i as u64)
}

pub(super) fn lindex(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    // The key before the index, as Redis: an absent key is nil whatever the index.
    let Some(live) = ctx.lookup_kind(a.get(1), Kind::List)? else { return Ok(Reply::Nil) };
    let i = parse_int(a.get(2))?;
    match position(&live, i) {
        Some(p) => Ok(Reply::opt(elem(ctx, a.get(1), p)?)),
        None => Ok(Reply::Nil),
    }
}

pub(super) fn lset(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::List))? else { return fail(msg::NO_KEY) };
    let i = parse_int(a.get(2))?;
    let Some(p) = position(&live, i) else { return fail(msg::RANGE) };
    ctx.put_element(key, &p.to_be_bytes(), a.get(3))?;
    ctx.save(key, &live.meta, live.expire, live.expire)?;
    Ok(Reply::Ok)
}

/// Replaces a list's contents (LREM, LINSERT): elements from the first changed position on are
/// rewritten, the ones before it stay.
fn rewrite(ctx: &mut Ctx<'_>, key: &[u8], live: &Live, old: &[Vec<u8>], new: &[Vec<u8>]) -> Result<(), Fail> {
    let (head, tail) = window(live);
    let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    for i in head + same as u64..tail {
        ctx.delete_element(key, &i.to_be_bytes())?;
    }
    for (off, v) in new.iter().enumerate().skip(same) {
        ctx.put_element(key, &(head + off as u64).to_be_bytes(), v)?;
    }
    ctx.save_or_remove(key, Meta::List { head, tail: head + new.len() as u64 }, live)
}

pub(super) fn lrem(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let count = parse_int(a.get(2))?;
    let target = a.get(3);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::List))? else { return Ok(Reply::Int(0)) };
    let old = values(ctx, key, &live)?;
    let limit = if count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
    let mut removed = 0usize;
    let mut keep = vec![true; old.len()];
    let order: Box<dyn Iterator<Item = usize>> =
        if count < 0 { Box::new((0..old.len()).rev()) } else { Box::new(0..old.len()) };
    for i in order {
        if removed == limit {
            break;
        }
        if old.get(i).is_some_and(|v| v.as_slice() == target) {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
            removed += 1;
        }
    }
    if removed > 0 {
        let new: Vec<Vec<u8>> = old.iter().zip(&keep).filter(|(_, k)| **k).map(|(v, _)| v.clone()).collect();
        rewrite(ctx, key, &live, &old, &new)?;
    }
    Ok(Reply::Int(removed as i64))
}

pub(super) fn ltrim(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let (s, e) = (parse_int(a.get(2))?, parse_int(a.get(3))?);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::List))? else { return Ok(Reply::Ok) };
    let (head, tail) = window(&live);
    let (nh, nt) = match range(s, e, len_of(&live)) {
        Some((s, e)) => (head + s as u64, head + e as u64 + 1),
        None => (tail, tail),
    };
    for i in (head..nh).chain(nt..tail) {
        ctx.delete_element(key, &i.to_be_bytes())?;
    }
    let meta = Meta::List { head: nh, tail: nt };
    if meta == live.meta {
        // Redis counts every LTRIM as a modification, even one that trims nothing: the record
        // is rewritten so a WATCH on the key sees it.
        ctx.save(key, &meta, live.expire, live.expire)?;
    } else {
        ctx.save_or_remove(key, meta, &live)?;
    }
    Ok(Reply::Ok)
}

pub(super) fn linsert(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let before = match upper(a.get(2)).as_slice() {
        b"BEFORE" => true,
        b"AFTER" => false,
        _ => return fail(msg::SYNTAX),
    };
    let (pivot, value) = (a.get(3), a.get(4));
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::List))? else { return Ok(Reply::Int(0)) };
    let old = values(ctx, key, &live)?;
    let Some(at) = old.iter().position(|v| v.as_slice() == pivot) else { return Ok(Reply::Int(-1)) };
    let mut new = old.clone();
    new.insert(if before { at } else { at + 1 }, value.to_vec());
    rewrite(ctx, key, &live, &old, &new)?;
    Ok(Reply::Int(new.len() as i64))
}

pub(super) fn lpos(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (key, target) = (a.get(1), a.get(2));
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < a.len() {
        if i + 1 >= a.len() {
            return fail(msg::SYNTAX);
        }
        // Redis names the option in the error: a COUNT or MAXLEN that is not a number "can't be
        // negative", and an unknown option is a syntax error whatever follows it.
        let v = a.get(i + 1);
        match upper(a.get(i)).as_slice() {
            b"RANK" => match parse_signed_count(v)? {
                0 => {
                    return fail(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    );
                }
                r => rank = r,
            },
            b"COUNT" => count = Some(non_negative(v, "ERR COUNT can't be negative")?),
            b"MAXLEN" => maxlen = non_negative(v, "ERR MAXLEN can't be negative")?,
            _ => return fail(msg::SYNTAX),
        }
        i += 2;
    }
    let Some(live) = ctx.lookup_kind(key, Kind::List)? else {
        return Ok(if count.is_some() { Reply::Array(Vec::new()) } else { Reply::Nil });
    };
    let all = values(ctx, key, &live)?;
    let n = all.len();
    let order: Box<dyn Iterator<Item = usize>> = if rank < 0 { Box::new((0..n).rev()) } else { Box::new(0..n) };
    let want = count.map_or(1, |c| if c == 0 { usize::MAX } else { c });
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    for (seen, i) in order.enumerate() {
        if maxlen != 0 && seen >= maxlen {
            break;
        }
        if all.get(i).is_some_and(|v| v.as_slice() == target) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(i as i64);
            if found.len() >= want {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found.into_iter().map(Reply::Int).collect()),
        None => found.first().map_or(Reply::Nil, |i| Reply::Int(*i)),
    })
}

fn side(b: &[u8]) -> Result<bool, Fail> {
    match upper(b).as_slice() {
        b"LEFT" => Ok(true),
        b"RIGHT" => Ok(false),
        _ => fail(msg::SYNTAX),
    }
}

fn lmove_generic(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from_left: bool, to_left: bool) -> Res {
    // Both keys are type-checked before anything moves.
    if ctx.lookup_for_write(src, Some(Kind::List))?.is_none() {
        return Ok(Reply::Nil);
    }
    ctx.lookup_for_write(dst, Some(Kind::List))?;
    let Some(v) = pop(ctx, src, 1, from_left)?.and_then(|v| v.into_iter().next()) else { return Ok(Reply::Nil) };
    push(ctx, dst, std::slice::from_ref(&v), to_left, false)?;
    Ok(Reply::Bulk(v))
}

pub(super) fn lmove(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (from, to) = (side(a.get(3))?, side(a.get(4))?);
    lmove_generic(ctx, a.get(1), a.get(2), from, to)
}

pub(super) fn rpoplpush(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    lmove_generic(ctx, a.get(1), a.get(2), false, true)
}
