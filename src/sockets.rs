//! The app's listening sockets that keepwell holds itself (`--socket`): parsed, bound before
//! the privilege drop, handed to every app child as fd 3, 4, … (systemd socket activation:
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), kept open across restarts.
//!
//! Why: the kernel queues connections on a listening socket for as long as any process holds
//! it. keepwell never accepts on these sockets; it only keeps them open, so while the app
//! restarts, clients wait in the queue instead of being refused. It also lets an app that runs
//! as `--user nobody` serve on port 80: keepwell binds while it is still root.
//!
//! Descriptors: keepwell binds these first, before its signalfd and every other descriptor, so
//! its own sockets take the lowest free numbers from 3 up: every number in 3..3+N is held for
//! keepwell's whole life (by a socket, or by a descriptor keepwell inherited), so nothing it
//! opens later (std's exec-error pipe above all) lands where the child's sockets go. All of
//! keepwell's copies are close-on-exec; only the app child, between fork and exec, gets
//! duplicates at 3..3+N without that flag ([`Handover::install`]). A `--health-cmd` check or
//! any other process keepwell starts never sees them.
//!
//! What this module does not do: decide when to release the sockets (the state machine says so
//! when a stop ends in keepwell's exit), or build the child's environment (`child` does, with
//! [`Handover::env`] and the pid slot).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType};
use nix::unistd::{Gid, Uid};

/// The first descriptor of socket activation (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// The most `--socket`s: the child-side hand-over keeps its scratch space on the stack.
pub const MAX_SOCKETS: usize = 32;
/// The listen backlog: what waits in the kernel while the app restarts. The kernel caps it at
/// net.core.somaxconn (4096 by default); gunicorn and uvicorn set their own once they run.
const BACKLOG: i32 = 4096;
/// The mode of a Unix socket keepwell creates: the app's user and group may connect.
const UNIX_MODE: u32 = 0o660;

/// One `--socket` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Address {
    /// `:8000` (every IPv4 address), `0.0.0.0:8000`, `127.0.0.1:8000`, `[::]:8000`,
    /// `unix:/run/app.sock`.
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(
                    "a Unix socket needs an absolute path, such as unix:/run/app.sock".into(),
                );
            }
            // sun_path holds 108 bytes with its terminating NUL.
            if path.len() > 107 {
                return Err(format!(
                    "a Unix socket path has at most 107 bytes, this one {}",
                    path.len()
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let tcp = match text.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
            None => text.parse::<SocketAddr>().ok(),
        };
        match tcp {
            Some(addr) if addr.port() == 0 => Err(
                "port 0 would be a different port at every start: give the port the app serves on"
                    .into(),
            ),
            Some(addr) => Ok(Address::Tcp(addr)),
            None => Err(
                "expected :8000, 0.0.0.0:8000, 127.0.0.1:8000, [::]:8000 or unix:/path/app.sock"
                    .into(),
            ),
        }
    }

    /// The name in `LISTEN_FDNAMES`: the protocol forbids ':' in names, so `tcp-0.0.0.0-8000`,
    /// `tcp-[::]-8000`, `unix-/run/app.sock`.
    pub fn fd_name(&self) -> String {
        let name = match self {
            Address::Tcp(addr) => {
                let ip = match addr {
                    SocketAddr::V4(v4) => v4.ip().to_string(),
                    SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                };
                format!("tcp-{ip}-{}", addr.port())
            }
            Address::Unix(path) => format!("unix-{}", path.display()),
        };
        name.chars()
            .map(|c| {
                if c == ':' || !c.is_ascii_graphic() {
                    '_'
                } else {
                    c
                }
            })
            .take(255)
            .collect()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One bound, listening socket that keepwell holds.
#[derive(Debug)]
struct Held {
    address: Address,
    fd: OwnedFd,
}

/// The sockets keepwell holds, in `--socket` order (fd 3 is the first).
#[derive(Debug, Default)]
pub struct HeldSockets {
    held: Vec<Held>,
}

/// Who owns a Unix socket keepwell creates: the `--user` the app runs as.
pub type Owner = Option<(Uid, Gid)>;

impl HeldSockets {
    /// Bind every address, in order. Call before any other descriptor is opened (see the
    /// module doc) and before the privilege drop. The error is one line: the address, what
    /// failed, the fix.
    pub fn bind(addresses: &[Address], owner: Owner) -> Result<HeldSockets, String> {
        let mut held = Vec::with_capacity(addresses.len());
        for address in addresses {
            let fd = bind_one(address, owner).map_err(|e| {
                format!(
                    "--socket {address}: cannot bind: {e} ({})",
                    hint(address, &e)
                )
            })?;
            held.push(Held {
                address: address.clone(),
                fd,
            });
        }
        Ok(HeldSockets { held })
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// For `/status`: `["0.0.0.0:8000 (fd 3)", "unix:/run/app.sock (fd 4)"]`, each with the
    /// number the child gets.
    pub fn listing(&self) -> Vec<String> {
        self.held
            .iter()
            .zip(FIRST_FD..)
            .map(|(h, fd)| format!("{} (fd {fd})", h.address))
            .collect()
    }

    /// Close keepwell's copies: once the app has closed its own, the port is closed and new
    /// connections are refused, as without `--socket`. Only for a stop that ends in exit.
    pub fn release(&mut self) {
        self.held.clear();
    }

    /// What the app child needs, prepared before the fork (nothing after it allocates).
    pub fn handover(&self) -> Option<Handover> {
        if self.held.is_empty() {
            return None;
        }
        let mut sources = [-1; MAX_SOCKETS];
        for (slot, h) in sources.iter_mut().zip(&self.held) {
            *slot = h.fd.as_raw_fd();
        }
        let names: Vec<String> = self.held.iter().map(|h| h.address.fd_name()).collect();
        Some(Handover {
            sources,
            count: self.held.len(),
            names: names.join(":"),
        })
    }
}

/// The sockets as the app child gets them: raw descriptors in keepwell, duplicated at 3, 4, …
/// in the child between fork and exec.
#[derive(Clone, Copy, Debug)]
pub struct HandoverFds {
    sources: [RawFd; MAX_SOCKETS],
    count: usize,
}

/// The hand-over for one spawn: the descriptors, and the `LISTEN_*` variables.
#[derive(Clone, Debug)]
pub struct Handover {
    sources: [RawFd; MAX_SOCKETS],
    count: usize,
    names: String,
}

impl Handover {
    /// `LISTEN_FDS` and `LISTEN_FDNAMES`; `LISTEN_PID` is the child's to fill in (`child`).
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("LISTEN_FDS", self.count.to_string()),
            ("LISTEN_FDNAMES", self.names.clone()),
        ]
    }

    /// The part the child's pre-exec code needs: plain numbers, `Copy`, nothing to free.
    pub fn fds(&self) -> HandoverFds {
        HandoverFds {
            sources: self.sources,
            count: self.count,
        }
    }
}

impl HandoverFds {
    /// In the child, between fork and exec: make the sockets fds 3, 4, … without
    /// close-on-exec. Async-signal-safe: fcntl and dup2 only, scratch space on the stack.
    ///
    /// Two passes, because a socket's own number may be one of the targets of another: first
    /// every source below 3+N gets a close-on-exec copy above the range (so no dup2 of the
    /// second pass closes a socket not yet placed), then each copy is dup2'ed to its place,
    /// which clears close-on-exec on the new number only. Whatever keepwell's copies or
    /// inherited descriptors held those numbers is replaced; the copies above close at exec.
    ///
    /// # Safety
    /// Only between fork and exec in the child: it replaces descriptors 3..3+N of the process.
    pub unsafe fn install(&self) -> io::Result<()> {
        let count = self.count;
        let end = FIRST_FD + count as RawFd;
        let mut copies = [-1; MAX_SOCKETS];
        for (copy, &source) in copies.iter_mut().zip(&self.sources[..count]) {
            let fd = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, end);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            *copy = fd;
        }
        for (target, &copy) in (FIRST_FD..).zip(&copies[..count]) {
            if libc::dup2(copy, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn bind_one(address: &Address, owner: Owner) -> io::Result<OwnedFd> {
    match address {
        Address::Tcp(addr) => {
            // std's bind sets SO_REUSEADDR (a restarted container must not wait out TIME_WAIT)
            // and close-on-exec; the backlog is set again below.
            let listener = std::net::TcpListener::bind(addr)?;
            let fd = OwnedFd::from(listener);
            listen(&fd)?;
            Ok(fd)
        }
        Address::Unix(path) => {
            remove_stale_socket(path)?;
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let addr = socket::UnixAddr::new(path.as_path())?;
            socket::bind(fd.as_raw_fd(), &addr)?;
            // Owner and mode before listen: no client can connect to it before they are right.
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(path.as_path(), Some(uid), Some(gid))?;
            }
            std::fs::set_permissions(
                path,
                std::os::unix::fs::PermissionsExt::from_mode(UNIX_MODE),
            )?;
            listen(&fd)?;
            Ok(fd)
        }
    }
}

fn listen(fd: &OwnedFd) -> io::Result<()> {
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    socket::listen(fd, backlog)?;
    Ok(())
}

/// A socket file left by an earlier run (a container restarted with the same volume) would
/// make bind fail; systemd and gunicorn remove it too. Anything that is not a socket stays.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The fix for an address that cannot be bound, by what went wrong.
fn hint(address: &Address, e: &io::Error) -> String {
    match (address, e.kind()) {
        (Address::Tcp(addr), io::ErrorKind::AddrInUse) => format!(
            "another process already listens on port {}, or two --socket addresses overlap \
             ([::]:{0} takes IPv4 too): stop it or choose a free port",
            addr.port()
        ),
        (Address::Tcp(_), io::ErrorKind::PermissionDenied) => {
            "ports below 1024 need root: start keepwell as root with --user for the app \
             (it binds, then drops), or use a port such as :8000"
                .into()
        }
        (Address::Tcp(_), io::ErrorKind::AddrNotAvailable) => {
            "that address is not on this machine; use :8000 or 0.0.0.0:8000".into()
        }
        (Address::Unix(path), io::ErrorKind::AlreadyExists) => {
            format!("remove {} or choose another path", path.display())
        }
        (Address::Unix(path), io::ErrorKind::NotFound) => format!(
            "the directory {} does not exist: create it in the image",
            path.parent().unwrap_or(path).display()
        ),
        (Address::Unix(path), io::ErrorKind::PermissionDenied) => format!(
            "keepwell cannot write in {}: make the directory writable for keepwell's user, or \
             start keepwell as root with --user",
            path.parent().unwrap_or(path).display()
        ),
        _ => "check the address".into(),
    }
}

/// `LISTEN_PID=` with room for any pid: `child` builds it before the fork and writes the
/// child's own pid into it after, without allocating.
pub struct PidSlot {
    /// `LISTEN_PID=` followed by DIGITS placeholder bytes and a NUL; never touched through a
    /// reference once `ptr` is taken, so the writes through `ptr` are the only access.
    _storage: Box<[u8]>,
    ptr: *mut u8,
}

const PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The digits of the largest pid (i32::MAX has 10).
const PID_DIGITS: usize = 10;

// SAFETY: the pointer is into `_storage`, which the slot owns; nothing else points there but
// the envp array that the same closure owns.
unsafe impl Send for PidSlot {}
unsafe impl Sync for PidSlot {}

impl Default for PidSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl PidSlot {
    pub fn new() -> PidSlot {
        let mut storage = Vec::with_capacity(PID_PREFIX.len() + PID_DIGITS + 1);
        storage.extend_from_slice(PID_PREFIX);
        storage.extend(std::iter::repeat(b'0').take(PID_DIGITS));
        storage.push(0);
        let mut storage = storage.into_boxed_slice();
        let ptr = storage.as_mut_ptr();
        PidSlot {
            _storage: storage,
            ptr,
        }
    }

    /// The `NAME=value` C string for an envp array (valid while the slot lives).
    pub fn as_ptr(&self) -> *const libc::c_char {
        self.ptr as *const libc::c_char
    }

    /// Write `pid` in decimal, then the NUL. No allocation, no formatting machinery.
    ///
    /// # Safety
    /// Nothing may read the string at the same time (in the child, before exec, it is fine).
    pub unsafe fn write(&self, pid: i32) {
        let mut digits = [0u8; PID_DIGITS];
        let mut n = pid.max(0) as u32;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 || len == PID_DIGITS {
                break;
            }
        }
        let start = self.ptr.add(PID_PREFIX.len());
        for i in 0..len {
            start.add(i).write(digits[len - 1 - i]);
        }
        start.add(len).write(0);
    }
}

/// A C string for an envp array, or an error naming the variable.
pub fn env_entry(name: &std::ffi::OsStr, value: &std::ffi::OsStr) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + value.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an environment variable holds a NUL byte",
        )
    })
}

/// Every descriptor number in 3..3+count is open in this process (see the module doc).
pub fn range_is_held(count: usize) -> bool {
    (FIRST_FD..FIRST_FD + count as RawFd)
        // SAFETY: F_GETFD only reads the descriptor's flags.
        .all(|fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse(":8000"),
            Ok(Address::Tcp("0.0.0.0:8000".parse().unwrap()))
        );
        assert_eq!(
            Address::parse("[::]:8000"),
            Ok(Address::Tcp("[::]:8000".parse().unwrap()))
        );
        assert_eq!(
            Address::parse("unix:/run/app.sock"),
            Ok(Address::Unix("/run/app.sock".into()))
        );
        for bad in [
            "8000",
            ":0",
            ":x",
            "unix:run/app.sock",
            "localhost:8000",
            "",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("unix:/{}", "a".repeat(107));
        assert!(Address::parse(&long).is_err());
    }

    #[test]
    fn names_have_no_colon() {
        let name = |text: &str| Address::parse(text).unwrap().fd_name();
        assert_eq!(name(":8000"), "tcp-0.0.0.0-8000");
        assert_eq!(name("[::]:8000"), "tcp-[__]-8000");
        assert_eq!(name("unix:/run/a:b.sock"), "unix-/run/a_b.sock");
    }

    #[test]
    fn pid_slot_holds_the_digits_and_nothing_else() {
        for (pid, text) in [(1, "1"), (4194304, "4194304"), (i32::MAX, "2147483647")] {
            let slot = PidSlot::new();
            unsafe { slot.write(pid) };
            let written = unsafe { std::ffi::CStr::from_ptr(slot.as_ptr()) };
            assert_eq!(written.to_str().unwrap(), format!("LISTEN_PID={text}"));
        }
    }
}
