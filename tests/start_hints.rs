//! What keepwell says at start when the setup is almost right: a run in root's group (gid 0,
//! what `docker run --user 1234` gives) is warned about once, naming `--user 1234:1234`; a
//! COMMAND that is really a keepwell option (`docker run IMAGE --user x`) says where the options
//! go and that in Docker they are `-e KEEPWELL_*` variables.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(15);

/// Run keepwell to completion; (exit code, stderr).
fn run(command: &mut Command) -> (i32, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keepwell");
    let status = wait_or_kill(&mut child, DEADLINE, "keepwell to finish");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.code().unwrap_or(-1), stderr)
}

const GID0: &str = "in group 0 (root's group";

#[test]
fn running_in_roots_group_is_warned_about_once_with_the_fix() {
    // As docker run --user 1234 starts it: uid 1234, gid 0.
    let (code, log) = run(Command::new("setpriv").args([
        "--reuid=1234",
        "--regid=0",
        "--clear-groups",
        KEEPWELL,
        "--",
        "true",
    ]));
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches(GID0).count(), 1, "{log}");
    assert!(log.contains("--user 1234:1234"), "{log}");

    // keepwell's own --user with group 0.
    let (code, log) = run(Command::new(KEEPWELL).args(["--user", "1234:0", "--", "true"]));
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches(GID0).count(), 1, "{log}");

    // A group of its own, or root itself: nothing to say.
    for args in [
        &["--user", "1234:1234"][..],
        &["--user", "1234"][..],
        &[][..],
    ] {
        let (code, log) = run(Command::new(KEEPWELL).args(args).args(["--", "true"]));
        assert_eq!(code, 0, "{args:?}: {log}");
        assert!(!log.contains(GID0), "{args:?}: {log}");
    }
}

#[test]
fn a_command_that_is_a_keepwell_option_says_where_options_go() {
    // docker run IMAGE --user app: CMD replaced, ENTRYPOINT ["keepwell", "--"].
    let (code, log) = run(Command::new(KEEPWELL).args(["--", "--user", "app"]));
    assert_eq!(code, 127, "{log}");
    assert!(
        log.contains("\"--user\" looks like keepwell's --user"),
        "{log}"
    );
    assert!(log.contains("keepwell's options go before `--`"), "{log}");
    assert!(log.contains("docker run -e KEEPWELL_USER="), "{log}");

    let (code, log) = run(Command::new(KEEPWELL).args(["--", "--no-such-flag"]));
    assert_eq!(code, 127, "{log}");
    assert!(log.contains("looks like an option"), "{log}");
    assert!(log.contains("-e KEEPWELL_* variables"), "{log}");

    // An ordinary missing program gets no such hint.
    let (code, log) = run(Command::new(KEEPWELL).args(["--", "no-such-program"]));
    assert_eq!(code, 127, "{log}");
    assert!(!log.contains("option"), "{log}");
}
