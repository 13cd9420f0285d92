//! Bad input: every malformed flag or variable gets exactly one line naming it, the value and
//! what was expected, exit 2, and nothing is started; so does a setup that cannot be done
//! (`--listen` on a port in use). Every usage error of `keepwell` and `keepwell check` is
//! asserted here, and only here.

mod common;

use std::net::TcpListener;

use common::*;

/// Run keepwell with a COMMAND that would leave a trace if it ever started; it must exit 2
/// with nothing on stdout and one line on stderr, which is returned.
fn rejected(args: &[&str], env: &[(&str, &str)]) -> String {
    let trace = tempfile::tempdir().expect("dir");
    let marker = trace.path().join("started");
    let mut all = args.to_vec();
    let marker_arg = marker.to_string_lossy().into_owned();
    if args.first() != Some(&"check") {
        all.extend(["--", "touch", &marker_arg]);
    }
    let out = run_keepwell(&all, env);
    assert_eq!(out.code, 2, "{args:?} {env:?}: {out:?}");
    assert!(!marker.exists(), "{args:?} {env:?} started the child");
    assert_eq!(out.stdout, "", "{args:?} {env:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
    assert!(out.stderr.ends_with('\n'), "{:?}", out.stderr);
    out.stderr.trim_end().to_string()
}

const DURATION: &str = "expected a duration such as 500ms, 10s, 2m or 1h";
const ABOVE_ZERO: &str = "expected a duration above zero, such as 1s";
const SIGNAL: &str = "expected a signal name such as TERM, SIGQUIT or a number such as 15";
const URL: &str = "expected http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or grpc://HOST:PORT[/SERVICE]";
const STATUS: &str = "expected status codes or ranges from 100 to 599, such as 200-299,304";
const HEADER: &str = "expected 'Name: value', such as 'Host: example.com'";
const LISTEN: &str = "expected an address such as :9000, 0.0.0.0:9000 or 127.0.0.1:9000";
const AT_LEAST_1: &str = "expected a whole number of at least 1";

#[test]
fn malformed_flags_name_the_flag_the_value_and_the_fix() {
    let cases: &[(&[&str], String)] = &[
        (&["--grace", "5x"], format!("--grace \"5x\" is not valid: {DURATION}")),
        (&["--stop-signal", "FOO"], format!("--stop-signal \"FOO\" is not valid: {SIGNAL}")),
        (&["--rewrite", "TERM"], "--rewrite \"TERM\" is not valid: expected FROM:TO signal names, such as TERM:QUIT".into()),
        (&["--rewrite", "TERM:BAR"], format!("--rewrite \"BAR\" is not valid: {SIGNAL}")),
        (&["--restart", "sometimes"], "--restart \"sometimes\" is not valid: expected no, on-failure or always".into()),
        (&["--max-restarts", "-1"], "--max-restarts \"-1\" is not valid: expected a whole number of at least 0".into()),
        (&["--restart-window", "0"], format!("--restart-window \"0\" is not valid: {ABOVE_ZERO}")),
        (&["--health-url", "ftp://x"], format!("--health-url \"ftp://x\" is not valid: {URL}")),
        (&["--health-url", "https://x/health"], "--health-url \"https://x/health\" is not valid: https is not supported: probe the app inside its container over plain http://HOST:PORT/PATH".into()),
        (&["--health-url", "tcp://db"], "--health-url \"tcp://db\" is not valid: the port is missing; expected tcp://HOST:PORT".into()),
        (&["--health-interval", "0"], format!("--health-interval \"0\" is not valid: {ABOVE_ZERO}")),
        (&["--health-interval", "10x"], format!("--health-interval \"10x\" is not valid: {DURATION}")),
        (&["--health-timeout", "0"], format!("--health-timeout \"0\" is not valid: {ABOVE_ZERO}")),
        (&["--health-timeout", "1.5s"], format!("--health-timeout \"1.5s\" is not valid: {DURATION}")),
        (&["--health-retries", "0"], format!("--health-retries \"0\" is not valid: {AT_LEAST_1}")),
        (&["--health-success-threshold", "x"], format!("--health-success-threshold \"x\" is not valid: {AT_LEAST_1}")),
        (&["--health-status", "700"], format!("--health-status \"700\" is not valid: {STATUS}")),
        (&["--health-status", "300-200"], format!("--health-status \"300-200\" is not valid: {STATUS}")),
        (&["--health-status", "2xx"], format!("--health-status \"2xx\" is not valid: {STATUS}")),
        (&["--health-header", "nocolon"], format!("--health-header \"nocolon\" is not valid: {HEADER}")),
        (&["--on-unhealthy", "panic"], "--on-unhealthy \"panic\" is not valid: expected restart, exit or ignore".into()),
        (&["--listen", "nonsense"], format!("--listen \"nonsense\" is not valid: {LISTEN}")),
        (&["--listen", ":x"], format!("--listen \":x\" is not valid: {LISTEN}")),
        (&["--listen", "9000"], format!("--listen \"9000\" is not valid: {LISTEN}")),
        (&["--listen", "127.0.0.1:99999"], format!("--listen \"127.0.0.1:99999\" is not valid: {LISTEN}")),
        (&["--listen", "127.0.0.1"], format!("--listen \"127.0.0.1\" is not valid: {LISTEN}")),
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
        ("KEEPWELL_HEALTH_RETRIES", "zero", format!("KEEPWELL_HEALTH_RETRIES \"zero\" is not valid: {AT_LEAST_1}")),
        ("KEEPWELL_HEALTH_RETRIES", "0", format!("KEEPWELL_HEALTH_RETRIES \"0\" is not valid: {AT_LEAST_1}")),
        ("KEEPWELL_HEALTH_URL", "localhost:8000", format!("KEEPWELL_HEALTH_URL \"localhost:8000\" is not valid: {URL}")),
        ("KEEPWELL_STOP_SIGNAL", "SIGNOPE", format!("KEEPWELL_STOP_SIGNAL \"SIGNOPE\" is not valid: {SIGNAL}")),
        ("KEEPWELL_REWRITE", "TERM:QUIT,HUP", "KEEPWELL_REWRITE \"HUP\" is not valid: expected FROM:TO signal names, such as TERM:QUIT".into()),
        ("KEEPWELL_SIGNAL_GROUP", "maybe", "KEEPWELL_SIGNAL_GROUP \"maybe\" is not valid: expected true or false".into()),
        ("KEEPWELL_ON_UNHEALTHY", "reboot", "KEEPWELL_ON_UNHEALTHY \"reboot\" is not valid: expected restart, exit or ignore".into()),
        ("KEEPWELL_LISTEN", "any", format!("KEEPWELL_LISTEN \"any\" is not valid: {LISTEN}")),
        ("KEEPWELL_LISTEN", "nonsense", format!("KEEPWELL_LISTEN \"nonsense\" is not valid: {LISTEN}")),
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
    let out = run_keepwell(
        &["--grace", "1s", "--", "sh", "-c", "exit 9"],
        &[("KEEPWELL_GRACE", "broken")],
    );
    assert_eq!(out.code, 9, "{out:?}");
}

#[test]
fn unknown_flags_and_a_missing_command() {
    assert_eq!(
        rejected(&["--bogus"], &[]),
        "keepwell: unexpected argument '--bogus' found (see keepwell --help)"
    );
    let out = run_keepwell(&[], &[]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "keepwell: no COMMAND given: use keepwell [OPTIONS] [--] COMMAND [ARG...], e.g. keepwell -- gunicorn app:app\n"
    );
}

#[test]
fn check_usage_errors() {
    let cases: &[(&[&str], String)] = &[
        (&["check", "--timeout", "x"], format!("--timeout \"x\" is not valid: {DURATION}")),
        (&["check", "--timeout", "0", "http://127.0.0.1:8000/health"], format!("--timeout \"0\" is not valid: {ABOVE_ZERO}")),
        (&["check", "ftp://x"], format!("TARGET \"ftp://x\" is not valid: {URL}")),
        (&["check", "ftp://127.0.0.1/health"], format!("TARGET \"ftp://127.0.0.1/health\" is not valid: {URL}")),
        (&["check", "http://127.0.0.1:99999/health"], "TARGET \"http://127.0.0.1:99999/health\" is not valid: port \"99999\" is not a number from 1 to 65535; expected http://HOST:PORT/PATH".into()),
        (&["check", "--status", "2xx", "http://127.0.0.1:8000/health"], format!("--status \"2xx\" is not valid: {STATUS}")),
        (&["check", "--header", "nocolon", "http://127.0.0.1:8000/health"], format!("--header \"nocolon\" is not valid: {HEADER}")),
        (&["check", "--status", "200"], "--status, --header, --body and --max-age need a TARGET URL: without one, keepwell check asks the supervisor, which probes with its own --health-* settings".into()),
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
fn listen_on_a_port_in_use_exits_2_naming_listen_and_starts_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    // A setup failure, logged as an error line (with its timestamp) rather than a usage line.
    let line = rejected(&["--listen", &addr], &[]);
    assert!(
        line.ends_with(&format!(
            "ERROR --listen {addr}: cannot bind: Address already in use (os error 98) \
             (another process already listens on that port: choose a free one or stop it)"
        )),
        "{line}"
    );
}

#[test]
fn help_and_version_exit_0_and_list_every_variable() {
    let out = run_keepwell(&["--help"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let help = out.stdout;
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
    let out = run_keepwell(&["--version"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("keepwell {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run_keepwell(&["check", "--help"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("--timeout"), "{}", out.stdout);
}

#[test]
fn a_program_named_check_runs_after_the_separator() {
    let out = run_keepwell(&["--", "check"], &[]);
    assert_eq!(out.code, 127, "supervised, not check mode: {out:?}");
}
