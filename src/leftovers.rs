//! What the child leaves behind: found through /proc, signalled, and watched until it is gone.
//!
//! The state machine decides when and whom ([`Scope`]); this module only finds who that is right
//! now and sends the signal. Two scopes:
//! - **Descendants**: every live process descended from keepwell. A process that calls
//!   `setsid()` leaves the child's process group, so a group signal misses it; once its parent is
//!   gone the kernel hands it to keepwell (PID 1, or the subreaper), so following parent links in
//!   /proc finds it. A `docker exec` session is not keepwell's descendant (its parent is outside
//!   the namespace) and is never touched.
//! - **Namespace**: as PID 1, every other process (`kill(-1, …)`), before keepwell exits.
//!
//! Zombies never count as left: a zombie whose parent lives is that parent's to reap (and the
//! parent counts), one whose parent is gone is keepwell's and is reaped at once. So a zombie
//! whose parent is outside the child's group cannot hold a stop beyond its bound.
//!
//! Descendants are signalled a process group at a time where the whole group is theirs (one
//! atomic `kill(-pgid)`: a process forking at that moment cannot slip out of it), one by one
//! otherwise, and the scan is repeated until it finds nobody new, so a process that forked or
//! called setsid() between scan and signal is caught on the next round. Without a readable
//! /proc the child's process group is the fallback.

use std::collections::{HashMap, HashSet};
use std::fs;

use nix::errno::Errno;

use crate::child;
use crate::state::Scope;

/// A process found in the scope: for the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub name: String,
}

/// One line of /proc/PID/stat, the fields that matter here.
#[derive(Clone, Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgid: i32,
    zombie: bool,
    name: String,
}

/// How many times a signal round rescans for processes that appeared meanwhile.
const ROUNDS: usize = 4;

/// Parse /proc/PID/stat: `pid (comm) state ppid pgrp …`; comm may itself hold `)` or spaces.
fn parse_stat(text: &str) -> Option<Proc> {
    let (head, rest) = text.rsplit_once(')')?;
    let (pid, name) = head.split_once(" (")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Proc {
        pid: pid.trim().parse().ok()?,
        ppid,
        pgid,
        // X (dead) is a zombie on its way out.
        zombie: matches!(state, "Z" | "X"),
        name: name.to_string(),
    })
}

fn read_proc(pid: i32) -> Option<Proc> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process in /proc; `None` when /proc cannot be read at all.
fn scan() -> Option<Vec<Proc>> {
    let entries = fs::read_dir("/proc").ok()?;
    let mut all: Vec<Proc> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect();
    // /proc is read one process at a time: a parent that exits during the scan leaves its
    // children pointing at a pid that is no longer there. Read those again: by now the kernel
    // has handed them to their new reaper (keepwell, if they are its descendants).
    let known: HashSet<i32> = all.iter().map(|p| p.pid).collect();
    for p in all.iter_mut() {
        if p.ppid != 0 && !known.contains(&p.ppid) {
            if let Some(again) = read_proc(p.pid) {
                *p = again;
            }
        }
    }
    Some(all)
}

/// The pids descended from `me` (zombies included: they still hold their group).
fn descendants_of(all: &[Proc], me: i32) -> HashSet<i32> {
    let parent: HashMap<i32, i32> = all.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut verdict: HashMap<i32, bool> = HashMap::new();
    for p in all {
        // Walk up until a known answer, keepwell, or the top; then record it for the whole path.
        let mut path = Vec::new();
        let mut at = p.pid;
        let answer = loop {
            if let Some(&known) = verdict.get(&at) {
                break known;
            }
            if at == me {
                break !path.is_empty();
            }
            match parent.get(&at) {
                Some(&up) if up > 0 && path.len() <= all.len() => {
                    path.push(at);
                    at = up;
                }
                _ => {
                    path.push(at);
                    break false;
                }
            }
        };
        for pid in path {
            verdict.insert(pid, answer && pid != me);
        }
    }
    verdict
        .into_iter()
        .filter_map(|(pid, ours)| ours.then_some(pid))
        .collect()
}

fn own_pid() -> i32 {
    std::process::id() as i32
}

fn own_pgid() -> i32 {
    nix::unistd::getpgrp().as_raw()
}

/// kill(2) by raw number; a target already gone (ESRCH) or not ours to signal (EPERM, a root
/// `docker exec` session when keepwell runs as a user) is not an error worth reporting.
fn kill_raw(pid: i32, signo: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signo) };
}

/// Send `signo` to everything in `scope`; returns who was there (live processes only).
pub fn signal(scope: Scope, signo: i32) -> Vec<Leftover> {
    match scope {
        Scope::Namespace => {
            let me = own_pid();
            let found = scan()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.pid != me && !p.zombie)
                .map(|p| Leftover {
                    pid: p.pid,
                    name: p.name,
                })
                .collect();
            // Every process keepwell may signal, except itself: one call, no race with forks.
            kill_raw(-1, signo);
            found
        }
        Scope::Descendants { pgid } => signal_descendants(pgid, signo),
    }
}

fn signal_descendants(child_pgid: i32, signo: i32) -> Vec<Leftover> {
    let (me, my_group) = (own_pid(), own_pgid());
    let mut done_pids: HashSet<i32> = HashSet::new();
    let mut done_groups: HashSet<i32> = HashSet::new();
    let mut found = Vec::new();
    for _ in 0..ROUNDS {
        let Some(all) = scan() else {
            if found.is_empty() {
                let _ = child::send(crate::state::Target::Group(child_pgid), signo);
            }
            break;
        };
        let ours = descendants_of(&all, me);
        let new: Vec<&Proc> = all
            .iter()
            .filter(|p| ours.contains(&p.pid) && !p.zombie)
            .filter(|p| !done_pids.contains(&p.pid) && !done_groups.contains(&p.pgid))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            let group = p.pgid;
            let whole_group_ours = group > 0
                && group != my_group
                && all
                    .iter()
                    .filter(|q| q.pgid == group)
                    .all(|q| ours.contains(&q.pid));
            if whole_group_ours {
                if done_groups.insert(group) {
                    kill_raw(-group, signo);
                }
            } else {
                kill_raw(p.pid, signo);
            }
            done_pids.insert(p.pid);
            found.push(Leftover {
                pid: p.pid,
                name: p.name.clone(),
            });
        }
    }
    found.sort_by_key(|l| l.pid);
    found
}

/// Whether anything in `scope` still lives (zombies do not count).
pub fn anything_left(scope: Scope) -> bool {
    let me = own_pid();
    match (scope, scan()) {
        (Scope::Namespace, Some(all)) => all.iter().any(|p| {
            // A process keepwell may not signal (a root `docker exec` session under --user)
            // cannot be made to go: only the kernel ends it, when PID 1 exits.
            p.pid != me && !p.zombie && Errno::result(unsafe { libc::kill(p.pid, 0) }).is_ok()
        }),
        (Scope::Namespace, None) => Errno::result(unsafe { libc::kill(-1, 0) }).is_ok(),
        (Scope::Descendants { .. }, Some(all)) => {
            let ours = descendants_of(&all, me);
            all.iter().any(|p| ours.contains(&p.pid) && !p.zombie)
        }
        (Scope::Descendants { pgid }, None) => child::group_alive(pgid),
    }
}

/// "57 (sleep), 63 (python3)": at most `limit` named, then how many more.
pub fn describe(found: &[Leftover], limit: usize) -> String {
    let mut text: Vec<String> = found
        .iter()
        .take(limit)
        .map(|l| format!("{} ({})", l.pid, l.name))
        .collect();
    if found.len() > limit {
        text.push(format!("and {} more", found.len() - limit));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgid: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgid,
            zombie: false,
            name: "x".into(),
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let proc = parse_stat("42 (a) b (c)) S 7 42 42 0 -1").expect("parses");
        assert_eq!((proc.pid, proc.ppid, proc.pgid), (42, 7, 42));
        assert_eq!(proc.name, "a) b (c)");
        assert!(!proc.zombie);
        assert!(parse_stat("43 (z) Z 1 43 43").expect("parses").zombie);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn descendants_follow_parent_links_and_leave_the_rest() {
        // 1 is keepwell; 2 its child, 3 a setsid'd grandchild (own group), 4 an orphan it
        // adopted; 9 a docker exec session (parent outside the namespace) and 10 its child.
        let all = vec![
            p(1, 0, 1),
            p(2, 1, 2),
            p(3, 2, 3),
            p(4, 1, 4),
            p(9, 0, 9),
            p(10, 9, 9),
        ];
        let ours = descendants_of(&all, 1);
        assert_eq!(ours, HashSet::from([2, 3, 4]));
    }

    #[test]
    fn a_parent_loop_in_a_torn_scan_ends() {
        let all = vec![p(5, 6, 5), p(6, 5, 5)];
        assert!(descendants_of(&all, 1).is_empty());
    }
}
