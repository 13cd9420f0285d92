//! `--remap-exit FROM:TO` (tini's `-e`): keepwell exits with TO where it would exit with FROM,
//! e.g. 143:0 for a server that re-raises SIGTERM after a clean shutdown (uvicorn), so that
//! `docker stop` shows 0. Repeatable; `KEEPWELL_REMAP_EXIT` takes a comma list.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(15);

/// Like uvicorn: shut down cleanly on TERM, then die of it.
const RERAISES_TERM: &str = "trap 'trap - TERM; echo clean; kill -TERM $$' TERM; echo up; \
                             while :; do sleep 0.05; done";

#[test]
fn a_child_that_reraises_term_exits_0_under_remap_143_to_0() {
    for pid1 in [true, false] {
        let mut launch = keepwell(&["--remap-exit", "143:0", "--", "sh", "-c", RERAISES_TERM]);
        if pid1 {
            launch = launch.pid1();
        }
        let mut kw = launch.start();
        wait_until(DEADLINE, "the child up", || kw.stdout().contains("up"));
        kw.signal(Signal::SIGTERM);
        assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
        assert!(
            kw.stderr()
                .contains("exiting with code 0 (143 remapped by --remap-exit)"),
            "{}",
            kw.stderr()
        );
    }
}

#[test]
fn the_variable_takes_a_list_and_codes_not_named_stay() {
    for (script, expected) in [("exit 7", 9), ("exit 3", 0), ("exit 5", 5)] {
        let mut kw = keepwell(&["--", "sh", "-c", script])
            .env("KEEPWELL_REMAP_EXIT", "7:9,3:0")
            .start();
        assert_eq!(
            kw.wait_exit(DEADLINE),
            expected,
            "{script}: {}",
            kw.stderr()
        );
    }
    // keepwell's own codes are remapped too: 4 when the restarts are spent.
    let mut kw = keepwell(&[
        "--restart",
        "always",
        "--max-restarts",
        "0",
        "--remap-exit",
        "4:42",
        "--",
        "true",
    ])
    .start();
    assert_eq!(kw.wait_exit(DEADLINE), 42, "{}", kw.stderr());
}

#[test]
fn a_malformed_rule_is_one_line_and_exit_2_before_anything_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("started");
    let marker_text = marker.to_string_lossy().to_string();
    for (flag, env, value) in [
        (true, false, "143"),
        (true, false, "143:256"),
        (false, true, "143:0,x:1"),
    ] {
        let mut command = Command::new(KEEPWELL);
        if flag {
            command.args(["--remap-exit", value]);
        }
        if env {
            command.env("KEEPWELL_REMAP_EXIT", value);
        }
        command
            .args(["--", "touch", &marker_text])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run keepwell");
        let status = wait_or_kill(&mut child, DEADLINE, "keepwell to reject the rule");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert_eq!(status.code(), Some(2), "{value}: {stderr}");
        assert!(!marker.exists(), "{value} started the child");
        let origin = if flag {
            "--remap-exit"
        } else {
            "KEEPWELL_REMAP_EXIT"
        };
        let bad = if value.contains(',') { "x:1" } else { value };
        assert_eq!(
            stderr.trim_end(),
            format!(
                "keepwell: {origin} \"{bad}\" is not valid: expected FROM:TO exit codes from 0 \
                 to 255, such as 143:0"
            )
        );
    }
}
