//! Signals as data: every catchable signal is blocked and read from one signalfd.
//!
//! No handler ever runs. Blocking all signals before any thread exists means every
//! process-directed signal waits in one queue that the supervisor reads in its loop, SIGCHLD
//! included, so a signal can never interrupt the reaper or a probe halfway. signal-hook is not
//! used on purpose: it refuses SIGSEGV, SIGILL and SIGFPE, which `docker kill -s` may send and
//! which must reach the child like any other signal. `child::spawn` empties the mask again in
//! the child, so the child sees signals as if keepwell were not there.

use std::io;
use std::task::{ready, Context, Poll};

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
    ignore_libc_reserved();
    Ok(SignalFd::with_flags(
        &all,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Signals 32-34 belong to musl (timers, thread cancellation, set*id across threads): it leaves
/// them out of every mask and unblocks them when it starts a thread, so they cannot be read
/// from the signalfd. Left at their default action, a `kill -34` (SIGRTMIN to glibc and
/// Docker) would terminate a keepwell that is not PID 1. keepwell ignores them instead; the
/// child gets the defaults back (`restore_libc_reserved`). musl's own sigaction refuses these
/// numbers, hence the raw system call. glibc builds are left alone: glibc uses 32 and 33 for
/// itself and cannot have them ignored (a non-PID-1 glibc build can still die of kill -32).
#[cfg(all(
    target_env = "musl",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn ignore_libc_reserved() {
    for signo in 32..=34 {
        set_disposition_raw(signo, libc::SIG_IGN);
    }
}

#[cfg(not(all(
    target_env = "musl",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn ignore_libc_reserved() {}

/// In the child, between fork and exec: undo `ignore_libc_reserved` (ignored dispositions
/// survive exec). Async-signal-safe: raw system calls only.
#[cfg(all(
    target_env = "musl",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn restore_libc_reserved() {
    for signo in 32..=34 {
        set_disposition_raw(signo, libc::SIG_DFL);
    }
}

#[cfg(not(all(
    target_env = "musl",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn restore_libc_reserved() {}

/// rt_sigaction(2) with a plain SIG_IGN or SIG_DFL disposition (no handler, so no restorer).
/// The struct below is the kernel's layout on x86_64 and aarch64 only; other architectures
/// (riscv64 has no restorer field, mips orders the fields differently) go without.
#[cfg(all(
    target_env = "musl",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn set_disposition_raw(signo: i32, disposition: libc::sighandler_t) {
    /// The kernel's `struct sigaction` on x86_64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let action = KernelSigaction {
        handler: disposition,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a valid kernel sigaction for an ignore/default disposition; the old one is not
    // asked for; 8 is the kernel's sigset size. A failure leaves the disposition as it was.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signo,
            &action as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        );
    }
}

/// Read whatever is queued now, without waiting.
pub fn read_pending(fd: &mut SignalFd) -> Vec<i32> {
    let mut found = Vec::new();
    while read_some(fd, &mut found, usize::MAX) {}
    found
}

/// The most signals one wake of the supervisor takes: a sender as fast as keepwell's reads
/// could otherwise keep the queue from ever emptying, and the supervisor from its alarm (a
/// stop's SIGKILL) and its probe, with the batch growing all the while.
const BATCH: usize = 64;

/// Read up to `limit` queued signals into `found`; true when the limit was reached (more may
/// be queued), false when the queue was empty.
///
/// Signals keepwell raised against itself are dropped here: a SIGPIPE from writing to a peer
/// that closed (a Unix-socket probe, a closed stderr) is keepwell's own business, not the
/// child's. keepwell never signals itself on purpose.
fn read_some(fd: &mut SignalFd, found: &mut Vec<i32>, limit: usize) -> bool {
    let own_pid = std::process::id();
    for _ in 0..limit {
        match fd.read_signal() {
            Ok(Some(info)) => {
                if info.ssi_pid != own_pid || info.ssi_signo == libc::SIGCHLD as u32 {
                    found.push(info.ssi_signo as i32);
                }
            }
            _ => return false,
        }
    }
    true
}

/// Give up the controlling terminal so the child's new session can take it (`docker run -it`).
///
/// When the session leader does this, the kernel sends SIGHUP and SIGCONT to the foreground
/// group, which is keepwell's own; they carry keepwell's own pid, so `read_pending` drops them
/// and the child never gets a HUP it would die of. Returns whether there was a terminal to give.
pub fn release_terminal() -> bool {
    // SAFETY: TIOCNOTTY takes no argument and only changes this process's session state.
    unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCNOTTY) == 0 }
}

impl SignalQueue {
    pub fn new(fd: SignalFd) -> io::Result<SignalQueue> {
        // SAFETY: the SignalFd owns its descriptor and is moved into the AsyncFd, so the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(SignalQueue { fd })
    }

    /// The next batch of signals (raw numbers, in the order the kernel gives them), or
    /// Pending with the task woken when one comes. Only the last task to poll is woken: the
    /// supervisor is the one reader.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<i32>>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready_mut(cx))?;
            let mut found = Vec::new();
            // A full batch leaves the queue readable, for the next wake.
            if !read_some(guard.get_inner_mut(), &mut found, BATCH) {
                guard.clear_ready();
            }
            if !found.is_empty() {
                return Poll::Ready(Ok(found));
            }
        }
    }
}
