//! Number text as glibc's `strtod` and `strtold` read it in the C locale, for the commands whose
//! Redis implementation calls them: ZADD and ZINCRBY scores (`string2d`), the bounds of a score
//! range (`zslParseRange`), INCRBYFLOAT and HINCRBYFLOAT (`string2ld`, see [`crate::longdouble`]).
//!
//! Why not Rust's `f64::from_str`: it refuses hexadecimal floats (`0x1p4`, `0x10`), which Redis
//! accepts, and reads `1e400` as infinity and `1e-400` as zero, which `strtod` reports as range
//! errors and Redis therefore refuses. Why not the C library itself: every replica must read the
//! same bits whatever libc it runs on.

use std::cmp::Ordering;

/// What `strtod` finds at the start of some text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// A leading minus sign.
    pub neg: bool,
    /// The number after the sign.
    pub number: Number<'a>,
    /// Bytes consumed, leading white space and sign included (`strtod`'s `endptr`).
    pub end: usize,
}

/// The number of a [`Scan`], before it is rounded to any format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Number<'a> {
    /// `inf` or `infinity`, in any case.
    Infinity,
    /// `nan` or `nan(chars)`. Redis refuses NaN everywhere.
    Nan,
    /// `digits[.digits][(e|E)[sign]digits]` (at least one digit), exactly as consumed.
    Decimal(&'a [u8]),
    /// A hexadecimal float, `0x` `hexdigits[.hexdigits][(p|P)[sign]digits]`: the value
    /// `wide × 2^exp`, plus a nonzero tail below `wide` when `sticky` (more than 128 bits of digits).
    Hex {
        /// The leading hex digits, up to 128 bits of them.
        wide: u128,
        /// The binary exponent of `wide`'s lowest bit.
        exp: i64,
        /// Nonzero digits were dropped below `wide`.
        sticky: bool,
    },
}

/// Exponents saturate here: far beyond any finite double or long double, and far from overflowing
/// an `i64` once the digits' own scale is added.
const EXP_CAP: i64 = 1 << 40;

/// C's `isspace` in the C locale.
pub(crate) fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Scans the longest number at the start of `b` as `strtod` does, after leading white space when
/// `skip_space`; `None` when `strtod` would convert nothing (it then returns 0 and sets `endptr`
/// to the start of the text, before any white space).
pub fn scan(b: &[u8], skip_space: bool) -> Option<Scan<'_>> {
    let mut i = 0;
    if skip_space {
        while b.get(i).copied().is_some_and(is_c_space) {
            i += 1;
        }
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let rest = b.get(i..).unwrap_or_default();
    let starts = |word: &[u8]| rest.get(..word.len()).is_some_and(|p| p.eq_ignore_ascii_case(word));
    let (number, len) = if starts(b"infinity") {
        (Number::Infinity, 8)
    } else if starts(b"inf") {
        (Number::Infinity, 3)
    } else if starts(b"nan") {
        // `nan(n-char-sequence)`; without its closing parenthesis only `nan` is consumed.
        let inner = rest.get(4..).unwrap_or_default();
        let chars = inner.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        let closed = rest.get(3) == Some(&b'(') && inner.get(chars) == Some(&b')');
        (Number::Nan, if closed { 5 + chars } else { 3 })
    } else if let Some((wide, exp, sticky, len)) =
        rest.strip_prefix(b"0x").or_else(|| rest.strip_prefix(b"0X")).and_then(hex)
    {
        (Number::Hex { wide, exp, sticky }, 2 + len)
    } else {
        let len = decimal_len(rest)?;
        (Number::Decimal(rest.get(..len)?), len)
    };
    Some(Scan { neg, number, end: i + len })
}

/// An optional exponent at the start of `s` after its marker (`e` or `p`): `[sign]digits`, its
/// value (saturated) and length; `None` without a digit, in which case the marker is not consumed.
fn exponent(s: &[u8]) -> Option<(i64, usize)> {
    let (neg, sign) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let digits = s.get(sign..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let e = s.get(sign..sign + digits)?.iter().fold(0i64, |acc, d| (acc * 10 + i64::from(d - b'0')).min(EXP_CAP));
    Some((if neg { -e } else { e }, sign + digits))
}

/// The significant digits of a scanned [`Number::Decimal`] (as values 0–9, leading zeros dropped,
/// so a zero has none) and the power of ten they are scaled by. Total on any text: bytes that are
/// neither digits nor the point (which a scanned decimal has none of) are skipped.
pub fn decimal_digits(text: &[u8]) -> (Vec<u8>, i64) {
    let (mantissa, mut exp10) = split_exponent(text);
    let mut digits = Vec::with_capacity(mantissa.len());
    let mut dot = false;
    for &c in mantissa {
        if c == b'.' {
            dot = true;
            continue;
        }
        let Some(d) = char::from(c).to_digit(10) else { continue };
        if !(digits.is_empty() && d == 0) {
            digits.push(d as u8);
        }
        if dot {
            exp10 -= 1;
        }
    }
    (digits, exp10)
}

/// A scanned decimal's mantissa text and its exponent (0 without one).
fn split_exponent(text: &[u8]) -> (&[u8], i64) {
    match text.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(at) => {
            let (mantissa, rest) = text.split_at(at);
            (mantissa, exponent(rest.get(1..).unwrap_or_default()).map_or(0, |(e, _)| e))
        }
        None => (text, 0),
    }
}

/// The length of the decimal number at the start of `s`; `None` without a digit.
fn decimal_len(s: &[u8]) -> Option<usize> {
    let (mut i, mut seen, mut dot) = (0, false, false);
    while let Some(&c) = s.get(i) {
        match c {
            b'0'..=b'9' => seen = true,
            b'.' if !dot => dot = true,
            _ => break,
        }
        i += 1;
    }
    if !seen {
        return None;
    }
    if matches!(s.get(i), Some(b'e' | b'E'))
        && let Some((_, n)) = exponent(s.get(i + 1..).unwrap_or_default())
    {
        i += 1 + n;
    }
    Some(i)
}

/// The hexadecimal float after `0x`: (wide, exp, sticky, length); `None` without a hex digit (the
/// text then reads as the decimal `0` followed by an `x`).
fn hex(s: &[u8]) -> Option<(u128, i64, bool, usize)> {
    let (mut wide, mut exp, mut sticky) = (0u128, 0i64, false);
    let (mut i, mut seen, mut dot) = (0, false, false);
    while let Some(&c) = s.get(i) {
        if c == b'.' && !dot {
            dot = true;
            i += 1;
            continue;
        }
        let Some(d) = char::from(c).to_digit(16) else { break };
        seen = true;
        if wide >> 124 == 0 {
            wide = wide << 4 | u128::from(d);
            if dot {
                exp -= 4;
            }
        } else {
            // 128 bits are held: a digit left of the point scales the value, one right of it
            // only decides the rounding.
            sticky |= d != 0;
            if !dot {
                exp += 4;
            }
        }
        i += 1;
    }
    if !seen {
        return None;
    }
    if matches!(s.get(i), Some(b'p' | b'P'))
        && let Some((e, n)) = exponent(s.get(i + 1..).unwrap_or_default())
    {
        exp += e;
        i += 1 + n;
    }
    Some((wide, exp, sticky, i))
}

/// A binary floating-point format: finite values are `mant × 2^exp` with a mantissa of `bits`
/// bits (its top bit set, except for subnormals, which have `exp == min_exp`) and
/// `min_exp ≤ exp ≤ max_exp`.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Mantissa bits, the leading one included (at most 64).
    pub bits: u32,
    /// The exponent of the smallest subnormal.
    pub min_exp: i64,
    /// The exponent of the largest finite value.
    pub max_exp: i64,
}

/// IEEE 754 binary64 (`double`).
pub const DOUBLE: Format = Format { bits: 53, min_exp: -1074, max_exp: 1023 - 52 };

/// The value overflows the format (`strtod` returns ±HUGE_VAL and sets `ERANGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Rounds `wide × 2^exp` (plus a nonzero tail below it when `sticky`) to `format`, to nearest
/// with ties to even: `(mant, exp)`, where a zero `mant` means the value rounded to zero.
pub fn round(format: Format, wide: u128, exp: i64, sticky: bool) -> Result<(u64, i64), Overflow> {
    if wide == 0 {
        return Ok((0, 0));
    }
    let lz = wide.leading_zeros();
    let m = wide << lz;
    // Value = m × 2^e with m's top bit at 127; a normal result keeps m's top `bits` bits.
    let e = exp - i64::from(lz);
    let mut drop = u64::from(128 - format.bits);
    let mut out_exp = e + drop as i64;
    if out_exp < format.min_exp {
        drop += (format.min_exp - out_exp) as u64;
        out_exp = format.min_exp;
    }
    let (mut mant, half) = if drop >= 129 {
        (0u128, Ordering::Less)
    } else if drop == 128 {
        (0u128, cmp_half(m, 1u128 << 127, sticky))
    } else {
        let below = m & ((1u128 << drop) - 1);
        (m >> drop, cmp_half(below, 1u128 << (drop - 1), sticky))
    };
    let up = match half {
        Ordering::Greater => true,
        Ordering::Equal => mant & 1 == 1,
        Ordering::Less => false,
    };
    if up {
        mant += 1;
        if mant == 1u128 << format.bits {
            mant = 1u128 << (format.bits - 1);
            out_exp += 1;
        }
    }
    if out_exp > format.max_exp {
        return Err(Overflow);
    }
    if mant == 0 {
        return Ok((0, 0));
    }
    Ok((u64::try_from(mant).map_err(|_| Overflow)?, out_exp))
}

/// Compares the dropped bits (and a sticky tail below them) with half a unit.
fn cmp_half(below: u128, half: u128, sticky: bool) -> Ordering {
    match below.cmp(&half) {
        Ordering::Equal if sticky => Ordering::Greater,
        o => o,
    }
}

/// The double a scan reads as, and whether `strtod` would report a range error (an overflow to
/// infinity, or a nonzero number that rounds to zero); `None` for NaN.
fn double(scan: &Scan<'_>) -> Option<(f64, bool)> {
    let sign = |v: f64| if scan.neg { -v } else { v };
    match &scan.number {
        Number::Nan => None,
        Number::Infinity => Some((sign(f64::INFINITY), false)),
        Number::Decimal(text) => {
            // Rust's parser rounds correctly, as glibc's does, and accepts every text
            // `decimal_len` does.
            let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
            // Only a zero result can be an underflow; the digits are looked at only then.
            let underflow = v == 0.0 && split_exponent(text).0.iter().any(|c| matches!(c, b'1'..=b'9'));
            Some((sign(v), v.is_infinite() || underflow))
        }
        Number::Hex { wide, exp, sticky } => Some(match round(DOUBLE, *wide, *exp, *sticky) {
            Err(Overflow) => (sign(f64::INFINITY), true),
            Ok((0, _)) => (sign(0.0), *wide != 0),
            Ok((mant, e)) => (sign(from_parts(mant, e)), false),
        }),
    }
}

/// The double `mant × 2^exp` of a [`DOUBLE`] rounding.
fn from_parts(mant: u64, exp: i64) -> f64 {
    const FRACTION: u64 = (1 << 52) - 1;
    if mant > FRACTION {
        // Normal: the leading one is implicit, the exponent biased by 1023 for a 1.f mantissa.
        f64::from_bits(((exp + 52 + 1023) as u64) << 52 | (mant & FRACTION))
    } else {
        // Subnormal: exp is DOUBLE.min_exp, 2^-1074, the unit of the raw fraction.
        f64::from_bits(mant)
    }
}

/// A score as Redis's `string2d` reads it (ZADD, ZINCRBY): the whole text is one number, with no
/// leading white space, and neither NaN nor a range error.
pub fn string2d(b: &[u8]) -> Option<f64> {
    let s = scan(b, false)?;
    if s.end != b.len() {
        return None;
    }
    match double(&s)? {
        (_, true) => None,
        (v, false) => Some(v),
    }
}

/// A score range bound as Redis's `zslParseRange` reads it (after its `(`): `strtod` with only
/// the character after the number checked, so leading white space is skipped, text after an
/// embedded NUL is ignored, an empty bound is 0, and an out-of-range number is infinity or zero.
pub fn range_bound(b: &[u8]) -> Option<f64> {
    let Some(s) = scan(b, true) else {
        // No conversion: 0, and `endptr` is the start of the text.
        return matches!(b.first(), None | Some(0)).then_some(0.0);
    };
    if !matches!(b.get(s.end), None | Some(0)) {
        return None;
    }
    double(&s).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scores_read_as_redis_7_reads_them() {
        // Each pair was checked against redis-server 7.0.15 (`ZADD z <text> m`, then ZSCORE).
        for (text, want) in [
            ("0x10", 16.0),
            ("0X1P4", 16.0),
            ("0x1.8p1", 3.0),
            ("-0x.8", -0.5),
            ("0x1p-2", 0.25),
            ("0x1.fffffffffffffp1023", f64::MAX),
            ("0x0.0000000000001p-1022", 5e-324),
            ("0x1.00000000000008p0", 1.0),
            ("0x1.00000000000018p0", 1.000_000_000_000_000_4),
            ("0x1.fffffffffffff8p1", 4.0),
            ("0x1.000000000000080000000000000000001p0", 1.000_000_000_000_000_2),
            ("1e-310", 1e-310),
            ("+5", 5.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("1.e1", 10.0),
            ("inFinity", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("0e-99999", 0.0),
        ] {
            assert_eq!(string2d(text.as_bytes()), Some(want), "{text}");
        }
        for text in [
            "",
            " 5",
            "5 ",
            "1e400",
            "-1e400",
            "1e-400",
            "0x1p1024",
            "0x1p-1080",
            "nan",
            "-nan",
            "nan(1)",
            "1_0",
            "0x",
            "0x1p",
            "0x1p+",
            "0x.p1",
            "infinit",
            "1e",
            "1e+",
            ".",
            "1\u{0}",
            "0xg",
        ] {
            assert_eq!(string2d(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn range_bounds_read_as_zsl_parse_range_reads_them() {
        // Checked against redis-server 7.0.15 with ZCOUNT.
        for (text, want) in [
            (&b" 1"[..], 1.0),
            (b"", 0.0),
            (b"\t-2", -2.0),
            (b"0x3", 3.0),
            (b"1e400", f64::INFINITY),
            (b"-1e400", f64::NEG_INFINITY),
            (b"1e-400", 0.0),
            (b"2\0junk", 2.0),
            (b"\0", 0.0),
        ] {
            assert_eq!(range_bound(text), Some(want), "{text:?}");
        }
        for text in [&b"1 "[..], b" ", b"nan", b"x", b"1e", b" \0"] {
            assert_eq!(range_bound(text), None, "{text:?}");
        }
    }

    #[test]
    fn scans_stop_where_strtod_stops() {
        let end = |t: &str| scan(t.as_bytes(), true).map(|s| s.end);
        assert_eq!(end("0x"), Some(1), "the decimal 0, then an x");
        assert_eq!(end("0x1p"), Some(3));
        assert_eq!(end("1e+"), Some(1));
        assert_eq!(end("infinit"), Some(3));
        assert_eq!(end("nan(ab_1)x"), Some(9));
        assert_eq!(end("nan(ab"), Some(3));
        assert_eq!(end("  -1.5e3x"), Some(8));
        assert_eq!(end("- 1"), None);
        assert_eq!(end(""), None);
    }

    proptest! {
        /// A double printed as a hexadecimal float reads back as itself, and as a decimal it
        /// reads as Rust's own parser reads it.
        #[test]
        fn every_double_reads_back(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            let hex = hex_text(v);
            prop_assert_eq!(string2d(hex.as_bytes()).map(f64::to_bits), Some(v.to_bits()), "{}", hex);
            let dec = format!("{v:e}");
            prop_assert_eq!(string2d(dec.as_bytes()).map(f64::to_bits), Some(v.to_bits()), "{}", dec);
        }

        /// Hexadecimal digits beyond 128 bits only decide the rounding. The reference folds them
        /// into the lowest bit of the first 128, which is at least 12 bits below the rounding
        /// position, so the integer-to-double conversion (nearest, ties to even) rounds exactly.
        #[test]
        fn long_hex_mantissas_round_to_nearest_even(top in 1u64.., tail in any::<u64>(), more in any::<u64>()) {
            let text = format!("0x{top:x}{tail:016x}{more:016x}p-128");
            let a = u128::from(top) << 64 | u128::from(tail);
            let want = ((a | u128::from(more != 0)) as f64) / 18_446_744_073_709_551_616.0;
            prop_assert_eq!(string2d(text.as_bytes()), Some(want), "{}", text);
        }

        #[test]
        fn any_bytes_scan_without_panicking(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = string2d(&b);
            let _ = range_bound(&b);
            let _ = decimal_digits(&b);
            if let Some(s) = scan(&b, true) {
                prop_assert!(s.end <= b.len());
            }
        }
    }

    /// `v` as C's `%a` prints it.
    fn hex_text(v: f64) -> String {
        let bits = v.to_bits();
        let sign = if bits >> 63 == 1 { "-" } else { "" };
        let exp = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1 << 52) - 1);
        if exp == 0 { format!("{sign}0x0.{frac:013x}p-1022") } else { format!("{sign}0x1.{frac:013x}p{}", exp - 1023) }
    }
}
