//! Several health headers from one variable (README "Health", `--health-header`; issue 11,
//! item 4): a Dockerfile `ENV` cannot hold a newline, so `\n` (backslash, n) separates headers
//! as a newline does; a header name or value that HTTP does not allow is refused with exit 2
//! and the reason, never sent silently.
//!
//! The app is a listener in the test that keeps the request head it got.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

/// Run `keepwell check` with `args` and `env` against a listener that answers 200; the request
/// head it received (names lower-cased) and keepwell's exit code.
fn request_head(args: &[&str], env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept the probe");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        String::from_utf8_lossy(&head).into_owned()
    });
    let url = format!("http://127.0.0.1:{port}/health");
    let mut command = Command::new(KEEPWELL);
    command.arg("check").args(args).arg(&url);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run keepwell check");
    let code = out.status.code().expect("an exit code");
    let head = server.join().expect("the listener thread");
    let headers = head
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.to_ascii_lowercase())
        .collect();
    (code, headers)
}

#[test]
fn backslash_n_separates_headers_in_a_variable_as_a_newline_does() {
    for value in [
        "Host: app.example.com\\nX-Probe: keepwell",
        "Host: app.example.com\nX-Probe: keepwell\n",
    ] {
        let (code, headers) = request_head(&[], &[("KEEPWELL_HEALTH_HEADER", value)]);
        assert_eq!(code, 0, "{value:?}");
        assert!(
            headers.contains(&"host: app.example.com".to_string())
                && headers.contains(&"x-probe: keepwell".to_string()),
            "{value:?} sent {headers:?}"
        );
    }
    // The flag takes the same forms, and may be repeated.
    let (code, headers) = request_head(&["--header", "X-A: 1\\nX-B: 2", "--header", "X-C: 3"], &[]);
    assert_eq!(code, 0);
    for expected in ["x-a: 1", "x-b: 2", "x-c: 3"] {
        assert!(headers.contains(&expected.to_string()), "{headers:?}");
    }
    // Separators inside a value stay: a Cookie's ';' and a '|' are values HTTP allows.
    let (code, headers) = request_head(&["--header", "Cookie: a=1; b=2|3"], &[]);
    assert_eq!(code, 0);
    assert!(
        headers.contains(&"cookie: a=1; b=2|3".to_string()),
        "{headers:?}"
    );
}

#[test]
fn the_supervisor_sends_every_header_of_the_variable() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let url = format!("http://127.0.0.1:{port}/health");
    let kw = keepwell(&[
        "--health-url",
        &url,
        "--health-start-interval",
        "100ms",
        "--",
        "sleep",
        "100",
    ])
    .env(
        "KEEPWELL_HEALTH_HEADER",
        "Host: app.example.com\\nX-Probe: keepwell",
    )
    .start();
    listener.set_nonblocking(true).expect("nonblocking");
    let mut stream = wait_for(Duration::from_secs(10), "keepwell's probe", || {
        listener.accept().ok().map(|(s, _)| s)
    });
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head.contains("\r\nhost: app.example.com\r\n")
            && head.contains("\r\nx-probe: keepwell\r\n"),
        "{head}"
    );
    drop(kw);
}

/// Flags, variables, and the one line keepwell must print.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn headers_http_does_not_allow_are_refused_with_exit_2_and_the_reason() {
    let cases: &[Case] = &[
        (
            &["--health-header", "X Probe: 1"],
            &[],
            "keepwell: --health-header \"X Probe: 1\" is not valid: the header name \"X Probe\" \
             has ' ', which HTTP does not allow in a name (letters, digits and \
             !#$%&'*+-.^_`|~ only)",
        ),
        (
            &[],
            &[("KEEPWELL_HEALTH_HEADER", "Host: a\\nX-Bad\u{1}: b")],
            "keepwell: KEEPWELL_HEALTH_HEADER \"X-Bad\\u{1}: b\" is not valid: the header name \
             \"X-Bad\\u{1}\" has '\\u{1}', which HTTP does not allow in a name (letters, digits \
             and !#$%&'*+-.^_`|~ only)",
        ),
        (
            &["--health-header", "X-Token: caf\u{e9}"],
            &[],
            "keepwell: --health-header \"X-Token: caf\u{e9}\" is not valid: the value of X-Token \
             has '\u{e9}', a character outside ASCII, which HTTP does not allow in a header \
             value (several headers: one per line, or separated by \\n)",
        ),
        (
            &["--health-header", "X-Token: a\u{7}b"],
            &[],
            "keepwell: --health-header \"X-Token: a\\u{7}b\" is not valid: the value of X-Token \
             has '\\u{7}', a control character, which HTTP does not allow in a header value \
             (several headers: one per line, or separated by \\n)",
        ),
        (
            &["--health-header", ": value"],
            &[],
            "keepwell: --health-header \": value\" is not valid: the header name before ':' is \
             empty",
        ),
    ];
    for (args, env, expected) in cases {
        let mut command = Command::new(KEEPWELL);
        command
            .args(["--health-url", "http://127.0.0.1:1/health"])
            .args(*args)
            .args(["--", "true"]);
        for (key, value) in *env {
            command.env(key, value);
        }
        let out = command.output().expect("run keepwell");
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{expected}\n"),
            "{args:?} {env:?}"
        );
        assert!(out.stdout.is_empty());
    }
    // keepwell check refuses them the same way, naming its own flag.
    let out = Command::new(KEEPWELL)
        .args(["check", "--header", "X Probe: 1", "http://127.0.0.1:1/"])
        .output()
        .expect("run keepwell check");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("keepwell: --header \"X Probe: 1\" is not valid: the header name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
