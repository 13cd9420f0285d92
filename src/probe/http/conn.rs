//! The connection of one HTTP probe: a non-blocking connect over TCP or a Unix socket, the
//! request sent at once, and the answer read through the event loop, watched by an epoll
//! instance of the prober's own ([`Watcher`]).
//!
//! The request goes out right after connect(): on loopback, where a container's probe goes,
//! the handshake is over by then, so waiting for writability first (as a generic client does)
//! would cost a trip through epoll and a getsockopt for nothing. A connection still in
//! progress answers the send with EAGAIN and is waited for; a failed one answers with its
//! error (ECONNREFUSED), which is what getsockopt would have said. The socket is then
//! watched for reading only, so epoll wakes keepwell once: when the answer comes. Nothing
//! here blocks; the probe's timeout (`probe::run`) bounds every wait.
//!
//! The socket is not registered with tokio: that costs an `epoll_ctl` to add it, another to
//! remove it, and a registration allocated and freed, on every probe. It is added to the
//! watcher's epoll instance instead (one `epoll_ctl`), which tokio watches once for all probes
//! (epoll instances nest: the inner one is readable while a socket in it is ready), and
//! close(2) takes it out again.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// Where a probe connects.
pub enum Peer<'a> {
    Inet(SocketAddr),
    Unix(&'a str),
}

/// The epoll instance that watches the sockets of one prober's probes, registered with the
/// event loop once. One connection is read at a time (a probe's hops follow one another, and
/// a prober runs one probe at a time): the readiness tokio keeps for the instance is theirs.
pub struct Watcher {
    epoll: AsyncFd<OwnedFd>,
    /// The buffer the last answer was read into, kept for the next one: one allocation of
    /// 8 KiB less per probe.
    pub spare: std::cell::Cell<Vec<u8>>,
}

impl Watcher {
    /// A watcher registered with the current runtime.
    pub fn new() -> io::Result<Watcher> {
        // SAFETY: epoll_create1(2) has no memory-safety preconditions.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened here and owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the descriptor and nothing else closes or replaces it.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Watcher {
            epoll,
            spare: Default::default(),
        })
    }

    /// Watch `fd` for the answer, and for room to write while `writing`.
    fn watch(&self, fd: &OwnedFd, op: libc::c_int, writing: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP;
        if writing {
            events |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: 0,
        };
        // SAFETY: epoll_ctl(2) on descriptors this watcher and the caller own, reading `event`.
        let done =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut event) };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Run `io` on a socket in this watcher until it does not answer EAGAIN, waiting between
    /// tries for the watcher to be readable (some socket in it ready). The readiness is
    /// cleared after a try that found nothing, and after one whose result `emptied` says left
    /// nothing behind: tokio clears only what its loop has seen, and an event since then is
    /// still in the kernel's queue, so none is lost. (The instance is never "closed" to tokio,
    /// whose closed states are final: an epoll fd reports only EPOLLIN.)
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        mut io: impl FnMut() -> io::Result<T>,
        emptied: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        loop {
            let mut ready = ready!(self.epoll.poll_read_ready(cx))?;
            match io() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Ok(done) if emptied(&done) => {
                    ready.clear_ready();
                    return Poll::Ready(Ok(done));
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

/// A connected socket whose request is sent; read it as an [`AsyncRead`]. Dropping it closes
/// the socket, which takes it out of the watcher.
pub struct Connection {
    fd: OwnedFd,
    watcher: Rc<Watcher>,
    /// Read before waiting: the last read was short and cleared the watcher's readiness.
    read_first: bool,
}

/// Connect to `peer` and send `request`; the error is the connect's (or the send's).
pub async fn open(peer: &Peer<'_>, request: &[u8], watcher: Rc<Watcher>) -> io::Result<Connection> {
    let family = match peer {
        Peer::Inet(SocketAddr::V4(_)) => AddressFamily::Inet,
        Peer::Inet(SocketAddr::V6(_)) => AddressFamily::Inet6,
        Peer::Unix(_) => AddressFamily::Unix,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let connected = match peer {
        Peer::Inet(SocketAddr::V4(addr)) => connect(fd.as_raw_fd(), &SockaddrIn::from(*addr)),
        Peer::Inet(SocketAddr::V6(addr)) => connect(fd.as_raw_fd(), &SockaddrIn6::from(*addr)),
        Peer::Unix(path) => connect(fd.as_raw_fd(), &UnixAddr::new(*path)?),
    };
    match connected {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sent = match send_some(&fd, request) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let mut written = sent;
    if written == request.len() {
        watcher.watch(&fd, libc::EPOLL_CTL_ADD, false)?;
        return Ok(Connection {
            fd,
            watcher,
            read_first: false,
        });
    }
    // Rare: the handshake was not over, or the request is larger than the socket's buffer.
    watcher.watch(&fd, libc::EPOLL_CTL_ADD, true)?;
    while written < request.len() {
        written += std::future::poll_fn(|cx| {
            watcher.poll_io(cx, || send_some(&fd, &request[written..]), |_| false)
        })
        .await?;
    }
    watcher.watch(&fd, libc::EPOLL_CTL_MOD, false)?;
    Ok(Connection {
        fd,
        watcher,
        read_first: false,
    })
}

/// One send(2); MSG_NOSIGNAL, so a peer gone away is an EPIPE, not a SIGPIPE.
fn send_some(fd: &OwnedFd, bytes: &[u8]) -> io::Result<usize> {
    Ok(send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL)?)
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: read(2) only writes into the unfilled part, and what it wrote is marked
        // initialized below before the buffer advances over it.
        let unfilled = unsafe { buf.unfilled_mut() };
        let wanted = unfilled.len();
        let fd = this.fd.as_raw_fd();
        let mut read = || {
            // SAFETY: read(2) into memory this function borrows mutably for the call.
            let n = unsafe { libc::read(fd, unfilled.as_mut_ptr().cast(), wanted) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        };
        let got = if std::mem::take(&mut this.read_first) {
            read()
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        };
        // A short read empties the socket: the watcher's readiness is cleared with it, so the
        // next probe's connection does not start with a read that finds nothing. That
        // readiness is only "readable" (tokio keeps a socket's end of stream apart; an epoll
        // fd has none), so an end that came with the data would be lost: this connection's
        // next read therefore tries before it waits.
        let short = |n: &usize| *n > 0 && *n < wanted;
        let n = match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let n = ready!(this.watcher.poll_io(cx, &mut read, short))?;
                this.read_first = short(&n);
                n
            }
            Err(e) => return Poll::Ready(Err(e)),
            Ok(n) => n,
        };
        // SAFETY: read(2) initialized these n bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Everything `connection` gives until EOF, within 10 s.
    async fn answer(mut connection: Connection) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut got))
            .await
            .expect("the answer came in time")
            .expect("read");
        got
    }

    /// A server on a fresh Unix socket that, for each of `answers`, accepts one connection,
    /// reads `wanted` bytes, waits `delay` and answers.
    fn server(
        wanted: usize,
        delay: Duration,
        answers: Vec<&'static [u8]>,
    ) -> (tempfile::TempDir, String, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("app.sock").to_string_lossy().into_owned();
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let serving = std::thread::spawn(move || {
            for reply in answers {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut seen = vec![0u8; wanted];
                stream.read_exact(&mut seen).expect("the whole request");
                std::thread::sleep(delay);
                stream.write_all(reply).expect("answer");
            }
        });
        (dir, path, serving)
    }

    #[test]
    fn a_request_larger_than_the_sockets_buffer_is_sent_whole_then_answered() {
        // 4 MiB is more than a Unix socket holds: the send waits for the server to read.
        let request = vec![b'x'; 4 << 20];
        let (_dir, path, serving) = server(
            request.len(),
            Duration::ZERO,
            vec![b"HTTP/1.1 200 OK\r\n\r\n"],
        );
        let got = runtime().block_on(async {
            let watcher = Rc::new(Watcher::new().expect("watcher"));
            let peer = Peer::Unix(&path);
            let sending = open(&peer, &request, watcher);
            let connection = tokio::time::timeout(Duration::from_secs(10), sending)
                .await
                .expect("sent in time")
                .expect("sent");
            answer(connection).await
        });
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\n");
        serving.join().expect("server");
    }

    #[test]
    fn one_watcher_waits_for_each_answer_in_turn() {
        // Each answer comes late, so every read waits on the watcher; the first connection
        // is dropped before its answer is read, leaving what it saw behind.
        let replies: Vec<&'static [u8]> = vec![b"first"; 21];
        let (_dir, path, serving) = server(4, Duration::from_millis(20), replies);
        runtime().block_on(async {
            let watcher = Rc::new(Watcher::new().expect("watcher"));
            let unread = open(&Peer::Unix(&path), b"ping", watcher.clone())
                .await
                .expect("sent");
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(unread);
            for _ in 0..20 {
                let connection = open(&Peer::Unix(&path), b"ping", watcher.clone())
                    .await
                    .expect("sent");
                assert_eq!(answer(connection).await, b"first");
            }
        });
        serving.join().expect("server");
    }

    #[test]
    fn a_head_cut_short_by_the_end_of_the_stream_is_told_at_once() {
        // The part of a head and the end of the stream come together: the read that takes
        // the bytes must not leave the end unseen until the probe's timeout.
        let (_dir, path, serving) = server(4, Duration::ZERO, vec![b"HTTP/1.1 20"]);
        let failed = runtime().block_on(async {
            let watcher = Rc::new(Watcher::new().expect("watcher"));
            let mut connection = open(&Peer::Unix(&path), b"ping", watcher)
                .await
                .expect("sent");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = super::super::wire::Buffer::new();
            tokio::time::timeout(
                Duration::from_secs(10),
                super::super::wire::read_head(&mut connection, &mut buf),
            )
            .await
            .expect("told before any timeout")
        });
        let error = failed.expect_err("no complete head");
        assert_eq!(
            error.to_string(),
            "connection closed before message completed"
        );
        serving.join().expect("server");
    }
}
