//! Helpers every integration test shares: the real keepwell binary, deadlines, processes.
//!
//! Everything here waits by polling a condition against a deadline; nothing sleeps for a fixed
//! time and calls that an assertion.

#![allow(dead_code)]

pub mod app;
pub mod http;
pub mod venv;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const KEEPWELL: &str = env!("CARGO_BIN_EXE_keepwell");

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
/// files, killed with everything it started when the test ends.
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
}

pub fn keepwell(args: &[&str]) -> Launch {
    Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        namespace: false,
        stdin: None,
        setup: Vec::new(),
    }
}

impl Launch {
    /// Run keepwell as PID 1 of a new PID and mount namespace, as in a container.
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

    pub fn start(self) -> Keepwell {
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut command = if self.namespace {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
            if self.setup.is_empty() {
                c.arg(KEEPWELL).args(&self.args);
            } else {
                let script = format!("{} && exec \"$0\" \"$@\"", self.setup.join(" && "));
                c.args(["sh", "-c", &script, KEEPWELL]).args(&self.args);
            }
            c
        } else {
            let mut c = Command::new(KEEPWELL);
            c.args(&self.args);
            c
        };
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("KEEPWELL_HEALTH_URL")
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
                            .map(|exe| exe.to_string_lossy().contains("keepwell"))
                            .unwrap_or(false)
                    });
                    // A keepwell that is already done leaves nothing to find; `wait_exit` still
                    // reports its status through `unshare`.
                    let finished = matches!(process.try_wait(), Ok(Some(_)));
                    found.or(finished.then_some(outer))
                },
            )
        } else {
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
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .expect("code or signal")
    }

    /// Wait until stderr contains `text`; returns the whole stderr.
    pub fn wait_log(&self, deadline: Duration, text: &str) -> String {
        wait_for(deadline, &format!("{text:?} in keepwell's log"), || {
            let log = self.stderr();
            log.contains(text).then_some(log)
        })
    }

    /// Run a command inside keepwell's namespaces, as `docker exec` would.
    pub fn exec(&self, args: &[&str]) -> Command {
        assert!(self.in_namespace, "exec needs pid1()");
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-p", "-m", "--"])
            .args(args);
        c
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

/// The shipped form: the static musl release binary, built (or found up to date) by cargo.
pub fn static_keepwell() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "keepwell",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .expect("run cargo build");
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
            for pid in descendants_of(child.id() as i32) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not happen within {deadline:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}
