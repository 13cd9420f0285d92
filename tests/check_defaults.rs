//! `keepwell check TARGET` takes its defaults from the image's `KEEPWELL_HEALTH_*` variables
//! (README "keepwell check"; issue 11, item 3): `--timeout`, `--status`, `--header`, `--body`
//! and `--max-age` from `KEEPWELL_HEALTH_TIMEOUT`, `_STATUS`, `_HEADER`, `_BODY`, `_MAX_AGE`,
//! so `docker exec C keepwell check http://…` probes as the supervisor does; a flag wins. A
//! `keepwell check` without TARGET asks the supervisor and is not upset by those variables.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::app::{App, Behaviour};
use common::*;

/// `keepwell check ARGS` with exactly these `KEEPWELL_HEALTH_*` variables.
fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(KEEPWELL);
    command.arg("check").args(args);
    with_env(&mut command, env)
}

/// The same in a PID and mount namespace of its own, where no supervisor runs (another
/// test's keepwell could otherwise answer).
fn check_alone(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            KEEPWELL,
            "check",
        ])
        .args(args);
    with_env(&mut command, env)
}

fn with_env(command: &mut Command, env: &[(&str, &str)]) -> Output {
    for variable in [
        "KEEPWELL_HEALTH_URL",
        "KEEPWELL_HEALTH_TIMEOUT",
        "KEEPWELL_HEALTH_STATUS",
        "KEEPWELL_HEALTH_HEADER",
        "KEEPWELL_HEALTH_BODY",
        "KEEPWELL_HEALTH_MAX_AGE",
    ] {
        command.env_remove(variable);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run keepwell check")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_host_header_reaches_check_url_and_a_flag_wins() {
    let app = App::http(Behaviour::RequireHost("app.example.com".into()));
    let env = [("KEEPWELL_HEALTH_HEADER", "Host: app.example.com")];
    let out = check(&[&app.url()], &env);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let out = check(&["--header", "Host: other.example.com", &app.url()], &env);
    assert_eq!(code(&out), 1, "the flag wins: {}", stdout(&out));
    assert_eq!(
        app.hosts(),
        ["app.example.com", "other.example.com"],
        "the flag replaces the variable's headers"
    );
}

#[test]
fn timeout_status_and_body_come_from_the_variables_and_flags_win() {
    let hang = App::http(Behaviour::Hang);
    let started = Instant::now();
    let out = check(&[&hang.url()], &[("KEEPWELL_HEALTH_TIMEOUT", "300ms")]);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(
        stdout(&out).starts_with("unhealthy: no answer within 300ms from "),
        "{}",
        stdout(&out)
    );
    let out = check(
        &["--timeout", "400ms", &hang.url()],
        &[("KEEPWELL_HEALTH_TIMEOUT", "300ms")],
    );
    assert!(stdout(&out).starts_with("unhealthy: no answer within 400ms from "));

    let not_modified = App::http(Behaviour::Status(304));
    let env = [("KEEPWELL_HEALTH_STATUS", "200-299")];
    assert_eq!(code(&check(&[&not_modified.url()], &env)), 1);
    assert_eq!(
        code(&check(&["--status", "200-399", &not_modified.url()], &env)),
        0
    );

    let ok = App::http(Behaviour::Status(200));
    ok.set_body("Healthy: OK");
    assert_eq!(
        code(&check(
            &[&ok.url()],
            &[("KEEPWELL_HEALTH_BODY", "Healthy: OK")]
        )),
        0
    );
    let out = check(&[&ok.url()], &[("KEEPWELL_HEALTH_BODY", "database: up")]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).ends_with("does not contain \"database: up\"\n"),
        "{}",
        stdout(&out)
    );
    // An empty variable is the same as none.
    assert_eq!(
        code(&check(&[&ok.url()], &[("KEEPWELL_HEALTH_BODY", "")])),
        0
    );
}

#[test]
fn max_age_comes_from_the_variable_for_file_targets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    std::fs::write(&heartbeat, "").expect("write the heartbeat");
    std::fs::File::options()
        .write(true)
        .open(&heartbeat)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(600)))
        .expect("age the heartbeat");
    let target = format!("file:{}", heartbeat.display());
    let env = [("KEEPWELL_HEALTH_MAX_AGE", "1m")];
    let out = check(&[&target], &env);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("longer than --max-age 1m"),
        "{}",
        stdout(&out)
    );
    assert_eq!(code(&check(&["--max-age", "1h", &target], &env)), 0);
    // An image's max age does not make a check of another kind an error.
    let port = free_port();
    let out = check(&[&format!("tcp://127.0.0.1:{port}")], &env);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_variables_name_the_variable() {
    let out = check(
        &["http://127.0.0.1:1/health"],
        &[("KEEPWELL_HEALTH_TIMEOUT", "soon")],
    );
    assert_eq!(code(&out), 2);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "keepwell: KEEPWELL_HEALTH_TIMEOUT \"soon\" is not valid: expected a duration such as \
         500ms, 10s, 2m or 1h\n"
    );
}

#[test]
fn without_target_the_image_variables_are_ignored_but_flags_are_refused() {
    // What an image sets, as the supervisor reads it; `keepwell check` asks the supervisor.
    let env = [
        ("KEEPWELL_HEALTH_HEADER", "Host: app.example.com"),
        ("KEEPWELL_HEALTH_STATUS", "200"),
        ("KEEPWELL_HEALTH_BODY", "ok"),
        ("KEEPWELL_HEALTH_TIMEOUT", "soon"),
    ];
    let out = check_alone(&[], &env);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout(&out).starts_with("unhealthy: no keepwell supervisor answers in this container"),
        "{}",
        stdout(&out)
    );
    let out = check_alone(&["--status", "200"], &env);
    assert_eq!(code(&out), 2);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "keepwell: --status, --header, --body and --max-age need a TARGET URL: without one, \
         keepwell check asks the supervisor, which probes with its own --health-* settings\n"
    );
}
