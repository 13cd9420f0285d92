//! Logs: keepwell's own lines on stderr, one per event that matters, as text or JSON, filtered
//! by `--log-level`; never a line per successful probe; the child's output untouched on its own
//! stdout and stderr; a stderr nobody reads never stalls keepwell, and the lines it could not
//! write are counted.

mod common;

use std::io::Read;
use std::time::Duration;

use common::http;
use common::*;

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let out = run_keepwell(
        &[
            "--log-format",
            "json",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
        &[],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "to-stdout\n");
    let mut messages = Vec::new();
    for line in out.stderr.lines().filter(|l| *l != "to-stderr") {
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
        out.stderr.lines().any(|l| l == "to-stderr"),
        "the child's stderr passes through"
    );
}

#[test]
fn log_level_keeps_the_lines_at_or_above_it() {
    // A child that ignores TERM and is killed after the grace: "child started" and "exiting
    // with code 137" are info, "SIGKILL … the grace period ran out" is a warning.
    let script = "trap '' TERM; echo up; kill -TERM $PPID; while :; do sleep 0.05; done";
    let run = |level: &[(&str, &str)], flag: &[&str]| {
        let args = [flag, &["--grace", "300ms", "--", "sh", "-c", script][..]].concat();
        let out = run_keepwell(&args, level);
        assert_eq!(out.code, 137, "{level:?} {flag:?}: {out:?}");
        assert_eq!(out.stdout, "up\n");
        out.stderr
    };
    let info = run(&[], &[]);
    assert!(info.contains("child started"), "{info}");
    assert!(info.contains("exiting with code 137"), "{info}");
    assert!(info.contains("the grace period ran out"), "{info}");
    for warn in [
        run(&[], &["--log-level", "warn"]),
        run(&[("KEEPWELL_LOG_LEVEL", "warn")], &[]),
    ] {
        assert!(warn.contains("the grace period ran out"), "{warn}");
        assert!(!warn.contains("child started"), "{warn}");
        assert!(!warn.contains("exiting with code"), "{warn}");
        assert!(warn.lines().count() < info.lines().count(), "{warn}");
    }
    let error = run(&[], &["--log-level", "error"]);
    assert_eq!(error, "", "nothing here is an error");
    let off = run(&[], &["--log-level", "off"]);
    assert_eq!(off, "");
    // debug adds to info (the subreaper registration, for one) and drops nothing.
    let debug = run(&[], &["--log-level", "debug"]);
    assert!(debug.lines().count() > info.lines().count(), "{debug}");
    for message in [
        "child started",
        "exiting with code 137",
        "grace period ran out",
    ] {
        assert!(debug.contains(message), "{debug}");
    }
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
    kw.wait_log(DEADLINE, "health changed: starting → healthy");
    // Twenty successful probes, counted by keepwell itself in /status.
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    wait_until(DEADLINE, "20 successful probes", || {
        http::get(addr, "/status")
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["probes_ok"].as_u64())
            .is_some_and(|n| n >= 20)
    });
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    kw.wait_exit(DEADLINE);
    let log = kw.stderr();
    // Started, healthy, stopping, exiting: four events, however many probes. (With its own
    // mount namespace, this keepwell has its own local verdict socket: no warning about
    // sharing one either.)
    assert_eq!(log.lines().count(), 4, "{log}");
}

#[test]
fn a_stderr_nobody_reads_never_stalls_signals_and_the_lines_dropped_are_counted() {
    // The pipe's read end stays open and unread: once its 64 KiB fill up, a keepwell that
    // wrote its log lines itself would block in write(2) and handle nothing more.
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("child");
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    // The child ignores 40 (the kernel discards it: nothing queues at the child) and writes
    // down 41 and TERM.
    let mut kw = keepwell_command(&[
        "--",
        "python3",
        &support("echo_signals.py"),
        out.to_str().expect("utf-8"),
    ])
    .env("IGNORE", "40")
    .env("EXIT_ON", "TERM")
    .stderr(std::process::Stdio::from(writer))
    .spawn()
    .map(KillOnDrop)
    .expect("start keepwell");
    wait_until(DEADLINE, "ready", || read(&out).contains("ready"));
    // Real-time signals queue rather than merge: each one is forwarded and logged (~50 bytes),
    // so 2000 of them overflow the pipe and the queue before it.
    const FLOOD: usize = 2000;
    let pid = kw.id() as i32;
    for _ in 0..FLOOD {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, 40) }, 0);
    }
    // keepwell reads real-time signals lowest number first, and one number in order: once 41
    // reaches the child, every 40 has been forwarded, with stderr still unread.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, 41) }, 0);
    wait_until(DEADLINE, "41 at the child past the flood", || {
        echoed(&out) == ["41"]
    });
    // Now a reader catches up. Until the queue has drained, new lines are dropped too: USR1
    // (forwarded and logged) goes again until its line comes through, so every drop so far
    // has been counted in a line before it.
    let (seen, reading) = {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        let reading = std::thread::spawn(move || {
            let mut pipe = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("the log text")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (seen, reading)
    };
    let mut usr1_sent = 0;
    wait_until(
        DEADLINE,
        "a forwarded USR1 written once stderr is read",
        || {
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
            usr1_sent += 1;
            std::thread::sleep(Duration::from_millis(50));
            seen.lock()
                .expect("the log text")
                .contains("forwarded SIGUSR1")
        },
    );
    wait_until(DEADLINE, "every USR1 at the child", || {
        echoed(&out).len() == 1 + usr1_sent
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_or_kill(
        &mut kw,
        DEADLINE,
        "keepwell stopping after its stderr filled",
    );
    assert_eq!(status.code(), Some(0));
    let mut child_saw = vec!["41".to_string()];
    child_saw.extend(vec!["USR1".to_string(); usr1_sent]);
    child_saw.push("TERM".into());
    assert_eq!(echoed_through_stop(&out), child_saw);
    reading.join().expect("the stderr reader");
    let log = seen.lock().expect("the log text").clone();
    let dropped: u64 = log
        .lines()
        .filter_map(|l| {
            l.strip_prefix("keepwell: ")?
                .strip_suffix(" log lines dropped while stderr was not read")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let forwarded = log.lines().filter(|l| l.contains(" forwarded ")).count() as u64;
    eprintln!(
        "{forwarded} forwarding lines written, {dropped} lines dropped and counted, \
         {usr1_sent} USR1 sent"
    );
    assert!(
        dropped > 0,
        "the flood never overflowed the log queue:\n{log}"
    );
    // Every forwarding line (2000 × 40, one 41, the USR1s) was written or counted: nothing is
    // lost silently. The stop's lines came after the queue drained and are all written.
    assert_eq!(
        forwarded + dropped,
        FLOOD as u64 + 1 + usr1_sent as u64,
        "{log}"
    );
    assert!(log.contains("stopping the child"), "{log}");
    assert!(
        log.contains("exiting with code 0"),
        "the last line is written: {log}"
    );
}
