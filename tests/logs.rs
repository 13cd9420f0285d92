//! Logs: keepwell's own lines on stderr, one per event that matters, as text or JSON; never a
//! line per successful probe; the child's output untouched on its own stdout and stderr.

mod common;

use std::process::Command;
use std::time::Duration;

use common::http;
use common::*;

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let out = Command::new(KEEPWELL)
        .args([
            "--log-format",
            "json",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ])
        .output()
        .expect("run keepwell");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut messages = Vec::new();
    for line in stderr.lines().filter(|l| *l != "to-stderr") {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["timestamp"].is_string(), "{line}");
        assert!(event["level"].is_string(), "{line}");
        messages.push(event);
    }
    let started = messages
        .iter()
        .find(|e| e["message"] == "child started")
        .expect("a child started event");
    assert!(
        started["pid"].as_i64().is_some_and(|pid| pid > 0),
        "{started}"
    );
    assert!(messages.iter().any(|e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("exiting with code 3"))
        && e["code"] == 3));
    assert!(
        stderr.lines().any(|l| l == "to-stderr"),
        "the child's stderr passes through"
    );
}

#[test]
fn no_line_per_successful_probe() {
    // keepwell probes itself: its own --listen endpoint answers /livez with 200.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}/livez");
    let mut kw = keepwell(&[
        "--listen",
        &listen,
        "--health-url",
        &url,
        "--health-start-interval",
        "50ms",
        "--health-interval",
        "50ms",
        "--",
        "sleep",
        "30",
    ])
    .start();
    kw.wait_log(
        Duration::from_secs(10),
        "health changed: starting → healthy",
    );
    // Twenty successful probes, counted by keepwell itself in /status.
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    wait_until(Duration::from_secs(10), "20 successful probes", || {
        http::get(addr, "/status")
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["probes_ok"].as_u64())
            .is_some_and(|n| n >= 20)
    });
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    kw.wait_exit(Duration::from_secs(10));
    let log = kw.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("local verdict socket"))
        .collect();
    // Started, healthy, stopping, exiting: four events, however many probes.
    assert_eq!(lines.len(), 4, "{log}");
}

#[test]
fn a_stderr_nobody_reads_never_stalls_signals_or_the_stop() {
    // The pipe's read end stays open and unread: once its 64 KiB fill up, a keepwell that
    // wrote its log lines itself would block in write(2) and handle nothing more.
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("child");
    let script = format!(
        "import os, signal, time\n\
         out = open({out:?}, 'a', buffering=1)\n\
         signal.signal(40, signal.SIG_IGN)\n\
         signal.signal(signal.SIGTERM, lambda n, f: (out.write('TERM\\n'), os._exit(0)))\n\
         out.write('ready\\n')\n\
         while True: time.sleep(1)\n",
        out = out.to_str().expect("utf-8")
    );
    let (_unread, writer) = nix::unistd::pipe().expect("pipe");
    let mut kw = Command::new(KEEPWELL)
        .args(["--", "python3", "-c", &script])
        .stderr(std::process::Stdio::from(writer))
        .spawn()
        .expect("start keepwell");
    wait_until(Duration::from_secs(10), "ready", || {
        read(&out).contains("ready")
    });
    // Real-time signals queue rather than merge: each one is forwarded and logged (~90
    // bytes), so 2000 of them overflow the pipe. The child ignores them, and leaves with
    // os._exit on TERM: keepwell may still be forwarding 40s when Python would otherwise be
    // restoring default handlers on its way out.
    for _ in 0..2000 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(kw.id() as i32, 40) };
    }
    // SAFETY: as above.
    unsafe { libc::kill(kw.id() as i32, libc::SIGTERM) };
    let status = wait_or_kill(
        &mut kw,
        Duration::from_secs(10),
        "keepwell stopping with its stderr unread",
    );
    assert_eq!(status.code(), Some(0));
    assert!(read(&out).contains("TERM"), "{}", read(&out));
}
