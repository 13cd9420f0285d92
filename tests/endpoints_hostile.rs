//! Hostile and odd clients of `--listen` (README "Serving probes"): nothing sent over HTTP
//! changes anything; idle, stalled, trickling, endless and flooding clients are bounded and
//! closed, never starve `/livez`, never delay signals or probes, never grow keepwell's
//! memory; a connection lives at most 60 s.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::http;
use common::switch_app::{num, status_json, Boot, SwitchApp};
use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);
/// keepwell's header-read timeout (src/server.rs): a connection that has not sent a whole
/// request head by then is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest keepwell keeps one connection (README: "keeps a connection at most 60 s").
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

#[test]
fn a_prober_that_half_closes_after_its_request_is_answered() {
    // `printf 'GET /livez HTTP/1.0\r\n\r\n' | nc -N host 9000` shuts down its write side
    // right after the request; before half_close(true), some of these got no answer.
    let (_kw, listen) = sleeper();
    for i in 0..200 {
        let answer = http::raw(listen, b"GET /livez HTTP/1.0\r\n\r\n");
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n")
                || answer.starts_with(b"HTTP/1.0 200 OK\r\n"),
            "attempt {i}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[test]
fn nothing_over_http_changes_anything() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    let child = app.kw.wait_child(DEADLINE);
    let paths = [
        "/livez",
        "/readyz",
        "/startupz",
        "/status",
        "/metrics",
        "/restart",
        "/stop",
        "/kill",
        "/signal?sig=TERM",
        "/quitquitquit",
        "/shutdown",
        "/exit",
        "/debug/pprof",
        "/../etc/passwd",
        "/status/restart",
        "//livez",
        "/*",
    ];
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "GET", "HEAD", "OPTIONS", "TRACE",
    ] {
        for path in paths {
            let response = http::request(app.listen, method, path).expect("an answer");
            assert!(
                [200, 404, 405].contains(&response.status),
                "{method} {path}: {}",
                response.status
            );
        }
    }
    // Bodies, garbage and protocol games get an error status and a close, never an action.
    // An HTTP/2 preface gets the close alone (hyper speaks HTTP/1 only here). `http::raw`
    // fails on a read that times out: silence is not a close.
    for (bytes, answered) in [
        (
            &b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nTERM"[..],
            Some("HTTP/1.1 405 "),
        ),
        (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n", Some("HTTP/1.1 405 ")),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",
            Some("HTTP/1.1 400 "),
        ),
        (b"KILL / HTTP/1.1\r\n\r\n", Some("HTTP/1.1 405 ")),
        (b"GET /livez HTTP/9.9\r\n\r\n", Some("HTTP/1.1 400 ")),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
    ] {
        let answer = http::raw(app.listen, bytes);
        let text = String::from_utf8_lossy(&answer);
        match answered {
            Some(status) => assert!(
                text.starts_with(status),
                "{:?} must be answered {status:?}, was answered {text:?}",
                String::from_utf8_lossy(bytes)
            ),
            None => assert_eq!(text, "", "{:?}", String::from_utf8_lossy(bytes)),
        }
    }
    // An upgrade request is served as the plain GET it is; nothing is upgraded.
    let answer = http::raw(
        app.listen,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n",
    );
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(app.probes(), (200, 200, 200));
    let status = app.status();
    assert_eq!(status["child_pid"], child, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["phase"], "running", "{status}");
    assert_eq!(app.kw.child(), Some(child));
    assert!(is_alive(app.kw.pid));
    let log = app.kw.stderr();
    assert!(!log.contains("forwarded"), "{log}");
    assert!(!log.contains("stopping"), "{log}");
    assert_eq!(app.stopped_by(), None, "{}", app.events());
}

// ---------------------------------------------------------------------------------------------
// Hostile clients

/// keepwell with --listen and no health URL, supervising a sleeping child.
fn sleeper() -> (Keepwell, SocketAddr) {
    let listen = http::loopback(free_port());
    let listen_arg = listen.to_string();
    let kw = keepwell(&["--listen", &listen_arg, "--", "sleep", "600"]).start();
    wait_until(DEADLINE, "/livez 200", || {
        http::status(listen, "/livez") == 200
    });
    (kw, listen)
}

/// One GET /livez on a fresh connection; how long the answer took.
fn timed_livez(listen: SocketAddr) -> Duration {
    let asked = Instant::now();
    let response = http::get(listen, "/livez").expect("GET /livez answered");
    assert_eq!(response.status, 200);
    asked.elapsed()
}

/// Wait until the server has closed every one of these connections.
fn wait_closed_by_server(mut streams: Vec<TcpStream>, deadline: Duration, what: &str) {
    let until = Instant::now() + deadline;
    for stream in &mut streams {
        let left = until.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut sink = [0u8; 1024];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{what}: still open after {deadline:?} ({e})"),
            }
        }
    }
}

fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open `count` connections that send `send` and nothing more, keeping at most `held` of
/// them (keepwell's bound) in keepwell's hands. They go in batches, each waited for in
/// keepwell's file descriptors: a connect succeeds once the kernel has queued it, and a burst
/// longer than the listen backlog would be accepted only after SYN-ACK retransmissions, seconds
/// later. Two descriptors of slack cover earlier requests the server had not closed yet.
fn hold(
    kw: &Keepwell,
    listen: SocketAddr,
    count: usize,
    held: usize,
    send: &[u8],
) -> Vec<TcpStream> {
    const BATCH: usize = 50;
    let before = open_fds(kw.pid);
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        for _ in 0..BATCH.min(count - streams.len()) {
            let mut stream = http::connect(listen).expect("connect");
            if !send.is_empty() {
                stream.write_all(send).expect("send");
            }
            streams.push(stream);
        }
        let want = before + streams.len().min(held);
        wait_until(
            DEADLINE,
            &format!("keepwell to hold {} connections", want - before),
            || open_fds(kw.pid) + 2 >= want,
        );
    }
    streams
}

#[test]
fn idle_and_stalled_connections_never_starve_livez_and_are_closed() {
    let (kw, listen) = sleeper();

    let idle = hold(&kw, listen, 300, 300, b"");
    let took = timed_livez(listen);
    eprintln!("/livez with 300 idle connections held: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_closed_by_server(idle, HEADER_READ_TIMEOUT + DEADLINE, "an idle connection");

    let stalled = hold(&kw, listen, 300, 300, b"GET /livez HT");
    let took = timed_livez(listen);
    eprintln!("/livez with 300 stalled request lines held: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_closed_by_server(
        stalled,
        HEADER_READ_TIMEOUT + DEADLINE,
        "a stalled connection",
    );

    // Slowloris: a header trickled a byte at a time does not keep its connection alive.
    let mut slow = http::connect(listen).expect("connect");
    slow.write_all(b"GET /livez HTTP/1.1\r\nX-Slow: ")
        .expect("send");
    let opened = Instant::now();
    let closed = loop {
        if slow.write_all(b"a").is_err() {
            break opened.elapsed();
        }
        let mut sink = [0u8; 64];
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        match slow.read(&mut sink) {
            Ok(_) => break opened.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break opened.elapsed(),
            Err(_) => {}
        }
        assert!(
            opened.elapsed() < HEADER_READ_TIMEOUT + DEADLINE,
            "a trickled header kept its connection open"
        );
    };
    eprintln!("a trickled header was cut off after {closed:?}");
    assert!(
        closed >= HEADER_READ_TIMEOUT - Duration::from_millis(200),
        "{closed:?}"
    );

    assert!(timed_livez(listen) < Duration::from_secs(1));
    assert!(is_alive(kw.pid));
}

#[test]
fn a_busy_connection_is_closed_after_60_seconds() {
    // A request every second keeps the connection busy: neither the header-read timeout nor
    // idleness can end it, only the 60 s lifetime. This test takes a minute (nextest runs it
    // beside the others; .config/nextest.toml gives it the time).
    let (_kw, listen) = sleeper();
    // Before connect: the server's clock for this connection starts later than this one.
    let opened = Instant::now();
    let mut client = http::Client::connect(listen).expect("connect");
    let mut answered = 0;
    let closed = loop {
        match client.send("GET", "/livez") {
            Ok(response) => {
                assert_eq!(response.status, 200);
                answered += 1;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ),
                    "the connection failed otherwise than by a close: {e}"
                );
                break opened.elapsed();
            }
        }
        assert!(
            opened.elapsed() < CONNECTION_LIFETIME + DEADLINE,
            "still open after {:?} and {answered} requests",
            opened.elapsed()
        );
        thread::sleep(Duration::from_secs(1));
    };
    eprintln!("the server closed a busy connection after {closed:?} and {answered} requests");
    assert!(closed >= CONNECTION_LIFETIME, "closed after {closed:?}");
    // The server goes on serving new connections.
    assert_eq!(http::status(listen, "/livez"), 200);
}

#[test]
fn past_the_connection_bound_the_oldest_is_evicted_and_livez_answers_at_once() {
    let (kw, listen) = sleeper();
    // keepwell keeps at most 512 connections (src/server.rs); a new one evicts the oldest.
    let held = hold(&kw, listen, 600, 512, b"");
    let took = timed_livez(listen);
    eprintln!("/livez with 600 idle connections opened (bound 512): {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The first connections opened were the ones evicted: the server closed them already.
    let oldest: Vec<TcpStream> = held.into_iter().take(50).collect();
    wait_closed_by_server(oldest, Duration::from_secs(1), "an evicted connection");
}

#[test]
fn a_flood_is_answered_while_signals_still_reach_the_child_and_memory_stays_small() {
    let listen = http::loopback(free_port());
    let listen_arg = listen.to_string();
    let out_dir = tempfile::tempdir().expect("dir");
    let out = out_dir.path().join("signals");
    let (script, out_arg) = (
        support("echo_signals.py"),
        out.to_string_lossy().to_string(),
    );
    // The health URL is a TCP port the test accepts and closes: probes every 200 ms.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind a probe target");
    let health_url = format!("tcp://{}", target.local_addr().expect("address"));
    thread::spawn(move || target.incoming().for_each(drop));
    let mut kw = keepwell(&[
        "--listen",
        &listen_arg,
        "--health-url",
        &health_url,
        "--health-interval",
        "200ms",
        "--health-start-interval",
        "100ms",
        "--",
        "python3",
        &script,
        &out_arg,
    ])
    .env("EXIT_ON", "TERM")
    .pid1()
    .start();
    wait_until(DEADLINE, "the echo child", || read(&out).contains("ready"));
    wait_until(DEADLINE, "/readyz 200", || {
        http::status(listen, "/readyz") == 200
    });
    let rss_before = vm_rss_kib(kw.pid);

    const THREADS: usize = 8;
    const REQUESTS: usize = 1500;
    let flood: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let keep_alive = t % 2 == 0;
                let mut client = None;
                let mut answered = 0;
                for i in 0..REQUESTS {
                    let path = if i % 2 == 0 { "/metrics" } else { "/livez" };
                    let response = if keep_alive {
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => client.insert(http::Client::connect(listen).expect("connect")),
                        };
                        match c.send("GET", path) {
                            Ok(r) => Ok(r),
                            // The server may end a keep-alive connection: reconnect once.
                            Err(_) => {
                                let c = client.insert(http::Client::connect(listen).expect("re"));
                                c.send("GET", path)
                            }
                        }
                    } else {
                        http::get(listen, path)
                    };
                    match response {
                        Ok(r) if r.status == 200 => answered += 1,
                        Ok(r) => panic!("thread {t}: {path} answered {}", r.status),
                        Err(e) => panic!("thread {t}: {path} unanswered: {e}"),
                    }
                }
                answered
            })
        })
        .collect();

    // While the flood runs: signals reach the child promptly, probes keep their pace, memory
    // stays small.
    let started = Instant::now();
    let probes_before = num(&status_json(listen), "probes_ok");
    let mut rss_max = rss_before;
    let mut latencies = Vec::new();
    let mut probe_age_max: f64 = 0.0;
    while !flood.iter().all(|h| h.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood took too long"
        );
        rss_max = rss_max.max(vm_rss_kib(kw.pid));
        let status = status_json(listen);
        probe_age_max = probe_age_max.max(now_unix() - num(&status["last_probe"], "at_unix"));
        if latencies.len() < 5 {
            let before = echoed(&out).len();
            let sent = Instant::now();
            kw.signal(Signal::SIGUSR1);
            wait_until(DEADLINE, "USR1 at the child during the flood", || {
                echoed(&out).len() > before
            });
            latencies.push(sent.elapsed());
        } else {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let took = started.elapsed();
    let answered: usize = flood
        .into_iter()
        .map(|h| h.join().expect("a flood thread"))
        .sum();
    let rss_after = vm_rss_kib(kw.pid);
    let probes = num(&status_json(listen), "probes_ok") - probes_before;
    eprintln!(
        "flood: {probes} probes succeeded during it; the last probe was at most \
         {probe_age_max:.3}s old (--health-interval 200ms)"
    );
    eprintln!(
        "flood: {answered} requests from {THREADS} clients in {took:?}; USR1 reached the child \
         in {latencies:?}; keepwell VmRSS before {rss_before} KiB, max during {rss_max} KiB, \
         after {rss_after} KiB"
    );
    assert_eq!(answered, THREADS * REQUESTS);
    assert!(!latencies.is_empty(), "no signal was sent during the flood");
    assert_eq!(
        echoed(&out),
        vec!["USR1".to_string(); latencies.len()],
        "each USR1 sent reaches the child once"
    );
    assert!(
        rss_max < 16 * 1024,
        "keepwell's VmRSS reached {rss_max} KiB"
    );
    // Probing went on through the flood (every 200 ms; a starved prober would fall seconds
    // behind). Generous, so that a loaded machine cannot fail it.
    assert!(probe_age_max < 3.0, "a probe was {probe_age_max:.3}s late");
    assert_eq!(status_json(listen)["state"], "healthy");

    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
}

#[test]
fn endless_request_headers_are_cut_at_8_kib_and_memory_stays_bounded() {
    let (kw, listen) = sleeper();
    // One oversized head: refused with 431, as hyper does past its buffer.
    let mut stream = http::connect(listen).expect("connect");
    let mut request = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend(b"\r\n\r\n");
    let _ = stream.write_all(&request);
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).expect("an answer");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // 200 clients each pushing 100 KB of never-ending headers: keepwell holds at most 8 KiB
    // of each (before, this was ~400 KiB each: 80 MB).
    let before = vm_rss_kib(kw.pid);
    let chunk = vec![b'a'; 100_000];
    let clients: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = http::connect(listen).ok()?;
            s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
            let _ = s.write_all(b"GET /livez HTTP/1.1\r\nX-Endless: ");
            let _ = s.write_all(&chunk);
            Some(s)
        })
        .collect();
    // Answered after the floods were read: the server thread has been through them.
    assert_eq!(http::status(listen, "/livez"), 200);
    let during = vm_rss_kib(kw.pid);
    eprintln!("VmRSS before {before} KiB, with 200 endless headers {during} KiB");
    assert!(during < before + 16 * 1024, "{before} -> {during} KiB");
    drop(clients);
}
