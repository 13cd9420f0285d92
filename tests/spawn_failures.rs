//! A spawn that fails for lack of resources is named as such and, under a restart policy,
//! retried with the usual backoff; 126/127 stay for what exec says about COMMAND. The pids limit
//! is a real pids cgroup (what `docker run --pids-limit` sets), filled while keepwell restarts.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A pids cgroup of its own (v1 `pids` hierarchy or cgroup v2), removed when dropped.
struct PidsCgroup {
    path: PathBuf,
}

impl PidsCgroup {
    fn new() -> PidsCgroup {
        let name = format!("keepwell-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let parent = if v1.join("pids.max").exists() || v1.join("cgroup.procs").exists() {
            v1.to_path_buf()
        } else if fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            let _ = fs::write(v2.join("cgroup.subtree_control"), "+pids");
            v2.to_path_buf()
        } else {
            panic!(
                "this test needs a pids cgroup (as root: /sys/fs/cgroup/pids, or cgroup v2 \
                 with the pids controller); none is mounted here"
            );
        };
        let path = parent.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        PidsCgroup { path }
    }

    fn procs(&self) -> String {
        self.path.join("cgroup.procs").to_string_lossy().into()
    }

    fn current(&self) -> u64 {
        fs::read_to_string(self.path.join("pids.current"))
            .expect("pids.current")
            .trim()
            .parse()
            .expect("a number")
    }

    fn set_max(&self, max: &str) {
        fs::write(self.path.join("pids.max"), max).expect("write pids.max");
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // Emptied when keepwell's Drop killed everything; give the kernel a moment.
        for _ in 0..200 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_pids_limit_during_a_restart_is_named_and_retried_with_backoff() {
    let cgroup = PidsCgroup::new();
    let dir = tempfile::tempdir().expect("dir");
    let (second, go) = (dir.path().join("second"), dir.path().join("go"));
    // The first child waits without forking (a fork would need a pid) and exits 1 when told;
    // the second one runs.
    let child = format!(
        "import os, sys, time\n\
         if os.path.exists({second:?}):\n    print('second up', flush=True)\n    time.sleep(1000)\n\
         open({second:?}, 'w').close()\n\
         print('first up', flush=True)\n\
         while not os.path.exists({go:?}):\n    time.sleep(0.02)\n\
         sys.exit(1)\n",
        second = second.to_string_lossy(),
        go = go.to_string_lossy()
    );
    let mut kw = keepwell(&["--restart", "on-failure", "--", "python3", "-c", &child])
        .pid1()
        .setup(&format!("echo $$ > {}", cgroup.procs()))
        .start();
    wait_until(DEADLINE, "the first child", || {
        kw.stdout().contains("first up")
    });
    // keepwell's threads and the child are all in the cgroup: once the child is gone, not one
    // more task may start.
    let in_use = cgroup.current();
    cgroup.set_max(&(in_use - 1).to_string());
    fs::write(&go, "").expect("tell the child to exit");

    let log = kw.wait_log(DEADLINE, "the pids limit is reached");
    assert!(
        !log.contains("cannot be executed"),
        "a pids limit is not a missing execute bit: {log}"
    );
    // Retried: the failure schedules another restart instead of ending supervision.
    wait_until(
        DEADLINE,
        "a restart scheduled after the failed spawn",
        || {
            kw.stderr()
                .lines()
                .any(|l| l.contains("restarting in") && l.contains("the pids limit is reached"))
        },
    );
    assert!(
        !kw.stderr().contains("exiting with code"),
        "{}",
        kw.stderr()
    );

    cgroup.set_max("max");
    wait_until(
        DEADLINE,
        "the second child after the limit is lifted",
        || kw.stdout().contains("second up"),
    );
    let log = kw.stderr();
    assert_eq!(log.matches("child started").count(), 2, "{log}");
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 143, "{}", kw.stderr());
}

#[test]
fn what_exec_says_about_command_is_still_126_or_127() {
    let dir = tempfile::tempdir().expect("dir");
    let not_executable = dir.path().join("app.py");
    fs::write(&not_executable, "print('hi')\n").expect("write");
    for (command, code, text) in [
        ("/nonexistent/app", 127, "not found"),
        (
            not_executable.to_str().expect("utf-8"),
            126,
            "cannot be executed",
        ),
    ] {
        let mut kw = keepwell(&["--restart", "always", "--", command]).start();
        assert_eq!(kw.wait_exit(DEADLINE), code, "{}", kw.stderr());
        assert!(kw.stderr().contains(text), "{}", kw.stderr());
        assert!(!kw.stderr().contains("restarting in"), "{}", kw.stderr());
    }
}
