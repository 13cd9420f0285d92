//! Signals: every catchable one reaches the child, rewrites and group mode apply, and
//! TERM/INT/QUIT stop the child with --stop-signal, --grace and SIGKILL. Each test runs with
//! keepwell as PID 1 of a fresh PID namespace and as a plain subreaper.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);

fn echo_child(extra: &[&str], pid1: bool, exit_on: &str) -> (Keepwell, std::path::PathBuf) {
    let out_dir = tempfile::tempdir().expect("dir").keep();
    let out = out_dir.join("signals");
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
    (kw, out)
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
    let (mut kw, out) = echo_child(&[], pid1, "TERM");
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
    for (received, pid1) in [(Signal::SIGINT, true), (Signal::SIGQUIT, false)] {
        // --stop-signal is for stops keepwell decides itself; a stop from outside is forwarded.
        let (mut kw, out) = echo_child(&["--stop-signal", "USR2"], pid1, "INT,QUIT");
        kw.signal(received);
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        // SIGCONT follows every stop signal; the child may be gone before it sees it.
        assert_eq!(echoed_through_stop(&out), vec![short(received)]);
    }
}

#[test]
fn rewrite_changes_forwarded_and_stop_signals() {
    for pid1 in [true, false] {
        let (mut kw, out) = echo_child(
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

fn kw_wait(out: &std::path::Path, expected: &[&str]) {
    wait_until(DEADLINE, &format!("{expected:?} at the child"), || {
        echoed(out) == expected
    });
}

/// A shell that starts a grandchild in the same process group; both echo signals.
fn group_child(extra: &[&str], pid1: bool) -> (Keepwell, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir").keep();
    let (a, b) = (dir.join("a"), dir.join("b"));
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
    (kw, a, b)
}

#[test]
fn signal_group_reaches_the_whole_process_group() {
    for pid1 in [true, false] {
        let (kw, a, b) = group_child(&["--signal-group"], pid1);
        kw.signal(Signal::SIGUSR1);
        wait_until(DEADLINE, "USR1 at both", || {
            echoed(&a) == ["USR1"] && echoed(&b) == ["USR1"]
        });
    }
}

#[test]
fn without_signal_group_only_the_child_gets_the_signal() {
    let (kw, a, b) = group_child(&[], false);
    kw.signal(Signal::SIGUSR1);
    kw.signal(Signal::SIGUSR2);
    wait_until(DEADLINE, "USR1 and USR2 at the child", || {
        echoed(&a) == ["USR1", "USR2"]
    });
    assert!(echoed(&b).is_empty(), "the grandchild got {:?}", echoed(&b));
}

#[test]
fn a_child_that_ignores_term_is_killed_after_grace() {
    for pid1 in [true, false] {
        let mut kw = keepwell(&[
            "--grace",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 0.05; done",
        ]);
        if pid1 {
            kw = kw.pid1();
        }
        let mut kw = kw.start();
        wait_until(DEADLINE, "child up", || kw.stdout().contains("up"));
        kw.signal(Signal::SIGTERM);
        assert_eq!(kw.wait_exit(DEADLINE), 137, "{}", kw.stderr());
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
    for pid1 in [true, false] {
        let dir = tempfile::tempdir().expect("dir");
        let pidfile = dir.path().join("leftover");
        // The leftover ignores TERM, so it needs the SIGKILL after the grace period.
        let ready = dir.path().join("ready");
        let script = format!(
            "sh -c 'trap \"\" TERM; touch {ready}; while :; do sleep 0.05; done' & \
             while [ ! -e {ready} ]; do sleep 0.01; done; echo $! > {pids}; exit 7",
            ready = ready.display(),
            pids = pidfile.display()
        );
        let mut launch = keepwell(&["--grace", "300ms", "--", "sh", "-c", &script]);
        if pid1 {
            launch = launch.pid1();
        }
        let mut kw = launch.start();
        assert_eq!(kw.wait_exit(DEADLINE), 7, "{}", kw.stderr());
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
    let (mut kw, out) = echo_child(&[], true, "TERM");
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
    let script = "import signal, sys, time\n\
        signal.signal(signal.SIGRTMIN + 6, lambda n, f: (print('got', n, flush=True), sys.exit(0)))\n\
        print('ready', flush=True)\n\
        time.sleep(30)\n";
    for pid1 in [true, false] {
        let mut launch = keepwell(&["--", "python3", "-c", script]);
        if pid1 {
            launch = launch.pid1();
        }
        let mut kw = launch.start();
        wait_until(DEADLINE, "ready", || kw.stdout().contains("ready"));
        let rtmin = libc::SIGRTMIN();
        nix::errno::Errno::result(unsafe { libc::kill(kw.pid, rtmin + 6) }).expect("kill");
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        assert!(
            kw.stdout().contains(&format!("got {}", rtmin + 6)),
            "{}",
            kw.stdout()
        );
    }
}

#[test]
fn keepwells_own_sigpipe_is_not_forwarded() {
    // keepwell's stderr is a pipe nobody reads: every log line it writes raises SIGPIPE
    // against keepwell itself. That is keepwell's business; the child must see only USR1.
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let mut kw = std::process::Command::new(KEEPWELL)
        .args([
            "--",
            "python3",
            &support("echo_signals.py"),
            out.to_str().expect("utf-8"),
        ])
        .env("EXIT_ON", "TERM")
        .stderr(std::process::Stdio::from(writer))
        .spawn()
        .expect("start keepwell");
    wait_until(DEADLINE, "ready", || read(&out).contains("ready"));
    let pid = nix::unistd::Pid::from_raw(kw.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGUSR1).expect("USR1");
    kw_wait(&out, &["USR1"]);
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("TERM");
    let status = wait_for(DEADLINE, "keepwell to exit", || {
        kw.try_wait().expect("try_wait")
    });
    assert_eq!(status.code(), Some(0));
    assert_eq!(echoed_through_stop(&out), ["USR1", "TERM"]);
}
