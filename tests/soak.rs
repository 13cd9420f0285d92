//! The chaos soak (tests/soak/soak.py) passes: keepwell as PID 1 of a fresh PID namespace,
//! against an app that crashes, exits with random codes, hangs or garbles /health and forks
//! orphan storms, under signal storms, `--listen` floods and parallel `keepwell check`s,
//! leaves no zombie older than 1 s, keeps its descriptors and memory flat, restarts only as its
//! policy says, publishes a /status that matches /proc, and delivers every real-time signal
//! that had to arrive exactly once. Two minutes under CI, 20 s otherwise
//! (`SOAK_SECONDS` overrides both).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The harness's own start and end: keepwell's launch, the final stop, the figures.
const OVERHEAD: Duration = Duration::from_secs(60);

fn soak_seconds() -> u64 {
    if let Ok(text) = std::env::var("SOAK_SECONDS") {
        return text
            .parse()
            .unwrap_or_else(|_| panic!("SOAK_SECONDS={text:?}: expected whole seconds"));
    }
    if std::env::var_os("CI").is_some() {
        120
    } else {
        20
    }
}

#[test]
fn the_chaos_soak_finds_no_violation() {
    let seconds = soak_seconds();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(format!("{}/tests/soak/soak.py", env!("CARGO_MANIFEST_DIR")))
        .args(["--binary", KEEPWELL, "--duration", &seconds.to_string()]);
    clear_keepwell_env(&mut command);
    start_like_a_container(&mut command);
    let out = run_with_deadline(&mut command, Duration::from_secs(seconds) + OVERHEAD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The figures go to the test's output, for the record.
    eprintln!("{stdout}");
    let result_line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("SOAK-RESULT "))
        .unwrap_or_else(|| panic!("the soak printed no result: {stdout}\n{stderr}"));
    let result: serde_json::Value = serde_json::from_str(result_line).expect("SOAK-RESULT is JSON");
    assert_eq!(
        result["passed"], true,
        "violations: {}\n{stderr}",
        result["violations"]
    );
    assert!(out.status.success(), "the soak exited {:?}", out.status);
    // The soak did what it is for: the faults happened, and were survived.
    let count = |key: &str| result[key].as_u64().unwrap_or(0);
    assert!(count("restarts") >= 1, "no restart happened: {result}");
    assert!(
        count("orphans_reaped") >= 1,
        "no orphan was reaped: {result}"
    );
    assert!(count("flood_connections") >= 100, "no flood: {result}");
    assert!(
        result["signals"]["rt_must_arrive"].as_u64().unwrap_or(0) >= 1,
        "no real-time signal had to arrive: {result}"
    );
    assert!(
        result["checks"]
            .as_object()
            .is_some_and(|checks| !checks.is_empty()),
        "no keepwell check ran: {result}"
    );
}
