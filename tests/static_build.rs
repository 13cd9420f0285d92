//! The shipped form: the static musl binary runs in an empty root (as in `FROM scratch`) and,
//! built against musl, survives the signals musl keeps for itself without passing them, or its
//! own handling of them, on to the child.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn the_static_binary_runs_in_an_empty_root() {
    let binary = static_keepwell();
    let root = tempfile::tempdir().expect("dir");
    std::fs::copy(&binary, root.path().join("keepwell")).expect("copy the binary");
    // Nothing else in the root: no loader, no libc, no /etc. keepwell supervises itself.
    let mut command = Command::new("chroot");
    command.arg(root.path()).args([
        "/keepwell",
        "--log-level",
        "off",
        "--",
        "/keepwell",
        "--version",
    ]);
    clear_keepwell_env(&mut command);
    let out: Ran = run_with_deadline(&mut command, RUN_DEADLINE).into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("keepwell {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_musl_build_survives_signals_32_to_34_and_forwards_35() {
    let binary = static_keepwell();
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    // Not PID 1: here a signal left at its default action would kill keepwell.
    let mut kw = command_for(
        &binary,
        &[
            "--log-level",
            "warn",
            "--",
            "python3",
            &support("echo_signals.py"),
            out.to_str().expect("utf-8"),
        ],
    )
    .env("EXIT_ON", "35")
    .spawn()
    .map(KillOnDrop)
    .expect("start the static keepwell");
    let pid = kw.id() as i32;
    wait_until(DEADLINE, "the child to be ready", || {
        read(&out).contains("ready")
    });
    for signo in [32, 33, 34, 35] {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signo) }, 0, "kill -{signo}");
    }
    let status = wait_or_kill(&mut kw, DEADLINE, "the static keepwell to exit");
    assert_eq!(
        status.code(),
        Some(0),
        "keepwell died: {status:?}; child said {:?}",
        read(&out)
    );
    // The child (a glibc Python) waits for 34 and 35 alike: only 35 was forwarded.
    assert_eq!(echoed(&out), ["35"]);
}

#[test]
fn the_musl_builds_child_starts_with_no_signal_blocked_or_ignored() {
    // The musl build ignores 32-34 for itself; the child must get them back at their default.
    assert_clean_signal_state(&static_keepwell());
}
