//! The request side of RESP: multibulk arrays (what clients send) and inline commands (what a
//! person types into telnet). Parsing is total and bounded: a declared bulk length or argument
//! count above the limits is refused from its header, before a byte of it is buffered or a
//! vector is sized from it, with Redis's own protocol error text.

use crate::strtod::is_c_space;

/// Request-size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest bulk argument (Redis `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// The most arguments in one command.
    pub max_args: usize,
    /// The longest inline command line.
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk: 512 << 20, max_args: 1 << 20, max_inline: 64 << 10 }
    }
}

/// A protocol error: the connection is answered with it and closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

fn proto(msg: &str) -> ProtocolError {
    ProtocolError(format!("ERR Protocol error: {msg}"))
}

/// One parsed command: its arguments and how many bytes of the buffer it used.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses one command from the front of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Finds the CRLF-terminated line starting at `at`; `Ok(None)` if it is not complete yet.
fn line(buf: &[u8], at: usize, max: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let body = rest.get(..nl).unwrap_or_default();
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            Ok(Some((body, at + nl + 1)))
        }
        None if rest.len() > max => Err(proto("too big inline request")),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    // A header line is short; a longer one without CRLF is garbage, not an incomplete header.
    let Some((head, mut at)) = line(buf, 1, 32)? else { return Ok(None) };
    let count = number(head).ok_or_else(|| proto("invalid multibulk length"))?;
    if count > limits.max_args as i64 {
        return Err(proto("invalid multibulk length"));
    }
    if count <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    // Sized by what the buffer could hold, never by the declared count alone.
    let mut args = Vec::with_capacity((count as usize).min(buf.len() / 4 + 1));
    for _ in 0..count {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&b) => return Err(proto(&format!("expected '$', got '{}'", b as char))),
        }
        let Some((len, body_at)) = line(buf, at + 1, 32)? else { return Ok(None) };
        let len = number(len).filter(|l| *l >= 0 && *l as u64 <= limits.max_bulk as u64);
        let len = len.ok_or_else(|| proto("invalid bulk length"))? as usize;
        let end = body_at + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if buf.get(end..end + 2) != Some(b"\r\n") {
            return Err(proto("expected CRLF after bulk"));
        }
        args.push(buf.get(body_at..end).unwrap_or_default().to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let Some((text, used)) = line(buf, 0, limits.max_inline)? else { return Ok(None) };
    let args = split_inline(text).ok_or_else(|| proto("unbalanced quotes in request"))?;
    if args.len() > limits.max_args {
        return Err(proto("invalid multibulk length"));
    }
    Ok(Some((args, used)))
}

/// Splits an inline command line as Redis's `sdssplitargs` does, quirks included, so a line typed
/// at a terminal means what it means to Redis:
/// - white space (C's `isspace`) separates arguments, but only space, tab, CR and LF end an
///   unquoted one, and a quote inside one starts a quoted part of the same argument;
/// - "double quotes" take `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a`, and a backslash before any other
///   character is that character (`"\x4"` is `x4`);
/// - 'single quotes' take only `\'`;
/// - a closing quote must end the argument, and an unclosed one is an error (`None`).
///
/// A NUL is an ordinary byte here. (redis-server 7.0 stops reading the connection at an inline
/// line with a NUL in it: not something to copy.)
fn split_inline(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| text.get(i).copied();
    let hex = |i: usize| at(i).and_then(|c| char::from(c).to_digit(16));
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_c_space) {
            i += 1;
        }
        if i >= text.len() {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut quote = None;
        loop {
            match (quote, at(i)) {
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t')) => break,
                (None, Some(q @ (b'"' | b'\''))) => {
                    quote = Some(q);
                    i += 1;
                }
                (Some(_), None) => return None,
                (Some(b'"'), Some(b'\\'))
                    if at(i + 1) == Some(b'x') && hex(i + 2).is_some() && hex(i + 3).is_some() =>
                {
                    cur.push((hex(i + 2)? * 16 + hex(i + 3)?) as u8);
                    i += 4;
                }
                (Some(b'"'), Some(b'\\')) if i + 1 < text.len() => {
                    cur.push(match at(i + 1)? {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        c => c,
                    });
                    i += 2;
                }
                (Some(b'\''), Some(b'\\')) if at(i + 1) == Some(b'\'') => {
                    cur.push(b'\'');
                    i += 2;
                }
                (Some(q), Some(c)) if c == q => {
                    if at(i + 1).is_some_and(|n| !is_c_space(n)) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                (_, Some(c)) => {
                    cur.push(c);
                    i += 1;
                }
            }
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn multibulk_and_inline_parse() {
        let l = Limits::default();
        let (args, used) = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest", &l).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(used, 20);
        let (args, _) = parse(b"set \"a b\" 'c d' \"\\x41\\n\"\r\n", &l).unwrap().unwrap();
        assert_eq!(args, vec![b"set".to_vec(), b"a b".to_vec(), b"c d".to_vec(), b"A\n".to_vec()]);
        assert_eq!(parse(b"*1\r\n$3\r\nGE", &l).unwrap(), None);
        assert_eq!(parse(b"PING", &l).unwrap(), None);
        assert!(parse(b"*0\r\n", &l).unwrap().unwrap().0.is_empty());
    }

    /// Each line as redis-server 7.0.15 splits it (sent raw, then the reply read back), except the
    /// one with a NUL, on which redis-server stops reading the connection.
    #[test]
    fn inline_lines_split_as_redis_splits_them() {
        let split = |line: &[u8]| {
            split_inline(line).map(|a| a.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect::<Vec<_>>())
        };
        let cases: [(&[u8], Option<&[&str]>); 16] = [
            (b"SET k \"a\\x41b\"", Some(&["SET", "k", "aAb"])),
            (b"SET k 'a\\x41b'", Some(&["SET", "k", "a\\x41b"])),
            (b"SET k \"a\\nb\\tc\\\\d\\\"e\"", Some(&["SET", "k", "a\nb\tc\\d\"e"])),
            (b"SET k 'it\\'s'", Some(&["SET", "k", "it's"])),
            (b"SET k \"\\x4\"", Some(&["SET", "k", "x4"])),
            (b"SET k \"\\xZZ\"", Some(&["SET", "k", "xZZ"])),
            (b"SET k \"\\b\\a\\q\"", Some(&["SET", "k", "\u{8}\u{7}q"])),
            (b"ECHO \"\" ''", Some(&["ECHO", "", ""])),
            (b"  PING  ", Some(&["PING"])),
            (b"a\"b c\"", Some(&["ab c"])),
            (b"a\x0bb \x0c c", Some(&["a\u{b}b", "c"])),
            (b"SET k a\0b", Some(&["SET", "k", "a\0b"])),
            (b"SET k \"unbalanced", None),
            (b"SET k \"a\"b", None),
            (b"SET k 'a'b", None),
            (b"SET k \"ends with \\", None),
        ];
        for (line, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(split(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn hostile_headers_are_refused_before_allocation() {
        let l = Limits::default();
        let e = parse(b"*1\r\n$4294967296\r\n", &l).unwrap_err();
        assert_eq!(e.0, "ERR Protocol error: invalid bulk length");
        let e = parse(b"*2147483648\r\n", &l).unwrap_err();
        assert_eq!(e.0, "ERR Protocol error: invalid multibulk length");
        assert!(parse(b"*1\r\n$-5\r\n", &l).is_err());
        assert!(parse(b"*1\r\n:5\r\n", &l).is_err());
        assert!(parse(b"*x\r\n", &l).is_err());
        assert!(parse(b"*1\r\n$1\r\nab\r\n", &l).is_err());
        assert!(parse(&[b'*'; 100], &l).is_err());
        assert!(parse(b"set \"unterminated\r\n", &l).is_err());
        let long = vec![b'a'; (64 << 10) + 1];
        assert!(parse(&long, &l).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_and_every_prefix_is_incomplete(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6)) {
            let bytes = encode(&args);
            let l = Limits::default();
            prop_assert_eq!(parse(&bytes, &l).unwrap(), Some((args.clone(), bytes.len())));
            for n in 0..bytes.len() {
                prop_assert_eq!(parse(&bytes[..n], &l).unwrap(), None);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, &Limits::default());
        }
    }
}
