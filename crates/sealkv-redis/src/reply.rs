//! Replies, independent of the protocol version until they are written to a connection: RESP2
//! flattens maps, sets, doubles and pairs the way Redis does, RESP3 keeps their types.

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A status line (`+PONG`, `+string`).
    Simple(String),
    /// An error line, with its code (`ERR …`, `WRONGTYPE …`).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// The null bulk string (RESP3 null).
    Nil,
    /// An array.
    Array(Vec<Reply>),
    /// The null array (RESP3 null): an aborted EXEC, a blocked pop that timed out.
    NilArray,
    /// A double: a bulk string in RESP2.
    Double(f64),
    /// A map: a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set: an array in RESP2.
    Set(Vec<Reply>),
    /// Member/score pairs (WITHSCORES): flat in RESP2, an array of pairs in RESP3.
    Pairs(Vec<(Reply, Reply)>),
}

impl Reply {
    /// An error reply from its full text.
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// A bulk string from anything byte-like.
    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(b.as_ref().to_vec())
    }

    /// A bulk string or nil.
    pub fn opt(b: Option<Vec<u8>>) -> Reply {
        b.map_or(Reply::Nil, Reply::Bulk)
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// About how many bytes the reply takes, in memory and on the wire: its payload plus 16 per
    /// element. What [`crate::keyspace::REPLY_BUDGET`] is counted in.
    pub fn size(&self) -> u64 {
        16 + match self {
            Reply::Simple(s) | Reply::Error(s) => s.len() as u64,
            Reply::Bulk(b) => b.len() as u64,
            Reply::Array(v) | Reply::Set(v) => v.iter().map(Reply::size).sum(),
            Reply::Map(v) | Reply::Pairs(v) => v.iter().map(|(a, b)| a.size() + b.size()).sum(),
            Reply::Ok | Reply::Int(_) | Reply::Nil | Reply::NilArray | Reply::Double(_) => 0,
        }
    }

    /// Appends the reply in RESP2 (`resp3` false) or RESP3.
    pub fn write_to(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', e.as_bytes()),
            Reply::Int(i) => line(out, b':', i.to_string().as_bytes()),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len());
                items.iter().for_each(|r| r.write_to(out, resp3));
            }
            Reply::Double(d) if resp3 => line(out, b',', format_double(*d).as_bytes()),
            Reply::Double(d) => bulk(out, format_double(*d).as_bytes()),
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.write_to(out, resp3);
                    v.write_to(out, resp3);
                }
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len());
                items.iter().for_each(|r| r.write_to(out, resp3));
            }
            Reply::Pairs(pairs) => {
                if resp3 {
                    header(out, b'*', pairs.len());
                    for (k, v) in pairs {
                        header(out, b'*', 2);
                        k.write_to(out, resp3);
                        v.write_to(out, resp3);
                    }
                } else {
                    header(out, b'*', pairs.len() * 2);
                    for (k, v) in pairs {
                        k.write_to(out, resp3);
                        v.write_to(out, resp3);
                    }
                }
            }
        }
    }
}

/// Formats a double the way Redis prints scores: shortest round-trip digits, `inf`/`-inf`, in the
/// notation C's `%.17g` (Redis's format) picks: exponential, with a sign and at least two exponent
/// digits, when the decimal exponent is below -4 or 17 and above (`5e-324`, `1e+20`), plain
/// otherwise. Why not always plain: the smallest double would print as 330 characters.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == d.trunc() && d.abs() < 1e17 {
        // Integral values print without a fraction, as Redis does ("3", not "3.0").
        return format!("{}", d as i64);
    }
    let sci = format!("{d:e}");
    match sci.split_once('e').map(|(m, e)| (m, e.parse::<i32>())) {
        Some((mantissa, Ok(exp))) if !(-4..17).contains(&exp) => {
            format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs())
        }
        _ => format!("{d}"),
    }
}

fn line(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    // A status or error line must not contain CR or LF; they would break the framing.
    out.extend(body.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    header(out, b'$', b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, resp3: bool) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v, resp3);
        String::from_utf8(v).unwrap()
    }

    /// The notation is `%.17g`'s (what redis-server 7.0 prints, checked with ZADD then ZSCORE),
    /// the digits the shortest that read back as the same double.
    #[test]
    fn scores_print_in_the_notation_redis_uses() {
        for (d, want) in [
            (1.5, "1.5"),
            (3.0, "3"),
            (0.0001, "0.0001"),
            (0.000_015, "1.5e-05"),
            (5e-324, "5e-324"),
            (-2.5e-300, "-2.5e-300"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1, "0.1"),
        ] {
            assert_eq!(format_double(d), want, "{d:e}");
            assert_eq!(format_double(d).parse::<f64>(), Ok(d));
        }
    }

    #[test]
    fn resp2_and_resp3_layouts_are_pinned() {
        assert_eq!(enc(&Reply::Ok, false), "+OK\r\n");
        assert_eq!(enc(&Reply::err("ERR x\r\ny"), false), "-ERR x  y\r\n");
        assert_eq!(enc(&Reply::Int(-3), false), ":-3\r\n");
        assert_eq!(enc(&Reply::bulk("ab"), false), "$2\r\nab\r\n");
        assert_eq!(enc(&Reply::Nil, false), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, true), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, false), "*-1\r\n");
        assert_eq!(enc(&Reply::Double(1.5), false), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Reply::Double(1.5), true), ",1.5\r\n");
        assert_eq!(enc(&Reply::Double(f64::NEG_INFINITY), true), ",-inf\r\n");
        let m = Reply::Map(vec![(Reply::bulk("k"), Reply::Int(1))]);
        assert_eq!(enc(&m, false), "*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&m, true), "%1\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&Reply::Set(vec![Reply::bulk("a")]), true), "~1\r\n$1\r\na\r\n");
        let p = Reply::Pairs(vec![(Reply::bulk("m"), Reply::Double(2.0))]);
        assert_eq!(enc(&p, false), "*2\r\n$1\r\nm\r\n$1\r\n2\r\n");
        assert_eq!(enc(&p, true), "*1\r\n*2\r\n$1\r\nm\r\n,2\r\n");
    }
}
