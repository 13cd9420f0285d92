//! Start the child in its own session and signal it or its process group. Never waits: the
//! reaper owns exit statuses.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::privileges::Identity;
use crate::state::Target;

/// COMMAND could not be started: the code follows the shell's convention.
#[derive(Debug)]
pub struct SpawnError {
    /// 127 when not found, 126 when found but not executable.
    pub code: i32,
    pub message: String,
}

/// Start COMMAND. The child calls setsid() so that it leads its own session and process group
/// (pgid == pid), which is what lets keepwell signal the whole group and clean up after it.
/// With `take_terminal`, the child makes keepwell's former terminal its controlling terminal,
/// which also puts its group in the foreground: Ctrl-C and job control reach it directly.
pub fn spawn(
    command: &[String],
    user: Option<&Identity>,
    take_terminal: bool,
) -> Result<i32, SpawnError> {
    let (program, args) = command
        .split_first()
        .expect("config guarantees a non-empty COMMAND");
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(who) = user {
        cmd.env("HOME", &who.home)
            .env("USER", &who.name)
            .env("LOGNAME", &who.name);
    }
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            // keepwell blocks every signal to read them from its signalfd; the child must not
            // inherit that mask, or it would never see the signals forwarded to it.
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )?;
            crate::signals::restore_libc_reserved();
            nix::unistd::setsid().map_err(io::Error::from)?;
            if take_terminal {
                // Failure only means no job control; the app still runs.
                libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0);
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        // The handle is dropped without waiting: std never reaps on drop.
        Ok(child) => Ok(child.id() as i32),
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let hint = if code == 127 {
                "not found: check the name and the image's PATH"
            } else {
                "cannot be executed: check that it is a program and has the execute bit"
            };
            Err(SpawnError {
                code,
                message: format!("{program:?} {hint} ({e})"),
            })
        }
    }
}

/// Send a signal by number (real-time signals have no `Signal` variant); a target that is
/// already gone (ESRCH) is not an error worth reporting.
pub fn send(target: Target, signo: i32) -> Result<(), Errno> {
    let pid = match target {
        Target::Child(pid) => pid,
        Target::Group(pgid) => -pgid,
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    match Errno::result(unsafe { libc::kill(pid, signo) }) {
        Err(Errno::ESRCH) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether any process (zombies included) is still in the process group.
pub fn group_alive(pgid: i32) -> bool {
    kill(Pid::from_raw(-pgid), None) != Err(Errno::ESRCH)
}
