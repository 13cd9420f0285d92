//! Signals: every catchable one reaches the child, rewrites and group mode apply, and
//! TERM/INT/QUIT stop the child with --stop-signal, --grace and SIGKILL. Each test runs with
//! keepwell as PID 1 of a fresh PID namespace and as a plain subreaper.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);

/// keepwell supervising tests/support/echo_signals.py, once the child is ready; the folder
/// holds the file the child writes each signal to.
struct Echo {
    kw: Keepwell,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

fn echo_child(extra: &[&str], pid1: bool, exit_on: &str) -> Echo {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let script = support("echo_signals.py");
    let mut args: Vec<&str> = extra.to_vec();
    let out_str = out.to_string_lossy().to_string();
    args.extend(["--", "python3", &script, &out_str]);
    let mut launch = keepwell(&args).env("EXIT_ON", exit_on);
    if pid1 {
        launch = launch.pid1();
    }
    let kw = launch.start();
    wait_until(DEADLINE, "the echo child to be ready", || {
        read(&out).contains("ready")
    });
    Echo { kw, out, _dir: dir }
}

/// Every catchable standard signal except CHLD, and the three that start a stop (sent last).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGABRT,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGUSR1,
    Signal::SIGSEGV,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGSTKFLT,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGWINCH,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSYS,
];

fn short(signal: Signal) -> String {
    signal.as_str().trim_start_matches("SIG").to_string()
}

fn every_catchable_signal_reaches_the_child_in_order(pid1: bool) {
    let Echo { mut kw, out, _dir } = echo_child(&[], pid1, "TERM");
    let mut expected = Vec::new();
    for &signal in FORWARDED {
        kw.signal(signal);
        expected.push(short(signal));
        wait_until(DEADLINE, &format!("{signal} at the child"), || {
            echoed(&out) == expected
        });
    }
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    expected.push("TERM".into());
    assert_eq!(echoed_through_stop(&out), expected);
}

#[test]
fn every_catchable_signal_reaches_the_child_in_order_as_pid1() {
    every_catchable_signal_reaches_the_child_in_order(true);
}

#[test]
fn every_catchable_signal_reaches_the_child_in_order_as_subreaper() {
    every_catchable_signal_reaches_the_child_in_order(false);
}

#[test]
fn int_and_quit_stop_the_child_with_the_signal_that_came_not_the_stop_signal() {
    // SPEC: --stop-signal is for stops keepwell decides itself; a stop from outside forwards
    // the signal that came (QUIT and INT are gunicorn's quick shutdown, TERM its graceful one).
    for (received, pid1) in [(Signal::SIGINT, true), (Signal::SIGQUIT, false)] {
        let Echo { mut kw, out, _dir } =
            echo_child(&["--stop-signal", "USR2"], pid1, "INT,QUIT,USR2");
        kw.signal(received);
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        assert_eq!(echoed_through_stop(&out), vec![short(received)]);
    }
}

#[test]
fn rewrite_changes_forwarded_and_stop_signals() {
    for pid1 in [true, false] {
        let Echo { mut kw, out, _dir } = echo_child(
            &["--rewrite", "USR1:HUP", "--rewrite", "TERM:QUIT"],
            pid1,
            "QUIT",
        );
        kw.signal(Signal::SIGUSR1);
        wait_until(DEADLINE, "HUP at the child", || echoed(&out) == ["HUP"]);
        kw.signal(Signal::SIGTERM);
        assert_eq!(kw.wait_exit(DEADLINE), 0);
        assert_eq!(echoed_through_stop(&out), ["HUP", "QUIT"]);
    }
}

#[test]
fn rewrite_list_from_the_environment() {
    let out_dir = tempfile::tempdir().expect("dir");
    let out = out_dir.path().join("signals");
    let mut kw = keepwell(&[
        "--",
        "python3",
        &support("echo_signals.py"),
        out.to_str().expect("utf-8"),
    ])
    .env("KEEPWELL_REWRITE", "USR1:USR2,WINCH:HUP")
    .env("EXIT_ON", "TERM")
    .start();
    wait_until(DEADLINE, "ready", || read(&out).contains("ready"));
    kw.signal(Signal::SIGUSR1);
    kw_wait(&out, &["USR2"]);
    kw.signal(Signal::SIGWINCH);
    kw_wait(&out, &["USR2", "HUP"]);
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0);
}

fn kw_wait(out: &Path, expected: &[&str]) {
    wait_until(DEADLINE, &format!("{expected:?} at the child"), || {
        echoed(out) == expected
    });
}

/// A shell that starts a grandchild in the same process group; both echo signals (to `a`, the
/// child, and `b`, the grandchild, in the returned folder).
fn group_child(extra: &[&str], pid1: bool) -> (Keepwell, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let script = format!(
        "python3 {echo} {b} & exec python3 {echo} {a}",
        echo = support("echo_signals.py"),
        a = a.display(),
        b = b.display()
    );
    let mut args = extra.to_vec();
    args.extend(["--", "sh", "-c", &script]);
    let mut launch = keepwell(&args).env("EXIT_ON", "TERM");
    if pid1 {
        launch = launch.pid1();
    }
    let kw = launch.start();
    wait_until(DEADLINE, "both echo processes ready", || {
        read(&a).contains("ready") && read(&b).contains("ready")
    });
    (kw, dir, a, b)
}

#[test]
fn signal_group_reaches_the_whole_process_group() {
    for pid1 in [true, false] {
        let (kw, _dir, a, b) = group_child(&["--signal-group"], pid1);
        kw.signal(Signal::SIGUSR1);
        wait_until(DEADLINE, "USR1 at both", || {
            echoed(&a) == ["USR1"] && echoed(&b) == ["USR1"]
        });
    }
}

#[test]
fn without_signal_group_only_the_child_gets_the_signal() {
    let (kw, _dir, a, b) = group_child(&[], false);
    kw.signal(Signal::SIGUSR1);
    kw.signal(Signal::SIGUSR2);
    wait_until(DEADLINE, "USR1 and USR2 at the child", || {
        echoed(&a) == ["USR1", "USR2"]
    });
    assert!(echoed(&b).is_empty(), "the grandchild got {:?}", echoed(&b));
}

#[test]
fn a_child_that_ignores_term_is_killed_after_grace() {
    let grace = Duration::from_millis(1500);
    for pid1 in [true, false] {
        // The echo child writes TERM down and goes on running: it needs SIGKILL.
        let Echo { mut kw, out, _dir } = echo_child(&["--grace", "1500ms"], pid1, "");
        let sent = Instant::now();
        kw.signal(Signal::SIGTERM);
        assert_eq!(kw.wait_exit(DEADLINE), 137, "{}", kw.stderr());
        // keepwell's stop began after the test sent TERM and its exit follows the SIGKILL: a
        // keepwell that cut the grace short could not take this long, and load cannot make
        // a correct one faster.
        let took = sent.elapsed();
        assert!(
            took >= grace,
            "SIGKILL {took:?} after TERM was sent, inside the 1.5 s grace (pid1: {pid1})"
        );
        // SPEC: SIGCONT follows every stop signal, and this child lives to see it.
        assert_eq!(echoed(&out), ["TERM", "CONT"], "the stop signal came first");
        assert!(
            kw.stderr().contains("the grace period ran out"),
            "{}",
            kw.stderr()
        );
    }
}

#[test]
fn a_second_term_during_grace_kills_at_once() {
    let mut kw = keepwell(&[
        "--grace",
        "60s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo up; while :; do sleep 0.05; done",
    ])
    .pid1()
    .start();
    wait_until(DEADLINE, "child up", || kw.stdout().contains("up"));
    kw.signal(Signal::SIGTERM);
    kw.wait_log(DEADLINE, "stopping the child");
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 137);
    assert!(
        kw.stderr().contains("a second stop signal"),
        "{}",
        kw.stderr()
    );
}

#[test]
fn leftovers_in_the_group_are_cleaned_up_and_the_child_status_is_kept() {
    let grace = Duration::from_secs(1);
    for pid1 in [true, false] {
        let dir = tempfile::tempdir().expect("dir");
        let pidfile = dir.path().join("leftover");
        // The leftover ignores TERM, so it needs the SIGKILL after the grace period. The child
        // exits 7 once the test says go.
        let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
        let script = format!(
            "sh -c 'trap \"\" TERM; touch {ready}; while :; do sleep 0.05; done' & \
             while [ ! -e {ready} ]; do sleep 0.01; done; echo $! > {pids}; \
             while [ ! -e {go} ]; do sleep 0.01; done; exit 7",
            ready = ready.display(),
            pids = pidfile.display(),
            go = go.display()
        );
        let mut launch = keepwell(&["--grace", "1s", "--", "sh", "-c", &script]);
        if pid1 {
            launch = launch.pid1();
        }
        let mut kw = launch.start();
        wait_until(DEADLINE, "the leftover's pid", || {
            read(&pidfile).ends_with('\n')
        });
        // The stop of the leftovers begins after the child exits, which is after this.
        let told = Instant::now();
        std::fs::write(&go, "").expect("go");
        assert_eq!(kw.wait_exit(DEADLINE), 7, "{}", kw.stderr());
        assert!(
            told.elapsed() >= grace,
            "the leftover was killed {:?} after the child was told to exit, inside the 1 s grace",
            told.elapsed()
        );
        let log = kw.stderr();
        assert!(
            log.contains("the grace period ran out"),
            "the leftover ignores TERM and needs SIGKILL: {log}"
        );
        if !pid1 {
            let leftover: i32 = read(&pidfile).trim().parse().expect("leftover pid");
            assert!(!is_alive(leftover), "leftover {leftover} still runs");
        }
    }
}

#[test]
fn ttin_and_ttou_are_forwarded_not_dropped() {
    let Echo { mut kw, out, _dir } = echo_child(&[], true, "TERM");
    kw.signal(Signal::SIGTTIN);
    kw_wait(&out, &["TTIN"]);
    kw.signal(Signal::SIGTTOU);
    kw_wait(&out, &["TTIN", "TTOU"]);
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0);
}

#[test]
fn leftovers_that_obey_the_stop_signal_end_the_wait_without_the_grace() {
    for pid1 in [true, false] {
        // The leftover dies of the TERM it gets; keepwell must notice the empty group at once
        // rather than sit out the 60 s grace (the deadline here is 10 s).
        let mut launch = keepwell(&["--grace", "60s", "--", "sh", "-c", "sleep 30 & exit 5"]);
        if pid1 {
            launch = launch.pid1();
        }
        let mut kw = launch.start();
        assert_eq!(kw.wait_exit(DEADLINE), 5, "{}", kw.stderr());
        assert!(!kw.stderr().contains("SIGKILL"), "{}", kw.stderr());
    }
}

#[test]
fn realtime_signals_are_forwarded_too() {
    let rt = libc::SIGRTMIN() + 6;
    for pid1 in [true, false] {
        let Echo { mut kw, out, _dir } = echo_child(&[], pid1, &rt.to_string());
        kw.signal_number(rt);
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        assert_eq!(echoed(&out), [rt.to_string()]);
    }
}

#[test]
fn the_child_starts_with_no_signal_blocked_or_ignored() {
    assert_clean_signal_state(Path::new(KEEPWELL));
}

#[test]
fn keepwells_own_sigpipe_is_not_forwarded() {
    // keepwell's stderr is a pipe nobody reads: every log line it writes raises SIGPIPE
    // against keepwell itself. That is keepwell's business; the child must see only USR1.
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let mut kw = keepwell_command(&[
        "--",
        "python3",
        &support("echo_signals.py"),
        out.to_str().expect("utf-8"),
    ])
    .env("EXIT_ON", "TERM")
    .stderr(std::process::Stdio::from(writer))
    .spawn()
    .map(KillOnDrop)
    .expect("start keepwell");
    wait_until(DEADLINE, "ready", || read(&out).contains("ready"));
    let pid = nix::unistd::Pid::from_raw(kw.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGUSR1).expect("USR1");
    kw_wait(&out, &["USR1"]);
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("TERM");
    let status = wait_or_kill(&mut kw, DEADLINE, "keepwell to exit");
    assert_eq!(status.code(), Some(0));
    assert_eq!(echoed_through_stop(&out), ["USR1", "TERM"]);
}
