//! The connection of one HTTP probe: a non-blocking connect over TCP or a Unix socket, the
//! request sent at once, and the answer read through the event loop.
//!
//! The request goes out right after connect(): on loopback, where a container's probe goes,
//! the handshake is over by then, so waiting for writability first (as a generic client does)
//! would cost a trip through epoll and a getsockopt for nothing. A connection still in
//! progress answers the send with EAGAIN and is waited for; a failed one answers with its
//! error (ECONNREFUSED), which is what getsockopt would have said. The socket is then
//! registered for reading only, so epoll wakes keepwell once: when the answer comes. Nothing
//! here blocks; the probe's timeout (`probe::run`) bounds every wait.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
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

/// A connected socket whose request is sent; read it as an [`AsyncRead`].
pub struct Connection {
    fd: AsyncFd<OwnedFd>,
}

/// Connect to `peer` and send `request`; the error is the connect's (or the send's).
pub async fn open(peer: &Peer<'_>, request: &[u8]) -> io::Result<Connection> {
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
    let interest = if sent == request.len() {
        Interest::READABLE
    } else {
        Interest::READABLE | Interest::WRITABLE
    };
    // SAFETY: the AsyncFd owns the descriptor and nothing else closes or replaces it.
    let fd =
        unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)?;
    let mut written = sent;
    while written < request.len() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|fd| send_some(fd.get_ref(), &request[written..])) {
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(Connection { fd })
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
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            // SAFETY: read(2) only writes into the unfilled part, and what it wrote is marked
            // initialized below before the buffer advances over it.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            let read = ready.try_io(|fd| {
                // SAFETY: read(2) into memory this function borrows mutably for the call.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        wanted,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: the next read waits for epoll rather
                    // than trying first and failing, as tokio's own streams do. (A closed peer
                    // stays readable: tokio keeps that readiness.)
                    if n > 0 && n < wanted {
                        ready.clear_ready();
                    }
                    // SAFETY: read(2) initialized these n bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}
