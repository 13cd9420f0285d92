//! The only waitpid loop in keepwell, and the subreaper registration that feeds it.
//!
//! Exactly one reaper: nothing else in the process (no `tokio::process`, no `Child::wait`) may
//! wait for children, or it would race this loop for exit statuses and steal the child's.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::state::ExitStatus;

/// When keepwell is not PID 1 (e.g. `docker run --init`, or a plain shell), orphans would go to
/// the real init; as a child subreaper they come to keepwell instead. Returns whether it was
/// needed.
pub fn become_subreaper_unless_pid1() -> Result<bool, Errno> {
    if nix::unistd::getpid().as_raw() == 1 {
        return Ok(false);
    }
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(true)
}

/// Reap every child that has exited, ours or adopted, until none is left waiting.
pub fn reap_all() -> Vec<(i32, ExitStatus)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                reaped.push((pid.as_raw(), ExitStatus::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                reaped.push((pid.as_raw(), ExitStatus::Signaled(signal as i32)))
            }
            // Nothing (more) has exited.
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            // Stopped/continued are not reported without WUNTRACED/WCONTINUED; keep looping.
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    reaped
}
