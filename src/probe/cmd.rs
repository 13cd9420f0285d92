//! `--health-cmd CMD` and `keepwell check -- CMD ARG...`: a command check, exit 0 healthy.
//!
//! Docker's CMD-SHELL semantics: `/bin/sh -c CMD` when the image has a shell, else CMD split on
//! spaces. The check runs as the child runs — keepwell has dropped to `--user` before any probe,
//! the environment and working directory are keepwell's, which the child inherits too, with the
//! same `HOME`, `USER`, `LOGNAME` — in a session and process group of its own, with stdin on
//! /dev/null and stdout and stderr on one pipe.
//!
//! What Docker and containerd get wrong, done here: at the timeout the whole process group gets
//! SIGKILL and is reaped, so a hung check leaves nothing behind; what a finished check left in
//! its group is killed as well. At most one check runs at a time: a check starts only once the
//! previous one is reaped. The first 4 KiB of output are kept for the log and `/status`, the
//! rest is read and dropped, so a check printing without end never grows keepwell.
//!
//! Exit statuses: in the supervisor they come through its one reaper (`reaper::reap_all`,
//! called from the supervisor's loop), which hands a check's status to the probe waiting for
//! it ([`Reaping::Routed`]); nothing here waits for a process. `keepwell check` is a process of
//! its own, the subreaper of everything its check starts, and waits for them itself
//! ([`Reaping::Own`], [`reap_own_children`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::{Failure, Outcome};
use crate::alarm::Alarm;
use crate::state::{describe_status, ExitStatus};

/// Output kept for the log and `/status`; Docker keeps 4096 bytes too.
pub const OUTPUT_LIMIT: usize = 4096;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// `/bin/sh -c TEXT`.
    Shell(String),
    /// A program and its arguments, exec'ed as they are.
    Argv(Vec<String>),
}

impl CommandLine {
    /// `--health-cmd TEXT`: through `/bin/sh -c` when the image has `/bin/sh`, else split on
    /// spaces (a distroless image has no shell to parse quotes with).
    pub fn shell(text: &str) -> Result<CommandLine, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "the command is empty; expected a command such as 'celery -A app \
                        inspect ping'"
                    .into(),
            );
        }
        if std::path::Path::new("/bin/sh").exists() {
            Ok(CommandLine::Shell(text.to_string()))
        } else {
            Ok(CommandLine::Argv(
                text.split_whitespace().map(str::to_string).collect(),
            ))
        }
    }

    /// The command as a person wrote it, in backticks.
    pub fn display(&self) -> String {
        match self {
            CommandLine::Shell(text) => format!("`{text}`"),
            CommandLine::Argv(argv) => format!("`{}`", argv.join(" ")),
        }
    }

    fn program_and_args(&self) -> (&str, Vec<&str>) {
        match self {
            CommandLine::Shell(text) => ("/bin/sh", vec!["-c", text.as_str()]),
            CommandLine::Argv(argv) => {
                let (program, args) = argv
                    .split_first()
                    .expect("config never makes an empty command line");
                (program.as_str(), args.iter().map(String::as_str).collect())
            }
        }
    }
}

/// How the exit status of a check reaches the probe.
#[derive(Clone)]
pub enum Reaping {
    /// The supervisor's one reaper collects every exit and hands a check's to its probe.
    Routed(Rc<Routes>),
    /// `keepwell check`: this process waits for its own check.
    Own,
}

/// The checks whose exit the supervisor's reaper has not collected yet.
#[derive(Default)]
pub struct Routes {
    /// pid → where its status goes (the receiver is gone when the check timed out).
    waiting: RefCell<BTreeMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Woken whenever a check is reaped, for a check waiting to start.
    reaped: Notify,
}

impl Reaping {
    pub fn routed() -> Reaping {
        Reaping::Routed(Rc::new(Routes::default()))
    }

    /// The reaper collected `pid`; true when it was a check (its status then goes to the probe).
    pub fn deliver(&self, pid: i32, status: ExitStatus) -> bool {
        let Reaping::Routed(routes) = self else {
            return false;
        };
        let Some(sender) = routes.waiting.borrow_mut().remove(&pid) else {
            return false;
        };
        // The probe may have timed out and gone: then nobody wants the status.
        let _ = sender.send(status);
        routes.reaped.notify_waiters();
        true
    }

    /// Checks started and not reaped yet.
    fn unreaped(&self) -> Vec<i32> {
        match self {
            Reaping::Routed(routes) => routes.waiting.borrow().keys().copied().collect(),
            Reaping::Own => Vec::new(),
        }
    }
}

/// Kills the check's process group unless the check finished: dropping the probe's future (a
/// timeout, a cancelled probe) must leave nothing of the check running.
struct GroupGuard {
    pgid: i32,
    finished: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.finished {
            kill_group(self.pgid);
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (already gone) is fine.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Wait until the previous check is reaped, at most `limit`: at most one check at a time.
async fn previous_gone(reaping: &Reaping, limit: Duration) -> Result<(), Failure> {
    let Reaping::Routed(routes) = reaping else {
        return Ok(());
    };
    let until = Instant::now() + limit;
    // The supervisor's event loop has no tokio timer (`startup`): a timerfd of its own bounds
    // the wait, made only when there is something to wait for.
    let mut alarm = None;
    loop {
        // Registered before looking, so a reap in between is not missed.
        let reaped = routes.reaped.notified();
        let left = reaping.unreaped();
        if left.is_empty() {
            return Ok(());
        }
        left.iter().for_each(|pid| kill_group(*pid));
        let alarm = match &mut alarm {
            Some(alarm) => alarm,
            None => alarm.insert(Alarm::new().map_err(|e| {
                Failure::new(
                    "previous check",
                    format!("cannot wait for the previous check (pid {}): {e}", left[0]),
                )
            })?),
        };
        let rang = tokio::select! {
            _ = reaped => false,
            rang = alarm.until(Some(until)) => match rang {
                Ok(()) => true,
                // Not waited for again: a failing timerfd fails at once, every time.
                Err(e) => return Err(Failure::new(
                    "previous check",
                    format!("cannot wait for the previous check (pid {}): {e}", left[0]),
                )),
            },
        };
        if rang || Instant::now() >= until {
            return Err(Failure::new(
                "previous check",
                format!(
                    "the previous check (pid {}) is still not gone after SIGKILL (stuck in the \
                     kernel?); not starting another beside it",
                    left[0]
                ),
            ));
        }
    }
}

pub(super) async fn probe(
    command: &CommandLine,
    env: &[(String, String)],
    reaping: &Reaping,
    timeout: Duration,
) -> Outcome {
    previous_gone(reaping, timeout / 2).await?;
    let shown = command.display();
    let (read, write) = pipe().map_err(|e| {
        Failure::new(
            "cmd spawn",
            format!("cannot start the check {shown}: no pipe for its output: {e}"),
        )
    })?;
    let pid = spawn(command, env, write).map_err(|e| spawn_failure(&shown, command, &e))?;
    // Registered in the same poll as the spawn: the reaper cannot run in between.
    let exit = register(reaping, pid);
    let mut guard = GroupGuard {
        pgid: pid,
        finished: false,
    };
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(|e| {
        Failure::new(
            "cmd spawn",
            format!("cannot read the output of the check {shown}: {e}"),
        )
    })?;

    let mut kept = Output::default();
    let mut scratch = [0u8; 4096];
    let mut open = true;
    tokio::pin!(exit);
    let status = loop {
        tokio::select! {
            status = &mut exit => break status,
            ready = output.readable(), if open => {
                if ready.is_err() {
                    open = false;
                    continue;
                }
                match output.try_read(&mut scratch) {
                    Ok(0) => open = false,
                    Ok(n) => kept.add(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => open = false,
                }
            }
        }
    };
    // Whatever the check left in its group goes with it.
    kill_group(pid);
    guard.finished = true;
    // The check's own output is in the pipe already; leftovers that escaped the group and keep
    // the pipe open are not waited for. Read directly: tokio's try_read would not even try
    // before the reactor has seen the pipe readable.
    for _ in 0..64 {
        match read_now(&output, &mut scratch) {
            Some(n) if n > 0 => kept.add(&scratch[..n]),
            _ => break,
        }
    }
    let output = kept.text();
    match status {
        ExitStatus::Code(0) => Ok(format!("exit 0 from {shown}{output}")),
        ExitStatus::Code(code) => Err(Failure::new(
            format!("cmd exit {code}"),
            format!("exit code {code} from {shown}{output}"),
        )),
        ExitStatus::Signaled(signal) => Err(Failure::new(
            format!("cmd signal {signal}"),
            format!(
                "the check {shown} was {}{output}",
                describe_status(status).trim_start_matches("the child was ")
            ),
        )),
    }
}

/// One read(2) of the non-blocking pipe: None when nothing is there (or on an error).
fn read_now(pipe: &impl AsRawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: read(2) writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).ok()
}

/// The first [`OUTPUT_LIMIT`] bytes of the output, and how many more were dropped.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    dropped: u64,
}

impl Output {
    fn add(&mut self, bytes: &[u8]) {
        let room = OUTPUT_LIMIT - self.kept.len();
        let take = bytes.len().min(room);
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    /// `; output: "…"` on one line (escaped), or nothing when there was none.
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept);
        let text = text.trim();
        match (text.is_empty(), self.dropped) {
            (true, 0) => String::new(),
            (_, 0) => format!("; output: {text:?}"),
            (_, more) => format!("; output: {text:?} and {more} bytes more, not kept"),
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array passed; both are owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Start the check in a session of its own (pgid == pid); never waits for it.
fn spawn(command: &CommandLine, env: &[(String, String)], output: OwnedFd) -> io::Result<i32> {
    let (program, args) = command.program_and_args();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output));
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(|| {
            // keepwell blocks every signal to read them from its signalfd; the check must not
            // inherit that mask.
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )?;
            crate::signals::restore_libc_reserved();
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    // The handle is dropped without waiting (std never reaps on drop); the write ends of the
    // pipe close with `cmd`, so the output reaches EOF when the check's group is gone.
    let child = cmd.spawn()?;
    Ok(child.id() as i32)
}

fn spawn_failure(shown: &str, command: &CommandLine, e: &io::Error) -> Failure {
    let (program, _) = command.program_and_args();
    let why = match e.kind() {
        io::ErrorKind::NotFound => format!(
            "{program} is not found (is it installed in the image, and on the PATH keepwell has?)"
        ),
        io::ErrorKind::PermissionDenied => {
            format!("{program} cannot be executed (is it a program with the execute bit?)")
        }
        _ if e.raw_os_error() == Some(libc::EAGAIN) => {
            format!("{e} (a pids limit of the container?)")
        }
        _ => e.to_string(),
    };
    Failure::new(
        "cmd spawn",
        format!("cannot start the check {shown}: {why}"),
    )
}

/// The check's exit status, from whichever reaper collects it.
fn register(reaping: &Reaping, pid: i32) -> impl std::future::Future<Output = ExitStatus> {
    let routed = match reaping {
        Reaping::Routed(routes) => {
            let (sender, receiver) = oneshot::channel();
            routes.waiting.borrow_mut().insert(pid, sender);
            Some(receiver)
        }
        Reaping::Own => None,
    };
    async move {
        match routed {
            Some(receiver) => match receiver.await {
                Ok(status) => status,
                // The sender lives in the routes until the reaper delivers; it is never
                // dropped unsent while this future waits. Should it be, wait out the timeout.
                Err(_) => std::future::pending().await,
            },
            None => wait_own(pid).await,
        }
    }
}

/// `keepwell check`: wait for our own child through a pidfd (or, on kernels before 5.3, by
/// looking every few milliseconds), reaping with keepwell's one waitpid loop.
async fn wait_own(pid: i32) -> ExitStatus {
    let pidfd = pidfd_open(pid).ok().and_then(|fd| {
        // SAFETY: the AsyncFd owns the descriptor and nothing else closes or replaces it.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    });
    loop {
        if let Some((_, status)) = crate::reaper::reap_all()
            .into_iter()
            .find(|(reaped, _)| *reaped == pid)
        {
            return status;
        }
        match &pidfd {
            Some(fd) => match fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `keepwell check`, before it exits: SIGKILL whatever of the check is left (its group, and
/// what escaped it and was handed to this subreaper) and reap it, for at most `limit`.
pub fn reap_own_children(limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        crate::reaper::reap_all();
        let children = own_children();
        if children.is_empty() || Instant::now() >= until {
            return;
        }
        for child in children {
            kill_group(child);
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(child, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// This process's children, zombies included, from /proc.
fn own_children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_4_kib_and_counts_the_rest() {
        let mut output = Output::default();
        output.add(&[b'a'; 3000]);
        output.add(&[b'b'; 3000]);
        assert_eq!(output.kept.len(), OUTPUT_LIMIT);
        assert_eq!(output.dropped, 6000 - OUTPUT_LIMIT as u64);
        assert!(output.text().ends_with("and 1904 bytes more, not kept"));
        let mut lines = Output::default();
        lines.add(b"one\ntwo\n");
        assert_eq!(lines.text(), "; output: \"one\\ntwo\"");
    }

    /// The supervisor's event loop, which has no tokio timer.
    fn supervisor_loop() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    }

    /// A process group of its own, as a check runs in, and a route waiting for its exit.
    fn unreaped_check(reaping: &Reaping) -> std::process::Child {
        let check = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let Reaping::Routed(routes) = reaping else {
            unreachable!()
        };
        let (sender, _) = oneshot::channel();
        routes
            .waiting
            .borrow_mut()
            .insert(check.id() as i32, sender);
        check
    }

    #[test]
    fn a_check_never_reaped_holds_the_next_one_back_for_the_limit_only() {
        let reaping = Reaping::routed();
        let mut check = unreaped_check(&reaping);
        let started = Instant::now();
        let waited =
            supervisor_loop().block_on(previous_gone(&reaping, Duration::from_millis(300)));
        let failure = waited.expect_err("nothing reaped it");
        assert_eq!(failure.reason, "previous check");
        assert!(
            failure.detail.contains("still not gone"),
            "{}",
            failure.detail
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        // It was sent SIGKILL (its group was).
        let status = check.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn a_check_reaped_while_waiting_lets_the_next_one_start() {
        let reaping = Reaping::routed();
        let mut check = unreaped_check(&reaping);
        let pid = check.id() as i32;
        let waited = supervisor_loop().block_on(async {
            let reap = async {
                // As the supervisor's reaper does once the killed group's SIGCHLD comes.
                let status = tokio::task::spawn_blocking(move || check.wait())
                    .await
                    .expect("join")
                    .expect("wait");
                let code = ExitStatus::Signaled(
                    std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
                );
                reaping.deliver(pid, code)
            };
            tokio::join!(previous_gone(&reaping, Duration::from_secs(30)), reap)
        });
        assert!(waited.1, "the reaped pid was a check's");
        assert!(waited.0.is_ok(), "{:?}", waited.0.err());
    }

    #[test]
    fn a_shell_command_needs_text() {
        assert!(CommandLine::shell("  ").unwrap_err().contains("empty"));
        assert_eq!(
            CommandLine::shell("celery inspect ping").unwrap().display(),
            "`celery inspect ping`"
        );
    }
}
