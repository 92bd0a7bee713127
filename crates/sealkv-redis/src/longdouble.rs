//! INCRBYFLOAT and HINCRBYFLOAT arithmetic as Redis does it on x86-64: in x87 extended precision
//! (a 64-bit mantissa, `long double`), parsed like `strtold`, printed like `%.17Lf` with the
//! trailing zeros trimmed. Why not `f64`: a client that adds 0.1 and 0.2 gets "0.3" from Redis
//! and would get "0.30000000000000004" from double arithmetic, and 2^63 - 1 + 100 keeps every
//! digit in Redis. Why in software: every replica must compute the same bits whatever its CPU, and
//! Rust has no `long double`.
//!
//! The text is read as `strtold` reads it ([`crate::strtod`]), hexadecimal floats included, and
//! refused where Redis's `string2ld` refuses it: NaN, a range error, leading white space, text
//! after an embedded NUL.

use std::cmp::Ordering;

use crate::strtod::{self, Format, Number};

/// Redis refuses float arguments this long or longer (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;
/// The exponent of the smallest subnormal, 2^-16445, as `mant × 2^exp` with `mant` = 1.
const MIN_EXP: i32 = -16445;
/// The largest exponent of a finite value with a 64-bit mantissa (below 2^16384).
const MAX_EXP: i32 = 16384 - 64;

/// A finite extended-precision value: `(-1)^neg × mant × 2^exp`. `mant` has its top bit set
/// except for zero and subnormals (which have `exp == MIN_EXP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ld {
    neg: bool,
    mant: u64,
    exp: i32,
}

/// A parsed number: finite, or an infinity (which no increment survives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Num {
    /// A finite value.
    Finite(Ld),
    /// `inf`, `-inf`, `infinity`.
    Infinite,
}

/// Zero: the value of an absent key or field.
pub const ZERO: Num = Num::Finite(Ld { neg: false, mant: 0, exp: 0 });

/// Parses `b` as Redis's `string2ld` does: `None` for anything that is not one whole float, for a
/// leading space, for NaN, and for values that overflow or underflow to zero. `hex`: whether
/// hexadecimal floats are read, as `strtold` (and so Redis) reads them; entries proposed under
/// command rules level 1 refused them ([`crate::rules`]).
pub fn parse(b: &[u8], hex: bool) -> Option<Num> {
    if b.is_empty() || b.len() >= MAX_CHARS {
        return None;
    }
    // `string2ld` refuses what `strtold` would skip, so no white space is skipped here.
    let s = strtod::scan(b, false)?;
    if s.end != b.len() {
        return None;
    }
    let ld = match s.number {
        Number::Nan => return None,
        Number::Infinity => return Some(Num::Infinite),
        Number::Decimal(text) => {
            let (digits, exp10) = strtod::decimal_digits(text);
            // Leading zeros are never kept, so a zero has no digits at all.
            if digits.is_empty() {
                return Some(Num::Finite(Ld { neg: s.neg, mant: 0, exp: 0 }));
            }
            from_decimal(s.neg, &digits, exp10)?
        }
        Number::Hex { wide, exp, sticky } if hex => {
            if wide == 0 {
                return Some(Num::Finite(Ld { neg: s.neg, mant: 0, exp: 0 }));
            }
            round_pack(s.neg, wide, exp, sticky)?
        }
        Number::Hex { .. } => return None,
    };
    // strtold's underflow to zero is an error for Redis; a subnormal is not.
    (ld.mant != 0).then_some(Num::Finite(ld))
}

/// The value `digits × 10^exp10`, correctly rounded (nearest, ties to even); `None` on overflow.
fn from_decimal(neg: bool, digits: &[u8], exp10: i64) -> Option<Ld> {
    // digits has no leading zero, so the value lies in [10^(magnitude-1), 10^magnitude).
    let magnitude = digits.len() as i64 + exp10;
    if magnitude > 4934 {
        return None;
    }
    if magnitude < -4952 {
        // Below half the smallest subnormal (~3.6e-4951): rounds to zero.
        return Some(Ld { neg, mant: 0, exp: 0 });
    }
    let mut d = Big::default();
    for &x in digits {
        d.mul_small(10);
        d.add_small(u64::from(x));
    }
    if exp10 >= 0 {
        d.mul_pow10(exp10 as u64);
        let (top, shift, sticky) = d.top128();
        return round_pack(neg, top, shift as i64, sticky);
    }
    let mut p = Big::from(1);
    p.mul_pow10(exp10.unsigned_abs());
    // Scale so the quotient has 119 to 121 bits: far more than 64, so the remainder only decides
    // ties and the rounding is exact.
    let s = 120 + p.bits() as i64 - d.bits() as i64;
    if s >= 0 {
        d.shl(s as u64);
    } else {
        p.shl(s.unsigned_abs());
    }
    let (q, rest) = d.div_small_quotient(&p);
    round_pack(neg, q, -s, rest)
}

/// The x87 extended format: a 64-bit mantissa, values below 2^16384, subnormals down to 2^-16445.
const EXTENDED: Format = Format { bits: 64, min_exp: MIN_EXP as i64, max_exp: MAX_EXP as i64 };

/// Rounds `wide × 2^exp` (plus a nonzero tail below it when `sticky`) to a 64-bit mantissa;
/// `None` when the result overflows.
fn round_pack(neg: bool, wide: u128, exp: i64, sticky: bool) -> Option<Ld> {
    let (mant, exp) = strtod::round(EXTENDED, wide, exp, sticky).ok()?;
    // Every exponent of the format fits an i32; a zero keeps its sign and exponent 0.
    Some(Ld { neg, mant, exp: if mant == 0 { 0 } else { i32::try_from(exp).ok()? } })
}

/// Why an increment has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFinite;

/// `a + b`, rounded to the nearest long double; an infinite operand or result has none.
pub fn add(a: Num, b: Num) -> Result<Ld, NotFinite> {
    let (Num::Finite(a), Num::Finite(b)) = (a, b) else { return Err(NotFinite) };
    if a.mant == 0 {
        return Ok(if b.mant == 0 { Ld { neg: a.neg && b.neg, mant: 0, exp: 0 } } else { b });
    }
    if b.mant == 0 {
        return Ok(a);
    }
    // Align on the larger exponent, with 62 spare bits below the larger mantissa; what the
    // smaller loses beyond them only matters as a sticky bit.
    let (hi, lo) = if a.exp >= b.exp { (a, b) } else { (b, a) };
    let diff = i64::from(hi.exp) - i64::from(lo.exp);
    let base = i64::from(hi.exp) - 62;
    let x = u128::from(hi.mant) << 62;
    let (y, sticky) = if diff <= 62 {
        (u128::from(lo.mant) << (62 - diff), false)
    } else if diff - 62 < 128 {
        let sh = (diff - 62) as u32;
        let y = u128::from(lo.mant) >> sh;
        (y, (u128::from(lo.mant) << (128 - sh)) != 0)
    } else {
        (0, true)
    };
    // A sticky tail is folded into the lowest bit: 62 guard bits keep the rounding exact.
    let y = y | u128::from(sticky);
    let (neg, sum) = if hi.neg == lo.neg {
        (hi.neg, x + y)
    } else if x >= y {
        (hi.neg, x - y)
    } else {
        (lo.neg, y - x)
    };
    if sum == 0 {
        return Ok(Ld { neg: false, mant: 0, exp: 0 });
    }
    round_pack(neg, sum, base, false).ok_or(NotFinite)
}

/// Formats like Redis's `ld2string(.., LD_STR_HUMAN)`: `%.17Lf`, trailing zeros and a bare
/// point removed, "-0" printed as "0".
pub fn format(v: Ld) -> String {
    let body = if v.mant == 0 {
        "0".to_string()
    } else if v.exp >= 0 {
        let mut b = Big::from(v.mant);
        b.shl(v.exp as u64);
        b.to_decimal()
    } else {
        // value × 10^17 = mant × 10^17 / 2^e; mant × 10^17 < 2^121 fits in a u128.
        let e = v.exp.unsigned_abs();
        let n = u128::from(v.mant) * 100_000_000_000_000_000;
        let q = if e >= 128 {
            0
        } else {
            let q = n >> e;
            let r = n & ((1u128 << e) - 1);
            let half = 1u128 << (e - 1);
            if r > half || (r == half && q & 1 == 1) { q + 1 } else { q }
        };
        let s = format!("{q:018}");
        let (int, frac) = s.split_at(s.len() - 17);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") }
    };
    if v.neg && body != "0" { format!("-{body}") } else { body }
}

/// A small unsigned big integer (little-endian 64-bit limbs), enough for exact decimal
/// conversion of long doubles (at most ~16.5k bits).
#[derive(Debug, Clone, Default)]
struct Big(Vec<u64>);

impl From<u64> for Big {
    fn from(v: u64) -> Big {
        Big(vec![v])
    }
}

impl Big {
    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn bits(&self) -> u64 {
        match self.0.last() {
            Some(&top) => (self.0.len() as u64 - 1) * 64 + u64::from(64 - top.leading_zeros()),
            None => 0,
        }
    }

    fn mul_small(&mut self, m: u64) {
        let mut carry = 0u128;
        for limb in &mut self.0 {
            let p = u128::from(*limb) * u128::from(m) + carry;
            *limb = p as u64;
            carry = p >> 64;
        }
        if carry != 0 {
            self.0.push(carry as u64);
        }
    }

    fn add_small(&mut self, a: u64) {
        let mut carry = a;
        for limb in &mut self.0 {
            let (v, o) = limb.overflowing_add(carry);
            *limb = v;
            carry = u64::from(o);
            if carry == 0 {
                return;
            }
        }
        if carry != 0 {
            self.0.push(carry);
        }
    }

    fn mul_pow10(&mut self, mut k: u64) {
        const TEN19: u64 = 10_000_000_000_000_000_000;
        while k >= 19 {
            self.mul_small(TEN19);
            k -= 19;
        }
        self.mul_small(10u64.pow(k as u32));
    }

    fn shl(&mut self, n: u64) {
        let (limbs, bits) = ((n / 64) as usize, (n % 64) as u32);
        if bits != 0 {
            let mut carry = 0u64;
            for limb in &mut self.0 {
                let next = *limb >> (64 - bits);
                *limb = (*limb << bits) | carry;
                carry = next;
            }
            if carry != 0 {
                self.0.push(carry);
            }
        }
        self.0.splice(0..0, std::iter::repeat_n(0, limbs));
    }

    fn shr1(&mut self) {
        let mut carry = 0u64;
        for limb in self.0.iter_mut().rev() {
            let next = *limb << 63;
            *limb = (*limb >> 1) | carry;
            carry = next;
        }
        self.trim();
    }

    fn bit(&self, i: u64) -> bool {
        self.0.get((i / 64) as usize).is_some_and(|l| (l >> (i % 64)) & 1 == 1)
    }

    /// The top 128 bits, how far they sit above bit 0, and whether any bit below them is set.
    fn top128(&self) -> (u128, u64, bool) {
        let bits = self.bits();
        if bits <= 128 {
            let lo = u128::from(self.0.first().copied().unwrap_or(0));
            let hi = u128::from(self.0.get(1).copied().unwrap_or(0));
            return (lo | (hi << 64), 0, false);
        }
        let shift = bits - 128;
        let mut top = 0u128;
        for i in 0..128 {
            if self.bit(shift + i) {
                top |= 1 << i;
            }
        }
        let sticky = (0..shift).any(|i| self.bit(i));
        (top, shift, sticky)
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0.len().cmp(&o.0.len()).then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn sub_assign(&mut self, o: &Big) {
        let mut borrow = false;
        for (i, limb) in self.0.iter_mut().enumerate() {
            let r = o.0.get(i).copied().unwrap_or(0);
            let (v1, b1) = limb.overflowing_sub(r);
            let (v2, b2) = v1.overflowing_sub(u64::from(borrow));
            *limb = v2;
            borrow = b1 || b2;
        }
        self.trim();
    }

    /// `self / d` for a quotient below 2^127 (the caller scales for that), and whether a
    /// remainder is left. Bit by bit: the quotient is short, whatever the operands' size.
    fn div_small_quotient(mut self, d: &Big) -> (u128, bool) {
        self.trim();
        let span = self.bits().saturating_sub(d.bits());
        let mut den = d.clone();
        den.trim();
        den.shl(span);
        let mut q = 0u128;
        for i in (0..=span).rev() {
            if self.cmp(&den) != Ordering::Less {
                self.sub_assign(&den);
                q |= 1u128 << i.min(127);
            }
            den.shr1();
        }
        (q, !self.0.is_empty())
    }

    fn to_decimal(&self) -> String {
        const TEN19: u64 = 10_000_000_000_000_000_000;
        let mut n = self.clone();
        n.trim();
        let mut chunks = Vec::new();
        while !n.0.is_empty() {
            let mut rem = 0u128;
            for limb in n.0.iter_mut().rev() {
                let cur = (rem << 64) | u128::from(*limb);
                *limb = (cur / u128::from(TEN19)) as u64;
                rem = cur % u128::from(TEN19);
            }
            n.trim();
            chunks.push(rem as u64);
        }
        let mut s = chunks.pop().map_or_else(|| "0".to_string(), |c| c.to_string());
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:019}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn incr(a: &str, b: &str) -> Option<String> {
        Some(format(add(parse(a.as_bytes(), true)?, parse(b.as_bytes(), true)?).ok()?))
    }

    /// Every expected string is what redis-server 7.0.15 (Debian 12, x86-64) answers to
    /// `SET k <a>` then `INCRBYFLOAT k <b>`.
    #[test]
    fn sums_print_as_redis_prints_them() {
        let cases = [
            ("0.1", "0.2", "0.3"),
            ("10.5", "0.1", "10.6"),
            ("10.6", "1e17", "100000000000000010.6015625"),
            ("100000000000000010.6015625", "3.0e3", "100000000000003010.6015625"),
            ("9223372036854775807", "100", "9223372036854775907"),
            ("-9223372036854775808", "-20000000000000000000", "-29223372036854775808"),
            ("5.0e3", "1", "5001"),
            ("0", "-0.0", "0"),
            ("1", "-1", "0"),
            ("3", "1.5", "4.5"),
            ("0", "1e-18", "0"),
            ("0", "-1e-18", "0"),
            ("0", "5e-17", "0.00000000000000005"),
            ("100000.1", "0", "100000.10000000000000142"),
            ("0.000003814697265625", "0", "0.00000381469726562"),
            ("1e-4950", "0", "0"),
            // Stored just below the decimal: the print rounds up to it.
            ("0.3", "0", "0.3"),
            ("-0.7", "0.000000000000000001", "-0.7"),
            // Hexadecimal floats, as strtold reads them.
            ("0x1p-2", "1", "1.25"),
            ("1.25", "0x10", "17.25"),
            ("17.25", "0x1.8", "18.75"),
            ("18.75", "0X.8P1", "19.75"),
            ("19.75", "-0x0", "19.75"),
            ("-0x3", "0.2", "-2.8"),
            ("0x1p-16445", "0", "0"),
            // 2^64 + 1 is a tie (to 2^64), 2^64 + 3 one too (to 2^64 + 4); a digit past 128 bits
            // breaks the tie of 2^64 + 1 + 2^-124 upwards.
            ("0x1.0000000000000001p64", "0", "18446744073709551616"),
            ("0x1.0000000000000003p64", "0", "18446744073709551620"),
            ("0x1.00000000000000010000000000000000001p64", "0", "18446744073709551618"),
            ("0x1.8p-16446", "0", "0"),
        ];
        for (a, b, want) in cases {
            assert_eq!(incr(a, b).as_deref(), Some(want), "{a} + {b}");
        }
    }

    #[test]
    fn huge_values_print_every_integer_digit() {
        // 2^16383 + 1 rounds to 2^16383: 4932 digits, as %.17Lf prints them.
        let s = incr("1.1897314953572317650e4932", "0").expect("finite");
        assert_eq!(s.len(), 4933);
        assert!(s.starts_with("118973149535723176"), "{}", &s[..30]);
        assert_eq!(incr("1.2e4932", "0"), None, "past LDBL_MAX is an overflow");
        assert_eq!(incr("1.1e4932", "1.1e4932"), None, "a sum past LDBL_MAX has no result");
    }

    #[test]
    fn refuses_what_redis_refuses() {
        // Each checked against redis-server 7.0.15: `SET k <text>`, then `INCRBYFLOAT k 0`.
        let bad = [
            "",
            " 1",
            "1 ",
            "x",
            "1e",
            "1e+",
            ".",
            "-",
            "+",
            "nan",
            "NaN",
            "nan(1)",
            "1.5.2",
            "1e-5000",
            "--1",
            "0x",
            "0x1p",
            "0x.p1",
            "0x1p-16446",
            "0x1p16384",
            "1\u{0}1",
            "infinit",
        ];
        for bad in bad {
            assert!(parse(bad.as_bytes(), true).is_none(), "{bad:?}");
        }
        let good = [
            ".5",
            "5.",
            "+1",
            "-1",
            "1E3",
            "1e+3",
            "inf",
            "-Infinity",
            "007",
            "1e-4950",
            "0x10",
            "-0X1P4",
            "0x1p16383",
            "0x.8",
        ];
        for good in good {
            assert!(parse(good.as_bytes(), true).is_some(), "{good:?}");
        }
        // Command rules level 1 read no hexadecimal float.
        for hex in ["0x10", "-0X1P4", "0x.8", "0x0"] {
            assert!(parse(hex.as_bytes(), false).is_none(), "{hex:?}");
        }
        assert!(parse("1".repeat(MAX_CHARS).as_bytes(), true).is_none(), "too long");
        assert_eq!(add(parse(b"inf", true).expect("inf"), parse(b"1", true).expect("1")), Err(NotFinite));
    }

    #[test]
    fn ties_round_to_even() {
        // 2^64 + 1 lies halfway between 2^64 and 2^64 + 2: rounds to the even mantissa, 2^64.
        assert_eq!(incr("18446744073709551617", "0").as_deref(), Some("18446744073709551616"));
        // 2^64 + 3 lies halfway between 2^64 + 2 and 2^64 + 4: rounds to 2^64 + 4.
        assert_eq!(incr("18446744073709551619", "0").as_deref(), Some("18446744073709551620"));
        // 2^63 + (0.5 + 2^-64): the 2^-64 lies below the 62 guard bits of the addition, yet it
        // is what makes this more than a tie.
        assert_eq!(
            incr("9223372036854775808", "0.50000000000000000005421010862427522170037264004349708557128906250")
                .as_deref(),
            Some("9223372036854775809")
        );
        // 2^-18 × 10^17 = 381469726562.5: the print rounds the tie to even.
        assert_eq!(incr("0.000003814697265625", "0").as_deref(), Some("0.00000381469726562"));
    }

    proptest! {
        #[test]
        fn integers_below_2_63_add_exactly(a in -(1i64 << 62)..(1i64 << 62), b in -(1i64 << 62)..(1i64 << 62)) {
            prop_assert_eq!(incr(&a.to_string(), &b.to_string()), Some((i128::from(a) + i128::from(b)).to_string()));
        }

        #[test]
        fn any_bytes_parse_without_panicking(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&b, true);
            let _ = parse(&b, false);
        }

        #[test]
        fn printed_values_parse_back_to_themselves(m in any::<u64>(), e in -80i32..80) {
            let Some(v) = round_pack(false, u128::from(m), i64::from(e), false) else { return Ok(()) };
            // %.17Lf keeps every integer digit, and 17 decimals tell neighbours apart once they
            // are 2^-56 (1.4e-17) or more apart.
            if v.exp >= -56 && v.mant >> 63 == 1 {
                let s = format(v);
                prop_assert_eq!(parse(s.as_bytes(), true), Some(Num::Finite(v)), "{}", s);
            }
        }
    }
}
