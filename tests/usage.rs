//! Bad input: every malformed flag or variable gets exactly one line naming it, the value and
//! what was expected, exit 2, and nothing is started.

mod common;

use std::process::Command;

use common::*;

/// Run keepwell with a COMMAND that would leave a trace if it ever started.
fn rejected(args: &[&str], env: &[(&str, &str)]) -> String {
    let trace = tempfile::tempdir().expect("dir");
    let marker = trace.path().join("started");
    let mut command = Command::new(KEEPWELL);
    command.args(args).envs(env.iter().copied());
    if args.first() != Some(&"check") {
        command.args(["--", "touch", marker.to_str().expect("utf-8")]);
    }
    let out = command.output().expect("run keepwell");
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
    assert!(!marker.exists(), "{args:?} started the child");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_string()
}

const DURATION: &str = "expected a duration such as 500ms, 10s, 2m or 1h";
const SIGNAL: &str = "expected a signal name such as TERM, SIGQUIT or a number such as 15";

#[test]
fn malformed_flags_name_the_flag_the_value_and_the_fix() {
    let cases: &[(&[&str], String)] = &[
        (&["--grace", "5x"], format!("--grace \"5x\" is not valid: {DURATION}")),
        (&["--stop-signal", "FOO"], format!("--stop-signal \"FOO\" is not valid: {SIGNAL}")),
        (&["--rewrite", "TERM"], "--rewrite \"TERM\" is not valid: expected FROM:TO signal names, such as TERM:QUIT".into()),
        (&["--rewrite", "TERM:BAR"], format!("--rewrite \"BAR\" is not valid: {SIGNAL}")),
        (&["--restart", "sometimes"], "--restart \"sometimes\" is not valid: expected no, on-failure or always".into()),
        (&["--max-restarts", "-1"], "--max-restarts \"-1\" is not valid: expected a whole number of at least 0".into()),
        (&["--restart-window", "0"], "--restart-window \"0\" is not valid: expected a duration above zero, such as 1s".into()),
        (&["--health-url", "ftp://x"], "--health-url \"ftp://x\" is not valid: expected http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or grpc://HOST:PORT[/SERVICE]".into()),
        (&["--health-url", "https://x/health"], "--health-url \"https://x/health\" is not valid: https is not supported: probe the app inside its container over plain http://HOST:PORT/PATH".into()),
        (&["--health-url", "tcp://db"], "--health-url \"tcp://db\" is not valid: the port is missing; expected tcp://HOST:PORT".into()),
        (&["--health-interval", "0"], "--health-interval \"0\" is not valid: expected a duration above zero, such as 1s".into()),
        (&["--health-timeout", "1.5s"], format!("--health-timeout \"1.5s\" is not valid: {DURATION}")),
        (&["--health-retries", "0"], "--health-retries \"0\" is not valid: expected a whole number of at least 1".into()),
        (&["--health-success-threshold", "x"], "--health-success-threshold \"x\" is not valid: expected a whole number of at least 1".into()),
        (&["--health-status", "700"], "--health-status \"700\" is not valid: expected status codes or ranges from 100 to 599, such as 200-299,304".into()),
        (&["--health-status", "300-200"], "--health-status \"300-200\" is not valid: expected status codes or ranges from 100 to 599, such as 200-299,304".into()),
        (&["--health-header", "nocolon"], "--health-header \"nocolon\" is not valid: expected 'Name: value', such as 'Host: example.com'".into()),
        (&["--on-unhealthy", "panic"], "--on-unhealthy \"panic\" is not valid: expected restart, exit or ignore".into()),
        (&["--listen", "9000"], "--listen \"9000\" is not valid: expected an address such as :9000, 0.0.0.0:9000 or 127.0.0.1:9000".into()),
        (&["--drain", "soon"], format!("--drain \"soon\" is not valid: {DURATION}")),
        (&["--log-format", "xml"], "--log-format \"xml\" is not valid: expected text or json".into()),
        (&["--log-level", "loud"], "--log-level \"loud\" is not valid: expected error, warn, info, debug, trace or off".into()),
        (&["--signal-group=maybe"], "--signal-group \"maybe\" is not valid: expected true or false".into()),
        (&["--user", ":"], "--user \":\" is not valid: expected USER[:GROUP], such as app, 999 or 999:999".into()),
    ];
    for (args, expected) in cases {
        assert_eq!(
            rejected(args, &[]),
            format!("keepwell: {expected}"),
            "{args:?}"
        );
    }
}

#[test]
fn malformed_variables_name_the_variable() {
    let cases: &[(&str, &str, String)] = &[
        ("KEEPWELL_GRACE", "x", format!("KEEPWELL_GRACE \"x\" is not valid: {DURATION}")),
        ("KEEPWELL_HEALTH_RETRIES", "zero", "KEEPWELL_HEALTH_RETRIES \"zero\" is not valid: expected a whole number of at least 1".into()),
        ("KEEPWELL_HEALTH_URL", "localhost:8000", "KEEPWELL_HEALTH_URL \"localhost:8000\" is not valid: expected http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or grpc://HOST:PORT[/SERVICE]".into()),
        ("KEEPWELL_STOP_SIGNAL", "SIGNOPE", format!("KEEPWELL_STOP_SIGNAL \"SIGNOPE\" is not valid: {SIGNAL}")),
        ("KEEPWELL_REWRITE", "TERM:QUIT,HUP", "KEEPWELL_REWRITE \"HUP\" is not valid: expected FROM:TO signal names, such as TERM:QUIT".into()),
        ("KEEPWELL_SIGNAL_GROUP", "maybe", "KEEPWELL_SIGNAL_GROUP \"maybe\" is not valid: expected true or false".into()),
        ("KEEPWELL_ON_UNHEALTHY", "reboot", "KEEPWELL_ON_UNHEALTHY \"reboot\" is not valid: expected restart, exit or ignore".into()),
        ("KEEPWELL_LISTEN", "any", "KEEPWELL_LISTEN \"any\" is not valid: expected an address such as :9000, 0.0.0.0:9000 or 127.0.0.1:9000".into()),
    ];
    for (var, value, expected) in cases {
        assert_eq!(
            rejected(&[], &[(var, value)]),
            format!("keepwell: {expected}"),
            "{var}"
        );
    }
}

#[test]
fn a_flag_wins_over_its_variable() {
    // The variable is broken, the flag is fine: the flag is used and the child runs.
    let out = Command::new(KEEPWELL)
        .args(["--grace", "1s", "--", "sh", "-c", "exit 9"])
        .env("KEEPWELL_GRACE", "broken")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_flags_and_a_missing_command() {
    assert_eq!(
        rejected(&["--bogus"], &[]),
        "keepwell: unexpected argument '--bogus' found (see keepwell --help)"
    );
    let out = Command::new(KEEPWELL).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "keepwell: no COMMAND given: use keepwell [OPTIONS] [--] COMMAND [ARG...], e.g. keepwell -- gunicorn app:app\n"
    );
}

#[test]
fn check_usage_errors() {
    assert_eq!(
        rejected(&["check", "--timeout", "x"], &[]),
        format!("keepwell: --timeout \"x\" is not valid: {DURATION}")
    );
    assert_eq!(
        rejected(&["check", "ftp://x"], &[]),
        "keepwell: TARGET \"ftp://x\" is not valid: expected http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or grpc://HOST:PORT[/SERVICE]"
    );
}

#[test]
fn help_and_version_exit_0_and_list_every_variable() {
    let out = Command::new(KEEPWELL).arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "KEEPWELL_USER",
        "KEEPWELL_STOP_SIGNAL",
        "KEEPWELL_GRACE",
        "KEEPWELL_REWRITE",
        "KEEPWELL_SIGNAL_GROUP",
        "KEEPWELL_RESTART",
        "KEEPWELL_MAX_RESTARTS",
        "KEEPWELL_RESTART_WINDOW",
        "KEEPWELL_HEALTH_URL",
        "KEEPWELL_HEALTH_INTERVAL",
        "KEEPWELL_HEALTH_TIMEOUT",
        "KEEPWELL_HEALTH_RETRIES",
        "KEEPWELL_HEALTH_START_PERIOD",
        "KEEPWELL_HEALTH_START_INTERVAL",
        "KEEPWELL_HEALTH_SUCCESS_THRESHOLD",
        "KEEPWELL_HEALTH_STATUS",
        "KEEPWELL_HEALTH_HEADER",
        "KEEPWELL_HEALTH_BODY",
        "KEEPWELL_ON_UNHEALTHY",
        "KEEPWELL_LISTEN",
        "KEEPWELL_DRAIN",
        "KEEPWELL_LOG_FORMAT",
        "KEEPWELL_LOG_LEVEL",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    let out = Command::new(KEEPWELL)
        .arg("--version")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("keepwell {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(KEEPWELL)
        .args(["check", "--help"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_program_named_check_runs_after_the_separator() {
    let out = Command::new(KEEPWELL)
        .args(["--", "check"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127), "supervised, not check mode");
}
