//! An HTTP app inside the test process, standing in for the Python app keepwell supervises.
//!
//! Its `/health` (any path, in fact) behaves as the test says, and can be switched while it
//! runs: a status code, a hang, garbage bytes, an endless body, a required `Host`. It serves
//! on 127.0.0.1 or on a Unix socket, can start listening only after a delay (a slow boot), and
//! counts the requests that arrived so tests can see probing go on. Dropping it stops every
//! thread it started.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the app does with each request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer with this status code and the app's body text.
    Status(u16),
    /// Read the request, never answer, keep the connection open until the peer goes.
    Hang,
    /// Answer with bytes that are not HTTP, then close.
    Garbage,
    /// Read the request, close the connection without a word.
    Close,
    /// 200 with no Content-Length: the body text, then filler, forever, until the peer closes.
    Endless,
    /// 200 when the request's Host is exactly this, else 400.
    RequireHost(String),
    /// 200 with one header of this many bytes: a response head that never seems to end.
    HugeHeader(usize),
    /// Every other request fails with this code, the rest get 200: fail, pass, fail, pass…
    Alternate(u16),
    /// A status line, then a header that never ends, one byte every 10 ms until the peer goes:
    /// every read brings something, nothing completes.
    Trickle,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    body: Mutex<String>,
    requests: AtomicUsize,
    hosts: Mutex<Vec<String>>,
    heads: Mutex<Vec<String>>,
    /// TCP connections accepted so far, to tell whether one was still open at the next accept.
    accepted: Mutex<Vec<std::sync::Weak<TcpStream>>>,
    overlapping: AtomicUsize,
    stop: AtomicBool,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

enum Address {
    Tcp(u16),
    Unix(PathBuf),
}

pub struct App {
    shared: Arc<Shared>,
    address: Address,
    acceptor: Option<JoinHandle<()>>,
    /// Keeps the Unix socket's directory alive as long as the app.
    _dir: Option<tempfile::TempDir>,
}

/// Something a connection can be: a TCP or a Unix stream.
trait Conn: Read + Write + Send + 'static {
    fn set_timeouts(&self, read: Duration, write: Duration) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_timeouts(&self, read: Duration, write: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(write))
    }
}

/// A TCP connection whose handler owns the only strong reference (see `note_overlap`).
struct SharedTcp(Arc<TcpStream>);

impl Read for SharedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

impl Conn for SharedTcp {
    fn set_timeouts(&self, read: Duration, write: Duration) -> std::io::Result<()> {
        self.0.set_timeouts(read, write)
    }
}

impl Conn for UnixStream {
    fn set_timeouts(&self, read: Duration, write: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(write))
    }
}

const POLL: Duration = Duration::from_millis(20);

impl App {
    /// Serve HTTP on 127.0.0.1 at once.
    pub fn http(behaviour: Behaviour) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test app");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Shared::new(behaviour);
        let acceptor = spawn_tcp(shared.clone(), Ok(listener), port, Duration::ZERO);
        App {
            shared,
            address: Address::Tcp(port),
            acceptor: Some(acceptor),
            _dir: None,
        }
    }

    /// Start listening on 127.0.0.1:`port` only after `delay`, as a slow app boots.
    pub fn http_after(port: u16, delay: Duration, behaviour: Behaviour) -> App {
        let shared = Shared::new(behaviour);
        let acceptor = spawn_tcp(shared.clone(), Err(()), port, delay);
        App {
            shared,
            address: Address::Tcp(port),
            acceptor: Some(acceptor),
            _dir: None,
        }
    }

    /// Serve HTTP on a Unix socket in a fresh directory.
    pub fn unix(behaviour: Behaviour) -> App {
        let dir = tempfile::tempdir().expect("socket dir");
        let path = dir.path().join("app.sock");
        let listener = UnixListener::bind(&path).expect("bind the test app's socket");
        let shared = Shared::new(behaviour);
        let inner = shared.clone();
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    inner.handle(stream);
                }
            }
        });
        App {
            shared,
            address: Address::Unix(path),
            acceptor: Some(acceptor),
            _dir: Some(dir),
        }
    }

    pub fn port(&self) -> u16 {
        match &self.address {
            Address::Tcp(port) => *port,
            Address::Unix(_) => panic!("a Unix-socket app has no port"),
        }
    }

    pub fn socket(&self) -> &Path {
        match &self.address {
            Address::Unix(path) => path,
            Address::Tcp(_) => panic!("a TCP app has no socket path"),
        }
    }

    /// `http://127.0.0.1:PORT/health`, or `unix:SOCKET:/health`.
    pub fn url(&self) -> String {
        match &self.address {
            Address::Tcp(port) => format!("http://127.0.0.1:{port}/health"),
            Address::Unix(path) => format!("unix:{}:/health", path.display()),
        }
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port())
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// The body text of answers (and the start of an endless body).
    pub fn set_body(&self, text: &str) {
        *self.shared.body.lock().expect("body lock") = text.to_string();
    }

    /// Requests whose headers arrived in full.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The Host header of every request so far, in order ("" when there was none).
    pub fn hosts(&self) -> Vec<String> {
        self.shared.hosts.lock().expect("hosts lock").clone()
    }

    /// TCP connections that arrived while an earlier one was still established: probes that
    /// overlapped.
    pub fn overlapping(&self) -> usize {
        self.shared.overlapping.load(Ordering::SeqCst)
    }

    /// The head (request line and headers, as sent) of every request so far, in order.
    pub fn heads(&self) -> Vec<String> {
        self.shared.heads.lock().expect("heads lock").clone()
    }
}

fn spawn_tcp(
    shared: Arc<Shared>,
    listener: Result<TcpListener, ()>,
    port: u16,
    delay: Duration,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let listener = match listener {
            Ok(listener) => listener,
            Err(()) => {
                let mut waited = Duration::ZERO;
                while waited < delay {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(POLL);
                    waited += POLL;
                }
                TcpListener::bind(("127.0.0.1", port)).expect("bind the slow app's port")
            }
        };
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        while !shared.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking stream");
                    let stream = Arc::new(stream);
                    shared.note_overlap(&stream);
                    shared.handle(SharedTcp(stream));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    })
}

impl Shared {
    fn new(behaviour: Behaviour) -> Arc<Shared> {
        Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            body: Mutex::new("ok".to_string()),
            requests: AtomicUsize::new(0),
            hosts: Mutex::new(Vec::new()),
            heads: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            overlapping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            handlers: Mutex::new(Vec::new()),
        })
    }

    /// Whether an earlier connection was still established when this one was accepted, as
    /// the kernel sees it (TCP_INFO): not what a handler thread noticed, which load can delay.
    /// Only weak references are kept: the handler's drop still closes its connection.
    fn note_overlap(&self, stream: &Arc<TcpStream>) {
        let mut accepted = self.accepted.lock().expect("accepted lock");
        accepted.retain(|earlier| {
            earlier
                .upgrade()
                .is_some_and(|earlier| tcp_state(&earlier) == Some(TCP_ESTABLISHED))
        });
        if !accepted.is_empty() {
            self.overlapping.fetch_add(1, Ordering::SeqCst);
        }
        accepted.push(Arc::downgrade(stream));
    }

    fn handle<S: Conn>(self: &Arc<Self>, stream: S) {
        let shared = self.clone();
        let handler = thread::spawn(move || shared.serve(stream));
        let mut handlers = self.handlers.lock().expect("handlers lock");
        handlers.retain(|h| !h.is_finished());
        handlers.push(handler);
    }

    /// Read the request head; None when the peer went away or the app is stopping.
    fn read_head<S: Conn>(&self, stream: &mut S) -> Option<String> {
        // Short reads so a stop is seen soon; writes give up on a peer that stopped reading.
        stream.set_timeouts(POLL, Duration::from_secs(2)).ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if self.stop.load(Ordering::SeqCst) || head.len() > 64 * 1024 {
                return None;
            }
            match stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    fn serve<S: Conn>(&self, mut stream: S) {
        let Some(head) = self.read_head(&mut stream) else {
            return;
        };
        let host = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("host")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        self.hosts.lock().expect("hosts lock").push(host.clone());
        self.heads.lock().expect("heads lock").push(head.clone());
        let number = self.requests.fetch_add(1, Ordering::SeqCst);
        let behaviour = self.behaviour.lock().expect("behaviour lock").clone();
        let body = self.body.lock().expect("body lock").clone();
        match behaviour {
            Behaviour::Status(code) => answer(&mut stream, code, &body),
            Behaviour::RequireHost(wanted) => {
                if host == wanted {
                    answer(&mut stream, 200, &body)
                } else {
                    answer(&mut stream, 400, "DisallowedHost")
                }
            }
            Behaviour::Alternate(code) => {
                let code = if number % 2 == 0 { code } else { 200 };
                answer(&mut stream, code, &body)
            }
            Behaviour::HugeHeader(len) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Filler: {}\r\nContent-Length: 2\r\n\r\nok",
                    "a".repeat(len)
                );
                let _ = stream.write_all(head.as_bytes());
            }
            Behaviour::Close => {}
            Behaviour::Garbage => {
                let _ = stream.write_all(b"HELLO\r\n\r\n\x00\xff\x13junk junk \xfe\r\n");
            }
            Behaviour::Hang => {
                // Wait, answering nothing, until the peer gives up (EOF) or the app stops.
                let mut buf = [0u8; 1024];
                while !self.stop.load(Ordering::SeqCst) {
                    match stream.read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return,
                    }
                }
            }
            Behaviour::Trickle => {
                if stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").is_err() {
                    return;
                }
                while !self.stop.load(Ordering::SeqCst) {
                    if stream.write_all(b"z").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
            Behaviour::Endless => {
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err()
                    || stream.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
                let filler = vec![b'x'; 16 * 1024];
                while !self.stop.load(Ordering::SeqCst) {
                    if stream.write_all(&filler).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The kernel's TCP state number for an established connection (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;

/// The TCP state of a connection (TCP_INFO's tcpi_state), None when it cannot be read.
fn tcp_state(stream: &TcpStream) -> Option<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let done = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        );
        (done == 0).then_some(info.tcpi_state)
    }
}

fn answer<S: Write>(stream: &mut S, code: u16, body: &str) {
    let reason = match code {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let location = if (300..400).contains(&code) {
        "Location: /elsewhere\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

impl Drop for App {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake a blocking accept on the Unix socket.
        if let Address::Unix(path) = &self.address {
            let _ = UnixStream::connect(path);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handlers = std::mem::take(&mut *self.shared.handlers.lock().expect("handlers lock"));
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

/// A plain GET against 127.0.0.1:`port`: the status code and body, None when nothing answers.
/// Shorthand for [`super::http::get`], the one HTTP client of the tests.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = super::http::get(super::http::loopback(port), path).ok()?;
    Some((response.status, response.text()))
}

/// Fast health timing for tests that supervise against an in-test app, unless a test names the
/// flag itself.
pub const FAST: &[(&str, &str)] = &[
    ("--health-interval", "200ms"),
    ("--health-start-interval", "100ms"),
    ("--health-timeout", "300ms"),
    ("--grace", "1s"),
];

/// The arguments for supervising `command` with `url` probed: [`FAST`] timing, then `extra`
/// (whose flags replace FAST's).
pub fn supervise_args(url: &str, extra: &[&str], command: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for (flag, value) in FAST {
        if !extra.contains(flag) {
            all.extend([flag.to_string(), value.to_string()]);
        }
    }
    all.extend(["--health-url".to_string(), url.to_string()]);
    all.extend(extra.iter().map(|s| s.to_string()));
    all.push("--".into());
    all.extend(command.iter().map(|s| s.to_string()));
    all
}

/// keepwell supervising `command` with `url` probed (see [`supervise_args`]), not yet started.
pub fn supervising(url: &str, extra: &[&str], command: &[&str]) -> super::Launch {
    let all = supervise_args(url, extra, command);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    super::keepwell(&refs)
}

/// keepwell supervising `sleep 1000` while the in-test app stands in for the app.
pub fn supervise(url: &str, extra: &[&str]) -> super::Keepwell {
    supervising(url, extra, &["sleep", "1000"]).start()
}
