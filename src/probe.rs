//! One probe of the app: an HTTP/1.1 GET over TCP or a Unix socket, or a bare TCP connect.
//!
//! A probe is bounded in every way a broken app can misbehave: the whole exchange (connect,
//! headers, body) is under one timeout, at most 64 KiB of body is ever read (and none unless
//! `--health-body` needs it), and every failure becomes a result with a reason a person can act
//! on, never a hang or an error that escapes. Used by the supervisor and by `keepwell check URL`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The most of a response body keepwell ever reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Where the app's health is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST:PORT/PATH`
    Http {
        host: String,
        port: u16,
        path: String,
    },
    /// `tcp://HOST:PORT`: healthy when a connection is accepted.
    Tcp { host: String, port: u16 },
    /// `unix:SOCKET:/PATH`: HTTP over a Unix socket, as gunicorn `--bind unix:` serves.
    Unix { socket: String, path: String },
}

fn split_host_port(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host needs its closing ']'")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
        (None, Some(default)) => default,
        (None, None) => return Err("the port is missing".into()),
    };
    Ok((host.to_string(), port))
}

impl Target {
    /// Parse one of the three URL forms; the error says which form was expected.
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = split_host_port(authority, Some(80))
                .map_err(|e| format!("{e}; expected http://HOST:PORT/PATH"))?;
            Ok(Target::Http {
                host,
                port,
                path: path.to_string(),
            })
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            let (host, port) = split_host_port(rest.trim_end_matches('/'), None)
                .map_err(|e| format!("{e}; expected tcp://HOST:PORT"))?;
            Ok(Target::Tcp { host, port })
        } else if let Some(rest) = url.strip_prefix("unix:") {
            let (socket, path) = match rest.rsplit_once(":/") {
                Some((socket, path)) => (socket, format!("/{path}")),
                None => (rest, "/".to_string()),
            };
            if socket.is_empty() {
                return Err("the socket path is missing; expected unix:SOCKET:/PATH".into());
            }
            Ok(Target::Unix {
                socket: socket.to_string(),
                path,
            })
        } else if url.starts_with("https://") {
            Err(
                "https is not supported: probe the app inside its container over plain \
                 http://HOST:PORT/PATH"
                    .into(),
            )
        } else {
            Err("expected http://HOST:PORT/PATH, tcp://HOST:PORT or unix:SOCKET:/PATH".into())
        }
    }

    /// The form a person reads in a log line.
    pub fn display(&self) -> String {
        match self {
            Target::Http { host, port, path } if host.contains(':') => {
                format!("http://[{host}]:{port}{path}")
            }
            Target::Http { host, port, path } => format!("http://{host}:{port}{path}"),
            Target::Tcp { host, port } => format!("tcp://{host}:{port}"),
            Target::Unix { socket, path } => format!("unix:{socket}:{path}"),
        }
    }
}

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

/// `Name: value` with a valid header name and value.
pub fn parse_header(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    let (name, value) = (name.trim(), value.trim());
    hyper::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
    hyper::header::HeaderValue::from_str(value).ok()?;
    Some((name.to_string(), value.to_string()))
}

/// One probe, fully described.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub target: Target,
    pub timeout: Duration,
    pub status: StatusRanges,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// `200 OK from http://…` or `connection refused to 127.0.0.1:8000 (is the app listening?)`.
    pub detail: String,
    pub latency: Duration,
}

/// Run one probe; it always returns, within `spec.timeout` (plus scheduling).
pub async fn probe(spec: &ProbeSpec) -> ProbeResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(spec.timeout, exchange(spec)).await;
    let latency = started.elapsed();
    let (ok, detail) = match outcome {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (
            false,
            format!(
                "no answer within {} from {} (is the app hung or overloaded?)",
                human_duration(spec.timeout),
                spec.target.display()
            ),
        ),
    };
    ProbeResult {
        ok,
        detail,
        latency,
    }
}

/// `250ms`, `2s`, `1.5s`, `5m`, `2h`: the shortest exact form a person would write.
pub fn human_duration(d: Duration) -> String {
    let millis = d.as_millis();
    match millis {
        m if m < 1000 => format!("{m}ms"),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

/// Addresses to try for HOST. IP literals and `localhost` need no resolver (and so no thread);
/// any other name goes through the system resolver.
async fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if found.is_empty() {
        return Err(format!("cannot resolve {host}: no addresses"));
    }
    Ok(found)
}

async fn connect_tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let mut last = String::new();
    for addr in addresses(host, port).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = connect_error(&e, &addr.to_string()),
        }
    }
    Err(last)
}

fn connect_error(e: &std::io::Error, to: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused to {to} (is the app listening?)")
        }
        std::io::ErrorKind::NotFound => format!("no socket at {to} (is the app listening there?)"),
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied on {to} (can keepwell's user open it?)")
        }
        _ => format!("cannot connect to {to}: {e}"),
    }
}

/// The probe without its timeout: Ok(detail) when healthy, Err(detail) when not.
async fn exchange(spec: &ProbeSpec) -> Result<String, String> {
    match &spec.target {
        Target::Tcp { host, port } => {
            connect_tcp(host, *port).await?;
            Ok(format!("connected to {}", spec.target.display()))
        }
        Target::Http { host, port, path } => {
            let stream = connect_tcp(host, *port).await?;
            let authority = match (host.contains(':'), *port) {
                (true, 80) => format!("[{host}]"),
                (true, p) => format!("[{host}]:{p}"),
                (false, 80) => host.clone(),
                (false, p) => format!("{host}:{p}"),
            };
            http_get(Box::new(stream), &authority, path, spec).await
        }
        Target::Unix { socket, path } => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| connect_error(&e, socket))?;
            http_get(Box::new(stream), "localhost", path, spec).await
        }
    }
}

/// A connected socket, TCP or Unix. Boxed so that hyper's client is compiled once rather than
/// once per socket type (it is the largest part of a probe in the binary).
trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Socket for S {}

async fn http_get(
    stream: Box<dyn Socket>,
    authority: &str,
    path: &str,
    spec: &ProbeSpec,
) -> Result<String, String> {
    let shown = spec.target.display();
    let bad = |e: hyper::Error| format!("bad response from {shown}: {e}");
    // The response head is bounded by the same 64 KiB as the body, and so is the read buffer:
    // hyper's defaults would take some 400 KiB of headers from a broken app.
    let (mut sender, connection) = http1::Builder::new()
        .max_header_size(BODY_LIMIT)
        .max_buf_size(BODY_LIMIT)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(bad)?;

    let mut request = hyper::Request::get(path).header(hyper::header::USER_AGENT, "keepwell");
    let custom_host = spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !custom_host {
        request = request.header(hyper::header::HOST, authority);
    }
    for (name, value) in &spec.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request for {shown}: {e}"))?;

    // The connection is driven here, not spawned: when the timeout drops this future, the
    // socket closes with it and nothing of a hung app lingers.
    let exchange = async {
        let response = sender.send_request(request).await.map_err(bad)?;
        let status = response.status();
        let summary = match status.canonical_reason() {
            Some(reason) => format!("{} {reason} from {shown}", status.as_u16()),
            None => format!("{} from {shown}", status.as_u16()),
        };
        if !spec.status.contains(status.as_u16()) {
            return Err(summary);
        }
        let Some(needle) = &spec.body else {
            return Ok(summary);
        };
        let mut body = response.into_body();
        let mut seen: Vec<u8> = Vec::new();
        while seen.len() < BODY_LIMIT {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(bad(e)),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = BODY_LIMIT - seen.len();
                        seen.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
            if contains(&seen, needle.as_bytes()) {
                return Ok(summary);
            }
        }
        if contains(&seen, needle.as_bytes()) {
            Ok(summary)
        } else {
            Err(format!(
                "{summary}, but its body (first {} KiB) does not contain {needle:?}",
                BODY_LIMIT / 1024
            ))
        }
    };
    tokio::pin!(connection);
    tokio::pin!(exchange);
    let mut connection_done = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            result = &mut connection, if !connection_done => {
                connection_done = true;
                result.map_err(bad)?;
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_url_forms() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8000/health").unwrap(),
            Target::Http {
                host: "127.0.0.1".into(),
                port: 8000,
                path: "/health".into()
            }
        );
        assert_eq!(
            Target::parse("http://localhost").unwrap(),
            Target::Http {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            Target::parse("http://[::1]:81/x?y=1").unwrap(),
            Target::Http {
                host: "::1".into(),
                port: 81,
                path: "/x?y=1".into()
            }
        );
        assert_eq!(
            Target::parse("tcp://db:5432").unwrap(),
            Target::Tcp {
                host: "db".into(),
                port: 5432
            }
        );
        assert_eq!(
            Target::parse("unix:/run/app.sock:/health").unwrap(),
            Target::Unix {
                socket: "/run/app.sock".into(),
                path: "/health".into()
            }
        );
        assert_eq!(
            Target::parse("unix:/run/app.sock").unwrap(),
            Target::Unix {
                socket: "/run/app.sock".into(),
                path: "/".into()
            }
        );
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        assert!(Target::parse("https://x/").unwrap_err().contains("https"));
        assert!(Target::parse("ftp://x/")
            .unwrap_err()
            .contains("expected http://"));
        assert!(Target::parse("tcp://host").unwrap_err().contains("port"));
        assert!(Target::parse("http://:80/").unwrap_err().contains("host"));
        assert!(Target::parse("http://h:99999/")
            .unwrap_err()
            .contains("65535"));
        assert!(Target::parse("unix::/x").unwrap_err().contains("socket"));
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
    fn durations_read_as_people_write_them() {
        let cases = [
            (250, "250ms"),
            (2_000, "2s"),
            (1_500, "1.5s"),
            (300_000, "5m"),
            (90_000, "90s"),
            (7_200_000, "2h"),
        ];
        for (millis, text) in cases {
            assert_eq!(human_duration(Duration::from_millis(millis)), text);
        }
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("Host: example.com"),
            Some(("Host".into(), "example.com".into()))
        );
        assert_eq!(parse_header("no colon"), None);
        assert_eq!(parse_header("bad name: x"), None);
    }
}
