//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for talking to `--listen` and to
//! test apps. Every connect, read and write has a timeout, so a hung server fails the test
//! instead of hanging it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one connect, read or write may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// One HTTP response: status, headers in order (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Connect with [`TIMEOUT`] on connect, reads and writes.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut BufReader::new(stream), method)
}

pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    request(addr, "GET", path)
}

/// The status of a GET, or 0 when there was no HTTP answer at all (refused, closed, timed out).
pub fn status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path).map(|r| r.status).unwrap_or(0)
}

/// Send `bytes` as they are, shut down the write side (so the server ends the connection after
/// its answer instead of keeping it), and read until the server closes: everything it
/// answered, perhaps nothing. A reset counts as a close. Panics when the server neither closes
/// nor finishes within [`TIMEOUT`]: a read that timed out is no answer, and must never pass for
/// an empty one.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut stream = connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(bytes)
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return answer,
            Err(e) => panic!(
                "{addr} neither answered {:?} in full nor closed the connection within \
                 {TIMEOUT:?} ({e}); it sent {:?}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&answer)
            ),
        }
    }
}

/// A keep-alive connection: many requests, one after another, on one socket.
pub struct Client {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            reader: BufReader::new(connect(addr)?),
            addr,
        })
    }

    pub fn send(&mut self, method: &str, path: &str) -> io::Result<Response> {
        let addr = self.addr;
        write!(
            self.reader.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )?;
        read_response(&mut self.reader, method)
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before a complete response",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Read one response; `method` tells whether a body follows (HEAD: never).
pub fn read_response(reader: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!(
            "not an HTTP/1 status line: {status_line:?}"
        )));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| invalid(format!("bad status code in {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status / 100 == 1 || status == 204 || status == 304 {
        return Ok(response);
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
        response.body = vec![0; length];
        reader.read_exact(&mut response.body)?;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(reader)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            reader.read_exact(&mut response.body[start..])?;
            read_line(reader)?;
        }
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}
