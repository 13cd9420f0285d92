//! `--listen`: the probe endpoints Kubernetes reads, and `/status` and `/metrics` for people and
//! Prometheus. Read-only by construction: handlers see a copy of the snapshot and nothing else.
//!
//! | path | 200 when | otherwise |
//! | --- | --- | --- |
//! | `/livez` | a running child that is not unhealthy (under `--on-unhealthy ignore`: a running child) | 503 |
//! | `/readyz` | the app is healthy and keepwell is not draining or stopping | 503 |
//! | `/startupz` | the app has been healthy once since the child last started | 503 |
//! | `/status` | always: JSON | — |
//! | `/metrics` | always: Prometheus text | — |
//!
//! GET and HEAD only (405 otherwise), 404 for any other path. A hostile client cannot hold
//! keepwell: headers must arrive within [`HEADER_READ_TIMEOUT`], a connection lives at most
//! [`CONNECTION_LIFETIME`], and past [`connection_limit`] (at most [`MAX_CONNECTIONS`]) the
//! oldest connection is closed to make room for the new one: memory stays bounded, and a client
//! that opens connections and never uses them cannot keep the kubelet's next probe out (the
//! newest connection is the last to be evicted). The bound comes from RLIMIT_NOFILE, less
//! [`RESERVED_DESCRIPTORS`] for the rest of keepwell, so a flood can never take the descriptor a
//! probe, a check or a spawn needs. The server runs on its own thread, so a flood never shares a
//! scheduler with signal forwarding, reaping or probes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Notify};

use crate::status::{Published, Snapshot};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
pub const MAX_CONNECTIONS: usize = 512;
/// Descriptors `--listen` leaves to the rest of keepwell: up to 32 replies on the local socket
/// (`local`), stdio, the signalfd, two event loops, the listeners, a probe's socket (or a
/// command check's pipes), a spawn's close-on-exec pipe, a /proc read, the app's held sockets,
/// and room to spare.
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// The fewest connections kept open at once however low the limit: a kubelet's three probes and
/// a person's curl.
pub const MIN_CONNECTIONS: usize = 4;

/// How many connections `--listen` keeps open at once under a soft RLIMIT_NOFILE of `nofile`.
pub fn connection_limit(nofile: u64) -> usize {
    let spare = nofile.saturating_sub(RESERVED_DESCRIPTORS);
    usize::try_from(spare)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The bound for this process, with a warning when its fd limit lowers it.
fn connection_limit_here() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return MAX_CONNECTIONS;
    };
    let limit = connection_limit(soft);
    if limit < MAX_CONNECTIONS {
        tracing::warn!(
            nofile = soft,
            "the file descriptor limit is {soft}: --listen keeps at most {limit} connections \
             open (the oldest is closed for a new one), so probes keep their descriptors; raise \
             it for more, e.g. docker run --ulimit nofile=65536"
        );
    }
    limit
}
/// The largest request head served (hyper's minimum buffer); a longer one is a 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Accept and serve until the process ends.
pub async fn serve(listener: std::net::TcpListener, snapshots: Published) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("--listen cannot be served: {e}");
            return;
        }
    };
    let open = Arc::new(Mutex::new(OpenConnections::new(connection_limit_here())));
    let freed = Arc::new(Notify::new());
    loop {
        // Full: close the oldest and wait until its task has let go of its descriptor before
        // accepting another. Evicting at admission only asked the oldest to close; a burst then
        // accepted a whole scheduler budget of connections (up to 128) before any evicted task
        // ran, past the bound and into the descriptors kept for probes (the chaos soak saw 610
        // under a bound of 512; under a low RLIMIT_NOFILE, accept and probes failed with EMFILE).
        while lock(&open).full_after_evicting() {
            freed.notified().await;
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!("--listen accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, mut evicted) = lock(&open).admit();
        let snapshots = snapshots.clone();
        let open = open.clone();
        let freed = freed.clone();
        tokio::spawn(async move {
            let accepted = tokio::time::Instant::now();
            // hyper gives every connection an 8 KiB read buffer as soon as it polls it: wait
            // for the first byte before handing the connection over, so an idle connection
            // (the cheapest flood) costs a socket and a small task, not a buffer. The header
            // deadline still counts from the accept.
            // (`readable()` would not do: a fresh socket starts out "ready".)
            let first_byte = async {
                let mut byte = [0u8; 1];
                let peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut byte));
                matches!(peeked.await, Ok(Ok(n)) if n > 0)
            };
            let readable = tokio::select! {
                readable = first_byte => readable,
                _ = &mut evicted => false,
            };
            if readable {
                let left = HEADER_READ_TIMEOUT.saturating_sub(accepted.elapsed());
                let connection = http_connection(stream, snapshots, left);
                let lifetime = CONNECTION_LIFETIME.saturating_sub(accepted.elapsed());
                tokio::select! {
                    _ = tokio::time::timeout(lifetime, connection) => {}
                    // Evicted to make room for a newer connection (or the sender is gone).
                    _ = evicted => {}
                }
            } else {
                // Closed before the slot is given back, so the count never undercounts.
                drop(stream);
            }
            lock(&open).forget(id);
            freed.notify_one();
        });
    }
}

/// HTTP on one accepted connection whose first byte is there, until the client is done: the
/// endpoints over hyper's HTTP/1.1, with the request head bounded in size and in time (what is
/// left of [`HEADER_READ_TIMEOUT`] since the accept). [`serve`] adds the lifetime and eviction.
pub async fn http_connection<S>(
    stream: S,
    snapshots: Published,
    header_timeout: Duration,
) -> hyper::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(request.method(), request.uri().path(), &snapshots.current());
        async move { Ok::<_, Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout.max(Duration::from_millis(1)))
        // Requests here are a line and a few headers; hyper's default buffer (~400 KiB) would
        // let 512 clients sending endless headers hold 200 MB.
        .max_buf_size(MAX_REQUEST_HEAD)
        // A prober may shut down its write side once the request is sent (`nc -N`, shell
        // probes); without this hyper sometimes closes before answering.
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// The open connections, oldest first, each with the means to close it.
struct OpenConnections {
    limit: usize,
    next_id: u64,
    /// Connections not asked to close yet.
    open: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Connections whose task still holds the socket, evicted ones included: what counts
    /// against the bound.
    held: usize,
}

impl OpenConnections {
    fn new(limit: usize) -> Self {
        OpenConnections {
            limit,
            next_id: 0,
            open: VecDeque::new(),
            held: 0,
        }
    }

    /// Whether the bound is reached; if so, the oldest connection not yet asked to close is
    /// asked now (dropping its sender wakes its task, which closes it and calls `forget`).
    fn full_after_evicting(&mut self) -> bool {
        if self.held < self.limit {
            return false;
        }
        // One eviction at a time: while an evicted task has not closed yet, wait for it.
        if self.held == self.open.len() {
            self.open.pop_front();
        }
        true
    }

    /// Register a new connection; returns its id and the signal that closes it.
    fn admit(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (close, evicted) = oneshot::channel();
        self.next_id += 1;
        self.held += 1;
        self.open.push_back((self.next_id, close));
        (self.next_id, evicted)
    }

    /// The connection's task has closed its socket.
    fn forget(&mut self, id: u64) {
        self.held = self.held.saturating_sub(1);
        self.open.retain(|(open_id, _)| *open_id != id);
    }
}

fn lock(open: &Mutex<OpenConnections>) -> std::sync::MutexGuard<'_, OpenConnections> {
    // A panic while holding it would abort the process (panic = "abort"), so it is never
    // poisoned in practice; recover the data rather than take the server down.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn probe_answer(ok: bool, what: &str, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    if ok {
        text(StatusCode::OK, format!("ok: {what}\n"))
    } else {
        let why = format!(
            "not {what}: app {} ({}), child pid {}\n",
            snapshot.state.as_str(),
            snapshot.phase,
            snapshot.child_pid.map_or("none".into(), |p| p.to_string())
        );
        text(StatusCode::SERVICE_UNAVAILABLE, why)
    }
}

/// The whole server: one match on method and path.
pub fn respond(method: &Method, path: &str, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD: this server is read-only\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/livez" => probe_answer(snapshot.live, "live", snapshot),
        "/readyz" => probe_answer(snapshot.ready, "ready", snapshot),
        "/startupz" => probe_answer(snapshot.started, "started", snapshot),
        "/status" => {
            let mut response = text(StatusCode::OK, snapshot.to_status_json() + "\n");
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, snapshot.to_metrics());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /livez, /readyz, /startupz, /status or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_bound_leaves_descriptors_for_the_rest_of_keepwell() {
        assert_eq!(connection_limit(1_048_576), MAX_CONNECTIONS);
        assert_eq!(connection_limit(1024), MAX_CONNECTIONS);
        assert_eq!(connection_limit(300), 300 - 64);
        assert_eq!(connection_limit(64), MIN_CONNECTIONS);
        assert_eq!(connection_limit(0), MIN_CONNECTIONS);
    }

    #[test]
    fn a_full_server_evicts_the_oldest_once_and_admits_only_after_it_closed() {
        let mut open = OpenConnections::new(2);
        let (first, mut first_closed) = open.admit();
        let (_second, mut second_closed) = open.admit();
        assert!(open.full_after_evicting());
        assert_eq!(
            first_closed.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "the oldest is asked to close"
        );
        // Until it has closed, the server stays full and asks no one else.
        assert!(open.full_after_evicting());
        assert_eq!(
            second_closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        open.forget(first);
        assert!(!open.full_after_evicting());
    }
}
