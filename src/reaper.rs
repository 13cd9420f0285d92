//! The only waitpid loop in keepwell, and the subreaper registration that feeds it.
//!
//! Exactly one reaper: nothing else in the process (no `tokio::process`, no `Child::wait`) may
//! wait for children, or it would race this loop for exit statuses and steal the child's.

use nix::errno::Errno;

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
///
/// Raw waitpid(2) rather than nix's: nix turns a status it cannot name (death by a real-time
/// signal, e.g. SIGRTMIN+1) into an error *after* the kernel has consumed the zombie, and the
/// child's exit would be lost.
pub fn reap_all() -> Vec<(i32, ExitStatus)> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes only to the status integer we pass.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            // Nothing (more) has exited, or no children at all.
            0 => break,
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => break,
            pid if libc::WIFEXITED(status) => {
                reaped.push((pid, ExitStatus::Code(libc::WEXITSTATUS(status))))
            }
            pid if libc::WIFSIGNALED(status) => {
                reaped.push((pid, ExitStatus::Signaled(libc::WTERMSIG(status))))
            }
            // Stopped/continued are not reported without WUNTRACED/WCONTINUED.
            _ => continue,
        }
    }
    reaped
}
