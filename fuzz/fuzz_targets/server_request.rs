//! Request bytes to the `--listen` server: the real connection handling (hyper with keepwell's
//! bounds, the endpoints) over an in-process connection; the client sends the input, then
//! shuts its write side, as `nc -N` does.
#![no_main]

mod common;

use std::time::Duration;

use keepwell::server::{http_connection, HEADER_READ_TIMEOUT};
use keepwell::state::Health;
use keepwell::status::{Published, Snapshot};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn snapshot() -> Snapshot {
    Snapshot {
        state: Health::Healthy,
        phase: "running".into(),
        child_pid: Some(7),
        user: "app (uid 999, gid 999)".into(),
        restarts: 0,
        live: true,
        ready: true,
        started: true,
        draining: false,
        health_url: Some("http://127.0.0.1:8000/health".into()),
        sockets: Vec::new(),
        last_probe: None,
        probes_ok: 3,
        probes_failed: 0,
        probe_seconds_sum: 0.01,
        started_at_unix: 0.0,
        keepwell_pid: 1,
    }
}

fuzz_target!(|request: &[u8]| {
    let published = Published::new(snapshot());
    let (mut client, server) = tokio::io::duplex(16 * 1024);
    let runtime = common::paused_runtime();
    let answer = runtime.block_on(async {
        let serve = http_connection(server, published.clone(), HEADER_READ_TIMEOUT);
        let talk = async {
            // Writing fails once the server has closed, as a real client's would.
            let _ = client.write_all(request).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        // However the request goes, the connection ends on its own within the header
        // deadline after the client is done.
        let both = async { tokio::join!(serve, talk) };
        tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(1), both).await
    });
    let (_, answer) = answer.expect("the connection outlived its client and its deadlines");
    if !answer.is_empty() {
        // An answer in the request's HTTP version (1.0 or 1.1), from hyper or the endpoints.
        assert!(
            answer.starts_with(b"HTTP/1."),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Nothing over HTTP changes anything.
    assert!(published.current() == snapshot());
});
