//! Signals as data: every catchable signal is blocked and read from one signalfd.
//!
//! No handler ever runs. Blocking all signals before any thread exists means every
//! process-directed signal waits in one queue that the supervisor reads in its loop, SIGCHLD
//! included, so a signal can never interrupt the reaper or a probe halfway. signal-hook is not
//! used on purpose: it refuses SIGSEGV, SIGILL and SIGFPE, which `docker kill -s` may send and
//! which must reach the child like any other signal. The child starts with an empty mask (std's
//! spawn resets it), so it sees signals as if keepwell were not there.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;

/// The one queue of signals sent to keepwell.
pub struct SignalQueue {
    fd: AsyncFd<SignalFd>,
}

/// Block every signal for this thread (and every thread it starts) and open the signalfd that
/// reads them. Must run before any other thread exists.
pub fn block_all() -> io::Result<SignalFd> {
    let all = SigSet::all();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&all), None)?;
    Ok(SignalFd::with_flags(
        &all,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Read whatever is queued now, without waiting.
pub fn read_pending(fd: &mut SignalFd) -> Vec<i32> {
    let mut found = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        found.push(info.ssi_signo as i32);
    }
    found
}

/// Give up the controlling terminal so the child's new session can take it (`docker run -it`).
///
/// When the session leader does this, the kernel sends SIGHUP and SIGCONT to the foreground
/// group, which is keepwell's own: those two are consumed here, before they could be forwarded
/// to a child that would die of the HUP. Other signals read meanwhile are returned to be
/// handled in order. Returns whether keepwell had a terminal to give.
pub fn release_terminal(fd: &mut SignalFd, held_back: &mut Vec<i32>) -> bool {
    // SAFETY: TIOCNOTTY takes no argument and only changes this process's session state.
    let released = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCNOTTY) } == 0;
    if released && nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid()) {
        let (mut hup, mut cont) = (false, false);
        for signo in read_pending(fd) {
            match signo {
                libc::SIGHUP if !hup => hup = true,
                libc::SIGCONT if !cont => cont = true,
                other => held_back.push(other),
            }
        }
    }
    released
}

impl SignalQueue {
    pub fn new(fd: SignalFd) -> io::Result<SignalQueue> {
        // SAFETY: the SignalFd owns its descriptor and is moved into the AsyncFd, so the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(SignalQueue { fd })
    }

    /// Wait for the next batch of signals (raw numbers, in the order the kernel gives them).
    pub async fn next(&mut self) -> io::Result<Vec<i32>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let found = read_pending(guard.get_inner_mut());
            guard.clear_ready();
            if !found.is_empty() {
                return Ok(found);
            }
        }
    }
}
