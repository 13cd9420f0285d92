//! Start the child in its own session and signal it or its process group. Never waits: the
//! reaper owns exit statuses.
//!
//! With `--socket`, this is the one place the held sockets reach a child: the app child gets
//! them at fd 3, 4, … with `LISTEN_*` (see [`spawn`]); any other process keepwell starts (a
//! `--health-cmd` check) inherits none, since keepwell's own copies are close-on-exec.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::privileges::Identity;
use crate::sockets::{env_entry, Handover, HandoverFds, PidSlot};
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
///
/// With `sockets` (`--socket`), the child gets them as fd 3, 4, … with `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and `LISTEN_PID` set to its own pid, which exists only after the fork: the
/// whole exec (argv and environment, with a slot for the pid's digits) is built here, before
/// the fork, and the child only fills in the digits and calls execvpe. keepwell has threads by
/// then, so nothing between fork and exec may allocate or take a lock.
pub fn spawn(
    command: &[String],
    user: Option<&Identity>,
    take_terminal: bool,
    sockets: Option<&Handover>,
) -> Result<i32, SpawnError> {
    let (program, args) = command
        .split_first()
        .expect("config guarantees a non-empty COMMAND");
    let mut cmd = Command::new(program);
    cmd.args(args);
    let mut user_env: Vec<(&str, &std::ffi::OsStr)> = Vec::new();
    if let Some(who) = user {
        user_env = vec![
            ("HOME", who.home.as_ref()),
            ("USER", who.name.as_ref()),
            ("LOGNAME", who.name.as_ref()),
        ];
    }
    let activation = match sockets {
        None => {
            cmd.envs(user_env.iter().copied());
            None
        }
        Some(handover) => Some(
            Activation::new(command, &user_env, handover).map_err(|e| spawn_error(program, &e))?,
        ),
    };
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
            match &activation {
                None => Ok(()),
                // Returns only when exec failed; std reports that errno to the parent.
                Some(activation) => Err(activation.exec()),
            }
        });
    }
    match cmd.spawn() {
        // The handle is dropped without waiting: std never reaps on drop.
        Ok(child) => Ok(child.id() as i32),
        Err(e) => Err(spawn_error(program, &e)),
    }
}

/// The exec of a socket-activated child, prepared in the parent: argv and envp as C arrays,
/// the `LISTEN_PID=` slot among them, and the sockets to place at 3, 4, ….
struct Activation {
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    pid: PidSlot,
    fds: HandoverFds,
}

// SAFETY: the pointers point into the CStrings and the slot that the same value owns; the value
// is only read, in the forked child.
unsafe impl Send for Activation {}
unsafe impl Sync for Activation {}

impl Activation {
    fn new(
        command: &[String],
        user_env: &[(&str, &std::ffi::OsStr)],
        handover: &Handover,
    ) -> io::Result<Activation> {
        let argv = command
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "an argument holds a NUL byte")
            })?;
        let replaced = |name: &std::ffi::OsStr| {
            matches!(
                name.to_str(),
                Some("LISTEN_PID" | "LISTEN_FDS" | "LISTEN_FDNAMES")
            ) || user_env
                .iter()
                .any(|(n, _)| name == std::ffi::OsStr::new(n))
        };
        let mut envp = Vec::new();
        for (name, value) in std::env::vars_os().filter(|(name, _)| !replaced(name)) {
            envp.push(env_entry(&name, &value)?);
        }
        for (name, value) in user_env {
            envp.push(env_entry(name.as_ref(), value)?);
        }
        for (name, value) in handover.env() {
            envp.push(env_entry(name.as_ref(), value.as_ref())?);
        }
        let pid = PidSlot::new();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain([pid.as_ptr(), std::ptr::null()])
            .collect();
        Ok(Activation {
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            pid,
            fds: handover.fds(),
        })
    }

    /// In the child: the sockets to 3, 4, …, the pid into `LISTEN_PID`, then exec. Returns
    /// only the error. Async-signal-safe: fcntl, dup2, getpid and execvpe, no allocation.
    fn exec(&self) -> io::Error {
        // SAFETY: this runs in the forked child before exec, which owns its descriptors and its
        // copy of this memory; nothing else runs in it.
        unsafe {
            if let Err(e) = self.fds.install() {
                return e;
            }
            self.pid.write(libc::getpid());
            libc::execvpe(
                self.argv_ptrs[0],
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
        }
        io::Error::last_os_error()
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
