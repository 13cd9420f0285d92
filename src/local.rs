//! The container-local verdict socket that `keepwell check` (no TARGET) asks.
//!
//! It is an abstract Unix socket: it needs no file (read-only root filesystems are common), no
//! TCP port and no `--listen`, and any user may connect. Abstract names are scoped by network
//! namespace, and containers that share the host's network would share them, so the name
//! carries the PID- and mount-namespace identities of the container: `docker exec` and
//! HEALTHCHECK enter both, another container has its own. Both ends check the other with
//! SO_PEERCRED: a process outside one's PID namespace shows up as pid 0, so the supervisor
//! answers no other container (which could find the name in /proc/net/unix), and the client
//! refuses a squatter that took the name first.

use std::io::{self, Read};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::status::{Published, Snapshot};

/// The most replies written at once; more connections wait in the kernel's backlog.
const MAX_CONCURRENT_REPLIES: usize = 32;
/// A reader that does not take its reply in this time is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// A reply is a small JSON object; anything larger is not keepwell talking.
const REPLY_LIMIT: u64 = 64 * 1024;

fn namespace_id(kind: &str) -> io::Result<String> {
    let link = std::fs::read_link(format!("/proc/self/ns/{kind}"))?;
    // "pid:[4026532195]" → "4026532195"
    let text = link.to_string_lossy();
    Ok(text
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .trim_end_matches(']')
        .to_string())
}

/// `keepwell/<pid-ns>/<mnt-ns>`: the same for every process of one container.
pub fn socket_name() -> io::Result<String> {
    Ok(format!(
        "keepwell/{}/{}",
        namespace_id("pid")?,
        namespace_id("mnt")?
    ))
}

/// Bind the socket (before privileges are dropped, like every socket of keepwell's).
pub fn bind() -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(socket_name()?.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answer every connection with the current snapshot as one JSON line, then close.
pub async fn serve(listener: UnixListener, snapshots: Published) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("the local verdict socket cannot be served: {e}");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REPLIES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The name is visible to every process in the network namespace (/proc/net/unix): a
        // peer outside this PID namespace shows up as pid 0 and gets nothing.
        if !matches!(stream.peer_cred().map(|c| c.pid()), Ok(Some(pid)) if pid > 0) {
            continue;
        }
        let mut reply = snapshots.current().to_status_json();
        reply.push('\n');
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REPLY_TIMEOUT, stream.write_all(reply.as_bytes())).await;
            drop(permit);
        });
    }
}

/// Why asking the supervisor failed.
#[derive(Debug)]
pub enum AskError {
    /// Nobody listens: keepwell is not PID 1 here, or runs an older version.
    NoSupervisor,
    /// Something answered that is not this container's keepwell, or answered nonsense.
    Bad(String),
}

/// Connect within `timeout`. A full backlog (a flood of connections from anyone on the
/// network namespace) makes a blocking connect wait without end; non-blocking, it answers
/// EAGAIN at once and is tried again until the deadline.
fn connect(name: &str, timeout: Duration) -> Result<UnixStream, AskError> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| AskError::Bad(e.to_string()))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| AskError::Bad(format!("cannot make a socket: {e}")))?;
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream
                    .set_nonblocking(false)
                    .map_err(|e| AskError::Bad(e.to_string()))?;
                return Ok(stream);
            }
            Err(nix::errno::Errno::ECONNREFUSED) => return Err(AskError::NoSupervisor),
            Err(nix::errno::Errno::EAGAIN) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(AskError::Bad(format!("cannot reach the supervisor: {e}"))),
        }
    }
}

/// Ask this container's supervisor for its verdict.
pub fn ask(timeout: Duration) -> Result<Snapshot, AskError> {
    let name =
        socket_name().map_err(|e| AskError::Bad(format!("cannot read /proc/self/ns: {e}")))?;
    let stream = connect(&name, timeout)?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| AskError::Bad(format!("cannot identify the supervisor: {e}")))?;
    if peer.pid() == 0 {
        return Err(AskError::Bad(
            "the process answering is outside this container's PID namespace: refusing its verdict"
                .into(),
        ));
    }
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| AskError::Bad(e.to_string()))?;
    read_verdict(stream)
}

/// The supervisor's reply, read to its end (at most [`REPLY_LIMIT`] bytes): the `/status`
/// JSON, or why it is not one.
pub fn read_verdict(reply: impl Read) -> Result<Snapshot, AskError> {
    let mut bytes = Vec::new();
    reply
        .take(REPLY_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| AskError::Bad(format!("the supervisor did not answer in time: {e}")))?;
    // Bytes, not a String: a reply that is not UTF-8 is not a verdict, not a slow answer.
    serde_json::from_slice(bytes.trim_ascii())
        .map_err(|e| AskError::Bad(format!("the supervisor's answer is not a verdict: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(reply: &[u8]) -> String {
        match read_verdict(reply) {
            Err(AskError::Bad(why)) => why,
            other => panic!("{reply:?} was taken: {other:?}"),
        }
    }

    #[test]
    fn a_reply_that_is_not_a_verdict_says_so() {
        assert!(bad(b"").contains("not a verdict"));
        assert!(bad(b"{\"state\":\"healthy\"}").contains("not a verdict"));
        // Not UTF-8: garbled, not late.
        assert!(bad(b"\xff\xfe{}").contains("not a verdict"));
    }

    #[test]
    fn the_status_json_is_a_verdict() {
        let snapshot = Snapshot {
            state: crate::state::Health::Healthy,
            phase: "running".into(),
            child_pid: Some(7),
            user: "app".into(),
            restarts: 0,
            live: true,
            ready: true,
            started: true,
            draining: false,
            health_url: None,
            sockets: Vec::new(),
            last_probe: None,
            probes_ok: 0,
            probes_failed: 0,
            probe_seconds_sum: 0.0,
            started_at_unix: 0.0,
            keepwell_pid: 1,
        };
        let reply = snapshot.to_status_json() + "\n";
        let read = read_verdict(reply.as_bytes()).expect("the supervisor's own reply");
        assert_eq!(read.state, snapshot.state);
        assert_eq!(read.child_pid, Some(7));
    }
}
