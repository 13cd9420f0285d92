//! Start the child in its own session and signal it or its process group. Never waits: the
//! reaper owns exit statuses.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::privileges::Identity;
use crate::state::{SpawnFailure, Target};

/// COMMAND could not be started: what the state machine needs, and the line for the log.
#[derive(Debug)]
pub struct SpawnError {
    pub failure: SpawnFailure,
    /// One line naming COMMAND, what went wrong and the fix.
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
        Err(e) => Err(spawn_error(program, &e)),
    }
}

/// Tell a transient lack of resources from what exec says about the file.
///
/// std reports a failed fork (and a failed pipe before it) and a failed exec (which the child
/// writes back through a close-on-exec pipe) through the same `io::Error`; the errno tells them
/// apart. EAGAIN comes from fork at a pids limit, and from exec too when a `--user` child is over
/// its RLIMIT_NPROC; ENOMEM, EMFILE and ENFILE are limits as well. Only what is about COMMAND
/// itself is 126/127, as in the shell.
fn spawn_error(program: &str, e: &io::Error) -> SpawnError {
    let errno = e.raw_os_error().map(Errno::from_raw);
    let resource = match errno {
        Some(Errno::EAGAIN) => Some((
            "the pids limit is reached",
            "raise docker run --pids-limit (or the pids cgroup's pids.max, or the user's ulimit -u), \
             or let the app start fewer processes",
        )),
        Some(Errno::ENOMEM) => Some((
            "out of memory",
            "raise the container's memory limit",
        )),
        Some(Errno::EMFILE) => Some((
            "keepwell is out of file descriptors",
            "raise the limit, e.g. docker run --ulimit nofile=65536",
        )),
        Some(Errno::ENFILE) => Some((
            "the system's open-file table is full",
            "raise fs.file-max on the host, or close files elsewhere",
        )),
        _ => None,
    };
    if let Some((what, fix)) = resource {
        return SpawnError {
            failure: SpawnFailure::Resources {
                detail: format!("{what} ({e})"),
            },
            message: format!("COMMAND {program:?} could not be started: {what} ({e}): {fix}"),
        };
    }
    let not_found = matches!(
        errno,
        Some(Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP)
    ) || e.kind() == io::ErrorKind::NotFound;
    let (code, hint) = if not_found {
        (127, "not found: check the name and the image's PATH")
    } else {
        (
            126,
            "cannot be executed: check that it is a program and has the execute bit",
        )
    };
    let mut message = format!("COMMAND {program:?} {hint} ({e})");
    if let Some(option) = looks_like_an_option(program) {
        message = format!("{message}. {option}");
    }
    SpawnError {
        failure: SpawnFailure::Exec { code },
        message,
    }
}

/// `docker run IMAGE --user x` replaces the image's CMD, so keepwell, whose ENTRYPOINT ends in
/// `--`, is asked to run a program called "--user". Say what was meant.
fn looks_like_an_option(program: &str) -> Option<String> {
    use clap::CommandFactory;
    if !program.starts_with('-') || program == "-" {
        return None;
    }
    let name = program.trim_start_matches('-');
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    let command = crate::cli::Supervise::command();
    let known = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(name));
    let general = "keepwell's options go before `--` (keepwell [OPTIONS] -- COMMAND [ARG...])";
    Some(match known.and_then(|arg| arg.get_env()) {
        Some(variable) => format!(
            "{program:?} looks like keepwell's --{name}: {general}; in Docker, where the image's \
             ENTRYPOINT ends in `--`, set it as a variable: docker run -e {}=... IMAGE",
            variable.to_string_lossy()
        ),
        None => format!(
            "{program:?} looks like an option, not a program: {general}; in Docker, where the \
             image's ENTRYPOINT ends in `--`, keepwell's options are -e KEEPWELL_* variables \
             (see keepwell --help)"
        ),
    })
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
