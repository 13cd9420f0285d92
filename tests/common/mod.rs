//! Helpers every integration test shares: the real keepwell binary, deadlines, processes.
//!
//! Everything here waits by polling a condition against a deadline; nothing sleeps for a fixed
//! time and calls that an assertion.

#![allow(dead_code)]

pub mod app;
pub mod dist;
pub mod fd_limit;
pub mod http;
pub mod load;
pub mod prometheus;
pub mod switch_app;
pub mod venv;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const KEEPWELL: &str = env!("CARGO_BIN_EXE_keepwell");

/// How long a keepwell run to completion (`run_keepwell`, `run_with_deadline`) may take.
pub const RUN_DEADLINE: Duration = Duration::from_secs(20);

/// Remove every `KEEPWELL_*` variable of the test's own environment from `command`: a developer
/// or CI runner that exports `KEEPWELL_LISTEN` or `KEEPWELL_HEALTH_URL` must not change what a
/// test runs. Variables a test sets itself (`.env(..)` after this) still apply.
pub fn clear_keepwell_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KEEPWELL_") {
            command.env_remove(key);
        }
    }
    command
}

/// `keepwell ARGS` as a test runs it when not as PID 1: every `KEEPWELL_*` variable cleared,
/// and in a mount namespace of its own (`unshare --mount`, which then execs keepwell: the pid
/// is keepwell's). The mount namespace gives it a local verdict socket name of its own
/// (`keepwell/<pid-ns>/<mnt-ns>`): without it every keepwell of a parallel test run that is
/// not PID 1 would compete for the host's one name.
pub fn keepwell_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    command_for(KEEPWELL, args)
}

/// [`keepwell_command`] for another build of keepwell (the static musl binary).
pub fn command_for<B: AsRef<OsStr>, S: AsRef<OsStr>>(binary: B, args: &[S]) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "--"]);
    command.arg(binary).args(args);
    clear_keepwell_env(&mut command);
    start_like_a_container(&mut command);
    command
}

/// Start `command` with every signal at its default disposition and none blocked, as runc
/// starts a container's PID 1. A test process does not start that way: cargo and nextest are
/// multi-threaded glibc programs, and glibc's posix_spawn sets its internal signals (32, 33)
/// to SIG_IGN in the processes it starts; an ignored signal survives exec, so every process
/// the test starts would inherit 32 ignored (and std's posix_spawn path would add 33). The hook
/// resets every signal with the raw system call (glibc's sigaction refuses 32 and 33), and
/// std empties the mask and resets SIGPIPE itself.
pub fn start_like_a_container(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the hook makes raw system calls only, which are
    // async-signal-safe; `KernelSigaction` is the kernel's layout on x86_64 and aarch64.
    unsafe {
        command.pre_exec(|| {
            #[repr(C)]
            struct KernelSigaction {
                handler: usize,
                flags: u64,
                restorer: usize,
                mask: u64,
            }
            let default = KernelSigaction {
                handler: libc::SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            for signo in 1..=64 {
                if signo == libc::SIGKILL || signo == libc::SIGSTOP {
                    continue;
                }
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
            Ok(())
        })
    }
}

/// `binary ARGS` as PID 1 of a fresh PID and mount namespace, as in a container; every
/// `KEEPWELL_*` variable cleared. (`Launch::pid1` is the same for a keepwell that keeps
/// running.)
pub fn pid1_command_for<B: AsRef<OsStr>, S: AsRef<OsStr>>(binary: B, args: &[S]) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    command.arg(binary).args(args);
    clear_keepwell_env(&mut command);
    start_like_a_container(&mut command);
    command
}

/// Run `command` to its end within `deadline`, its stdout and stderr captured (stdin is
/// /dev/null). Past the deadline the command and everything it started are killed and the
/// test fails naming the command and what it printed so far: a hung process never stalls the
/// run.
pub fn run_with_deadline(command: &mut Command, deadline: Duration) -> Output {
    let until = Instant::now() + deadline;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > until {
            kill_tree(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    // A process the command left behind may still hold the pipes: give the readers what is
    // left of the deadline (at least a second), never forever.
    let until = until.max(Instant::now() + Duration::from_secs(1));
    let left = || until.saturating_duration_since(Instant::now());
    let out = stdout.recv_timeout(left());
    let err = stderr.recv_timeout(left());
    let text = |bytes: &Result<Vec<u8>, _>| {
        bytes
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|_| "(still open)".into())
    };
    match (status, out, err) {
        (Some(status), Ok(stdout), Ok(stderr)) => Output {
            status,
            stdout,
            stderr,
        },
        (status, out, err) => panic!(
            "{command:?} did not finish within {deadline:?} ({})\n--- stdout ---\n{}\n--- \
             stderr ---\n{}",
            match status {
                Some(status) => format!(
                    "it exited ({status}), but something it started still \
                                         holds its output open"
                ),
                None => "killed".into(),
            },
            text(&out),
            text(&err)
        ),
    }
}

/// Read a pipe to its end on a thread of its own; the bytes arrive on the channel.
fn read_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (send, receive) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = send.send(bytes);
    });
    receive
}

/// What a run to completion gave: the exit code (128+N when killed by signal N), stdout and
/// stderr as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: exit_code(output.status),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// An exit status as a shell reports it: the code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("an exit status is a code or a signal")
}

/// `keepwell ARGS` with `env` added, run to its end within [`RUN_DEADLINE`]
/// (see [`keepwell_command`] and [`run_with_deadline`]).
pub fn run_keepwell(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = keepwell_command(args);
    command.envs(env.iter().copied());
    run_with_deadline(&mut command, RUN_DEADLINE).into()
}

/// A process started outside `Keepwell` (with a terminal, a pipe or a build of its own), killed
/// with everything it started when the test ends, passed or failed: a failed assertion must not
/// leave a keepwell running for the rest of the run.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            kill_tree(&mut self.0);
        }
    }
}

/// Kill a process started outside `Keepwell` and everything it started, and reap it.
fn kill_tree(child: &mut Child) {
    for pid in descendants_of(child.id() as i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Path of a file under tests/support.
pub fn support(name: &str) -> String {
    format!("{}/tests/support/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Poll `check` until it returns Some or the deadline passes; panics naming `what`.
pub fn wait_for<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Poll a condition until it holds or the deadline passes.
pub fn wait_until(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(deadline, what, || check().then_some(()));
}

/// The time now as Unix seconds (what keepwell's /status and the Python helpers write down).
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// keepwell's resident memory in KiB (VmRSS of /proc/PID/status).
pub fn vm_rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("VmRSS of process {pid}"))
}

/// This machine's addresses that are not loopback nor link-local (those need a scope to be
/// reached), from getifaddrs(3), IPv4 first.
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid until freeifaddrs;
    // every pointer read below comes from that list and is checked for null first.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while !entry.is_null() {
            let addr = (*entry).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    });
    found.sort_by_key(|ip| ip.is_ipv6());
    found.dedup();
    found
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Direct children of a process, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(path) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    found
}

/// Whether gunicorn's master has `workers` workers and each waits in its run loop (select), so
/// its own signal handlers are set. A signal that reaches a worker between its fork and
/// `init_signals` runs the arbiter's handler it inherited and is lost; the master then waits
/// out its graceful timeout for that worker. Serving one page proves only one worker booted.
pub fn gunicorn_workers_in_their_loop(master: i32, workers: usize) -> bool {
    let children = children_of(master);
    children.len() == workers
        && children.iter().all(|pid| {
            fs::read_to_string(format!("/proc/{pid}/wchan"))
                .map(|wchan| wchan.contains("poll_schedule_timeout"))
                .unwrap_or(false)
        })
}

/// Every descendant of a process (children first, breadth-first).
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(next) = frontier.pop() {
        for child in children_of(next) {
            all.push(child);
            frontier.push(child);
        }
    }
    all
}

/// A field of /proc/PID/status, e.g. "Uid" → "999\t999\t999\t999".
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// The process state letter from /proc/PID/stat (Z for zombie), None when gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

pub fn is_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z')
}

/// A running keepwell (directly, or as PID 1 of a fresh PID namespace) with its output in
/// files, killed with everything it started when the test ends. Its folder (stdout, stderr)
/// is removed then, unless the test failed: a failing test prints keepwell's stdout and
/// stderr and keeps the folder, so a flake says more than "timed out".
pub struct Keepwell {
    process: Child,
    /// The host pid of keepwell itself (inside a namespace: of PID 1).
    pub pid: i32,
    pub dir: tempfile::TempDir,
    in_namespace: bool,
}

/// How to start keepwell.
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    namespace: bool,
    stdin: Option<Stdio>,
    setup: Vec<String>,
    /// What runs in place of the test build of keepwell (empty: [`KEEPWELL`]).
    program: Vec<String>,
}

pub fn keepwell(args: &[&str]) -> Launch {
    Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        namespace: false,
        stdin: None,
        setup: Vec::new(),
        program: Vec::new(),
    }
}

impl Launch {
    /// Run keepwell as PID 1 of a new PID and mount namespace, as in a container. Without
    /// this, keepwell still gets a mount namespace of its own (see [`keepwell_command`]).
    pub fn pid1(mut self) -> Self {
        self.namespace = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Shell commands run inside the new namespace before keepwell is exec'ed (PID 1 mode only),
    /// e.g. bind-mounting a test /etc/passwd.
    pub fn setup(mut self, command: &str) -> Self {
        self.setup.push(command.into());
        self
    }

    /// Run another build in place of the test binary: `["path/keepwell"]`, or an emulator and
    /// its binary (`["qemu-aarch64-static", "dist/keepwell-…-aarch64-unknown-linux-musl"]`).
    pub fn program(mut self, argv: &[&str]) -> Self {
        self.program = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn start(self) -> Keepwell {
        let program = if self.program.is_empty() {
            vec![KEEPWELL.to_string()]
        } else {
            self.program.clone()
        };
        // How keepwell's own process shows in /proc/PID/exe (an emulator's, under qemu-user).
        let exe_name = Path::new(&program[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut command = if self.namespace {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
            if self.setup.is_empty() {
                c.args(&program).args(&self.args);
            } else {
                let script = format!("{} && exec \"$0\" \"$@\"", self.setup.join(" && "));
                c.args(["sh", "-c", &script])
                    .args(&program)
                    .args(&self.args);
            }
            clear_keepwell_env(&mut c);
            start_like_a_container(&mut c);
            c
        } else {
            assert!(self.setup.is_empty(), "setup needs pid1()");
            let args: Vec<&str> = program[1..]
                .iter()
                .chain(&self.args)
                .map(String::as_str)
                .collect();
            command_for(&program[0], &args)
        };
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(self.stdin.unwrap_or(Stdio::null()))
            .stdout(stdout)
            .stderr(stderr);
        let mut process = command.spawn().expect("start keepwell");
        let outer = process.id() as i32;
        let pid = if self.namespace {
            wait_for(
                Duration::from_secs(10),
                "keepwell as PID 1 of the namespace",
                || {
                    let found = children_of(outer).first().copied().filter(|&pid| {
                        fs::read_link(format!("/proc/{pid}/exe"))
                            .map(|exe| exe.to_string_lossy().contains(&exe_name))
                            .unwrap_or(false)
                    });
                    // A keepwell that is already done leaves nothing to find; `wait_exit` still
                    // reports its status through `unshare`.
                    let finished = matches!(process.try_wait(), Ok(Some(_)));
                    found.or(finished.then_some(outer))
                },
            )
        } else {
            // `unshare --mount` execs keepwell in place: the pid is keepwell's.
            outer
        };
        Keepwell {
            process,
            pid,
            dir,
            in_namespace: self.namespace,
        }
    }
}

impl Keepwell {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.path("stdout")).unwrap_or_default()
    }

    /// Send a signal to keepwell (to PID 1 of the namespace, from outside, as docker does).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid), signal).expect("signal keepwell");
    }

    /// Send a signal by number (real-time signals have no `Signal` variant).
    pub fn signal_number(&self, signo: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let sent = unsafe { libc::kill(self.pid, signo) };
        assert_eq!(sent, 0, "kill -{signo} {}", self.pid);
    }

    /// The child keepwell supervises right now (its direct child that is not a zombie).
    pub fn child(&self) -> Option<i32> {
        children_of(self.pid).into_iter().find(|&pid| is_alive(pid))
    }

    pub fn wait_child(&self, deadline: Duration) -> i32 {
        wait_for(deadline, "keepwell's child", || self.child())
    }

    /// Wait for keepwell to exit; its exit code (128+N when killed by signal N).
    pub fn wait_exit(&mut self, deadline: Duration) -> i32 {
        let status: ExitStatus = wait_for(deadline, "keepwell to exit", || {
            self.process.try_wait().expect("try_wait")
        });
        exit_code(status)
    }

    /// Wait until stderr contains `text`; returns the whole stderr.
    pub fn wait_log(&self, deadline: Duration, text: &str) -> String {
        wait_for(deadline, &format!("{text:?} in keepwell's log"), || {
            let log = self.stderr();
            log.contains(text).then_some(log)
        })
    }

    /// Run a command inside keepwell's namespaces, as `docker exec` would (no `KEEPWELL_*`
    /// variable of the test's environment comes along).
    pub fn exec(&self, args: &[&str]) -> Command {
        assert!(self.in_namespace, "exec needs pid1()");
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-p", "-m", "--"])
            .args(args);
        clear_keepwell_env(&mut c);
        c
    }

    /// [`exec`](Self::exec) run to its end within [`RUN_DEADLINE`].
    pub fn exec_output(&self, args: &[&str]) -> Ran {
        run_with_deadline(&mut self.exec(args), RUN_DEADLINE).into()
    }
}

impl Drop for Keepwell {
    fn drop(&mut self) {
        // Everything keepwell started lives in sessions of its own: kill them by group first.
        for pid in descendants_of(self.pid) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = self.process.kill();
        let _ = self.process.wait();
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "--- keepwell (pid {}) stdout, kept in {} ---\n{}\n--- keepwell stderr ---\n{}\n---",
                self.pid,
                self.dir.path().display(),
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// Read a file that a helper child appends to; empty when it does not exist yet.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The lines of a signal-echo file after "ready".
pub fn echoed(path: &Path) -> Vec<String> {
    read(path)
        .lines()
        .filter(|l| !l.starts_with("ready"))
        .map(str::to_string)
        .collect()
}

/// `echoed`, less a SIGCONT at the very end: keepwell sends SIGCONT right after every stop
/// signal, and a child that exits on the stop signal may or may not live to see it.
pub fn echoed_through_stop(path: &Path) -> Vec<String> {
    let mut lines = echoed(path);
    if lines.len() > 1 && lines.last().map(String::as_str) == Some("CONT") {
        lines.pop();
    }
    lines
}

/// Assert that nothing `binary` (a keepwell build) does to signals for itself reaches its
/// child: keepwell blocks every signal for its signalfd, and the musl build ignores 32-34
/// (musl's own); the child must start with no signal blocked, ignored or pending. The child is
/// `grep`, which changes no signal itself, reading its own /proc/self/status; as PID 1 of a
/// namespace and not.
pub fn assert_clean_signal_state(binary: &Path) {
    let args = [
        "--log-level",
        "warn",
        "--",
        "grep",
        "^Sig",
        "/proc/self/status",
    ];
    for pid1 in [true, false] {
        let mut command = if pid1 {
            pid1_command_for(binary, &args)
        } else {
            command_for(binary, &args)
        };
        let ran: Ran = run_with_deadline(&mut command, RUN_DEADLINE).into();
        assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "{ran:?}");
        for field in ["SigPnd", "SigBlk", "SigIgn"] {
            let value = ran
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .unwrap_or_else(|| panic!("no {field} in {}", ran.stdout));
            assert_eq!(
                value.trim(),
                "0000000000000000",
                "{field} of the child of {} (pid1: {pid1}):\n{}",
                binary.display(),
                ran.stdout
            );
        }
    }
}

/// The shipped form: the static musl release binary, built (or found up to date) by cargo;
/// with `KW_DIST` set (CI), the release's own x86_64 binary.
pub fn static_keepwell() -> PathBuf {
    if std::env::var_os("KW_DIST").is_some_and(|d| !d.is_empty()) {
        return dist::Dist::get().binary("x86_64-unknown-linux-musl");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // An LTO release build on a loaded 2-core machine takes minutes; nextest's slow-timeout
    // for static_build (.config/nextest.toml) allows for it.
    let out = run_with_deadline(
        Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-musl",
                "--bin",
                "keepwell",
                "--message-format=json-render-diagnostics",
            ]),
        Duration::from_secs(900),
    );
    assert!(
        out.status.success(),
        "the static build failed (is the musl target installed? rustup target add \
         x86_64-unknown-linux-musl):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "keepwell")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the keepwell executable")
}

/// Wait for a process started outside `Keepwell` to exit; past the deadline, kill it and
/// everything it started, then fail naming `what`.
pub fn wait_or_kill(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > until {
            kill_tree(child);
            panic!("{what} did not happen within {deadline:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}
