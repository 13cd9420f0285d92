//! `http://HOST:PORT/PATH` and `unix:SOCKET:/PATH`: an HTTP/1.1 GET, judged as the kubelet's
//! httpGet judges it.
//!
//! Redirects to the same host are followed, at most 10, and the final answer is judged; a
//! redirect to another host (or to https) is not followed and the redirect itself is judged, as
//! the kubelet does, with the detail saying so. "The same host" is the host of the URL or the
//! `Host` header keepwell sent: the app redirecting to the name it was asked by is redirecting
//! to itself. `--health-header`s go with every request of the chain.
//!
//! Bounded as every probe is: the response head and the body read are each at most 64 KiB (no
//! body at all unless `--health-body` needs it), and the whole chain is under the probe's one
//! timeout. Failure details name the fix for the usual causes: a 400 is most often Django's
//! `ALLOWED_HOSTS`, a 404 the path.

mod conn;
pub mod wire;

use std::rc::Rc;

use conn::Peer;
pub use conn::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use wire::WireError;

use super::{host_port, tcp, Failure, Mode, Outcome, ProbeSpec, Target};

/// The most of a response body (and of a response head) keepwell ever reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// As many redirects as the kubelet (and Go's http client) follows.
const MAX_REDIRECTS: usize = 10;

/// `200-399`, `200`, `200-299,304`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl Default for StatusRanges {
    /// 200-399, as Kubernetes' httpGet probes count success.
    fn default() -> Self {
        StatusRanges(vec![(200, 399)])
    }
}

impl StatusRanges {
    pub fn parse(text: &str) -> Option<StatusRanges> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (low.trim().parse().ok()?, high.trim().parse().ok()?),
                None => {
                    let code: u16 = part.parse().ok()?;
                    (code, code)
                }
            };
            if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
                return None;
            }
            ranges.push((low, high));
        }
        Some(StatusRanges(ranges))
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&code))
    }
}

/// The lines of a header option: one per line, and `\n` (backslash, n) separates them too,
/// since a Dockerfile `ENV` cannot hold a newline. No character a header value may hold is
/// left for a separator (RFC 9110 allows every visible character in a value), and a literal
/// backslash-n in a header value is rare enough to give up.
pub fn split_headers(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .flat_map(|line| line.split("\\n"))
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
}

/// `Name: value`, checked against what HTTP allows; the error says what is wrong.
pub fn parse_header(line: &str) -> Result<(String, String), String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err("expected 'Name: value', such as 'Host: example.com'".into());
    };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() {
        return Err("the header name before ':' is empty".into());
    }
    // RFC 9110 token characters.
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if let Some(bad) = name.chars().find(|c| !tchar(*c)) {
        return Err(format!(
            "the header name {name:?} has {bad:?}, which HTTP does not allow in a name \
             (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    // Visible ASCII, space and tab: what HTTP/1.1 senders may put in a field value.
    let allowed = |c: char| c == ' ' || c == '\t' || c.is_ascii_graphic();
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        let what = if bad.is_ascii_control() {
            "a control character"
        } else {
            "a character outside ASCII"
        };
        return Err(format!(
            "the value of {name} has {bad:?}, {what}, which HTTP does not allow in a header \
             value (several headers: one per line, or separated by \\n)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Where one request of the chain goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix { socket: String },
}

impl Endpoint {
    /// `HOST:PORT` or the socket's path, as connect errors name them.
    fn address(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } => host_port(host, *port),
            Endpoint::Unix { socket } => socket.clone(),
        }
    }
}

/// One request of the chain: where, which path, and the Host it names by default.
#[derive(Clone, Debug)]
struct Hop {
    endpoint: Endpoint,
    path: String,
    /// The authority of this hop's URL, sent as Host unless a `Host` header was given.
    authority: String,
}

impl Hop {
    fn url(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { .. } => format!("http://{}{}", self.authority, self.path),
            Endpoint::Unix { socket } => format!("unix:{socket}:{}", self.path),
        }
    }
}

fn authority(host: &str, port: u16) -> String {
    if port == 80 {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        }
    } else {
        host_port(host, port)
    }
}

/// A request of the chain, ready to send: where, the URL as details show it, the request's
/// bytes. The first one is worked out once for the spec (`Prober` keeps it): every supervisor
/// probe sends the same bytes to the same place, and building them again each time was a fifth
/// of a probe's instructions (tests/bench/probe_overhead.md).
pub struct PreparedHop {
    hop: Hop,
    /// The URL as failure details show it.
    url: String,
    request: Result<Vec<u8>, &'static str>,
    /// `200 OK from URL`, the detail of nearly every probe: formatting it anew each time was
    /// a thirteenth of a probe's instructions.
    ok_summary: String,
}

impl PreparedHop {
    /// The first hop of an HTTP or Unix-socket spec; None for any other target.
    pub fn new(spec: &ProbeSpec) -> Option<PreparedHop> {
        let hop = match &spec.target {
            Target::Http { host, port, path } => Hop {
                endpoint: Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                path: path.clone(),
                authority: authority(host, *port),
            },
            Target::Unix { socket, path } => Hop {
                endpoint: Endpoint::Unix {
                    socket: socket.clone(),
                },
                path: path.clone(),
                authority: "localhost".into(),
            },
            _ => return None,
        };
        Some(PreparedHop::of(hop, spec))
    }

    /// `hop` with its URL and request.
    fn of(hop: Hop, spec: &ProbeSpec) -> PreparedHop {
        let url = hop.url();
        PreparedHop {
            ok_summary: summary(200, &url),
            request: wire::request(&hop.path, &hop.authority, &spec.headers),
            url,
            hop,
        }
    }
}

/// What one request found.
enum Answer {
    Final(Outcome),
    /// A redirect that may be followed: the summary (`301 Moved Permanently from …`) and where.
    Redirect {
        summary: String,
        location: String,
    },
}

/// Where a probe's connections come from, dialled: [`Network`] for gRPC's client, a fuzz
/// target's in-process streams for the HTTP probe. The probe reads whatever bytes the
/// connection gives as the app's, so anything that makes a byte stream (a fuzz target's, a
/// benchmark's) drives the same code.
pub trait Dial {
    fn dial(
        &mut self,
        to: &Endpoint,
    ) -> impl std::future::Future<Output = Result<Box<dyn Socket>, Failure>>;
}

/// What the HTTP probe needs of its connections: a request sent, an answer to read. A
/// [`Dial`]er gives it by writing the request to the socket it dials; [`Sockets`] (the probe's
/// own, over the network) in fewer system calls and without a box.
pub trait Exchange {
    type Answer: AsyncRead + Unpin;

    /// Connect to `to` and send `request`; the answer is read from what this returns.
    /// `shown` is the URL the failure details name.
    fn send(
        &mut self,
        to: &Endpoint,
        request: &[u8],
        shown: &str,
    ) -> impl std::future::Future<Output = Result<Self::Answer, Failure>>;

    /// A buffer to read an answer into, empty; [`Exchange::recycle`] takes it back.
    fn buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Done with `buffer`: kept for the next answer, or dropped.
    fn recycle(&mut self, _buffer: Vec<u8>) {}
}

impl<D: Dial> Exchange for D {
    type Answer = Box<dyn Socket>;

    async fn send(
        &mut self,
        to: &Endpoint,
        request: &[u8],
        shown: &str,
    ) -> Result<Box<dyn Socket>, Failure> {
        let mut socket = self.dial(to).await?;
        socket
            .write_all(request)
            .await
            .map_err(|e| open_error(&e, &to.address(), shown))?;
        Ok(socket)
    }
}

/// Connections over the network as gRPC's client needs them: TCP to the resolved host, or the
/// Unix socket.
pub struct Network;

impl Dial for Network {
    async fn dial(&mut self, to: &Endpoint) -> Result<Box<dyn Socket>, Failure> {
        Ok(match to {
            Endpoint::Tcp { host, port } => Box::new(tcp::connect(host, *port).await?),
            Endpoint::Unix { socket } => Box::new(
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| tcp::connect_error(&e, socket))?,
            ),
        })
    }
}

/// The HTTP probe's connections over the network (`conn`): the request goes out right after
/// connect() and the socket is watched for reading only, by `watcher`: 10 system calls per
/// probe where a generic client makes 16. Without a watcher (`keepwell check`) the first
/// request makes one.
pub struct Sockets {
    watcher: Option<Rc<Watcher>>,
}

impl Sockets {
    fn watcher(&mut self) -> std::io::Result<Rc<Watcher>> {
        if let Some(watcher) = &self.watcher {
            return Ok(watcher.clone());
        }
        let watcher = Rc::new(Watcher::new()?);
        self.watcher = Some(watcher.clone());
        Ok(watcher)
    }
}

impl Exchange for Sockets {
    type Answer = conn::Connection;

    async fn send(
        &mut self,
        to: &Endpoint,
        request: &[u8],
        shown: &str,
    ) -> Result<conn::Connection, Failure> {
        let watcher = self
            .watcher()
            .map_err(|e| open_error(&e, &to.address(), shown))?;
        match to {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                for addr in tcp::addresses(host, *port).await? {
                    match conn::open(&Peer::Inet(addr), request, watcher.clone()).await {
                        Ok(connection) => return Ok(connection),
                        Err(e) => last = Some(open_error(&e, &addr.to_string(), shown)),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    Failure::new("cannot connect", format!("cannot connect to {host}"))
                }))
            }
            Endpoint::Unix { socket } => {
                match conn::open(&Peer::Unix(socket), request, watcher).await {
                    Ok(connection) => Ok(connection),
                    Err(e) => Err(open_error(&e, socket, shown)),
                }
            }
        }
    }

    /// The watcher's: a prober's probes read one answer at a time.
    fn buffer(&mut self) -> Vec<u8> {
        self.watcher
            .as_ref()
            .map(|watcher| watcher.spare.take())
            .unwrap_or_default()
    }

    fn recycle(&mut self, mut buffer: Vec<u8>) {
        if let Some(watcher) = &self.watcher {
            // Only the first read's room is kept: a rare large head does not stay in memory.
            if buffer.capacity() <= wire::FIRST_READ {
                buffer.clear();
                watcher.spare.set(buffer);
            }
        }
    }
}

/// The probe over the network. `first` is the spec's first hop and `watcher` the watcher of
/// its sockets when the caller keeps them across probes (the supervisor does); None makes them
/// here.
pub(super) async fn probe(
    spec: &ProbeSpec,
    first: Option<&PreparedHop>,
    watcher: Option<&Rc<Watcher>>,
) -> Outcome {
    let mut sockets = Sockets {
        watcher: watcher.cloned(),
    };
    probe_chain(spec, first, &mut sockets).await
}

/// The probe over connections from `dial`.
pub async fn probe_via(spec: &ProbeSpec, dial: &mut impl Dial) -> Outcome {
    probe_chain(spec, None, dial).await
}

/// The probe: follow the chain over connections from `dial`, judge the last answer.
async fn probe_chain(
    spec: &ProbeSpec,
    first: Option<&PreparedHop>,
    dial: &mut impl Exchange,
) -> Outcome {
    let built;
    let first = match first {
        Some(first) => first,
        None => {
            built = PreparedHop::new(spec);
            built
                .as_ref()
                .unwrap_or_else(|| unreachable!("http::probe is only dispatched for HTTP targets"))
        }
    };
    let asked_host = match &first.hop.endpoint {
        Endpoint::Tcp { host, .. } => host.as_str(),
        Endpoint::Unix { .. } => "localhost",
    };
    // The hop a followed redirect leads to, built as the first one is.
    let mut later: Option<PreparedHop> = None;
    let custom_host = spec
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| strip_port(v).to_ascii_lowercase());
    // Named only when a redirect is followed.
    let mut first_url = None;
    let mut redirects = 0;
    loop {
        let current = later.as_ref().unwrap_or(first);
        let (hop, shown) = (&current.hop, current.url.as_str());
        let (summary, location) = match get(spec, current, dial).await? {
            Answer::Final(outcome) => {
                return match redirects {
                    0 => outcome,
                    n => {
                        let after = format!(
                            " (after {n} redirect{} from {})",
                            if n == 1 { "" } else { "s" },
                            first_url.as_deref().unwrap_or_default()
                        );
                        outcome.map(|d| d + &after).map_err(|f| Failure {
                            detail: f.detail + &after,
                            ..f
                        })
                    }
                };
            }
            Answer::Redirect { summary, location } => (summary, location),
        };
        let shown_location = location.chars().take(200).collect::<String>();
        let next = match follow(hop, &location, asked_host, custom_host.as_deref()) {
            Ok(next) => next,
            Err(why) => {
                // Not followed: the redirect is the final answer, as the kubelet judges it.
                let detail =
                    format!("{summary} (a redirect to {shown_location:?}, {why}: not followed)");
                return judge_status(spec, redirect_code(&summary), detail);
            }
        };
        let first_url = first_url.get_or_insert_with(|| shown.to_string());
        if redirects == MAX_REDIRECTS {
            return Err(Failure::new(
                "redirect loop",
                format!(
                    "stopped after {MAX_REDIRECTS} redirects from {first_url}; the last one, \
                     {summary}, points to {shown_location:?} (a redirect loop? probe the final \
                     path directly)"
                ),
            ));
        }
        redirects += 1;
        later = Some(PreparedHop::of(next, spec));
    }
}

fn redirect_code(summary: &str) -> u16 {
    summary
        .split(' ')
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or(302)
}

fn judge_status(spec: &ProbeSpec, code: u16, detail: String) -> Outcome {
    if spec.status.contains(code) {
        Ok(detail)
    } else {
        Err(Failure::new(format!("http {code}"), detail))
    }
}

/// `example.com:8000` → `example.com`; `[::1]:80` → `::1`.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The scheme of a URI reference (RFC 3986 section 3.1: a letter, then letters, digits, `+`, `-`,
/// `.`, up to the first `:`), or `None` for a relative reference: `/login?next=http://x` is a
/// path on the same host, not a URL of its own.
fn uri_scheme(reference: &str) -> Option<&str> {
    let end = reference.find([':', '/', '?', '#'])?;
    let scheme = &reference[..end];
    let valid = reference[end..].starts_with(':')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The hop a `Location` leads to, or why it is not followed.
fn follow(
    from: &Hop,
    location: &str,
    asked_host: &str,
    custom_host: Option<&str>,
) -> Result<Hop, String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or(location);
    let absolute = match uri_scheme(location) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "to https, which keepwell does not speak (exempt the health path from the HTTPS \
                 redirect, e.g. Django's SECURE_REDIRECT_EXEMPT)"
                    .into(),
            );
        }
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {
            match location[scheme.len() + 1..].strip_prefix("//") {
                Some(rest) => Some(rest),
                None => return Err("to an address keepwell cannot read".into()),
            }
        }
        Some(_) => return Err("to another scheme".into()),
        None => location.strip_prefix("//"),
    };
    let Some(rest) = absolute else {
        return Ok(Hop {
            path: resolve_path(&from.path, location),
            ..from.clone()
        });
    };
    let (authority_text, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let host = strip_port(authority_text).to_ascii_lowercase();
    if custom_host == Some(host.as_str()) {
        // The app names itself by the Host it was sent: same place, next path.
        return Ok(Hop {
            path,
            ..from.clone()
        });
    }
    if !host.eq_ignore_ascii_case(asked_host) {
        return Err("another host".into());
    }
    match &from.endpoint {
        Endpoint::Unix { .. } => Ok(Hop {
            path,
            ..from.clone()
        }),
        Endpoint::Tcp { host, .. } => {
            let port = match super::split_host_port(authority_text, Some(80)) {
                Ok((_, port)) => port,
                Err(_) => return Err("to an address keepwell cannot read".into()),
            };
            Ok(Hop {
                endpoint: Endpoint::Tcp {
                    host: host.clone(),
                    port,
                },
                path,
                authority: authority(host, port),
            })
        }
    }
}

/// A relative reference (`health/`, `?x=1`, `/health/`) against the current path.
fn resolve_path(current: &str, reference: &str) -> String {
    if reference.starts_with('/') {
        return reference.to_string();
    }
    let current_path = current.split('?').next().unwrap_or(current);
    if reference.starts_with('?') {
        return format!("{current_path}{reference}");
    }
    if reference.is_empty() {
        return current.to_string();
    }
    let dir = match current_path.rfind('/') {
        Some(i) => &current_path[..=i],
        None => "/",
    };
    format!("{dir}{reference}")
}

/// A connected socket, TCP or Unix. Boxed so that hyper's client (gRPC's) is compiled once
/// rather than once per socket type.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Socket for S {}

/// One request of the chain on a connection of its own.
async fn get(
    spec: &ProbeSpec,
    current: &PreparedHop,
    dial: &mut impl Exchange,
) -> Result<Answer, Failure> {
    let shown = current.url.as_str();
    let request = current.request.as_deref().map_err(|why| {
        Failure::new(
            "bad request",
            format!("cannot build the request for {shown}: {why}"),
        )
    })?;
    let mut connection = dial.send(&current.hop.endpoint, request, shown).await?;
    let mut buf = wire::Buffer::reusing(dial.buffer());
    let answer = read_answer(spec, current, &mut connection, &mut buf).await;
    dial.recycle(buf.into_data());
    answer
}

/// The answer on `connection`, read into `buf`.
async fn read_answer(
    spec: &ProbeSpec,
    current: &PreparedHop,
    connection: &mut (impl AsyncRead + Unpin),
    buf: &mut wire::Buffer,
) -> Result<Answer, Failure> {
    let shown = current.url.as_str();
    let bad =
        |e: WireError| Failure::new("bad response", format!("bad response from {shown}: {e}"));
    let head = wire::read_head(connection, buf).await.map_err(bad)?;
    let code = head.code;
    let summary = match code {
        200 => current.ok_summary.clone(),
        _ => summary(code, shown),
    };
    if matches!(code, 301 | 302 | 303 | 307 | 308) {
        if let Some(location) = head.location {
            return Ok(Answer::Redirect { summary, location });
        }
    }
    if !spec.status.contains(code) {
        let hint = status_hint(code, spec.mode);
        return Ok(Answer::Final(Err(Failure::new(
            format!("http {code}"),
            format!("{summary}{hint}"),
        ))));
    }
    let Some(needle) = &spec.body else {
        return Ok(Answer::Final(Ok(summary)));
    };
    if wire::body_contains(connection, buf, head.framing, needle.as_bytes())
        .await
        .map_err(bad)?
    {
        Ok(Answer::Final(Ok(summary)))
    } else {
        Ok(Answer::Final(Err(Failure::new(
            "body mismatch",
            format!(
                "{summary}, but its body (first {} KiB) does not contain {needle:?}",
                BODY_LIMIT / 1024
            ),
        ))))
    }
}

/// `404 Not Found from http://127.0.0.1:8000/health`: what answered, and where.
fn summary(code: u16, shown: &str) -> String {
    match hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
    {
        Some(reason) => format!("{code} {reason} from {shown}"),
        None => format!("{code} from {shown}"),
    }
}

/// What a failed connect-and-send means: a peer that took the connection and dropped it at
/// once closed it before answering; anything else is the connect's failure.
fn open_error(e: &std::io::Error, to: &str, shown: &str) -> Failure {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Failure::new(
            "bad response",
            format!("bad response from {shown}: {}", WireError::Closed),
        ),
        _ => tcp::connect_error(e, to),
    }
}

/// The fix for the status codes a misconfigured probe usually gets.
fn status_hint(code: u16, mode: Mode) -> String {
    let header = mode.flag("header");
    match code {
        400 => format!(
            " (a 400 to a health probe is usually the Host header: Django answers 400 when the \
             Host is not in ALLOWED_HOSTS; send one it accepts with {header} 'Host: your.domain')"
        ),
        401 | 403 => format!(
            " (the health path wants credentials: exempt it from authentication, or send them \
             with {header})"
        ),
        404 => " (is the path right? the app has no such page; probe the path of its health \
                endpoint, e.g. /health or /health/)"
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_hop(path: &str) -> Hop {
        Hop {
            endpoint: Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 8000,
            },
            path: path.into(),
            authority: "127.0.0.1:8000".into(),
        }
    }

    #[test]
    fn status_ranges() {
        let default = StatusRanges::default();
        assert!(default.contains(200) && default.contains(302) && !default.contains(404));
        let ranges = StatusRanges::parse("200-299,304").unwrap();
        assert!(ranges.contains(204) && ranges.contains(304) && !ranges.contains(302));
        for bad in ["", "abc", "300-200", "99", "600", "200-", "200,,300"] {
            assert!(StatusRanges::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn headers_are_checked_against_http() {
        assert_eq!(
            parse_header("Host: example.com"),
            Ok(("Host".into(), "example.com".into()))
        );
        assert!(parse_header("no colon")
            .unwrap_err()
            .contains("'Name: value'"));
        assert!(parse_header("bad name: x").unwrap_err().contains("' '"));
        assert!(parse_header(": x").unwrap_err().contains("empty"));
        assert!(parse_header("X-A: a\u{1}b")
            .unwrap_err()
            .contains("control character"));
        assert!(parse_header("X-A: café")
            .unwrap_err()
            .contains("outside ASCII"));
        assert_eq!(
            parse_header("Cookie: a=1; b=2|3"),
            Ok(("Cookie".into(), "a=1; b=2|3".into()))
        );
    }

    #[test]
    fn headers_split_on_newlines_and_backslash_n() {
        let lines: Vec<&str> = split_headers("Host: a\\nX-Probe: b\nX-C: c\r\n\n").collect();
        assert_eq!(lines, ["Host: a", "X-Probe: b", "X-C: c"]);
    }

    #[test]
    fn relative_redirects_resolve_against_the_current_path() {
        assert_eq!(resolve_path("/health", "/health/"), "/health/");
        assert_eq!(resolve_path("/a/b", "c"), "/a/c");
        assert_eq!(resolve_path("/a/b?x=1", "?y=2"), "/a/b?y=2");
        assert_eq!(resolve_path("/", "health/"), "/health/");
    }

    #[test]
    fn which_redirects_are_followed() {
        let from = tcp_hop("/health");
        let same = follow(&from, "http://127.0.0.1:8001/ok", "127.0.0.1", None).unwrap();
        assert_eq!(same.url(), "http://127.0.0.1:8001/ok");
        let relative = follow(&from, "/health/", "127.0.0.1", None).unwrap();
        assert_eq!(relative.url(), "http://127.0.0.1:8000/health/");
        // The Host keepwell sent names the app itself.
        let named = follow(
            &from,
            "http://app.example.com/health/",
            "127.0.0.1",
            Some("app.example.com"),
        )
        .unwrap();
        assert_eq!(named.url(), "http://127.0.0.1:8000/health/");
        assert!(follow(&from, "http://other.example/", "127.0.0.1", None)
            .unwrap_err()
            .contains("another host"));
        assert!(follow(&from, "https://127.0.0.1/health", "127.0.0.1", None)
            .unwrap_err()
            .contains("https"));
        assert!(follow(&from, "HTTPS://127.0.0.1/health", "127.0.0.1", None)
            .unwrap_err()
            .contains("https"));
        assert!(follow(&from, "ftp://127.0.0.1/x", "127.0.0.1", None)
            .unwrap_err()
            .contains("another scheme"));
        let upper = follow(&from, "HTTP://127.0.0.1:8000/ok", "127.0.0.1", None).unwrap();
        assert_eq!(upper.url(), "http://127.0.0.1:8000/ok");
        // Found by fuzzing (fuzz/fuzz_targets/probe_http.rs): a path with "://" in it is a
        // path on the same host (Django's login redirect carries ?next=URL), not another
        // scheme, and was taken as a final 3xx answer.
        for (location, url) in [
            ("/://heal0", "http://127.0.0.1:8000/://heal0"),
            (
                "/login?next=http://127.0.0.1/health",
                "http://127.0.0.1:8000/login?next=http://127.0.0.1/health",
            ),
            ("ok?to=a:b", "http://127.0.0.1:8000/ok?to=a:b"),
        ] {
            assert_eq!(
                follow(&from, location, "127.0.0.1", None).unwrap().url(),
                url
            );
        }
    }
}
