//! Reaping: every orphan the kernel hands to keepwell is reaped, as PID 1 of a fresh PID
//! namespace and as a child subreaper when keepwell is not PID 1.

mod common;

use std::time::Duration;

use common::*;

const ORPHANS: usize = 300;

/// A child that double-forks ORPHANS sleepers (their parent subshell exits at once, so each
/// sleeper is orphaned and re-parented), says so, then waits for a file to appear.
fn orphan_maker(dir: &std::path::Path) -> String {
    format!(
        "for i in $(seq {ORPHANS}); do (sleep 1000 &); done; echo spawned; \
         while [ ! -e {done} ]; do sleep 0.05; done",
        done = dir.join("done").display()
    )
}

/// The parent pid of a process, from /proc/PID/stat.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn hundreds_of_orphans_are_adopted_and_reaped(pid1: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let script = orphan_maker(dir.path());
    let mut launch = keepwell(&["--", "sh", "-c", &script]);
    if pid1 {
        launch = launch.pid1();
    }
    let mut kw = launch.start();
    let main_child = kw.wait_child(Duration::from_secs(10));
    wait_until(Duration::from_secs(30), "the orphans to be spawned", || {
        kw.stdout().contains("spawned")
    });
    // Every sleeper is keepwell's child now (the sleepers sleep until the test kills them, so
    // a loaded machine cannot make them leave before they are counted).
    let orphans = wait_for(
        Duration::from_secs(30),
        "every orphan adopted by keepwell",
        || {
            let adopted: Vec<i32> = children_of(kw.pid)
                .into_iter()
                .filter(|&pid| pid != main_child)
                .collect();
            (adopted.len() == ORPHANS).then_some(adopted)
        },
    );
    for &pid in &orphans {
        assert_eq!(ppid(pid), Some(kw.pid), "orphan {pid}'s parent");
    }
    // Once they die, none may linger as a zombie.
    for &pid in &orphans {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    wait_until(
        Duration::from_secs(20),
        "every orphan reaped, no zombie left",
        || children_of(kw.pid) == [main_child] && proc_state(main_child) != Some('Z'),
    );
    std::fs::write(dir.path().join("done"), "").expect("done file");
    assert_eq!(kw.wait_exit(Duration::from_secs(10)), 0, "{}", kw.stderr());
}

#[test]
fn hundreds_of_orphans_are_adopted_and_reaped_as_pid1() {
    hundreds_of_orphans_are_adopted_and_reaped(true);
}

#[test]
fn hundreds_of_orphans_are_adopted_and_reaped_as_subreaper() {
    hundreds_of_orphans_are_adopted_and_reaped(false);
}

#[test]
fn a_zombie_of_an_exited_orphan_is_reaped_while_the_child_keeps_running() {
    // The orphan exits at once; the main child keeps running: keepwell must reap the orphan
    // without waiting for its own child.
    let mut kw = keepwell(&["--", "sh", "-c", "(true &); echo ok; sleep 30"])
        .pid1()
        .start();
    wait_until(Duration::from_secs(10), "the child to run", || {
        kw.stdout().contains("ok")
    });
    wait_until(Duration::from_secs(10), "no zombie under keepwell", || {
        let children = children_of(kw.pid);
        children.len() == 1 && children.iter().all(|&pid| proc_state(pid) != Some('Z'))
    });
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(kw.wait_exit(Duration::from_secs(10)), 143);
}
