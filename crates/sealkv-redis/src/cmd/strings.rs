//! String commands. A string is its meta record (`0x01 ‖ bytes`), with the key's expiry as the
//! store's expiry, so a GET is one point read.

use super::Args;
use crate::keyspace::{Ctx, Fail, Live, Res, fail, int, msg, parse_int, upper};
use crate::layout::{Kind, Meta};
use crate::longdouble;
use crate::reply::Reply;

/// The largest string SETRANGE/APPEND may build (Redis `proto-max-bulk-len`).
const MAX_STRING: usize = 512 << 20;
// The store must take the longest string behind its one-byte type tag: a SETRANGE to the last
// byte Redis allows once halted every replica here.
const _: () = assert!(MAX_STRING < sealkv_store::MAX_VALUE_LEN);

fn string_of(l: Option<Live>) -> Option<(Vec<u8>, u64)> {
    l.and_then(|l| match l.meta {
        Meta::String(b) => Some((b, l.expire)),
        _ => None,
    })
}

/// The live string at `key` (WRONGTYPE for another type).
fn get_string(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>, Fail> {
    Ok(string_of(ctx.lookup_kind(key, Kind::String)?))
}

/// Writes `value` at `key`, replacing whatever was there (any type), with expiry `expire`.
pub fn set_value(ctx: &mut Ctx<'_>, key: &[u8], value: &[u8], expire: u64, old: Option<&Live>) -> Result<(), Fail> {
    let old_expire = match old {
        Some(l) if !matches!(l.meta, Meta::String(_)) => {
            ctx.remove(key, l)?;
            0
        }
        Some(l) => l.expire,
        None => 0,
    };
    ctx.save(key, &Meta::String(value.to_vec()), expire, old_expire)
}

pub(super) fn get(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::opt(get_string(ctx, a.get(1))?.map(|(v, _)| v)))
}

/// Parses an expiry option value into an absolute ms time.
fn expire_at(ctx: &Ctx<'_>, opt: &[u8], v: &[u8], cmd: &str) -> Result<u64, Fail> {
    let n = parse_int(v)?;
    let invalid = || Fail::Reply(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let now = ctx.now() as i64;
    let at = match opt {
        b"EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        b"PX" => n.checked_add(now),
        b"EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    at.filter(|t| *t > 0).map(|t| t as u64).ok_or_else(invalid)
}

/// Whether an expiry option may follow the one already given (SET, GETEX): Redis accepts the same
/// unit again, the last value winning, and refuses a second unit.
fn same_unit(given: &Option<(Vec<u8>, Vec<u8>)>, opt: &[u8]) -> bool {
    given.as_ref().is_none_or(|(o, _)| o == opt)
}

pub(super) fn set(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (key, value) = (a.get(1), a.get(2));
    let (mut nx, mut xx, mut want_get, mut keepttl) = (false, false, false, false);
    let mut expiry: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut i = 3;
    while i < a.len() {
        let opt = upper(a.get(i));
        match opt.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => want_get = true,
            b"KEEPTTL" if expiry.is_none() => keepttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !keepttl && same_unit(&expiry, &opt) && i + 1 < a.len() => {
                expiry = Some((opt.clone(), a.get(i + 1).to_vec()));
                i += 1;
            }
            _ => return fail(msg::SYNTAX),
        }
        i += 1;
    }
    let expire = match &expiry {
        Some((o, v)) => Some(expire_at(ctx, o, v, "set")?),
        None => None,
    };
    let old = ctx.lookup_for_write(key, None)?;
    let old_value = match (&old, want_get) {
        (Some(l), true) => match &l.meta {
            Meta::String(b) => Some(b.clone()),
            _ => return fail(msg::WRONGTYPE),
        },
        _ => None,
    };
    let reply_skip = || if want_get { Reply::opt(old_value.clone()) } else { Reply::Nil };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(reply_skip());
    }
    let expire = expire.unwrap_or(if keepttl { old.as_ref().map_or(0, |l| l.expire) } else { 0 });
    set_value(ctx, key, value, expire, old.as_ref())?;
    Ok(if want_get { Reply::opt(old_value) } else { Reply::Ok })
}

pub(super) fn setnx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    if ctx.lookup_for_write(a.get(1), None)?.is_some() {
        return Ok(Reply::Int(0));
    }
    set_value(ctx, a.get(1), a.get(2), 0, None)?;
    Ok(Reply::Int(1))
}

fn setex_common(ctx: &mut Ctx<'_>, a: &Args<'_>, unit: &[u8], cmd: &str) -> Res {
    let at = expire_at(ctx, unit, a.get(2), cmd)?;
    let old = ctx.lookup_for_write(a.get(1), None)?;
    set_value(ctx, a.get(1), a.get(3), at, old.as_ref())?;
    Ok(Reply::Ok)
}

pub(super) fn setex(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    setex_common(ctx, a, b"EX", "setex")
}

pub(super) fn psetex(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    setex_common(ctx, a, b"PX", "psetex")
}

pub(super) fn getset(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let old = ctx.lookup_for_write(a.get(1), Some(Kind::String))?;
    let prev = string_of(old.clone()).map(|(v, _)| v);
    set_value(ctx, a.get(1), a.get(2), 0, old.as_ref())?;
    Ok(Reply::opt(prev))
}

pub(super) fn getdel(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let Some(old) = ctx.lookup_for_write(a.get(1), Some(Kind::String))? else { return Ok(Reply::Nil) };
    ctx.remove(a.get(1), &old)?;
    Ok(Reply::opt(string_of(Some(old)).map(|(v, _)| v)))
}

pub(super) fn getex(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let mut persist = false;
    let mut expiry: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut i = 2;
    while i < a.len() {
        let opt = upper(a.get(i));
        match opt.as_slice() {
            b"PERSIST" if expiry.is_none() => persist = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !persist && same_unit(&expiry, &opt) && i + 1 < a.len() => {
                expiry = Some((opt.clone(), a.get(i + 1).to_vec()));
                i += 1;
            }
            _ => return fail(msg::SYNTAX),
        }
        i += 1;
    }
    // As in Redis: a syntax error first, then an absent key (nil) or another type, and only then
    // a bad expiry time.
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::String))? else { return Ok(Reply::Nil) };
    let new_expire = match &expiry {
        Some((o, v)) => Some(expire_at(ctx, o, v, "getex")?),
        None if persist => Some(0),
        None => None,
    };
    match new_expire {
        // An EXAT/PXAT already past deletes the key, as in Redis (EX and PX are always ahead).
        Some(e) if e != 0 && e <= ctx.now() => ctx.remove(key, &live)?,
        Some(e) if e != live.expire => ctx.save(key, &live.meta, e, live.expire)?,
        _ => {}
    }
    Ok(Reply::opt(string_of(Some(live)).map(|(v, _)| v)))
}

pub(super) fn mget(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut out = Vec::with_capacity(a.len() - 1);
    let mut bytes = 0u64;
    for k in a.from(1) {
        // MGET answers nil for keys of another type instead of failing.
        let v = string_of(ctx.lookup(k)?).map(|(v, _)| v);
        // A key named many times repeats its value in the reply.
        bytes += v.as_ref().map_or(0, |v| v.len() as u64);
        ctx.reply_fits(bytes)?;
        out.push(Reply::opt(v));
    }
    Ok(Reply::Array(out))
}

pub(super) fn mset(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    super::pairs(a, 1)?;
    for kv in a.from(1).chunks_exact(2) {
        if let [k, v] = kv {
            let old = ctx.lookup_for_write(k, None)?;
            set_value(ctx, k, v, 0, old.as_ref())?;
        }
    }
    Ok(Reply::Ok)
}

pub(super) fn msetnx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    super::pairs(a, 1)?;
    for kv in a.from(1).chunks_exact(2) {
        if let Some(k) = kv.first()
            && ctx.lookup_for_write(k, None)?.is_some()
        {
            return Ok(Reply::Int(0));
        }
    }
    for kv in a.from(1).chunks_exact(2) {
        if let [k, v] = kv {
            set_value(ctx, k, v, 0, None)?;
        }
    }
    Ok(Reply::Int(1))
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> Res {
    let live = ctx.lookup_for_write(key, Some(Kind::String))?;
    let cur = match string_of(live.clone()) {
        Some((v, _)) => int(&v).ok_or(Fail::Reply(msg::NOT_INT.into()))?,
        None => 0,
    };
    let next = cur.checked_add(by).ok_or(Fail::Reply(msg::OVERFLOW.into()))?;
    let expire = live.as_ref().map_or(0, |l| l.expire);
    ctx.save(key, &Meta::String(next.to_string().into_bytes()), expire, expire)?;
    Ok(Reply::Int(next))
}

pub(super) fn incr(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    incr_by(ctx, a.get(1), 1)
}

pub(super) fn decr(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    incr_by(ctx, a.get(1), -1)
}

pub(super) fn incrby(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    incr_by(ctx, a.get(1), parse_int(a.get(2))?)
}

pub(super) fn decrby(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let by = parse_int(a.get(2))?.checked_neg().ok_or(Fail::Reply("ERR decrement would overflow".into()))?;
    incr_by(ctx, a.get(1), by)
}

pub(super) fn incrbyfloat(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    // Redis checks the key's type and value before the increment.
    let live = ctx.lookup_for_write(key, Some(Kind::String))?;
    let cur = match string_of(live.clone()) {
        Some((v, _)) => ctx.rules.long_double(&v).ok_or(Fail::Reply(msg::NOT_FLOAT.into()))?,
        None => longdouble::ZERO,
    };
    let by = ctx.rules.long_double(a.get(2)).ok_or(Fail::Reply(msg::NOT_FLOAT.into()))?;
    let next = longdouble::add(cur, by).or_else(|_| fail("ERR increment would produce NaN or Infinity"))?;
    let text = longdouble::format(next).into_bytes();
    let expire = live.as_ref().map_or(0, |l| l.expire);
    ctx.save(key, &Meta::String(text.clone()), expire, expire)?;
    Ok(Reply::Bulk(text))
}

pub(super) fn append(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let live = ctx.lookup_for_write(key, Some(Kind::String))?;
    let (mut v, expire) = string_of(live).unwrap_or_default();
    if v.len() + a.get(2).len() > MAX_STRING {
        return fail("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    v.extend_from_slice(a.get(2));
    let len = v.len() as i64;
    ctx.save(key, &Meta::String(v), expire, expire)?;
    Ok(Reply::Int(len))
}

pub(super) fn strlen(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(get_string(ctx, a.get(1))?.map_or(0, |(v, _)| v.len() as i64)))
}

/// Normalizes a Redis inclusive [start, end] range over `len` items; `None` if empty.
pub fn range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { len + i } else { i };
    let (s, e) = (norm(start).max(0), norm(end).min(len - 1));
    (s <= e && s < len && len > 0).then_some((s as usize, e as usize))
}

/// GETRANGE's own normalization, as Redis 7.0 has it: unlike LRANGE's, an end that falls before
/// the string's start is clamped to its first byte (`GETRANGE k 0 -100` is the first byte), and
/// only two negative indexes with start > end give the empty string.
fn byte_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let s = (if start < 0 { len + start } else { start }).max(0);
    let e = (if end < 0 { len + end } else { end }).max(0).min(len - 1);
    (len > 0 && s <= e).then_some((s as usize, e as usize))
}

pub(super) fn getrange(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (start, end) = (parse_int(a.get(2))?, parse_int(a.get(3))?);
    let v = get_string(ctx, a.get(1))?.map(|(v, _)| v).unwrap_or_default();
    Ok(Reply::Bulk(match byte_range(start, end, v.len()) {
        Some((s, e)) => v.get(s..=e).unwrap_or_default().to_vec(),
        None => Vec::new(),
    }))
}

pub(super) fn setrange(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let offset = parse_int(a.get(2))?;
    if offset < 0 {
        return fail("ERR offset is out of range");
    }
    let piece = a.get(3);
    let live = ctx.lookup_for_write(key, Some(Kind::String))?;
    let (mut v, expire) = string_of(live.clone()).unwrap_or_default();
    if piece.is_empty() {
        return Ok(Reply::Int(v.len() as i64));
    }
    let end = (offset as usize).checked_add(piece.len()).filter(|e| *e <= MAX_STRING);
    let Some(end) = end else { return fail("ERR string exceeds maximum allowed size (proto-max-bulk-len)") };
    if v.len() < end {
        v.resize(end, 0);
    }
    if let Some(dst) = v.get_mut(offset as usize..end) {
        dst.copy_from_slice(piece);
    }
    let len = v.len() as i64;
    ctx.save(key, &Meta::String(v), expire, expire)?;
    Ok(Reply::Int(len))
}
