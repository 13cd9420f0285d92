//! The HTTP/1.1 exchange of one probe on the wire: the request's bytes, the response head read
//! within [`BODY_LIMIT`] and parsed with httparse (the parser under hyper), and, only when
//! `--health-body` asks, the body by its framing (Content-Length, chunked, or until close),
//! decoded up to [`BODY_LIMIT`].
//!
//! This is all a probe needs of HTTP: one GET, `Connection: close`, one answer. It replaces
//! hyper's client connection for the probe because that machinery (a dispatch task, channels,
//! a header map, a keep-alive state machine) cost about as much CPU per probe as the loopback
//! TCP exchange itself (tests/bench/probe_overhead.md). Every function reads from any
//! [`AsyncRead`], so a fuzzer can feed it arbitrary bytes.

use std::fmt;
use std::io;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::BODY_LIMIT;

/// hyper's limit on response headers, kept: more is a head too large.
const MAX_HEADERS: usize = 100;

/// The first read's room; a longer head grows the buffer, up to [`BODY_LIMIT`].
pub const FIRST_READ: usize = 8 * 1024;

/// A chunk-size line longer than this (extensions included) is a broken body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What went wrong reading an answer, worded as hyper worded it (the details users and tests
/// already know).
#[derive(Debug)]
pub enum WireError {
    /// EOF before the response head was complete.
    Closed,
    /// No complete head within [`BODY_LIMIT`] bytes, or more than [`MAX_HEADERS`] headers.
    TooLarge,
    /// The head is not HTTP/1.x.
    Parse(&'static str),
    /// The body's framing is broken, or it ended before its length.
    Body(&'static str),
    Io(io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Closed => f.write_str("connection closed before message completed"),
            WireError::TooLarge => f.write_str("message head is too large"),
            WireError::Parse(what) => f.write_str(what),
            WireError::Body(what) => write!(f, "error reading a body from connection: {what}"),
            WireError::Io(e) => write!(f, "error reading from connection: {e}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// The request: a GET of `path` naming `authority` as its Host unless `headers` has one;
/// header names lower-cased, as hyper sent them. Err names what the path may not hold.
pub fn request(
    path: &str,
    authority: &str,
    headers: &[(String, String)],
) -> Result<Vec<u8>, &'static str> {
    // A request line is three fields split by spaces: a path must be visible ASCII. (A
    // redirect's Location is a header value, which may hold a space.)
    if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the path holds a character a request line cannot carry (a space, a \
                    control character or non-ASCII)",
        );
    }
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = Vec::with_capacity(96 + path.len() + authority.len());
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &str, value: &str| {
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    if !has("host") {
        line("host", authority);
    }
    if !has("user-agent") {
        line("user-agent", "keepwell");
    }
    for (name, value) in headers {
        line(name, value);
    }
    // One request per connection, as the kubelet's probes: the app need not keep a worker
    // waiting for a second one.
    if !has("connection") {
        line("connection", "close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// How the body after the head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head.
#[derive(Debug)]
pub struct Head {
    pub code: u16,
    /// The `Location` header, when it is visible ASCII (what a redirect can be followed to).
    pub location: Option<String>,
    pub framing: Framing,
}

/// The bytes read so far: `data[consumed..]` is what follows what was parsed.
pub struct Buffer {
    data: Vec<u8>,
    consumed: usize,
}

impl Buffer {
    pub fn new() -> Buffer {
        Buffer::reusing(Vec::new())
    }

    /// A buffer in the memory of `data`, emptied.
    pub fn reusing(mut data: Vec<u8>) -> Buffer {
        data.clear();
        Buffer { data, consumed: 0 }
    }

    /// The memory, to be reused.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::new()
    }
}

/// Read until a final (non-1xx) response head is complete; 1xx answers are skipped, as hyper
/// skips them. Every head read shares one [`BODY_LIMIT`].
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buffer,
) -> Result<Head, WireError> {
    let mut head_bytes = 0usize;
    loop {
        // Parsed again only when a blank line may have come: a head trickling in byte by
        // byte costs one scan of its bytes, not one parse per read.
        let mut may_be_complete = true;
        let (head, len) = loop {
            if may_be_complete {
                if let Some(parsed) = parse_head(&buf.data[buf.consumed..])? {
                    break parsed;
                }
            }
            let unparsed = buf.data.len() - buf.consumed;
            if head_bytes + unparsed >= BODY_LIMIT {
                return Err(WireError::TooLarge);
            }
            let room = FIRST_READ.max(unparsed * 2).min(BODY_LIMIT - head_bytes) - unparsed;
            if read_more(io, &mut buf.data, room).await? == 0 {
                // What was read may still be wrong in a way worth naming.
                parse_head(&buf.data[buf.consumed..])?;
                return Err(WireError::Closed);
            }
            let fresh = &buf.data[buf.consumed + unparsed.saturating_sub(2)..];
            may_be_complete = unparsed == 0
                || fresh.windows(2).any(|w| w == b"\n\n")
                || fresh.windows(3).any(|w| w == b"\n\r\n");
        };
        buf.consumed += len;
        head_bytes += len;
        if !(100..200).contains(&head.code) || head.code == 101 {
            return Ok(head);
        }
    }
}

/// Append up to `room` bytes (at least one) from `io` to `data`; 0 at EOF. The bytes go into
/// the vector's spare capacity, never zero-filled first (at opt-level "z" a fill of the first
/// read's 8 KiB cost more instructions than the rest of a probe).
async fn read_more<R: AsyncRead + Unpin>(
    io: &mut R,
    data: &mut Vec<u8>,
    room: usize,
) -> io::Result<usize> {
    let room = room.max(1);
    data.reserve(room);
    io.read_buf(&mut (&mut *data).limit(room)).await
}

/// Whether the header `name` is `lower` (lower case letters and `-`) in any case. Setting bit
/// 5 lower-cases a letter and leaves `-` as it is; of the other characters httparse lets into
/// a name (RFC 9110 tokens), none becomes a letter or `-` that way. (A byte loop at opt-level
/// "z", `eq_ignore_ascii_case` cost more than the rest of the head's parsing.)
fn is_named(name: &str, lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .bytes()
            .zip(lower.bytes())
            .all(|(have, want)| have | 0x20 == want)
}

/// One head from the start of `bytes`: None while incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, WireError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // Left uninitialized: httparse writes the ones it fills (100 empty headers would be 3 KiB
    // to clear on every parse).
    let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(WireError::Parse("invalid HTTP version parsed"))
        }
        Err(httparse::Error::Status) => {
            return Err(WireError::Parse("invalid HTTP status-code parsed"))
        }
        Err(_) => return Err(WireError::Parse("invalid HTTP header parsed")),
    };
    let code = response.code.unwrap_or(0);
    if code < 100 {
        return Err(WireError::Parse("invalid HTTP status-code parsed"));
    }
    let mut location = None;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in response.headers.iter() {
        let name = header.name;
        // By length first: most of an answer's headers are none of the three, and a length
        // tells them apart without looking at a letter.
        if !matches!(name.len(), 8 | 14 | 17) {
            continue;
        }
        if is_named(name, "location") {
            location = std::str::from_utf8(header.value)
                .ok()
                .filter(|v| {
                    v.bytes()
                        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
                })
                .map(str::to_string);
        } else if is_named(name, "content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(WireError::Parse("invalid content-length parsed"))?;
            if length.is_some_and(|l| l != value) {
                return Err(WireError::Parse("invalid content-length parsed"));
            }
            length = Some(value);
        } else if is_named(name, "transfer-encoding") {
            // Chunked only when it is the last coding; any other makes the body run to close.
            let last = header.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let framing = match (code, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) => Framing::UntilClose,
        (_, None, Some(0)) => Framing::Empty,
        (_, None, Some(n)) => Framing::Length(n),
        (_, None, None) => Framing::UntilClose,
    };
    Ok(Some((
        Head {
            code,
            location,
            framing,
        },
        len,
    )))
}

/// Read the body (what follows the head in `buf`, then from `io`) until it contains `needle`,
/// ends, or [`BODY_LIMIT`] of it is read: whether it contains `needle`.
pub async fn body_contains<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buffer,
    framing: Framing,
    needle: &[u8],
) -> Result<bool, WireError> {
    let mut seen: Vec<u8> = Vec::new();
    let mut decoder = Decoder::new(framing);
    // Where a match can still begin: earlier bytes were searched already.
    let mut searched = 0usize;
    let mut pending = buf.data.split_off(buf.consumed);
    buf.consumed = buf.data.len();
    loop {
        let done = decoder.feed(&pending, &mut seen, BODY_LIMIT)?;
        if contains(&seen[searched..], needle) {
            return Ok(true);
        }
        searched = seen.len().saturating_sub(needle.len().saturating_sub(1));
        if done || seen.len() >= BODY_LIMIT {
            return Ok(false);
        }
        pending.clear();
        if read_more(io, &mut pending, FIRST_READ).await? == 0 {
            return match decoder.at_eof() {
                Ok(()) => Ok(false),
                Err(e) => Err(e),
            };
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A body's decoder, fed the bytes as they come.
struct Decoder {
    state: State,
}

#[derive(Debug)]
enum State {
    /// This many bytes of a Content-Length body are left.
    Length(u64),
    UntilClose,
    /// A chunk-size line: the size so far, the hex digits seen, the line's length, and
    /// what part of the line comes after the digits.
    Size {
        size: u64,
        digits: usize,
        line: usize,
        tail: SizeTail,
        cr: bool,
    },
    /// This many bytes of chunk data are left, then CRLF.
    Data(u64),
    /// After chunk data: the CR (false) or the LF (true) is next.
    DataEnd(bool),
    Done,
}

impl Decoder {
    fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::UntilClose => State::UntilClose,
            Framing::Chunked => State::new_size(),
        };
        Decoder { state }
    }

    /// Decode `input` into `out` (up to `limit` bytes of `out`); true when the body ended.
    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, WireError> {
        let keep = |out: &mut Vec<u8>, data: &[u8]| {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        };
        loop {
            match &mut self.state {
                State::Done => return Ok(true),
                State::UntilClose => {
                    keep(out, input);
                    return Ok(false);
                }
                State::Length(left) => {
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    keep(out, &input[..take]);
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Done;
                        return Ok(true);
                    }
                    return Ok(false);
                }
                State::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    keep(out, &input[..take]);
                    *left -= take as u64;
                    input = &input[take..];
                    if *left == 0 {
                        self.state = State::DataEnd(false);
                    }
                }
                State::DataEnd(lf_next) => {
                    let Some((&byte, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    input = rest;
                    match (*lf_next, byte) {
                        (false, b'\r') => *lf_next = true,
                        (true, b'\n') => self.state = State::new_size(),
                        _ => return Err(WireError::Body("invalid chunk: no CRLF after its data")),
                    }
                }
                State::Size {
                    size,
                    digits,
                    line,
                    tail,
                    cr,
                } => {
                    let Some((&byte, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    input = rest;
                    *line += 1;
                    if *line > MAX_CHUNK_LINE {
                        return Err(WireError::Body("invalid chunk size line: too long"));
                    }
                    if *cr {
                        if byte != b'\n' {
                            return Err(WireError::Body("invalid chunk size line: no LF"));
                        }
                        if *digits == 0 {
                            return Err(WireError::Body("invalid chunk size line: no size"));
                        }
                        self.state = match *size {
                            // The last chunk: the body is complete (trailers are not needed).
                            0 => State::Done,
                            n => State::Data(n),
                        };
                        continue;
                    }
                    // As hyper reads it: hex digits, optional whitespace, then `;` and
                    // extensions (ignored) up to the CR.
                    match (*tail, byte) {
                        (_, b'\r') => *cr = true,
                        (SizeTail::Extension, _) => {}
                        (SizeTail::Digits, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                            let value = (byte as char).to_digit(16).unwrap_or(0);
                            *size = size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(value)))
                                .ok_or(WireError::Body("invalid chunk size: too large"))?;
                            *digits += 1;
                        }
                        (_, b';') if *digits > 0 => *tail = SizeTail::Extension,
                        (_, b' ' | b'\t') if *digits > 0 => *tail = SizeTail::Space,
                        _ => return Err(WireError::Body("invalid chunk size line")),
                    }
                }
            }
        }
    }

    /// The connection closed: fine only where the framing lets a body end.
    fn at_eof(&self) -> Result<(), WireError> {
        match self.state {
            State::Done | State::UntilClose => Ok(()),
            _ => Err(WireError::Body(
                "the connection closed before the body ended",
            )),
        }
    }
}

/// Where a chunk-size line is after its first byte.
#[derive(Clone, Copy, Debug)]
enum SizeTail {
    Digits,
    /// Whitespace after the digits: only more of it, `;` or the CR may follow.
    Space,
    Extension,
}

impl State {
    fn new_size() -> State {
        State::Size {
            size: 0,
            digits: 0,
            line: 0,
            tail: SizeTail::Digits,
            cr: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(bytes: &[u8]) -> Result<Head, WireError> {
        let mut io = bytes;
        let mut buf = Buffer::new();
        tokio_test_block_on(read_head(&mut io, &mut buf))
    }

    /// A single-threaded runtime for the async readers; `&[u8]` is the stream.
    fn tokio_test_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime without drivers builds")
            .block_on(future)
    }

    fn body(bytes: &[u8], needle: &str) -> Result<bool, WireError> {
        tokio_test_block_on(async {
            let mut io = bytes;
            let mut buf = Buffer::new();
            let head = read_head(&mut io, &mut buf).await?;
            body_contains(&mut io, &mut buf, head.framing, needle.as_bytes()).await
        })
    }

    #[test]
    fn the_request_names_host_agent_headers_and_close() {
        let headers = vec![("X-Probe".to_string(), "1".to_string())];
        let request = request("/health", "127.0.0.1:8000", &headers).unwrap();
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /health HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nuser-agent: keepwell\r\n\
             x-probe: 1\r\nconnection: close\r\n\r\n"
        );
        let own_host = vec![("Host".to_string(), "app.example.com".to_string())];
        let request = String::from_utf8(request_bytes(&own_host)).unwrap();
        assert!(
            request.contains("\r\nhost: app.example.com\r\n"),
            "{request}"
        );
        assert_eq!(request.matches("host:").count(), 1, "{request}");
        assert!(super::request("/a b", "x", &[]).is_err());
        assert!(super::request("/caf\u{e9}", "x", &[]).is_err());
    }

    fn request_bytes(headers: &[(String, String)]) -> Vec<u8> {
        request("/", "h", headers).unwrap()
    }

    #[test]
    fn heads_and_their_framing() {
        let head = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((head.code, head.framing), (200, Framing::Length(2)));
        let head = head_of(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n").unwrap();
        assert_eq!(head.location.as_deref(), Some("/x"));
        assert_eq!(head.framing, Framing::UntilClose);
        let head = head_of(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Empty);
        let head = head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        // 1xx answers are skipped.
        let head = head_of(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 X\r\n\r\n").unwrap();
        assert_eq!(head.code, 503);
    }

    #[test]
    fn broken_heads_are_named_as_hyper_named_them() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "connection closed before message completed"),
            (
                b"HTTP/1.1 200 OK\r\nX: y\r\n",
                "connection closed before message completed",
            ),
            (b"HELLO\r\n\r\n\x00\xff", "invalid HTTP version parsed"),
            (b"HTTP/1.1 abc\r\n\r\n", "invalid HTTP status-code parsed"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "invalid content-length parsed",
            ),
        ];
        for (bytes, expected) in cases {
            let error = head_of(bytes).unwrap_err().to_string();
            assert_eq!(error, expected, "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(BODY_LIMIT + 10, b'a');
        assert_eq!(
            head_of(&huge).unwrap_err().to_string(),
            "message head is too large"
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            head_of(&many).unwrap_err().to_string(),
            "message head is too large"
        );
    }

    #[test]
    fn a_head_just_under_the_limit_is_read() {
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.resize(60 * 1024, b'a');
        head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(head_of(&head).unwrap().code, 200);
    }

    #[test]
    fn bodies_by_length_chunks_and_close() {
        let by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello worldIGNORED";
        assert!(body(by_length, "world").unwrap());
        assert!(!body(by_length, "IGNORED").unwrap());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert!(body(chunked, "lo wo").unwrap(), "a needle across chunks");
        assert!(!body(chunked, "5;ext").unwrap());
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nthe rest";
        assert!(body(until_close, "rest").unwrap());
        assert!(!body(b"HTTP/1.1 204 No Content\r\n\r\nrest", "rest").unwrap());
    }

    #[test]
    fn broken_bodies_are_errors_and_big_ones_are_cut_at_64_kib() {
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";
        assert!(matches!(body(short, "zzz"), Err(WireError::Body(_))));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n";
        assert!(matches!(body(bad_chunk, "zzz"), Err(WireError::Body(_))));
        let no_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX";
        assert!(matches!(body(no_crlf, "zzz"), Err(WireError::Body(_))));
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.resize(big.len() + BODY_LIMIT, b'x');
        big.extend_from_slice(b"needle");
        assert!(
            !body(&big, "needle").unwrap(),
            "past 64 KiB nothing is read"
        );
        let mut chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..100_000 {
            chunks.extend_from_slice(b"1\r\nx\r\n");
        }
        assert!(!body(&chunks, "needle").unwrap());
    }
    /// A peer that sends `bytes` in pieces of `step` bytes, one per read, then EOF: what a
    /// socket gives when the app writes its answer in bits.
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let end = (self.at + self.step)
                .min(self.bytes.len())
                .min(self.at + out.remaining());
            out.put_slice(&self.bytes[self.at..end]);
            self.at = end;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A peer that sends `head`, then `filler` over and over, forever; it counts what was read.
    struct Endless {
        head: Vec<u8>,
        filler: Vec<u8>,
        sent: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let this = &mut *self;
            while out.remaining() > 0 {
                let byte = match this.head.get(this.sent) {
                    Some(&b) => b,
                    None => this.filler[(this.sent - this.head.len()) % this.filler.len()],
                };
                out.put_slice(&[byte]);
                this.sent += 1;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn head_in_pieces(bytes: &[u8], step: usize) -> Result<Head, WireError> {
        let mut io = Pieces {
            bytes: bytes.to_vec(),
            at: 0,
            step,
        };
        tokio_test_block_on(read_head(&mut io, &mut Buffer::new()))
    }

    fn body_in_pieces(bytes: &[u8], step: usize, needle: &str) -> Result<bool, WireError> {
        tokio_test_block_on(async {
            let mut io = Pieces {
                bytes: bytes.to_vec(),
                at: 0,
                step,
            };
            let mut buf = Buffer::new();
            let head = read_head(&mut io, &mut buf).await?;
            body_contains(&mut io, &mut buf, head.framing, needle.as_bytes()).await
        })
    }

    /// A small deterministic generator (xorshift64*), so a failing case can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn a_head_split_anywhere_across_reads_is_read_the_same() {
        let answer: &[u8] = b"HTTP/1.1 301 Moved Permanently\r\nLocation: /next\r\n\
                              Content-Length: 5\r\n\r\nhello";
        for step in 1..answer.len() {
            let head =
                head_in_pieces(answer, step).unwrap_or_else(|e| panic!("in pieces of {step}: {e}"));
            assert_eq!(head.code, 301, "in pieces of {step}");
            assert_eq!(
                head.location.as_deref(),
                Some("/next"),
                "in pieces of {step}"
            );
            assert_eq!(head.framing, Framing::Length(5), "in pieces of {step}");
            assert!(body_in_pieces(answer, step, "hello").expect("the body"));
        }
        // Bare LF line ends (httparse takes them, as hyper did), a byte at a time: the blank
        // line is seen however the reads fall.
        let lf_only = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
        assert_eq!(
            head_in_pieces(lf_only, 1).expect("an LF-only head").code,
            200
        );
        // A 1xx head and the final one, a byte at a time.
        let informational =
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No\r\n\r\n";
        assert_eq!(
            head_in_pieces(informational, 1).expect("after 103").code,
            204
        );
    }

    #[test]
    fn a_head_over_64_kib_is_too_large_however_it_comes() {
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        // Never ends: the whole stream is one header line, and far more than the limit.
        huge.resize(4 * BODY_LIMIT, b'a');
        for step in [1, 7, 1000, FIRST_READ, BODY_LIMIT] {
            let mut io = Pieces {
                bytes: huge.clone(),
                at: 0,
                step,
            };
            let error = tokio_test_block_on(read_head(&mut io, &mut Buffer::new()))
                .expect_err("a head that never ends");
            assert!(
                matches!(error, WireError::TooLarge),
                "in pieces of {step}: {error}"
            );
            assert!(
                io.at <= BODY_LIMIT,
                "read {} bytes of a head in pieces of {step}, more than the 64 KiB limit",
                io.at
            );
        }
        // Many small headers make the head too large as well, and so do 1xx heads that add up.
        let mut informational = Vec::new();
        while informational.len() <= BODY_LIMIT {
            informational.extend_from_slice(b"HTTP/1.1 100 Continue\r\nX: yyyyyyyyyy\r\n\r\n");
        }
        informational.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(
            head_in_pieces(&informational, 333),
            Err(WireError::TooLarge)
        ));
    }

    #[test]
    fn eof_before_the_head_ends_is_a_closed_connection_at_every_point() {
        let answer: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n";
        for cut in 0..answer.len() {
            let error = head_in_pieces(&answer[..cut], 3).expect_err("a cut head");
            assert!(
                matches!(error, WireError::Closed),
                "cut at {cut} ({:?}): {error}",
                String::from_utf8_lossy(&answer[..cut])
            );
        }
        // EOF in a Content-Length or a chunked body is a broken body, not a pass.
        let cut_body = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nneedl";
        assert!(matches!(
            body_in_pieces(cut_body, 2, "zzz"),
            Err(WireError::Body(_))
        ));
        let cut_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc";
        assert!(matches!(
            body_in_pieces(cut_chunk, 2, "zzz"),
            Err(WireError::Body(_))
        ));
        let cut_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1";
        assert!(matches!(
            body_in_pieces(cut_size, 2, "zzz"),
            Err(WireError::Body(_))
        ));
        // The needle found before the cut is found: the body was read that far.
        assert!(body_in_pieces(cut_body, 2, "need").expect("found before the cut"));
    }

    #[test]
    fn garbage_never_panics_and_never_reads_past_64_kib() {
        let mut rng = Rng(0x5eed_cafe_f00d_0001);
        let alphabets: [&[u8]; 3] = [
            // Bytes HTTP is made of, so that the parser gets far.
            b"HTTP/1.0 2345\r\n:;, \tchunkedContent-LengthTransfer-Encodinglocation0123456789abcdefx",
            b"\r\n\n \t:",
            // Anything.
            &[],
        ];
        for case in 0..3000 {
            let alphabet = alphabets[case % alphabets.len()];
            let len = rng.below(if case % 10 == 0 { 3 * BODY_LIMIT } else { 300 });
            let mut bytes: Vec<u8> = if case % 4 == 0 {
                b"HTTP/1.1 200 OK\r\n".to_vec()
            } else {
                Vec::new()
            };
            for _ in 0..len {
                bytes.push(if alphabet.is_empty() {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                });
            }
            let step = 1 + rng.below(100);
            let mut io = Pieces {
                bytes: bytes.clone(),
                at: 0,
                step,
            };
            let mut buf = Buffer::new();
            let outcome = tokio_test_block_on(async {
                let head = read_head(&mut io, &mut buf).await?;
                let read_by_head = io.at;
                body_contains(&mut io, &mut buf, head.framing, b"needle")
                    .await
                    .map(|found| (head, read_by_head, found))
            });
            match outcome {
                Ok((head, read_by_head, _)) => {
                    assert!(
                        (100..1000).contains(&head.code),
                        "case {case}: {}",
                        head.code
                    );
                    assert!(
                        read_by_head <= BODY_LIMIT + FIRST_READ,
                        "case {case}: the head took {read_by_head} bytes"
                    );
                }
                Err(WireError::Io(e)) => panic!("case {case}: an in-memory read failed: {e}"),
                Err(_) => {}
            }
            // Head (64 KiB) and body (64 KiB decoded, each piece at most one read) together.
            assert!(
                io.at <= 2 * BODY_LIMIT + 2 * FIRST_READ,
                "case {case}: read {} bytes",
                io.at
            );
        }
    }

    #[test]
    fn chunk_sizes_that_are_not_sizes_are_broken_bodies() {
        let bad_sizes: [&[u8]; 11] = [
            b"-1\r\n",
            b"0x10\r\n",
            b"\r\n",
            b" 5\r\n",
            b";ext\r\n",
            b"g\r\n",
            b"5\rX",
            b"5\n",
            // A size past what a u64 holds.
            b"ffffffffffffffffff\r\n",
            b"5 5\r\nhello\r\n",
            b"\xff\r\n",
        ];
        for size in bad_sizes {
            let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            answer.extend_from_slice(size);
            answer.extend_from_slice(b"hello\r\n0\r\n\r\n");
            for step in [1, 4, 1000] {
                let outcome = body_in_pieces(&answer, step, "hello");
                assert!(
                    matches!(outcome, Err(WireError::Body(_))),
                    "size line {:?} in pieces of {step}: {outcome:?}",
                    String::from_utf8_lossy(size)
                );
            }
        }
        // A size line of endless extensions is cut at 4 KiB, not read forever.
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
        answer.resize(answer.len() + 2 * MAX_CHUNK_LINE, b'e');
        assert!(matches!(
            body_in_pieces(&answer, 100, "hello"),
            Err(WireError::Body(_))
        ));
        // A size larger than what follows, then EOF: broken; the same size, honest: fine.
        let short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\nhello";
        assert!(matches!(
            body_in_pieces(short, 3, "zzz"),
            Err(WireError::Body(_))
        ));
        assert!(body_in_pieces(short, 3, "hello").expect("found in the chunk"));
        // Upper-case hex and extensions after whitespace are sizes.
        let fine = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA ;x=y\r\n0123456789\r\n0\r\n\r\n";
        assert!(body_in_pieces(fine, 1, "789").expect("an upper-case size"));
        let zeros = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n";
        assert!(body_in_pieces(zeros, 3, "hello").expect("leading zeros"));
    }

    #[test]
    fn an_endless_body_is_read_to_64_kib_and_no_further() {
        let heads: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffff\r\n",
        ];
        for head in heads {
            let mut io = Endless {
                head: head.to_vec(),
                filler: b"xyz".to_vec(),
                sent: 0,
            };
            let found = tokio_test_block_on(async {
                let mut buf = Buffer::new();
                let head = read_head(&mut io, &mut buf).await?;
                body_contains(&mut io, &mut buf, head.framing, b"needle").await
            })
            .expect("an endless body is read, not an error");
            assert!(!found, "{:?}", String::from_utf8_lossy(head));
            assert!(
                io.sent <= BODY_LIMIT + 2 * FIRST_READ,
                "read {} bytes of an endless body ({:?})",
                io.sent,
                String::from_utf8_lossy(head)
            );
        }
        // Endless one-byte chunks: 64 KiB of data, then it stops (each chunk is 6 bytes).
        let mut io = Endless {
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            filler: b"1\r\nx\r\n".to_vec(),
            sent: 0,
        };
        let found = tokio_test_block_on(async {
            let mut buf = Buffer::new();
            let head = read_head(&mut io, &mut buf).await?;
            body_contains(&mut io, &mut buf, head.framing, b"needle").await
        })
        .expect("endless small chunks");
        assert!(!found);
        assert!(
            io.sent <= 6 * BODY_LIMIT + 2 * FIRST_READ,
            "read {}",
            io.sent
        );
    }

    #[test]
    fn a_peer_that_stops_sending_leaves_the_read_waiting_for_the_callers_timeout() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime with a timer builds");
        runtime.block_on(async {
            let (mut app, mut probe) = tokio::io::duplex(1024);
            use tokio::io::AsyncWriteExt;
            app.write_all(b"HTTP/1.1 200 OK\r\nX: y")
                .await
                .expect("write");
            // The app keeps its end open and says no more: nothing here may end the read
            // (no EOF, no error), only the probe's timeout, by dropping it.
            let mut buf = Buffer::new();
            let waited = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                read_head(&mut probe, &mut buf),
            )
            .await;
            assert!(
                waited.is_err(),
                "the read ended without an answer: {waited:?}"
            );
            // The same for a body that stops short with --health-body.
            let (mut app, mut probe) = tokio::io::duplex(1024);
            app.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                .await
                .expect("write");
            let mut buf = Buffer::new();
            let head = read_head(&mut probe, &mut buf).await.expect("the head");
            let waited = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                body_contains(&mut probe, &mut buf, head.framing, b"needle"),
            )
            .await;
            assert!(waited.is_err(), "the body read ended early: {waited:?}");
            drop(app);
        });
    }
}
