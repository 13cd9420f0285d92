//! `tcp://HOST:PORT`: healthy when a connection is accepted. Also the connecting every
//! network kind shares: resolving HOST, trying its addresses, and naming what went wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{host_port, Failure, Outcome};

/// The probe: connect, then close at once.
pub(super) async fn probe(host: &str, port: u16) -> Outcome {
    connect(host, port).await?;
    Ok(format!("connected to tcp://{}", host_port(host, port)))
}

/// Addresses to try for HOST. IP literals and `localhost` need no resolver (and so no thread)
/// and no list on the heap; any other name goes through the system resolver.
pub(super) async fn addresses(
    host: &str,
    port: u16,
) -> Result<impl Iterator<Item = SocketAddr>, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Addresses::Known(
            [Some(SocketAddr::new(ip, port)), None].into_iter(),
        ));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Addresses::Known(
            [
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)),
            ]
            .into_iter(),
        ));
    }
    let unresolved = |why: String| {
        Failure::new(
            "cannot resolve",
            format!("cannot resolve {host}: {why} (is the name right? inside the container, the app is usually 127.0.0.1)"),
        )
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    if found.is_empty() {
        return Err(unresolved("no addresses".into()));
    }
    Ok(Addresses::Resolved(found.into_iter()))
}

/// What [`addresses`] found: one or two known without asking, or the resolver's list.
enum Addresses {
    Known(std::array::IntoIter<Option<SocketAddr>, 2>),
    Resolved(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for Addresses {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addresses::Known(known) => known.next().flatten(),
            Addresses::Resolved(found) => found.next(),
        }
    }
}

/// A TCP connection to the first address of HOST that accepts one.
pub(super) async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, Failure> {
    let mut last = None;
    for addr in addresses(host, port).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(connect_error(&e, &addr.to_string())),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new("cannot connect", format!("cannot connect to {host}"))))
}

/// What a failed connect means, with the fix for the usual causes.
pub(super) fn connect_error(e: &std::io::Error, to: &str) -> Failure {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Failure::new(
            "refused",
            format!(
                "connection refused to {to} (is the app listening? keepwell probed {to}; the app \
                 may listen on another address or port, see its --bind)"
            ),
        ),
        std::io::ErrorKind::NotFound => Failure::new(
            "no socket",
            format!("no socket at {to} (is the app listening there?)"),
        ),
        std::io::ErrorKind::PermissionDenied => Failure::new(
            "permission denied",
            format!("permission denied on {to} (can keepwell's user open it?)"),
        ),
        _ => Failure::new(
            format!("cannot connect: {:?}", e.kind()),
            format!("cannot connect to {to}: {e}"),
        ),
    }
}
