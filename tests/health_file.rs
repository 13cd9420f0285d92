//! `file:PATH` heartbeats (README "Health", `--health-max-age`): healthy while the file is a
//! regular file written since the current child started and, with a max age, no older than
//! that; a file the previous child left does not count; a directory or a missing file is
//! unhealthy with the reason; `keepwell check file:` the same.
//!
//! The child is a shell that touches the heartbeat when the test says so (a trigger file), so
//! every "before" and "after" is a fact the test made, not a sleep.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

const DEADLINE: Duration = Duration::from_secs(15);
const TO_HEALTHY: &str = "health changed: starting → healthy";
const TO_UNHEALTHY: &str = "health changed: healthy → unhealthy";
const TO_UNHEALTHY_FROM_STARTING: &str = "health changed: starting → unhealthy";

fn line_with(log: &str, text: &str) -> String {
    log.lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} in:\n{log}"))
        .to_string()
}

/// keepwell probing `file:heartbeat` every 100 ms, supervising `script` (run by sh).
fn supervise(heartbeat: &Path, script: &str, extra: &[&str]) -> Keepwell {
    let url = format!("file:{}", heartbeat.display());
    let mut args = vec![
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-start-interval",
        "100ms",
        "--grace",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", script]);
    keepwell(&args).start()
}

/// Set a file's modification time `ago` into the past.
fn age(path: &Path, ago: Duration) {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .expect("open to set mtime");
    file.set_modified(SystemTime::now() - ago)
        .expect("set the file's mtime");
}

#[test]
fn a_fresh_heartbeat_is_healthy_and_the_detail_gives_its_age() {
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    let script = format!("touch {}; exec sleep 1000", heartbeat.display());
    let kw = supervise(&heartbeat, &script, &["--health-max-age", "30s"]);
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    let line = line_with(&log, TO_HEALTHY);
    let detail = line
        .split_once("detail=")
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("a detail in {line}"));
    let prefix = format!("heartbeat {} written ", heartbeat.display());
    assert!(
        detail.starts_with(&prefix) && detail.ends_with(" ago (max age 30s)"),
        "{line}"
    );
}

#[test]
fn a_stale_heartbeat_is_unhealthy_and_the_child_is_restarted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    // Every child writes one heartbeat at its start and none after: it goes stale.
    let script = format!("touch {}; exec sleep 1000", heartbeat.display());
    let kw = supervise(
        &heartbeat,
        &script,
        &["--health-max-age", "1s", "--health-retries", "2"],
    );
    let first = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_HEALTHY);
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY);
    let line = line_with(&log, TO_UNHEALTHY);
    let prefix = format!("detail=the heartbeat {} was written ", heartbeat.display());
    assert!(
        line.contains(&prefix)
            && line.ends_with(
                " ago, longer than --health-max-age 1s (is the app stuck, or does it write \
                 less often than that?)"
            ),
        "{line}"
    );
    kw.wait_log(
        DEADLINE,
        "restarting in 100ms because the app stayed unhealthy",
    );
    let second = wait_for(DEADLINE, "a new child", || {
        kw.child().filter(|&pid| pid != first)
    });
    // The new child's own heartbeat makes it healthy again.
    wait_until(DEADLINE, "healthy again after the restart", || {
        kw.stderr().matches(TO_HEALTHY).count() == 2
    });
    assert_ne!(first, second);
}

#[test]
fn a_heartbeat_left_by_the_previous_child_does_not_count_until_rewritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    let (first_ran, go, exit_first) = (
        dir.path().join("first-ran"),
        dir.path().join("go"),
        dir.path().join("exit-first"),
    );
    // The first child writes the heartbeat, then exits when told (and is restarted); the
    // second writes it only once the test creates `go`.
    let script = format!(
        "if [ -e {first} ]; then
             while [ ! -e {go} ]; do sleep 0.02; done; touch {hb}; exec sleep 1000
         else
             touch {first} {hb}; while [ ! -e {exit} ]; do sleep 0.02; done; exit 1
         fi",
        first = first_ran.display(),
        go = go.display(),
        hb = heartbeat.display(),
        exit = exit_first.display()
    );
    let listen_port = free_port();
    let listen = format!("127.0.0.1:{listen_port}");
    let kw = supervise(
        &heartbeat,
        &script,
        &[
            "--restart",
            "on-failure",
            "--listen",
            &listen,
            "--log-format",
            "json",
        ],
    );
    let first = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_HEALTHY);
    fs::write(&exit_first, "").expect("tell the first child to exit");
    let second = wait_for(DEADLINE, "the second child", || {
        kw.child().filter(|&pid| pid != first)
    });
    // Probes go on and fail, inside the start period, for the previous child's file.
    let expected = format!("the heartbeat {} was written ", heartbeat.display());
    let status = |field: &str| -> serde_json::Value {
        let (_, body) = common::app::get(listen_port, "/status").expect("/status answers");
        serde_json::from_str::<serde_json::Value>(&body).expect("/status is JSON")[field].clone()
    };
    let failed_before = status("probes_failed").as_u64().unwrap_or(0);
    wait_until(DEADLINE, "five failed probes of the second child", || {
        status("probes_failed").as_u64().unwrap_or(0) >= failed_before + 5
    });
    assert_eq!(
        status("state"),
        "starting",
        "the old heartbeat made it healthy"
    );
    assert_eq!(status("child_pid"), second);
    let detail = status("last_probe")["detail"]
        .as_str()
        .expect("last_probe.detail")
        .to_string();
    assert!(
        detail.starts_with(&expected)
            && detail
                .ends_with(" ago, before this child started (waiting for the child to write it)"),
        "{detail}"
    );
    // Logged once, at info, not once per probe.
    let log = kw.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("before this child started"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON log line");
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(
        event["message"], "probe failed in the start period (not counted yet)",
        "{event}"
    );

    fs::write(&go, "").expect("tell the second child to write its heartbeat");
    wait_until(DEADLINE, "the second child healthy", || {
        kw.stderr().matches(TO_HEALTHY).count() == 2
    });
}

#[test]
fn a_directory_or_a_missing_file_is_unhealthy_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("never-written");
    let strict = [
        "--health-start-period",
        "0",
        "--health-retries",
        "1",
        "--on-unhealthy",
        "ignore",
    ];
    let cases = [
        (
            dir.path().to_path_buf(),
            format!(
                "{} is a directory, not a heartbeat file (point file: at the file the app \
                 touches)",
                dir.path().display()
            ),
        ),
        (
            missing.clone(),
            format!(
                "no heartbeat file at {} yet (is the app writing it? the path must be the one \
                 it touches)",
                missing.display()
            ),
        ),
    ];
    for (path, reason) in cases {
        let kw = supervise(&path, "exec sleep 1000", &strict);
        let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
        let line = line_with(&log, TO_UNHEALTHY_FROM_STARTING);
        assert!(line.ends_with(&format!("detail={reason}")), "{line}");
    }
}

#[test]
fn bad_file_configuration_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/health",
                "--health-max-age",
                "30s",
            ],
            "keepwell: --health-max-age \"30s\" is not valid: a max age applies to file: \
             heartbeats only, not to http://127.0.0.1:1/health",
        ),
        (
            &["--health-max-age", "30s"],
            "keepwell: --health-max-age \"30s\" is not valid: a max age needs a file: heartbeat, \
             such as --health-url file:/tmp/heartbeat",
        ),
        (
            &["--health-url", "file:/tmp/hb", "--health-max-age", "soon"],
            "keepwell: --health-max-age \"soon\" is not valid: expected a duration such as 500ms, \
             10s, 2m or 1h",
        ),
        (
            &["--health-url", "file:"],
            "keepwell: --health-url \"file:\" is not valid: the file path is missing; expected \
             file:PATH, such as file:/tmp/heartbeat",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(KEEPWELL)
            .args(*args)
            .args(["--", "true"])
            .env_remove("KEEPWELL_HEALTH_URL")
            .output()
            .expect("run keepwell");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{expected}\n"),
            "{args:?}"
        );
    }
}

/// `keepwell check ARGS`: exit code and stdout.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(KEEPWELL)
        .arg("check")
        .args(args)
        .env_remove("KEEPWELL_HEALTH_MAX_AGE")
        .output()
        .expect("run keepwell check");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_file_judges_existence_and_max_age() {
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    let target = format!("file:{}", heartbeat.display());
    let (code, out) = check(&[&target, "--max-age", "30s"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("unhealthy: no heartbeat file at "), "{out}");

    fs::write(&heartbeat, "").expect("write the heartbeat");
    let (code, out) = check(&[&target, "--max-age", "30s"]);
    assert_eq!(code, 0, "{out}");
    let prefix = format!("healthy: heartbeat {} written ", heartbeat.display());
    assert!(
        out.starts_with(&prefix) && out.contains(" ago (max age 30s) in "),
        "{out}"
    );

    age(&heartbeat, Duration::from_secs(300));
    let (code, out) = check(&[&target, "--max-age", "30s"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: the heartbeat {} was written 5m ago, longer than --max-age 30s (is the \
             app stuck, or does it write less often than that?)\n",
            heartbeat.display()
        )
    );
    // Without a max age it is a ready marker: any age will do.
    let (code, out) = check(&[&target]);
    assert_eq!(code, 0, "{out}");

    let (code, out) = check(&[&format!("file:{}", dir.path().display())]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is a directory, not a heartbeat file"),
        "{out}"
    );
}
