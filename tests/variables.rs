//! SPEC.md "Synopsis": an empty `KEEPWELL_*` variable is the same as an unset one, so that a
//! one-off command beside the running app (`docker run --rm -e KEEPWELL_LISTEN= IMAGE python
//! manage.py migrate` on the host network) does not fail on `--listen`'s port.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every supervise variable keepwell reads, as its own --help lists them (so a new option is
/// covered the day it is added).
fn variables() -> Vec<String> {
    let help = Command::new(KEEPWELL)
        .arg("--help")
        .output()
        .expect("keepwell --help");
    let text = String::from_utf8_lossy(&help.stdout);
    let mut found: Vec<String> = text
        .split("env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            name.starts_with("KEEPWELL_").then_some(name)
        })
        .collect();
    found.sort();
    found.dedup();
    assert!(
        found.len() >= 20,
        "--help lists too few variables: {found:?}"
    );
    found
}

/// Supervise COMMAND to completion with these variables; (exit code, stdout, stderr).
fn run_with(vars: &[(&str, &str)], command: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("--")
        .chain(command.iter().copied())
        .collect();
    run(vars, &args)
}

/// Run keepwell with these variables (and no other KEEPWELL_*) and arguments, with a deadline.
fn run(vars: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut keepwell = Command::new(KEEPWELL);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("KEEPWELL_")) {
        keepwell.env_remove(name);
    }
    let mut child = keepwell
        .envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start keepwell");
    let status = wait_or_kill(&mut child, Duration::from_secs(20), "keepwell to exit");
    (status.code().unwrap_or(-1), read(&out), read(&err))
}

#[test]
fn an_empty_listen_variable_turns_listen_off_for_a_one_off_command() {
    // The running app's keepwell holds the port, as on a host network.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");

    let (code, _, stderr) = run_with(&[("KEEPWELL_LISTEN", &listen)], &["true"]);
    assert_eq!(
        code, 2,
        "the port is taken, so --listen must fail: {stderr}"
    );
    assert!(stderr.contains("cannot bind"), "{stderr}");

    let (code, stdout, stderr) =
        run_with(&[("KEEPWELL_LISTEN", "")], &["sh", "-c", "echo migrated"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "migrated\n");
}

#[test]
fn every_variable_empty_is_the_same_as_none_set() {
    let names = variables();
    let empty: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "")).collect();
    let (code, stdout, stderr) = run_with(&empty, &["sh", "-c", "echo ran; exit 7"]);
    assert_eq!(code, 7, "an empty variable was taken as a value: {stderr}");
    assert_eq!(stdout, "ran\n");
    assert!(!stderr.contains("is not valid"), "{stderr}");
}

#[test]
fn a_variable_of_only_spaces_counts_as_empty_too() {
    let (code, _, stderr) = run_with(&[("KEEPWELL_GRACE", "  ")], &["true"]);
    assert_eq!(code, 0, "{stderr}");
}
