//! Hash commands: one element per field (`sub = field`, value = the field's value).

use super::Args;
use super::keys::{element_scan, empty_page, scan_elements};
use crate::keyspace::{Ctx, Fail, Live, Res, count_of, fail, int, msg, parse_int, parse_signed_count, upper};
use crate::layout::{Kind, Meta};
use crate::longdouble;
use crate::reply::Reply;

fn live_or_new(l: Option<Live>) -> Live {
    l.unwrap_or(Live { meta: Meta::Hash(0), expire: 0 })
}

pub(super) fn hset(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    super::pairs(a, 2)?;
    let key = a.get(1);
    let live = ctx.lookup_for_write(key, Some(Kind::Hash))?;
    let mut n = count_of(&live);
    let mut added = 0;
    for fv in a.from(2).chunks_exact(2) {
        if let [f, v] = fv {
            if ctx.element(key, f)?.is_none() {
                n += 1;
                added += 1;
            }
            ctx.put_element(key, f, v)?;
        }
    }
    let live = live_or_new(live);
    ctx.save(key, &Meta::Hash(n), live.expire, live.expire)?;
    Ok(if a.name().eq_ignore_ascii_case("hmset") { Reply::Ok } else { Reply::Int(added) })
}

pub(super) fn hsetnx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let live = ctx.lookup_for_write(key, Some(Kind::Hash))?;
    if live.is_some() && ctx.element(key, a.get(2))?.is_some() {
        return Ok(Reply::Int(0));
    }
    let n = count_of(&live) + 1;
    ctx.put_element(key, a.get(2), a.get(3))?;
    let live = live_or_new(live);
    ctx.save(key, &Meta::Hash(n), live.expire, live.expire)?;
    Ok(Reply::Int(1))
}

fn field(ctx: &Ctx<'_>, key: &[u8], f: &[u8]) -> Result<Option<Vec<u8>>, Fail> {
    match ctx.lookup_kind(key, Kind::Hash)? {
        Some(_) => ctx.element(key, f),
        None => Ok(None),
    }
}

pub(super) fn hget(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::opt(field(ctx, a.get(1), a.get(2))?))
}

pub(super) fn hmget(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let exists = ctx.lookup_kind(key, Kind::Hash)?.is_some();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for f in a.from(2) {
        let v = if exists { ctx.element(key, f)? } else { None };
        // A field named many times repeats its value in the reply.
        bytes += v.as_ref().map_or(0, |v| v.len() as u64);
        ctx.reply_fits(bytes)?;
        out.push(Reply::opt(v));
    }
    Ok(Reply::Array(out))
}

/// All (field, value) pairs of a live hash (empty if absent).
/// (field, value) pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn all(ctx: &Ctx<'_>, key: &[u8]) -> Result<Fields, Fail> {
    if ctx.lookup_kind(key, Kind::Hash)?.is_none() {
        return Ok(Vec::new());
    }
    ctx.elements(key, b"", false).collect()
}

pub(super) fn hgetall(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Map(all(ctx, a.get(1))?.into_iter().map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v))).collect()))
}

pub(super) fn hkeys(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Array(all(ctx, a.get(1))?.into_iter().map(|(f, _)| Reply::Bulk(f)).collect()))
}

pub(super) fn hvals(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Array(all(ctx, a.get(1))?.into_iter().map(|(_, v)| Reply::Bulk(v)).collect()))
}

pub(super) fn hdel(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::Hash))? else { return Ok(Reply::Int(0)) };
    let mut n = live.count();
    let mut removed = 0;
    for f in a.from(2) {
        if ctx.element(key, f)?.is_some() {
            ctx.delete_element(key, f)?;
            n = n.saturating_sub(1);
            removed += 1;
        }
    }
    ctx.save_or_remove(key, Meta::Hash(n), &live)?;
    Ok(Reply::Int(removed))
}

pub(super) fn hlen(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(count_of(&ctx.lookup_kind(a.get(1), Kind::Hash)?) as i64))
}

pub(super) fn hexists(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(i64::from(field(ctx, a.get(1), a.get(2))?.is_some())))
}

pub(super) fn hstrlen(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(field(ctx, a.get(1), a.get(2))?.map_or(0, |v| v.len() as i64)))
}

/// Writes a new value of one field, counting it if it is new.
fn write_field(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    live: Option<Live>,
    f: &[u8],
    existed: bool,
    v: &[u8],
) -> Result<(), Fail> {
    let n = count_of(&live) + u64::from(!existed);
    ctx.put_element(key, f, v)?;
    let live = live_or_new(live);
    ctx.save(key, &Meta::Hash(n), live.expire, live.expire)
}

pub(super) fn hincrby(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (key, f) = (a.get(1), a.get(2));
    let by = parse_int(a.get(3))?;
    let live = ctx.lookup_for_write(key, Some(Kind::Hash))?;
    let cur = if live.is_some() { ctx.element(key, f)? } else { None };
    let base = match &cur {
        Some(v) => int(v).ok_or(Fail::Reply("ERR hash value is not an integer".into()))?,
        None => 0,
    };
    let next = base.checked_add(by).ok_or(Fail::Reply(msg::OVERFLOW.into()))?;
    write_field(ctx, key, live, f, cur.is_some(), next.to_string().as_bytes())?;
    Ok(Reply::Int(next))
}

pub(super) fn hincrbyfloat(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (key, f) = (a.get(1), a.get(2));
    // Redis's order: the increment, then the key's type, then the stored value.
    let by = ctx.rules.long_double(a.get(3)).ok_or(Fail::Reply(msg::NOT_FLOAT.into()))?;
    if by == longdouble::Num::Infinite {
        return fail("ERR value is NaN or Infinity");
    }
    let live = ctx.lookup_for_write(key, Some(Kind::Hash))?;
    let cur = if live.is_some() { ctx.element(key, f)? } else { None };
    let base = match &cur {
        Some(v) => ctx.rules.long_double(v).ok_or(Fail::Reply("ERR hash value is not a float".into()))?,
        None => longdouble::ZERO,
    };
    let next = longdouble::add(base, by).or_else(|_| fail("ERR increment would produce NaN or Infinity"))?;
    let text = longdouble::format(next);
    write_field(ctx, key, live, f, cur.is_some(), text.as_bytes())?;
    Ok(Reply::bulk(text))
}

pub(super) fn hrandfield(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let count = if a.len() > 2 { Some(parse_signed_count(a.get(2))?) } else { None };
    let withvalues = match a.from(3) {
        [] => false,
        [o] if upper(o) == b"WITHVALUES" => true,
        _ => return fail(msg::SYNTAX),
    };
    let pairs = all(ctx, key)?;
    let picks = super::sets::random_picks(ctx, pairs.len(), count);
    let Some(picks) = picks else {
        if pairs.is_empty() {
            return Ok(Reply::Nil);
        }
        let i = (ctx.random() % pairs.len() as u64) as usize;
        return Ok(Reply::opt(pairs.get(i).map(|(f, _)| f.clone())));
    };
    // A negative count picks with repeats: the reply can be far larger than the hash.
    let bytes = picks
        .iter()
        .filter_map(|&i| pairs.get(i))
        .map(|(f, v)| (f.len() + if withvalues { v.len() } else { 0 }) as u64);
    ctx.reply_fits(bytes.sum())?;
    let chosen = picks.into_iter().filter_map(|i| pairs.get(i));
    Ok(if withvalues {
        Reply::Pairs(chosen.map(|(f, v)| (Reply::Bulk(f.clone()), Reply::Bulk(v.clone()))).collect())
    } else {
        Reply::Array(chosen.map(|(f, _)| Reply::Bulk(f.clone())).collect())
    })
}

pub(super) fn hscan(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let Some((cursor, o)) = element_scan(ctx, a, Kind::Hash)? else { return Ok(empty_page()) };
    let novalues = o.novalues;
    scan_elements(ctx, a.get(1), b"", cursor, &o, |f, v, out| {
        out.push(Reply::Bulk(f));
        if !novalues {
            out.push(Reply::Bulk(v));
        }
    })
}
