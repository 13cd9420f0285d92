//! Exit status: keepwell exits with the child's code, 128+N when the child died of signal N,
//! 126 when COMMAND cannot be executed and 127 when it is not found.

mod common;

use std::time::Duration;

use common::*;

/// Run keepwell to its end (a keepwell that does not exit fails the test and is killed); its
/// exit code, which must be a code (keepwell exits, never dies of a signal), and stderr.
fn run(args: &[&str]) -> (i32, String) {
    let mut command = keepwell_command(args);
    let output = run_with_deadline(&mut command, RUN_DEADLINE);
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("keepwell {args:?} died: {:?}", output.status));
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
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
