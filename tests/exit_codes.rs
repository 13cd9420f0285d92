//! Exit status: keepwell exits with the child's code, 128+N when the child died of signal N,
//! 126 when COMMAND cannot be executed and 127 when it is not found.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Run keepwell to its end (10 s at most: a keepwell that does not exit fails the test and is
/// killed); its exit code and stderr.
fn run(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(KEEPWELL)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keepwell");
    let what = format!("keepwell {args:?} exiting");
    let status = wait_or_kill(&mut child, Duration::from_secs(10), &what);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (
        status
            .code()
            .expect("keepwell exits, never dies of a signal"),
        stderr,
    )
}

#[test]
fn every_exit_code_of_the_child_is_keepwells() {
    for code in 0..=255 {
        let (got, log) = run(&["--", "sh", "-c", &format!("exit {code}")]);
        assert_eq!(got, code, "{log}");
    }
}

#[test]
fn exit_codes_as_pid1() {
    for code in [0, 1, 2, 3, 42, 126, 127, 200, 255] {
        let mut kw = keepwell(&["--", "sh", "-c", &format!("exit {code}")])
            .pid1()
            .start();
        assert_eq!(
            kw.wait_exit(Duration::from_secs(10)),
            code,
            "{}",
            kw.stderr()
        );
    }
}

#[test]
fn death_by_signal_is_128_plus_n() {
    for (name, number) in [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ABRT", 6),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
    ] {
        let (got, log) = run(&["--", "sh", "-c", &format!("kill -{name} $$")]);
        assert_eq!(got, 128 + number, "{name}: {log}");
    }
}

#[test]
fn command_not_found_is_127_and_says_so() {
    let (code, log) = run(&["--", "no-such-program-anywhere"]);
    assert_eq!(code, 127);
    assert!(
        log.contains("\"no-such-program-anywhere\" not found"),
        "{log}"
    );
    let (code, _) = run(&["--", "/no/such/path"]);
    assert_eq!(code, 127);
}

#[test]
fn command_not_executable_is_126() {
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let (code, log) = run(&["--", script.to_str().expect("utf-8")]);
    assert_eq!(code, 126);
    assert!(log.contains("cannot be executed"), "{log}");
    let (code, _) = run(&["--", dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, 126, "a directory is not a program");
}

#[test]
fn death_by_a_realtime_signal_is_128_plus_n_too() {
    // A status nix cannot name: keepwell must still see the child's exit, and not hang.
    for signo in [35, 40, 50] {
        let (got, log) = run(&["--", "sh", "-c", &format!("kill -{signo} $$")]);
        assert_eq!(got, 128 + signo, "{log}");
        let mut kw = keepwell(&["--", "sh", "-c", &format!("kill -{signo} $$")])
            .pid1()
            .start();
        assert_eq!(
            kw.wait_exit(Duration::from_secs(10)),
            128 + signo,
            "{}",
            kw.stderr()
        );
    }
}
