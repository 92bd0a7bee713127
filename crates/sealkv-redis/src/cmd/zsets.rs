//! Sorted-set commands. Each member has two elements: `0x00 ‖ member → score` for point
//! lookups and `0x01 ‖ sortable(score) ‖ member → ∅` ordered by (score, member) for ranges, so
//! ZADD/ZREM/ZSCORE are point operations and score ranges are one range scan. Rank operations
//! walk the index from one end: O(rank), where Redis's skiplist is O(log n).

use std::ops::Bound;

use super::Args;
use super::keys::{element_scan, empty_page, scan_elements};
use super::strings::range;
use crate::keyspace::{Ctx, Fail, Live, Res, count_of, fail, msg, parse_int, upper};
use crate::layout::{self, Kind, Meta, sortable, unsortable};
use crate::reply::{Reply, format_double};
use crate::rules::Rules;

const BY_MEMBER: u8 = 0x00;
const BY_SCORE: u8 = 0x01;

fn member_sub(m: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(m.len() + 1);
    v.push(BY_MEMBER);
    v.extend_from_slice(m);
    v
}

fn index_sub(score: f64, m: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(m.len() + 9);
    v.push(BY_SCORE);
    v.extend_from_slice(&sortable(score));
    v.extend_from_slice(m);
    v
}

fn decode_score(b: &[u8]) -> Result<f64, Fail> {
    let arr: [u8; 8] = b.try_into().map_err(|_| Fail::Reply("ERR corrupt sorted-set score".into()))?;
    Ok(f64::from_bits(u64::from_be_bytes(arr)))
}

fn score_of(ctx: &Ctx<'_>, key: &[u8], m: &[u8]) -> Result<Option<f64>, Fail> {
    ctx.element(key, &member_sub(m))?.map(|b| decode_score(&b)).transpose()
}

fn put_member(ctx: &mut Ctx<'_>, key: &[u8], m: &[u8], score: f64, old: Option<f64>) -> Result<(), Fail> {
    let score = ctx.rules.stored_score(score);
    if let Some(o) = old {
        ctx.delete_element(key, &index_sub(o, m))?;
    }
    ctx.put_element(key, &member_sub(m), &score.to_bits().to_be_bytes())?;
    ctx.put_element(key, &index_sub(score, m), b"")
}

fn del_member(ctx: &mut Ctx<'_>, key: &[u8], m: &[u8], score: f64) -> Result<(), Fail> {
    ctx.delete_element(key, &member_sub(m))?;
    ctx.delete_element(key, &index_sub(score, m))
}

/// (member, score) in score order (or reverse) between index bounds.
fn walk<'c>(
    ctx: &'c Ctx<'_>,
    key: &[u8],
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    rev: bool,
) -> impl Iterator<Item = Result<(Vec<u8>, f64), Fail>> + 'c {
    let skip = layout::elem_prefix(key).len() + 1;
    ctx.db.scan(lo, hi, rev).map(move |r| {
        let (k, _) = r?;
        let sub = k.get(skip..).unwrap_or_default();
        let (s, m) = sub.split_first_chunk::<8>().ok_or(Fail::Reply("ERR corrupt sorted-set index".into()))?;
        Ok((m.to_vec(), unsortable(*s)))
    })
}

fn whole_index(key: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    layout::elem_range(key, &[BY_SCORE])
}

/// A score bound: value and whether it is exclusive.
#[derive(Clone, Copy)]
struct ScoreBound(f64, bool);

fn score_bound(ctx: &Ctx<'_>, b: &[u8]) -> Result<ScoreBound, Fail> {
    let bad = || Fail::Reply("ERR min or max is not a float".into());
    match b.strip_prefix(b"(") {
        Some(rest) => Ok(ScoreBound(ctx.rules.range_bound(rest).ok_or_else(bad)?, true)),
        None => Ok(ScoreBound(ctx.rules.range_bound(b).ok_or_else(bad)?, false)),
    }
}

impl ScoreBound {
    fn above_min(self, s: f64) -> bool {
        if self.1 { s > self.0 } else { s >= self.0 }
    }
    fn below_max(self, s: f64) -> bool {
        if self.1 { s < self.0 } else { s <= self.0 }
    }
}

/// Index bounds that cover scores in [min, max] (exclusivity is filtered by the caller). The index
/// orders -0 below 0, so from level 3 a zero bound reaches both zeros: the lower from -0, the
/// upper to 0.
fn score_range(rules: Rules, key: &[u8], min: f64, max: f64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (min, max) = if rules.zeros_are_one_score() {
        (if min == 0.0 { -0.0 } else { min }, if max == 0.0 { 0.0 } else { max })
    } else {
        (min, max)
    };
    let lo = Bound::Included(layout::elem_key(key, &[&[BY_SCORE][..], &sortable(min)].concat()));
    let top = u64::from_be_bytes(sortable(max));
    let hi = match top.checked_add(1) {
        Some(n) => Bound::Excluded(layout::elem_key(key, &[&[BY_SCORE][..], &n.to_be_bytes()].concat())),
        None => whole_index(key).1,
    };
    (lo, hi)
}

/// Members with scores in [min, max] in order (or reverse).
fn by_score(
    ctx: &Ctx<'_>,
    key: &[u8],
    min: ScoreBound,
    max: ScoreBound,
    rev: bool,
) -> Result<Vec<(Vec<u8>, f64)>, Fail> {
    if min.0 > max.0 {
        return Ok(Vec::new());
    }
    let (lo, hi) = score_range(ctx.rules, key, min.0, max.0);
    walk(ctx, key, lo, hi, rev)
        .filter(|r| r.as_ref().map_or(true, |(_, s)| min.above_min(*s) && max.below_max(*s)))
        .collect()
}

/// A lex bound: `-`, `+`, `[x` or `(x`.
#[derive(Clone)]
enum Lex {
    Min,
    Max,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

fn lex_bound(b: &[u8]) -> Result<Lex, Fail> {
    match b.split_first() {
        Some((b'-', [])) => Ok(Lex::Min),
        Some((b'+', [])) => Ok(Lex::Max),
        Some((b'[', rest)) => Ok(Lex::Incl(rest.to_vec())),
        Some((b'(', rest)) => Ok(Lex::Excl(rest.to_vec())),
        _ => fail("ERR min or max not valid string range item"),
    }
}

impl Lex {
    /// Where the bound sits among all strings: `-` below every string, `+` above.
    fn cmp_bound(&self, o: &Lex) -> std::cmp::Ordering {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match (self, o) {
            (Lex::Min, Lex::Min) | (Lex::Max, Lex::Max) => Equal,
            (Lex::Min, _) | (_, Lex::Max) => Less,
            (Lex::Max, _) | (_, Lex::Min) => Greater,
            (Lex::Incl(a) | Lex::Excl(a), Lex::Incl(b) | Lex::Excl(b)) => a.cmp(b),
        }
    }

    fn exclusive(&self) -> bool {
        matches!(self, Lex::Excl(_))
    }
}

fn gte_min(m: &[u8], min: &Lex) -> bool {
    match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::Incl(x) => m >= x.as_slice(),
        Lex::Excl(x) => m > x.as_slice(),
    }
}

fn lte_max(m: &[u8], max: &Lex) -> bool {
    match max {
        Lex::Max => true,
        Lex::Min => false,
        Lex::Incl(x) => m <= x.as_slice(),
        Lex::Excl(x) => m < x.as_slice(),
    }
}

/// A BYLEX range over `all` (the members in score order), walked as Redis walks a sorted set of
/// up to 128 members: from the first member at or above `min` (the last at or below `max` with
/// REV), past `offset` members without looking at them, then while members stay within the
/// other bound. With equal scores (what BYLEX is for) that is exactly the members in range; with
/// mixed scores Redis's answer is this walk, and so is ours.
fn lex_walk(
    all: Vec<(Vec<u8>, f64)>,
    min: &Lex,
    max: &Lex,
    rev: bool,
    limit: Option<(i64, i64)>,
) -> Vec<(Vec<u8>, f64)> {
    let (offset, count) = limit.unwrap_or((0, -1));
    let order = min.cmp_bound(max);
    let empty = order.is_gt() || (order.is_eq() && (min.exclusive() || max.exclusive()));
    let (Some((first, _)), Some((last, _))) = (all.first(), all.last()) else { return Vec::new() };
    if empty || offset < 0 || !gte_min(last, min) || !lte_max(first, max) {
        return Vec::new();
    }
    let take = if count < 0 { usize::MAX } else { count as usize };
    let offset = offset as usize;
    if rev {
        let Some(start) = all.iter().rposition(|(m, _)| lte_max(m, max)) else { return Vec::new() };
        if !all.get(start).is_some_and(|(m, _)| gte_min(m, min)) || offset > start {
            return Vec::new();
        }
        let mut out: Vec<_> = all.into_iter().take(start - offset + 1).collect();
        out.reverse();
        out.into_iter().take_while(|(m, _)| gte_min(m, min)).take(take).collect()
    } else {
        let Some(start) = all.iter().position(|(m, _)| gte_min(m, min)) else { return Vec::new() };
        if !all.get(start).is_some_and(|(m, _)| lte_max(m, max)) {
            return Vec::new();
        }
        all.into_iter().skip(start + offset).take_while(|(m, _)| lte_max(m, max)).take(take).collect()
    }
}

/// What a range selects by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Rank,
    Score,
    Lex,
}

struct RangeSpec {
    by: By,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

/// The members a range selects, in reply order. `lo`/`hi` are in ascending order already.
fn select(ctx: &Ctx<'_>, key: &[u8], lo: &[u8], hi: &[u8], spec: &RangeSpec) -> Result<Vec<(Vec<u8>, f64)>, Fail> {
    // Bounds are parsed before the key is looked up, as Redis does: a bad bound is an error
    // whether the key is absent, a sorted set or of another type.
    let bounds = match spec.by {
        By::Rank => Bounds::Rank(parse_int(lo)?, parse_int(hi)?),
        By::Score => Bounds::Score(score_bound(ctx, lo)?, score_bound(ctx, hi)?),
        By::Lex => Bounds::Lex(lex_bound(lo)?, lex_bound(hi)?),
    };
    let Some(live) = ctx.lookup_kind(key, Kind::ZSet)? else { return Ok(Vec::new()) };
    let mut out = match bounds {
        Bounds::Rank(s, e) => {
            let Some((s, e)) = range(s, e, live.count() as usize) else { return Ok(Vec::new()) };
            let (l, h) = whole_index(key);
            walk(ctx, key, l, h, spec.rev).skip(s).take(e - s + 1).collect::<Result<Vec<_>, _>>()?
        }
        Bounds::Score(min, max) => by_score(ctx, key, min, max, spec.rev)?,
        Bounds::Lex(min, max) => {
            let (l, h) = whole_index(key);
            let all = walk(ctx, key, l, h, false).collect::<Result<Vec<_>, _>>()?;
            return Ok(lex_walk(all, &min, &max, spec.rev, spec.limit));
        }
    };
    if let Some((off, count)) = spec.limit {
        if off < 0 {
            return Ok(Vec::new());
        }
        let it = out.into_iter().skip(off as usize);
        out = if count < 0 { it.collect() } else { it.take(count as usize).collect() };
    }
    Ok(out)
}

/// A parsed range of ZRANGE and its relatives.
enum Bounds {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(Lex, Lex),
}

fn members_reply(items: Vec<(Vec<u8>, f64)>, withscores: bool) -> Reply {
    if withscores {
        Reply::Pairs(items.into_iter().map(|(m, s)| (Reply::Bulk(m), Reply::Double(s))).collect())
    } else {
        Reply::Array(items.into_iter().map(|(m, _)| Reply::Bulk(m)).collect())
    }
}

/// Parses `[BYSCORE|BYLEX] [REV] [LIMIT o c] [WITHSCORES]` from `from` on.
fn range_opts(a: &Args<'_>, from: usize, mut spec: RangeSpec, allow_by: bool) -> Result<RangeSpec, Fail> {
    let mut i = from;
    while i < a.len() {
        match upper(a.get(i)).as_slice() {
            b"BYSCORE" if allow_by && spec.by == By::Rank => spec.by = By::Score,
            b"BYLEX" if allow_by && spec.by == By::Rank => spec.by = By::Lex,
            b"REV" if allow_by => spec.rev = true,
            b"WITHSCORES" => spec.withscores = true,
            b"LIMIT" if i + 2 < a.len() => {
                spec.limit = Some((parse_int(a.get(i + 1))?, parse_int(a.get(i + 2))?));
                i += 2;
            }
            _ => return fail(msg::SYNTAX),
        }
        i += 1;
    }
    if spec.limit.is_some() && spec.by == By::Rank {
        return fail("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX");
    }
    if spec.withscores && spec.by == By::Lex {
        return fail("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    Ok(spec)
}

fn spec(by: By, rev: bool) -> RangeSpec {
    RangeSpec { by, rev, limit: None, withscores: false }
}

pub(super) fn zrange(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let s = range_opts(a, 4, spec(By::Rank, false), true)?;
    // With REV, BYSCORE and BYLEX take (max, min); rank ranges stay (start, stop).
    let (lo, hi) = if s.rev && s.by != By::Rank { (a.get(3), a.get(2)) } else { (a.get(2), a.get(3)) };
    Ok(members_reply(select(ctx, a.get(1), lo, hi, &s)?, s.withscores))
}

pub(super) fn zrangebyscore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let s = range_opts(a, 4, spec(By::Score, false), false)?;
    Ok(members_reply(select(ctx, a.get(1), a.get(2), a.get(3), &s)?, s.withscores))
}

pub(super) fn zrevrangebyscore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let s = range_opts(a, 4, spec(By::Score, true), false)?;
    Ok(members_reply(select(ctx, a.get(1), a.get(3), a.get(2), &s)?, s.withscores))
}

pub(super) fn zrevrange(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let s = range_opts(a, 4, spec(By::Rank, true), false)?;
    Ok(members_reply(select(ctx, a.get(1), a.get(2), a.get(3), &s)?, s.withscores))
}

pub(super) fn zrangebylex(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let s = range_opts(a, 4, spec(By::Lex, false), false)?;
    Ok(members_reply(select(ctx, a.get(1), a.get(2), a.get(3), &s)?, false))
}

pub(super) fn zadd(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) = (false, false, false, false, false, false);
    let mut i = 2;
    while i < a.len() {
        match upper(a.get(i)).as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = a.from(i);
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return fail(msg::SYNTAX);
    }
    if nx && xx {
        return fail("ERR XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return fail("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && pairs.len() > 2 {
        return fail("ERR INCR option supports a single increment-element pair");
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks_exact(2) {
        if let [s, m] = p {
            parsed.push((ctx.rules.score(s).ok_or(Fail::Reply(msg::NOT_FLOAT.into()))?, m.clone()));
        }
    }
    let live = ctx.lookup_for_write(key, Some(Kind::ZSet))?;
    let mut n = count_of(&live);
    let (mut added, mut changed) = (0i64, 0i64);
    let mut incr_result = None;
    for (score, m) in parsed {
        let old = score_of(ctx, key, &m)?;
        if (nx && old.is_some()) || (xx && old.is_none()) {
            continue;
        }
        let new = if incr { old.unwrap_or(0.0) + score } else { score };
        if new.is_nan() {
            return fail("ERR resulting score is not a number (NaN)");
        }
        if let Some(o) = old {
            if (gt && new <= o) || (lt && new >= o) {
                continue;
            }
            if new != o {
                put_member(ctx, key, &m, new, Some(o))?;
                changed += 1;
            }
        } else {
            put_member(ctx, key, &m, new, None)?;
            n += 1;
            added += 1;
        }
        incr_result = Some(new);
    }
    // Only a change rewrites the meta record: its version is what WATCH compares, and Redis
    // does not count a ZADD that changed nothing as a modification.
    if added + changed > 0 {
        let expire = live.as_ref().map_or(0, |l| l.expire);
        ctx.save(key, &Meta::ZSet(n), expire, expire)?;
    }
    Ok(if incr {
        incr_result.map_or(Reply::Nil, Reply::Double)
    } else {
        Reply::Int(added + if ch { changed } else { 0 })
    })
}

pub(super) fn zincrby(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let by = ctx.rules.score(a.get(2)).ok_or(Fail::Reply(msg::NOT_FLOAT.into()))?;
    let m = a.get(3);
    let live = ctx.lookup_for_write(key, Some(Kind::ZSet))?;
    let old = if live.is_some() { score_of(ctx, key, m)? } else { None };
    let new = old.unwrap_or(0.0) + by;
    if new.is_nan() {
        return fail("ERR resulting score is not a number (NaN)");
    }
    // An increment that leaves the score as it was is no modification (WATCH stays valid).
    if old != Some(new) {
        put_member(ctx, key, m, new, old)?;
        let n = count_of(&live) + u64::from(old.is_none());
        let expire = live.as_ref().map_or(0, |l| l.expire);
        ctx.save(key, &Meta::ZSet(n), expire, expire)?;
    }
    Ok(Reply::Double(new))
}

/// Removes members (with known scores); saves or removes the key.
fn remove_members(ctx: &mut Ctx<'_>, key: &[u8], live: &Live, gone: &[(Vec<u8>, f64)]) -> Result<(), Fail> {
    for (m, s) in gone {
        del_member(ctx, key, m, *s)?;
    }
    let n = live.count().saturating_sub(gone.len() as u64);
    ctx.save_or_remove(key, Meta::ZSet(n), live)
}

pub(super) fn zrem(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::ZSet))? else { return Ok(Reply::Int(0)) };
    let mut gone: Vec<(Vec<u8>, f64)> = Vec::new();
    for m in a.from(2) {
        if gone.iter().any(|(g, _)| g == m) {
            continue;
        }
        if let Some(s) = score_of(ctx, key, m)? {
            gone.push((m.clone(), s));
        }
    }
    remove_members(ctx, key, &live, &gone)?;
    Ok(Reply::Int(gone.len() as i64))
}

fn zscore_of(ctx: &Ctx<'_>, key: &[u8], m: &[u8]) -> Result<Option<f64>, Fail> {
    match ctx.lookup_kind(key, Kind::ZSet)? {
        Some(_) => score_of(ctx, key, m),
        None => Ok(None),
    }
}

pub(super) fn zscore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(zscore_of(ctx, a.get(1), a.get(2))?.map_or(Reply::Nil, Reply::Double))
}

pub(super) fn zmscore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let mut out = Vec::new();
    for m in a.from(2) {
        out.push(zscore_of(ctx, a.get(1), m)?.map_or(Reply::Nil, Reply::Double));
    }
    Ok(Reply::Array(out))
}

pub(super) fn zcard(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    Ok(Reply::Int(count_of(&ctx.lookup_kind(a.get(1), Kind::ZSet)?) as i64))
}

pub(super) fn zcount(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let (min, max) = (score_bound(ctx, a.get(2))?, score_bound(ctx, a.get(3))?);
    if ctx.lookup_kind(a.get(1), Kind::ZSet)?.is_none() {
        return Ok(Reply::Int(0));
    }
    Ok(Reply::Int(by_score(ctx, a.get(1), min, max, false)?.len() as i64))
}

fn rank_generic(ctx: &mut Ctx<'_>, a: &Args<'_>, rev: bool) -> Res {
    let (key, m) = (a.get(1), a.get(2));
    let withscore = match a.from(3) {
        [] => false,
        [o] if upper(o) == b"WITHSCORE" => true,
        _ => return fail(msg::SYNTAX),
    };
    let Some(score) = zscore_of(ctx, key, m)? else {
        return Ok(if withscore { Reply::NilArray } else { Reply::Nil });
    };
    let (l, h) = whole_index(key);
    let mut rank = 0i64;
    for r in walk(ctx, key, l, h, rev) {
        let (member, _) = r?;
        if member == m {
            break;
        }
        rank += 1;
    }
    Ok(if withscore { Reply::Array(vec![Reply::Int(rank), Reply::Double(score)]) } else { Reply::Int(rank) })
}

pub(super) fn zrank(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    rank_generic(ctx, a, false)
}
pub(super) fn zrevrank(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    rank_generic(ctx, a, true)
}

fn pop_generic(ctx: &mut Ctx<'_>, a: &Args<'_>, max: bool) -> Res {
    let key = a.get(1);
    let count = a.pop_count(2)?;
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::ZSet))? else { return Ok(Reply::Array(Vec::new())) };
    let (l, h) = whole_index(key);
    let gone: Vec<(Vec<u8>, f64)> = walk(ctx, key, l, h, max).take(count.unwrap_or(1)).collect::<Result<_, _>>()?;
    remove_members(ctx, key, &live, &gone)?;
    Ok(match count {
        Some(_) => members_reply(gone, true),
        None => Reply::Array(gone.into_iter().flat_map(|(m, s)| [Reply::Bulk(m), Reply::Double(s)]).collect()),
    })
}

pub(super) fn zpopmin(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    pop_generic(ctx, a, false)
}
pub(super) fn zpopmax(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    pop_generic(ctx, a, true)
}

pub(super) fn zremrangebyscore(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let (min, max) = (score_bound(ctx, a.get(2))?, score_bound(ctx, a.get(3))?);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::ZSet))? else { return Ok(Reply::Int(0)) };
    let gone = by_score(ctx, key, min, max, false)?;
    remove_members(ctx, key, &live, &gone)?;
    Ok(Reply::Int(gone.len() as i64))
}

pub(super) fn zremrangebyrank(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let key = a.get(1);
    let (s, e) = (parse_int(a.get(2))?, parse_int(a.get(3))?);
    let Some(live) = ctx.lookup_for_write(key, Some(Kind::ZSet))? else { return Ok(Reply::Int(0)) };
    let Some((s, e)) = range(s, e, live.count() as usize) else { return Ok(Reply::Int(0)) };
    let (l, h) = whole_index(key);
    let gone: Vec<(Vec<u8>, f64)> = walk(ctx, key, l, h, false).skip(s).take(e - s + 1).collect::<Result<_, _>>()?;
    remove_members(ctx, key, &live, &gone)?;
    Ok(Reply::Int(gone.len() as i64))
}

pub(super) fn zscan(ctx: &mut Ctx<'_>, a: &Args<'_>) -> Res {
    let Some((cursor, o)) = element_scan(ctx, a, Kind::ZSet)? else { return Ok(empty_page()) };
    let mut bad = false;
    let r = scan_elements(ctx, a.get(1), &[BY_MEMBER], cursor, &o, |m, v, out| match decode_score(&v) {
        Ok(s) => {
            out.push(Reply::Bulk(m));
            out.push(Reply::bulk(format_double(s)));
        }
        Err(_) => bad = true,
    })?;
    if bad {
        return fail("ERR corrupt sorted-set score");
    }
    Ok(r)
}
