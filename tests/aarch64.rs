//! The arm64 release binary, tested and not only built: a smoke subset of the real-binary
//! tests runs it under Debian's qemu-user (`qemu-aarch64-static BIN …`) on this x86_64
//! machine. Its children are x86_64 programs: qemu hands `execve` to the kernel, so no binfmt
//! registration is needed.
//!
//! qemu-user refuses PR_SET_CHILD_SUBREAPER, so keepwell runs as PID 1 of a fresh PID
//! namespace here, which is how it runs in a container anyway.
//!
//! The subset: reaping orphans, forwarding signals (TTIN and TTOU included) and stopping on
//! TERM, exit codes, `--user`, `keepwell check URL`, and `keepwell check` without a target
//! asking the supervisor of its container. Plus: the file is a static aarch64 executable.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::app::{App, Behaviour};
use common::dist::Dist;
use common::*;
use nix::sys::signal::Signal;

/// Everything is emulated, and the machine is shared: be generous.
const DEADLINE: Duration = Duration::from_secs(60);
const TARGET: &str = "aarch64-unknown-linux-musl";

/// qemu-aarch64-static and the arm64 binary: the program for `Launch::program`.
struct Arm64 {
    _dist: Dist,
    qemu: String,
    binary: String,
}

impl Arm64 {
    fn get() -> Arm64 {
        let qemu = "/usr/bin/qemu-aarch64-static";
        assert!(
            Path::new(qemu).exists(),
            "{qemu} is missing: apt-get install qemu-user-static (tests/run.sh does)"
        );
        let dist = Dist::get();
        let binary = dist.binary(TARGET).to_string_lossy().into_owned();
        Arm64 {
            _dist: dist,
            qemu: qemu.to_string(),
            binary,
        }
    }

    fn program(&self) -> [&str; 2] {
        [&self.qemu, &self.binary]
    }

    /// keepwell (arm64) as PID 1 of a fresh PID namespace.
    fn pid1(&self, args: &[&str]) -> Launch {
        keepwell(args).program(&self.program()).pid1()
    }

    /// Run it to completion as PID 1 of a fresh namespace: exit code, stdout, stderr.
    fn run_pid1(&self, args: &[&str]) -> (i32, String, String) {
        let out = run_with_deadline(
            Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .args(self.program())
                .args(args)
                .env_remove("KEEPWELL_HEALTH_URL"),
            DEADLINE,
        );
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .expect("an exit code or a signal");
        (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn the_arm64_release_binary_is_a_static_aarch64_executable() {
    let arm = Arm64::get();
    let elf = std::fs::read(&arm.binary).expect("read the arm64 binary");
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "a 64-bit little-endian ELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    const ET_EXEC: u16 = 2;
    const EM_AARCH64: u16 = 183;
    const PT_INTERP: u32 = 3;
    assert_eq!(u16_at(0x10), ET_EXEC, "a plain (non-PIE) executable");
    assert_eq!(u16_at(0x12), EM_AARCH64, "built for aarch64");
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
        assert_ne!(
            kind, PT_INTERP,
            "no dynamic loader: it must run in FROM scratch"
        );
    }
    let (code, stdout, stderr) = arm.run_pid1(&["--version"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("keepwell {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn as_pid1_it_reaps_every_orphan() {
    let arm = Arm64::get();
    let dir = tempfile::tempdir().expect("dir");
    const ORPHANS: usize = 40;
    // Each sleeper's parent subshell exits at once: the sleeper is orphaned to PID 1.
    let script = format!(
        "for i in $(seq {ORPHANS}); do (sleep 1 &); done; echo spawned; \
         while [ ! -e {done} ]; do sleep 0.05; done",
        done = dir.path().join("done").display()
    );
    let mut kw = arm.pid1(&["--", "sh", "-c", &script]).start();
    wait_until(DEADLINE, "the orphans to be spawned", || {
        kw.stdout().contains("spawned")
    });
    let main_child = kw.wait_child(DEADLINE);
    wait_until(DEADLINE, "every orphan reaped, no zombie left", || {
        let children = children_of(kw.pid);
        children == vec![main_child]
    });
    std::fs::write(dir.path().join("done"), "").expect("done file");
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
}

#[test]
fn it_forwards_signals_ttin_and_ttou_included_and_stops_on_term() {
    let arm = Arm64::get();
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let out_arg = out.to_string_lossy().into_owned();
    let helper = support("echo_signals.py");
    let mut kw = arm
        .pid1(&["--", "python3", &helper, &out_arg])
        .env("EXIT_ON", "TERM")
        .start();
    wait_until(DEADLINE, "the child to be ready", || {
        read(&out).contains("ready")
    });
    let mut expected = Vec::new();
    for (signal, name) in [
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGTTIN, "TTIN"),
        (Signal::SIGTTOU, "TTOU"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGWINCH, "WINCH"),
    ] {
        kw.signal(signal);
        expected.push(name.to_string());
        wait_until(DEADLINE, &format!("the child to get {name}"), || {
            echoed(&out) == expected
        });
    }
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    expected.push("TERM".into());
    assert_eq!(echoed(&out), expected);
}

#[test]
fn exit_codes_are_the_childs_or_say_what_went_wrong() {
    let arm = Arm64::get();
    let dir = tempfile::tempdir().expect("dir");
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write a file");
    let not_executable = not_executable.to_string_lossy().into_owned();
    for (args, code) in [
        (vec!["--", "sh", "-c", "exit 7"], 7),
        (vec!["--", "sh", "-c", "kill -KILL $$"], 137),
        (vec!["--", "/nonexistent/app"], 127),
        (vec!["--", &not_executable], 126),
        (vec!["--grace", "soon", "--", "true"], 2),
    ] {
        let (got, _, stderr) = arm.run_pid1(&args);
        assert_eq!(got, code, "arm64 keepwell {args:?}:\n{stderr}");
    }
}

#[test]
fn user_drops_root_for_the_child_and_for_keepwell() {
    let arm = Arm64::get();
    let report = "grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo done; sleep 30";
    let mut kw = arm
        .pid1(&["--user", "4242:4243", "--", "sh", "-c", report])
        .start();
    wait_until(DEADLINE, "the child's report", || {
        kw.stdout().contains("done")
    });
    let child = kw.stdout();
    assert!(child.contains("Uid:\t4242\t4242\t4242\t4242"), "{child}");
    assert!(child.contains("Gid:\t4243\t4243\t4243\t4243"), "{child}");
    // keepwell itself keeps no root either: its main thread and its own threads (musl makes
    // every thread change ids). qemu's own helper thread is the one exception: the emulator
    // starts it before keepwell runs and it keeps root; on real arm64 there is no such thread.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", kw.pid)).expect("keepwell's tasks");
    let mut checked = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let is_main = task.file_name().to_string_lossy() == kw.pid.to_string();
        if is_main || field("Name:").starts_with("keepwell") {
            assert_eq!(field("Uid:"), "4242\t4242\t4242\t4242", "{status}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "keepwell's main thread and its own threads");
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 128 + 15, "{}", kw.stderr());
}

#[test]
fn check_url_probes_the_app_directly() {
    let arm = Arm64::get();
    let app = App::http(Behaviour::Status(200));
    let (code, stdout, stderr) = arm.run_pid1(&["check", &app.url()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("healthy: 200 OK from "), "{stdout}");
    app.set(Behaviour::Status(500));
    let (code, stdout, stderr) = arm.run_pid1(&["check", &app.url()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.starts_with("unhealthy: "), "{stdout}");
}

#[test]
fn check_without_target_asks_the_supervisor_of_its_container() {
    let arm = Arm64::get();
    let app = App::http(Behaviour::Status(200));
    let url = app.url();
    let kw = arm
        .pid1(&[
            "--health-url",
            &url,
            "--health-start-interval",
            "200ms",
            "--",
            "sleep",
            "1000",
        ])
        .start();
    kw.wait_log(DEADLINE, "healthy");
    // As `docker exec C keepwell check` enters the container: nsenter into its namespaces.
    let mut check = kw.exec(&[&arm.qemu, &arm.binary, "check"]);
    let out = run_with_deadline(&mut check, DEADLINE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", kw.stderr());
    assert!(
        stdout.starts_with("healthy: keepwell (pid 1) reports child pid "),
        "{stdout}"
    );

    // And with no supervisor in the namespace, it says so and exits 1.
    let (code, stdout, _) = arm.run_pid1(&["check"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with("unhealthy: no keepwell supervisor answers"),
        "{stdout}"
    );
}
