//! Restart policy: `--restart no|on-failure|always` for a child that exits by itself,
//! restarts after unhealthiness, the backoff (1 s doubling, reset outside `--restart-window`),
//! giving up with exit code 4 past `--max-restarts`, and stops that arrive during a backoff or
//! during a stop keepwell decided itself.

mod common;

use std::time::{Duration, Instant};

use common::app::{supervise, supervising, App, Behaviour};
use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);

const TO_HEALTHY: &str = "health changed: starting → healthy";
const TO_UNHEALTHY_FROM_STARTING: &str = "health changed: starting → unhealthy";
const HEALTHY_TO_UNHEALTHY: &str = "health changed: healthy → unhealthy";

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn a_crash_loop_gives_up_after_max_restarts_with_code_4() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let mut kw = supervise(
        &url,
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--max-restarts",
            "1",
        ],
    );
    let first = kw.wait_child(DEADLINE);
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    assert!(!is_alive(first));
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 2, "{log}");
    assert_eq!(count(&log, TO_UNHEALTHY_FROM_STARTING), 2, "{log}");
    assert!(
        log.contains("restarting in 100ms because the app stayed unhealthy"),
        "{log}"
    );
    assert!(
        log.contains("giving up: 1 restart inside 5m already (--max-restarts)"),
        "{log}"
    );
    assert!(
        log.contains("exiting with code 4: too many restarts inside --restart-window"),
        "{log}"
    );
}

/// keepwell with a child that exits by itself; no health URL.
fn exiting_child(restart: &str, command: &str) -> Keepwell {
    keepwell(&[
        "--restart",
        restart,
        "--max-restarts",
        "2",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        command,
    ])
    .start()
}

#[test]
fn restart_on_failure_restarts_a_failing_child_with_backoff() {
    let mut kw = exiting_child("on-failure", "exit 3");
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 3, "{log}");
    let first = log.find("restarting in 100ms because the child exited with code 3");
    let second = log.find("restarting in 1s because the child exited with code 3");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "backoff 100ms then 1s:\n{log}"
    );
    assert!(log.contains("giving up: 2 restarts inside"), "{log}");
}

#[test]
fn restart_on_failure_lets_a_clean_exit_end_keepwell() {
    let mut kw = exiting_child("on-failure", "exit 0");
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 1, "{log}");
    assert!(!log.contains("restarting"), "{log}");
}

#[test]
fn restart_always_restarts_even_a_clean_exit_with_backoff() {
    let mut kw = exiting_child("always", "exit 0");
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 3, "{log}");
    let first = log.find("restarting in 100ms because the child exited with code 0");
    let second = log.find("restarting in 1s because the child exited with code 0");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "backoff 100ms then 1s:\n{log}"
    );
}

#[test]
fn restarts_outside_the_restart_window_do_not_count_and_the_backoff_resets() {
    // Each restart is more than the 1s window after the one before (the child lives 1.2 s):
    // never "too many", and the backoff stays the first one's, 100 ms.
    let mut kw = keepwell(&[
        "--restart",
        "always",
        "--max-restarts",
        "1",
        "--restart-window",
        "1s",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "sleep 1.2; exit 1",
    ])
    .start();
    wait_until(DEADLINE, "three restarts", || {
        count(
            &kw.stderr(),
            "restarting in 100ms because the child exited with code 1",
        ) >= 3
    });
    let log = kw.stderr();
    assert!(!log.contains("restarting in 1s"), "{log}");
    assert!(!log.contains("giving up"), "{log}");
    // TERM reaches either the running child (`sh`, which dies of it) or the backoff, where
    // keepwell exits at once with 128+15: 143 either way, as the README says.
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 143);
}

#[test]
fn an_unhealthy_child_that_ignores_the_stop_signal_is_killed_after_grace_and_replaced() {
    let grace = Duration::from_secs(2);
    let app = App::http(Behaviour::Status(200));
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let out_arg = out.to_string_lossy().into_owned();
    // The echo child writes TERM down and goes on running (no EXIT_ON): it needs SIGKILL.
    let kw = supervising(
        &app.url(),
        &["--health-retries", "1", "--grace", "2s"],
        &["python3", &support("echo_signals.py"), &out_arg],
    )
    .start();
    let first = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_HEALTHY);
    wait_until(DEADLINE, "the echo child", || read(&out).contains("ready"));
    // The stop cannot begin before the app fails: the time from here to the moment the old
    // child is seen gone is at least the grace, however loaded the machine.
    let failed = Instant::now();
    app.set(Behaviour::Status(500));
    let log = kw.wait_log(DEADLINE, "the grace period ran out");
    assert!(log.contains(HEALTHY_TO_UNHEALTHY), "{log}");
    wait_until(DEADLINE, "the old child gone", || !is_alive(first));
    assert!(
        failed.elapsed() >= grace,
        "the child was killed {:?} after the app failed, inside the 2 s grace",
        failed.elapsed()
    );
    // SPEC: SIGCONT follows every stop signal.
    assert_eq!(
        echoed(&out),
        ["TERM", "CONT"],
        "the stop signal came before SIGKILL"
    );
    wait_for(DEADLINE, "a new child", || {
        kw.child().filter(|&pid| pid != first)
    });
}

#[test]
fn a_stop_signal_during_the_backoff_exits_at_once_with_128_plus_n() {
    // README: "Stop while nothing runs (TERM during a restart backoff): keepwell exits at once
    // with 128+N". The child exits at once; backoffs are 100 ms, 1 s, 2 s, then 4 s: the
    // signal comes in the 4 s one, and no fifth child may start.
    for (signal, code) in [
        (Signal::SIGTERM, 143),
        (Signal::SIGINT, 130),
        (Signal::SIGQUIT, 131),
    ] {
        let mut kw = keepwell(&[
            "--restart",
            "always",
            "--max-restarts",
            "10",
            "--",
            "sh",
            "-c",
            "exit 1",
        ])
        .start();
        kw.wait_log(
            DEADLINE,
            "restarting in 4s because the child exited with code 1",
        );
        kw.signal(signal);
        assert_eq!(kw.wait_exit(DEADLINE), code, "{signal}");
        let log = kw.stderr();
        assert_eq!(count(&log, "child started"), 4, "{signal}: {log}");
    }
}

#[test]
fn a_stop_signal_during_the_stop_after_max_restarts_keeps_exit_4() {
    // README: a stop during a stop keepwell decided keeps that stop's exit code (3 or 4). The
    // app turns unhealthy, and the first restart is one too many (--max-restarts 0): keepwell
    // gives up and stops the child, which ignores the stop signal for the 60 s grace. A TERM
    // from outside leaves that grace running (README: "the grace already running stays"); a
    // second one is "a second TERM during the grace period" and kills at once (SPEC). The exit
    // code stays 4 (3 for --on-unhealthy exit) throughout.
    for (extra, code, why) in [
        (
            &["--max-restarts", "0"][..],
            4,
            "giving up: 0 restarts inside 5m already",
        ),
        (
            &["--on-unhealthy", "exit"][..],
            3,
            "the app stayed unhealthy",
        ),
    ] {
        let app = App::http(Behaviour::Status(200));
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("signals");
        let out_arg = out.to_string_lossy().into_owned();
        let flags = [&["--health-retries", "1", "--grace", "60s"][..], extra].concat();
        let mut kw = supervising(
            &app.url(),
            &flags,
            &["python3", &support("echo_signals.py"), &out_arg],
        )
        .start();
        wait_until(DEADLINE, "the echo child", || read(&out).contains("ready"));
        kw.wait_log(DEADLINE, TO_HEALTHY);
        app.set(Behaviour::Status(500));
        kw.wait_log(DEADLINE, why);
        wait_until(
            DEADLINE,
            "the child to get the stop signal and SIGCONT",
            || echoed(&out) == ["TERM", "CONT"],
        );
        let child = kw.child().expect("the stopping child");
        kw.signal(Signal::SIGTERM);
        // keepwell reads pending standard signals before real-time ones: once the child has
        // 40, keepwell has handled that TERM.
        kw.signal_number(40);
        // The TERM from outside is forwarded as it came (SPEC), SIGCONT after it.
        wait_until(DEADLINE, "40 at the child after TERM", || {
            echoed(&out) == ["TERM", "CONT", "TERM", "CONT", "40"]
        });
        assert!(
            is_alive(child),
            "the first TERM from outside cut the grace short"
        );
        assert!(!kw.stderr().contains("SIGKILL to"), "{}", kw.stderr());
        kw.signal(Signal::SIGTERM);
        assert_eq!(kw.wait_exit(DEADLINE), code, "{extra:?}");
        let log = kw.stderr();
        assert!(log.contains("a second stop signal"), "{log}");
        assert!(log.contains(&format!("exiting with code {code}")), "{log}");
    }
}

#[test]
fn restart_no_exits_with_the_childs_code() {
    let mut kw = exiting_child("no", "exit 7");
    assert_eq!(kw.wait_exit(DEADLINE), 7, "{}", kw.stderr());
    assert_eq!(count(&kw.stderr(), "child started"), 1);
}
