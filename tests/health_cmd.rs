//! `--health-cmd` and `keepwell check -- CMD` (README "Health", "keepwell check"): exit 0 is
//! healthy; the check runs through /bin/sh -c as the child's user, with the child's
//! environment and working directory; at the timeout its whole process group is killed and
//! reaped, so a hung check leaves no process behind (scanned in /proc); only 4 KiB of its
//! output is kept, so 10 MB of it does not grow keepwell.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// The arguments for keepwell checking with `cmd` every 100 ms, then `extra` (whose flags
/// replace those defaults), supervising `sleep 1000`.
fn args<'a>(cmd: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--health-cmd", cmd];
    for (flag, value) in [
        ("--health-interval", "100ms"),
        ("--health-start-interval", "100ms"),
        ("--grace", "1s"),
    ] {
        if !extra.contains(&flag) {
            all.extend([flag, value]);
        }
    }
    all.extend_from_slice(extra);
    all.extend(["--", "sleep", "1000"]);
    all
}

/// A directory any user may write to (the check may run as another user).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod 777");
    dir
}

/// Live processes whose arguments are exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args == argv {
            found.push(pid);
        }
    }
    found
}

/// Zombies among a process's descendants: what nobody reaped.
fn zombies_under(pid: i32) -> Vec<i32> {
    descendants_of(pid)
        .into_iter()
        .filter(|p| proc_state(*p) == Some('Z'))
        .collect()
}

#[test]
fn exit_0_is_healthy_and_exit_1_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fail = dir.path().join("fail");
    let cmd = format!("test ! -e {}", fail.display());
    let kw = keepwell(&args(
        &cmd,
        &["--health-retries", "1", "--on-unhealthy", "ignore"],
    ))
    .start();
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    assert!(
        line_with(&log, TO_HEALTHY).ends_with(&format!("detail=exit 0 from `{cmd}`")),
        "{log}"
    );
    fs::write(&fail, "").expect("flip the check");
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY);
    assert!(
        line_with(&log, TO_UNHEALTHY).ends_with(&format!("detail=exit code 1 from `{cmd}`")),
        "{log}"
    );
}

#[test]
fn the_check_runs_through_the_shell_with_its_output_in_the_detail() {
    let kw = keepwell(&args(
        "echo 'not ready:' $((6 * 7)) >&2; exit 3",
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
        ],
    ))
    .start();
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).ends_with(
            "detail=exit code 3 from `echo 'not ready:' $((6 * 7)) >&2; exit 3`; output: \
             \"not ready: 42\""
        ),
        "{log}"
    );
}

#[test]
fn a_hung_check_and_the_sleeper_it_forked_are_killed_and_reaped_at_the_timeout() {
    // Unique numbers, so the scan of /proc finds this test's processes only.
    let token = format!("{}.7", 40_000 + std::process::id() % 10_000);
    let (sleeper, hang) = (format!("1{token}"), format!("2{token}"));
    let cmd = format!("sleep {sleeper} & exec sleep {hang}");
    let running = || {
        [
            processes_running(&["sleep", &sleeper]),
            processes_running(&["sleep", &hang]),
        ]
        .concat()
    };
    // One check only: the next would come 60 s later.
    let kw = keepwell(&args(
        &cmd,
        &[
            "--health-timeout",
            "300ms",
            "--health-interval",
            "60s",
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
        ],
    ))
    .pid1()
    .start();
    wait_until(DEADLINE, "the check and its sleeper running", || {
        running().len() == 2
    });
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).ends_with(&format!(
            "detail=the check `{cmd}` did not finish within 300ms: its process group was killed \
             (a check that needs longer needs a longer --health-timeout)"
        )),
        "{log}"
    );
    // Killed and reaped: no process of the check is left, not even a zombie.
    wait_until(DEADLINE, "nothing of the hung check left", || {
        running().is_empty() && zombies_under(kw.pid).is_empty()
    });
    assert_eq!(
        kw.child().map(|_| ()),
        Some(()),
        "the app itself still runs"
    );
}

#[test]
fn at_most_one_check_runs_at_a_time_and_each_is_gone_before_the_next() {
    // Every check records its start in a file and hangs; keepwell kills it at the timeout.
    let dir = tempfile::tempdir().expect("temp dir");
    let starts = dir.path().join("starts");
    let token = format!("3{}.5", std::process::id() % 100_000);
    let cmd = format!("echo $$ >> {}; exec sleep {token}", starts.display());
    let kw = keepwell(&args(
        &cmd,
        &[
            "--health-timeout",
            "200ms",
            "--health-interval",
            "10ms",
            "--health-start-interval",
            "10ms",
            "--health-start-period",
            "0",
            "--on-unhealthy",
            "ignore",
        ],
    ))
    .pid1()
    .start();
    let until = Instant::now() + Duration::from_secs(3);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(processes_running(&["sleep", &token]).len());
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        started >= 5,
        "only {started} checks started in 3 s:\n{}",
        kw.stderr()
    );
    assert_eq!(most, 1, "checks overlapped");
    drop(kw);
}

#[test]
fn the_check_runs_as_the_childs_user_with_its_environment_and_directory() {
    let shared = shared_dir();
    let report = shared.path().join("report");
    let etc = tempfile::tempdir().expect("dir");
    fs::write(
        etc.path().join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:4242:4242:App:/home/app:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(etc.path().join("group"), "root:x:0:\napp:x:4242:\n").expect("group");
    let cmd = format!(
        "{{ id -u; id -g; echo HOME=$HOME USER=$USER; echo VAR=$KW_CHECK_VAR; pwd; \
         grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; }} > {}",
        report.display()
    );
    let kw = keepwell(&args(&cmd, &["--user", "app"]))
        .pid1()
        .env("KW_CHECK_VAR", "from-keepwell")
        .setup(&format!(
            "mount --bind {0}/passwd /etc/passwd && mount --bind {0}/group /etc/group",
            etc.path().display()
        ))
        .start();
    kw.wait_log(DEADLINE, TO_HEALTHY);
    let child = kw.wait_child(DEADLINE);
    let child_cwd = fs::read_link(format!("/proc/{child}/cwd")).expect("the child's cwd");
    let text = fs::read_to_string(&report).expect("the check's report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "4242",
            "4242",
            "HOME=/home/app USER=app",
            "VAR=from-keepwell",
            &child_cwd.to_string_lossy()
        ],
        "{text}"
    );
    assert!(
        text.contains("CapEff:\t0000000000000000") && text.contains("NoNewPrivs:\t1"),
        "{text}"
    );
}

#[test]
fn ten_megabytes_of_output_keep_4_kib_and_do_not_grow_keepwell() {
    let listen_port = free_port();
    let listen = format!("127.0.0.1:{listen_port}");
    let cmd = "head -c 10000000 /dev/zero | tr '\\0' x; exit 1";
    let kw = keepwell(&args(
        cmd,
        &[
            "--health-timeout",
            "10s",
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
            "--listen",
            &listen,
        ],
    ))
    .start();
    let memory = |field: &str| -> u64 {
        status_field(kw.pid, field)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} of keepwell"))
    };
    kw.wait_child(DEADLINE);
    let before = memory("VmRSS");
    let failed = || -> u64 {
        common::app::get(listen_port, "/status")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|json| json["probes_failed"].as_u64())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(60), "five checks of 10 MB each", || {
        failed() >= 5
    });
    let peak = memory("VmHWM");
    assert!(
        peak < before + 2 * 1024,
        "keepwell's peak RSS is {peak} KiB after five checks of 10 MB output, {before} KiB \
         before the first"
    );
    let log = kw.stderr();
    let line = line_with(&log, TO_UNHEALTHY_FROM_STARTING);
    let expected = format!(
        "detail=exit code 1 from `{cmd}`; output: \"{}\" and {} bytes more, not kept",
        "x".repeat(4096),
        10_000_000 - 4096
    );
    assert!(
        line.ends_with(&expected),
        "{}",
        &line[..line.len().min(400)]
    );
}

#[test]
fn check_command_exits_0_or_1_with_one_line() {
    let out = Command::new(KEEPWELL)
        .args(["check", "--", "true"])
        .output()
        .expect("run keepwell check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("healthy: exit 0 from `true` in "),
        "{stdout}"
    );

    let out = Command::new(KEEPWELL)
        .args(["check", "--", "sh", "-c", "echo down; exit 1"])
        .output()
        .expect("run keepwell check");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "unhealthy: exit code 1 from `sh -c echo down; exit 1`; output: \"down\"\n"
    );

    let out = Command::new(KEEPWELL)
        .args(["check", "--", "no-such-program-kw"])
        .output()
        .expect("run keepwell check");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "unhealthy: cannot start the check `no-such-program-kw`: no-such-program-kw is not \
         found (is it installed in the image, and on the PATH keepwell has?)\n"
    );
}

#[test]
fn check_command_leaves_nothing_behind_at_its_timeout() {
    let token = format!("5{}.25", std::process::id() % 100_000);
    // A sleeper in the check's group, one that escaped it with setsid, and a hang.
    let script = format!("sleep 1{token} & setsid sleep 2{token} & exec sleep 3{token}");
    let started = Instant::now();
    let out = Command::new(KEEPWELL)
        .args(["check", "--timeout", "500ms", "--", "sh", "-c", &script])
        .output()
        .expect("run keepwell check");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "unhealthy: the check `sh -c {script}` did not finish within 500ms: its process \
             group was killed (a check that needs longer needs a longer --timeout)\n"
        )
    );
    assert!(
        took < Duration::from_secs(3),
        "keepwell check took {took:?}"
    );
    // keepwell check reaped all of it before exiting: nothing left, not even a zombie.
    let left: Vec<_> = (1..=3)
        .flat_map(|n| processes_running(&["sleep", &format!("{n}{token}")]))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_command_configuration_exits_2_with_one_line() {
    let out = Command::new(KEEPWELL)
        .args([
            "--health-url",
            "http://127.0.0.1:1/health",
            "--health-cmd",
            "true",
            "--",
            "true",
        ])
        .env_remove("KEEPWELL_HEALTH_URL")
        .output()
        .expect("run keepwell");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "keepwell: --health-url \"http://127.0.0.1:1/health\" is not valid: it and \
         --health-cmd both say how to probe; give one of them\n"
    );
    let out = Command::new(KEEPWELL)
        .args(["check", "http://127.0.0.1:1/", "--", "true"])
        .output()
        .expect("run keepwell check");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "keepwell: TARGET \"http://127.0.0.1:1/\" and a command after -- both say what to \
         check; give one of them\n"
    );
}
