//! What the child leaves behind is cleaned up, setsid() escapees included: before a restart
//! every process descended from keepwell gets the stop signal (then SIGKILL after the grace),
//! a `docker exec` session is left alone; before keepwell exits as PID 1, every other process
//! in the container gets the stop signal and the grace. The kernel's SIGKILL when PID 1 dies is
//! not the clean-up: a process must have received the stop signal first.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(15);

/// The pid in a recorder's "ready PID" line, once it is there.
fn ready_pid(out: &Path) -> i32 {
    wait_for(DEADLINE, &format!("{} to be ready", out.display()), || {
        read(out)
            .lines()
            .find_map(|l| l.strip_prefix("ready "))
            .and_then(|p| p.trim().parse().ok())
    })
}

/// A child that, on its first run only, leaves a grandchild that has called setsid() (so it is
/// in no process group keepwell knows) and exits 1; later runs just sleep. The grandchild
/// records its signals in `dir/grandchild` and exits on `exit_on`.
fn escaping_child(dir: &Path, exit_on: &str) -> Vec<String> {
    let script = format!(
        "if [ -e {dir}/second ]; then exec sleep 1000; fi; : > {dir}/second; \
         SETSID=1 EXIT_ON={exit_on} python3 {record} {dir}/grandchild & \
         while ! grep -q ready {dir}/grandchild 2>/dev/null; do sleep 0.02; done; exit 1",
        dir = dir.display(),
        record = support("record_signals.py"),
    );
    ["sh".to_string(), "-c".into(), script].into()
}

fn launch(args: &[&str], command: &[String], pid1: bool) -> Keepwell {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--");
    all.extend(command.iter().map(String::as_str));
    let launch = keepwell(&all);
    if pid1 {
        launch.pid1().start()
    } else {
        launch.start()
    }
}

/// Whether a pid from a "ready" line is alive: seen from inside the namespace for PID 1 mode.
fn alive_in(kw: &Keepwell, pid1: bool, pid: i32) -> bool {
    if !pid1 {
        return is_alive(pid);
    }
    let state = kw
        .exec(&["cat", &format!("/proc/{pid}/stat")])
        .stderr(Stdio::null())
        .output()
        .expect("read /proc inside the namespace");
    let text = String::from_utf8_lossy(&state.stdout).to_string();
    !text.is_empty()
        && !matches!(text.rsplit_once(')'), Some((_, rest)) if rest.trim_start().starts_with('Z'))
}

fn a_setsid_grandchild_is_gone_before_the_restart(exit_on: &str, grace: &str, pid1: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("grandchild");
    let kw = launch(
        &["--restart", "on-failure", "--grace", grace],
        &escaping_child(dir.path(), exit_on),
        pid1,
    );
    let escapee = ready_pid(&out);
    // The restart comes after the first backoff (1 s): by then the escapee must be gone.
    let log = kw.wait_log(DEADLINE, "restarting in");
    assert!(
        !alive_in(&kw, pid1, escapee),
        "the setsid'd grandchild {escapee} survived into the restart: {log}"
    );
    assert_eq!(
        echoed(&out).first().map(String::as_str),
        Some("TERM"),
        "the grandchild got the stop signal first: {log}"
    );
    assert!(
        log.contains(&format!("{escapee} (python3)")),
        "the log names what was left: {log}"
    );
    wait_until(DEADLINE, "the second child", || {
        kw.stderr().matches("child started").count() == 2
    });
}

#[test]
fn a_setsid_grandchild_that_obeys_term_is_gone_before_a_restart() {
    for pid1 in [true, false] {
        a_setsid_grandchild_is_gone_before_the_restart("TERM", "30s", pid1);
    }
}

#[test]
fn a_setsid_grandchild_that_ignores_term_is_killed_after_the_grace_before_a_restart() {
    for pid1 in [true, false] {
        a_setsid_grandchild_is_gone_before_the_restart("", "1s", pid1);
    }
}

/// Start the recorder as `docker exec` would: in keepwell's namespaces, not its descendant.
fn exec_session(kw: &Keepwell, out: &Path, exit_on: &str) -> Child {
    let script = support("record_signals.py");
    let out_text = out.to_string_lossy().to_string();
    kw.exec(&["python3", &script, &out_text])
        .env("EXIT_ON", exit_on)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the exec session")
}

#[test]
fn a_docker_exec_session_survives_a_restart_and_gets_the_stop_signal_when_pid1_exits() {
    let dir = tempfile::tempdir().expect("dir");
    let (ready, exec_out) = (dir.path().join("go"), dir.path().join("exec"));
    // The first child exits 1 once told to; the second sleeps.
    let script = format!(
        "if [ -e {dir}/second ]; then exec sleep 1000; fi; : > {dir}/second; \
         while [ ! -e {go} ]; do sleep 0.02; done; exit 1",
        dir = dir.path().display(),
        go = ready.display()
    );
    let mut kw = launch(
        &["--restart", "on-failure", "--grace", "1s"],
        &["sh".into(), "-c".into(), script],
        true,
    );
    let mut session = exec_session(&kw, &exec_out, "");
    let session_pid = ready_pid(&exec_out);
    std::fs::write(&ready, "").expect("tell the child to exit");
    wait_until(DEADLINE, "the second child", || {
        kw.stderr().matches("child started").count() == 2
    });
    assert!(
        alive_in(&kw, true, session_pid),
        "the exec session was killed by the restart: {}",
        kw.stderr()
    );
    assert!(echoed(&exec_out).is_empty(), "{:?}", echoed(&exec_out));

    // The stop: as PID 1, keepwell leaves nobody for the kernel's SIGKILL without a stop
    // signal first. The session records TERM and goes on, so it needs SIGKILL after the grace.
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 143, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(echoed(&exec_out), ["TERM", "CONT"], "{log}");
    assert!(
        log.contains("every other process in the container"),
        "{log}"
    );
    wait_or_kill(&mut session, DEADLINE, "the exec session to end");
}

#[test]
fn before_exit_as_pid1_a_setsid_escapee_gets_the_stop_signal_not_only_the_kernels_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let out: PathBuf = dir.path().join("grandchild");
    // The child leaves the escapee (which exits on TERM) and exits 0: no restart.
    let script = format!(
        "SETSID=1 EXIT_ON=TERM python3 {record} {out} & \
         while ! grep -q ready {out} 2>/dev/null; do sleep 0.02; done; exit 0",
        record = support("record_signals.py"),
        out = out.display()
    );
    for pid1 in [true, false] {
        let _ = std::fs::remove_file(&out);
        let mut kw = launch(
            &["--grace", "30s"],
            &["sh".into(), "-c".into(), script.clone()],
            pid1,
        );
        let escapee = ready_pid(&out);
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        let log = kw.stderr();
        assert_eq!(
            echoed(&out).first().map(String::as_str),
            Some("TERM"),
            "{log}"
        );
        assert!(log.contains("left behind"), "{log}");
        if !pid1 {
            assert!(
                !is_alive(escapee),
                "the escapee {escapee} survived keepwell"
            );
        }
    }
}
