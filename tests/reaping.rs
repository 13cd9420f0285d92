//! Reaping: every orphan the kernel hands to keepwell is reaped, as PID 1 of a fresh PID
//! namespace and as a child subreaper when keepwell is not PID 1.

mod common;

use std::time::Duration;

use common::*;

const ORPHANS: usize = 300;

/// A child that double-forks ORPHANS sleepers (their parent subshell exits at once, so each
/// sleeper is orphaned and re-parented), writes their pids, then waits for a file to appear.
fn orphan_maker(dir: &std::path::Path) -> String {
    format!(
        "for i in $(seq {ORPHANS}); do (sleep 1.5 & echo $! >> {pids}); done; echo spawned; \
         while [ ! -e {done} ]; do sleep 0.05; done",
        pids = dir.join("pids").display(),
        done = dir.join("done").display()
    )
}

fn hundreds_of_orphans_are_adopted_and_reaped(pid1: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let script = orphan_maker(dir.path());
    let mut launch = keepwell(&["--", "sh", "-c", &script]);
    if pid1 {
        launch = launch.pid1();
    }
    let mut kw = launch.start();
    wait_until(Duration::from_secs(30), "the orphans to be spawned", || {
        kw.stdout().contains("spawned")
    });
    // The sleepers' pids are namespace pids in PID 1 mode; look at keepwell's children instead.
    let adopted = children_of(kw.pid)
        .into_iter()
        .filter(|&pid| Some(pid) != kw.child())
        .count();
    let main_child = kw.child().expect("main child");
    let alive_orphans = children_of(kw.pid).len() - 1;
    assert!(
        adopted >= ORPHANS / 2 && alive_orphans >= ORPHANS / 2,
        "orphans should be children of keepwell ({}) now: {adopted} adopted",
        kw.pid
    );
    for pid in children_of(kw.pid).into_iter().filter(|&p| p != main_child) {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string))
            })
            .flatten();
        if let Some(ppid) = ppid {
            assert_eq!(ppid, kw.pid.to_string(), "orphan {pid}'s parent");
        }
    }
    // Once they exit, none may linger as a zombie.
    wait_until(
        Duration::from_secs(20),
        "every orphan reaped, no zombie left",
        || {
            let children = children_of(kw.pid);
            children.len() == 1 && children.iter().all(|&pid| proc_state(pid) != Some('Z'))
        },
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
