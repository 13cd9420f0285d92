//! A connection flood under a low file descriptor limit cannot get a healthy app killed:
//! `--listen` keeps its connections below RLIMIT_NOFILE with room for probes, and a probe that
//! cannot get a descriptor is keepwell's shortage, never counted as the app's failure.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const DEADLINE: Duration = Duration::from_secs(15);
/// The limit keepwell runs under: far below the 512 connections `--listen` would otherwise keep.
const NOFILE: usize = 100;
/// Idle connections held open at once, more than NOFILE; opened within keepwell's 3 s header
/// timeout, so none of them has been closed for idleness yet.
const HELD: usize = 300;

fn status(listen: SocketAddr) -> serde_json::Value {
    let response = http::get(listen, "/status").expect("GET /status");
    serde_json::from_str(&response.text()).expect("/status is JSON")
}

#[test]
fn a_connection_flood_under_a_low_fd_limit_keeps_the_healthy_app_healthy() {
    // One failed probe would be enough to restart the app.
    let (_app, listen, kw) = common::fd_limit::listening_under(NOFILE, DEADLINE);
    let log = kw.stderr();
    assert!(
        log.contains(&format!("the file descriptor limit is {NOFILE}")),
        "keepwell says the limit lowers its bound: {log}"
    );
    let before = status(listen);

    // The flood: idle connections that never send a byte, held by this test.
    let mut held: Vec<TcpStream> = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        if let Ok(stream) = TcpStream::connect_timeout(&listen, Duration::from_secs(1)) {
            held.push(stream);
        }
    }
    assert!(
        held.len() >= HELD / 2,
        "only {} connections opened",
        held.len()
    );
    // While they are held, probes go on every 100 ms and a new client is still served.
    let flood_started = Instant::now();
    let mut livez_ok = 0;
    while flood_started.elapsed() < Duration::from_secs(2) {
        if http::status(listen, "/livez") == 200 {
            livez_ok += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = status(listen);
    drop(held);

    let log = kw.stderr();
    assert!(!log.contains("→ unhealthy"), "{log}");
    assert!(!log.contains("restarting in"), "{log}");
    assert_eq!(log.matches("child started").count(), 1, "{log}");
    assert!(
        livez_ok > 0,
        "no /livez was answered during the flood: {log}"
    );
    let probes = |s: &serde_json::Value, key: &str| s[key].as_f64().expect("a count");
    assert_eq!(
        probes(&during, "probes_failed"),
        probes(&before, "probes_failed"),
        "a probe failed during the flood: {during} {log}"
    );
    assert!(
        probes(&during, "probes_ok") >= probes(&before, "probes_ok") + 5.0,
        "probes stopped during the flood: {before} {during}"
    );
    assert_eq!(during["state"], "healthy", "{during}");
}
