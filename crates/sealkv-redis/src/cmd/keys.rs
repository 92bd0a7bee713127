//! Keyspace commands: existence, types, expiry, iteration, renames and flushes, plus the two
//! internal commands the node sends itself (the expiry sweep and WATCH versions).

use std::ops::Bound;

use super::Args;
use crate::keyspace::{Ctx, Fail, Live, Res, fail, glob, msg, parse_int, upper};
use crate::layout::{self, Kind, Meta};
use crate::reply::Reply;

pub(super) fn del(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut n = 0;
    for k in a.from(1) {
        n += i64::from(ctx.delete_key(k)?);
    }
    Ok(Reply::Int(n))
}

pub(super) fn exists(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut n = 0;
    for k in a.from(1) {
        n += i64::from(ctx.lookup(k)?.is_some());
    }
    Ok(Reply::Int(n))
}

pub(super) fn type_(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Simple(ctx.lookup(a.get(1))?.map_or("none", |l| l.meta.kind().name()).into()))
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT.
fn expire_generic(ctx: &mut Ctx<'_>, a: &Args<'_>, ms: bool, absolute: bool, cmd: &str) -> Res {
    let key = a.get(1);
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in a.from(3) {
        match upper(o).as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            // Redis names the option as it was sent.
            _ => return fail(format!("ERR Unsupported option {}", String::from_utf8_lossy(o))),
        }
    }
    if nx && (xx || gt || lt) {
        return fail("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return fail("ERR GT and LT options at the same time are not compatible");
    }
    // The options are checked before the time, as Redis does.
    let n = parse_int(a.get(2))?;
    let invalid = || Fail::Reply(format!("ERR invalid expire time in '{cmd}' command"));
    let delta = if ms { Some(n) } else { n.checked_mul(1000) };
    let base = if absolute { 0 } else { ctx.now() as i64 };
    let at = delta.and_then(|d| d.checked_add(base)).ok_or_else(invalid)?;
    let Some(live) = ctx.lookup_for_write(key, None)? else { return Ok(Reply::Int(0)) };
    let cur = live.expire;
    let at_ms = at.max(0) as u64;
    let skip =
        (nx && cur != 0) || (xx && cur == 0) || (gt && (cur == 0 || at_ms <= cur)) || (lt && cur != 0 && at_ms >= cur);
    if skip {
        return Ok(Reply::Int(0));
    }
    if at <= ctx.now() as i64 {
        ctx.remove(key, &live)?;
    } else {
        ctx.save(key, &live.meta, at_ms, cur)?;
    }
    Ok(Reply::Int(1))
}

pub(super) fn expire(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    expire_generic(ctx, a, false, false, "expire")
}
pub(super) fn pexpire(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    expire_generic(ctx, a, true, false, "pexpire")
}
pub(super) fn expireat(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    expire_generic(ctx, a, false, true, "expireat")
}
pub(super) fn pexpireat(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    expire_generic(ctx, a, true, true, "pexpireat")
}

fn ttl_generic(ctx: &mut Ctx<'_>, a: &Args<'_>, f: impl Fn(u64, u64) -> i64) -> Res {
    Ok(Reply::Int(match ctx.lookup(a.get(1))? {
        None => -2,
        Some(Live { expire: 0, .. }) => -1,
        Some(l) => f(l.expire, ctx.now()),
    }))
}

pub(super) fn ttl(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    ttl_generic(ctx, a, |e, now| ((e.saturating_sub(now) + 500) / 1000) as i64)
}
pub(super) fn pttl(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    ttl_generic(ctx, a, |e, now| e.saturating_sub(now) as i64)
}
pub(super) fn expiretime(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    ttl_generic(ctx, a, |e, _| (e / 1000) as i64)
}
pub(super) fn pexpiretime(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    ttl_generic(ctx, a, |e, _| e as i64)
}

pub(super) fn persist(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    match ctx.lookup_for_write(a.get(1), None)? {
        Some(l) if l.expire != 0 => {
            ctx.save(a.get(1), &l.meta, 0, l.expire)?;
            Ok(Reply::Int(1))
        }
        _ => Ok(Reply::Int(0)),
    }
}

/// Live user keys of the keyspace in order, with their meta records. On the leader's read view
/// the store already hides expired keys; during apply expiry is checked here.
fn live_keys<'c>(ctx: &'c Ctx<'_>, lo: Bound<Vec<u8>>) -> impl Iterator<Item = Result<(Vec<u8>, Meta), Fail>> + 'c {
    let (_, hi) = layout::meta_range(b"");
    ctx.db.scan(lo, hi, false).filter_map(move |r| {
        let (k, v) = match r {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let key = layout::key_of_meta(&k)?.to_vec();
        if ctx.db.writable() {
            match ctx.lookup(&key) {
                Ok(Some(l)) => return Some(Ok((key, l.meta))),
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Meta::decode(&v).map(|m| (key, m)).map_err(Fail::from))
    })
}

fn all_keys_from() -> Bound<Vec<u8>> {
    layout::meta_range(b"").0
}

pub(super) fn keys(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let pattern = a.get(1).to_vec();
    let mut out = Vec::new();
    for r in live_keys(ctx, all_keys_from()) {
        let (k, _) = r?;
        if glob(&pattern, &k) {
            out.push(Reply::Bulk(k));
        }
    }
    Ok(Reply::Array(out))
}

pub(super) fn dbsize(ctx: &mut Ctx<'_>, _: &Args<'_>) -> Res {
    Ok(count_reply(ctx.db.counts()?.keys))
}

fn count_reply(n: u64) -> Reply {
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// INFO keyspace's counts, `[keys, expires]`, from the record the apply path keeps (see
/// [`crate::layout::Counts`]): one read however many keys there are.
pub(super) fn keyspace(ctx: &mut Ctx<'_>, _: &Args<'_>) -> Res {
    let c = ctx.db.counts()?;
    Ok(Reply::Array(vec![count_reply(c.keys), count_reply(c.expires)]))
}

pub(super) fn randomkey(ctx: &mut Ctx<'_>, _: &Args<'_>) -> Res {
    let n = live_keys(ctx, all_keys_from()).count() as u64;
    if n == 0 {
        return Ok(Reply::Nil);
    }
    let pick = ctx.random() % n;
    match live_keys(ctx, all_keys_from()).nth(pick as usize) {
        Some(r) => Ok(Reply::Bulk(r?.0)),
        None => Ok(Reply::Nil),
    }
}

/// The options shared by SCAN, HSCAN, SSCAN and ZSCAN.
pub(super) struct ScanOpts {
    pub(super) pattern: Option<Vec<u8>>,
    pub(super) count: usize,
    pub(super) kind: Option<Vec<u8>>,
    pub(super) novalues: bool,
}

pub(super) fn scan_opts(a: &Args<'_>, from: usize, allow_type: bool) -> Result<ScanOpts, Fail> {
    let mut o = ScanOpts { pattern: None, count: 10, kind: None, novalues: false };
    let mut i = from;
    while i < a.len() {
        let name = upper(a.get(i));
        match name.as_slice() {
            b"MATCH" if i + 1 < a.len() => o.pattern = Some(a.get(i + 1).to_vec()),
            b"COUNT" if i + 1 < a.len() => {
                let c = parse_int(a.get(i + 1))?;
                if c < 1 {
                    return fail(msg::SYNTAX);
                }
                o.count = c.min(1 << 20) as usize;
            }
            b"TYPE" if allow_type && i + 1 < a.len() => o.kind = Some(a.get(i + 1).to_ascii_lowercase()),
            b"NOVALUES" if !allow_type => {
                o.novalues = true;
                i += 1;
                continue;
            }
            _ => return fail(msg::SYNTAX),
        }
        i += 2;
    }
    Ok(o)
}

/// A SCAN-family cursor's number; `ERR invalid cursor` when it is not one. Redis checks this
/// first, before the options and before the key.
pub(super) fn scan_cursor(cursor: &[u8]) -> Result<u64, Fail> {
    std::str::from_utf8(cursor).ok().and_then(|s| s.parse().ok()).ok_or(Fail::Reply("ERR invalid cursor".into()))
}

/// HSCAN, SSCAN and ZSCAN up to their walk, in Redis's order: the cursor, then the key (an
/// absent one answers an empty page whatever the options say), then its type, then the options.
/// The cursor and the options; `None`: the key is absent.
pub(super) fn element_scan(ctx: &Ctx<'_>, a: &Args<'_>, kind: Kind) -> Result<Option<(u64, ScanOpts)>, Fail> {
    let cursor = scan_cursor(a.get(2))?;
    if ctx.lookup_kind(a.get(1), kind)?.is_none() {
        return Ok(None);
    }
    Ok(Some((cursor, scan_opts(a, 3, false)?)))
}

/// The page of a scan over nothing.
pub(super) fn empty_page() -> Reply {
    Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())])
}

/// Where a scan resumes: cursor 0 starts at `lo`; any other cursor must be one this node issued.
pub(super) fn resume(ctx: &Ctx<'_>, c: u64, lo: Bound<Vec<u8>>) -> Result<Bound<Vec<u8>>, Fail> {
    if c == 0 {
        return Ok(lo);
    }
    // A cursor issued for another key (or for SCAN) would resume outside this range: refused.
    let inside = |k: &Vec<u8>| match &lo {
        Bound::Included(p) => k.starts_with(p),
        _ => false,
    };
    match ctx.cursors.and_then(|t| t.resume(c)) {
        Some(k) if inside(&k) => Ok(Bound::Included(k)),
        _ => fail("ERR invalid cursor"),
    }
}

/// Builds a SCAN-family reply from visited store keys: `next` is the first store key not
/// visited (cursor 0 when none, or when running inside EXEC where every item is returned).
pub(super) fn scan_reply(ctx: &Ctx<'_>, next: Option<Vec<u8>>, items: Vec<Reply>) -> Reply {
    let cursor = match (next, ctx.cursors) {
        (Some(k), Some(t)) => t.save(k),
        _ => 0,
    };
    Reply::Array(vec![Reply::bulk(cursor.to_string()), Reply::Array(items)])
}

pub(super) fn scan(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let cursor = scan_cursor(a.get(1))?;
    let o = scan_opts(a, 2, true)?;
    let lo = resume(ctx, cursor, all_keys_from())?;
    let limit = if ctx.cursors.is_some() { o.count } else { usize::MAX };
    let mut items = Vec::new();
    let mut next = None;
    for (n, r) in live_keys(ctx, lo).enumerate() {
        let (k, meta) = r?;
        if n == limit {
            next = Some(layout::meta_key(&k));
            break;
        }
        let type_ok = o.kind.as_ref().is_none_or(|t| t.as_slice() == meta.kind().name().as_bytes());
        if type_ok && o.pattern.as_ref().is_none_or(|p| glob(p, &k)) {
            items.push(Reply::Bulk(k));
        }
    }
    Ok(scan_reply(ctx, next, items))
}

/// One SCAN-family page over the elements of `key` whose sub starts with `sub_prefix`:
/// `emit` turns each matching (name, value) into reply items; MATCH applies to the name.
pub(super) fn scan_elements(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    sub_prefix: &[u8],
    cursor: u64,
    o: &ScanOpts,
    mut emit: impl FnMut(Vec<u8>, Vec<u8>, &mut Vec<Reply>),
) -> Res {
    let (lo, hi) = layout::elem_range(key, sub_prefix);
    let lo = resume(ctx, cursor, lo)?;
    let skip = layout::elem_prefix(key).len() + sub_prefix.len();
    let limit = if ctx.cursors.is_some() { o.count } else { usize::MAX };
    let (mut items, mut next) = (Vec::new(), None);
    for (n, r) in ctx.db.scan(lo, hi, false).enumerate() {
        let (k, v) = r?;
        if n == limit {
            next = Some(k);
            break;
        }
        let name = k.get(skip..).unwrap_or_default().to_vec();
        if o.pattern.as_ref().is_none_or(|p| glob(p, &name)) {
            emit(name, v, &mut items);
        }
    }
    Ok(scan_reply(ctx, next, items))
}

/// Copies every element and the meta record of `src` to `dst` (which must be absent).
fn copy_key(ctx: &mut Ctx<'_>, src: &[u8], live: &Live, dst: &[u8]) -> Result<(), Fail> {
    if !matches!(live.meta, Meta::String(_)) {
        let elems: Vec<(Vec<u8>, Vec<u8>)> = ctx.elements(src, b"", false).collect::<Result<_, _>>()?;
        for (sub, v) in elems {
            ctx.put_element(dst, &sub, &v)?;
        }
    }
    ctx.save(dst, &live.meta, live.expire, 0)
}

fn rename_generic(ctx: &mut Ctx<'_>, a: &Args<'_>, nx: bool) -> Res {
    let (src, dst) = (a.get(1), a.get(2));
    let Some(live) = ctx.lookup_for_write(src, None)? else { return fail(msg::NO_KEY) };
    if src == dst {
        return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
    }
    if let Some(d) = ctx.lookup_for_write(dst, None)? {
        if nx {
            return Ok(Reply::Int(0));
        }
        ctx.remove(dst, &d)?;
    }
    copy_key(ctx, src, &live, dst)?;
    ctx.remove(src, &live)?;
    Ok(if nx { Reply::Int(1) } else { Reply::Ok })
}

pub(super) fn rename(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    rename_generic(ctx, a, false)
}
pub(super) fn renamenx(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    rename_generic(ctx, a, true)
}

pub(super) fn copy(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (src, dst) = (a.get(1), a.get(2));
    let mut replace = false;
    let mut i = 3;
    while i < a.len() {
        match upper(a.get(i)).as_slice() {
            b"REPLACE" => replace = true,
            b"DB" if i + 1 < a.len() => {
                if parse_int(a.get(i + 1))? != 0 {
                    return fail("ERR DB index is out of range");
                }
                i += 1;
            }
            _ => return fail(msg::SYNTAX),
        }
        i += 1;
    }
    if src == dst {
        return fail("ERR source and destination objects are the same");
    }
    let Some(live) = ctx.lookup_for_write(src, None)? else { return Ok(Reply::Int(0)) };
    if let Some(d) = ctx.lookup_for_write(dst, None)? {
        if !replace {
            return Ok(Reply::Int(0));
        }
        ctx.remove(dst, &d)?;
    }
    copy_key(ctx, src, &live, dst)?;
    Ok(Reply::Int(1))
}

pub(super) fn flushall(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let options = a.from(1);
    if let Some(o) = options.first()
        && !matches!(upper(o).as_slice(), b"ASYNC" | b"SYNC")
    {
        return fail(msg::SYNTAX);
    }
    if options.len() > ctx.rules.flush_options() {
        return fail(msg::SYNTAX);
    }
    ctx.db.clear()?;
    Ok(Reply::Ok)
}

/// `__EXPIREDEL ms key [ms key …]`: the leader's sweep of due expiry index entries. Removes a key
/// only if its expiry is still that time and has passed at this entry's time; a stale index
/// entry (the TTL changed since) is dropped alone.
pub(super) fn expiredel(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut n = 0;
    for pair in a.from(1).chunks_exact(2) {
        let [ms, key] = pair else { continue };
        let Some(at) = std::str::from_utf8(ms).ok().and_then(|s| s.parse::<u64>().ok()) else {
            return fail(msg::SYNTAX);
        };
        let raw = ctx.db.get(&layout::meta_key(key))?;
        match raw {
            Some(s) if s.expire_at_ms == at && at <= ctx.now() => {
                let live = Live { meta: Meta::decode(&s.value)?, expire: at };
                ctx.remove(key, &live)?;
                n += 1;
            }
            Some(s) if s.expire_at_ms == at => {}
            _ => ctx.db.delete(&layout::expiry_key(at, key))?,
        }
    }
    Ok(Reply::Int(n))
}

/// `__VERSIONS key …`: the timestamp of each key's last change (0 if never), for WATCH.
pub(super) fn versions(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut out = Vec::new();
    for k in a.from(1) {
        out.push(Reply::Int(ctx.db.version(&layout::meta_key(k))? as i64));
    }
    Ok(Reply::Array(out))
}
