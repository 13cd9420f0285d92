//! The shipped form: the static musl binary runs in an empty root (as in `FROM scratch`) and,
//! built against musl, survives the signals musl keeps for itself.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_static_binary_runs_in_an_empty_root() {
    let binary = static_keepwell();
    let root = tempfile::tempdir().expect("dir");
    std::fs::copy(&binary, root.path().join("keepwell")).expect("copy the binary");
    // Nothing else in the root: no loader, no libc, no /etc. keepwell supervises itself.
    let out = Command::new("chroot")
        .arg(root.path())
        .args([
            "/keepwell",
            "--log-level",
            "off",
            "--",
            "/keepwell",
            "--version",
        ])
        .output()
        .expect("run chroot");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("keepwell {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_musl_build_survives_signals_32_to_34_and_forwards_35() {
    let binary = static_keepwell();
    let script = "import signal, sys, time\n\
        signal.signal(35, lambda n, f: (print('got', n, flush=True), sys.exit(0)))\n\
        print('ready', flush=True)\n\
        time.sleep(30)\n";
    let dir = tempfile::tempdir().expect("dir");
    let stdout = std::fs::File::create(dir.path().join("out")).expect("out");
    // Not PID 1: here a signal left at its default action would kill keepwell.
    let mut kw = Command::new(&binary)
        .args(["--log-level", "warn", "--", "python3", "-c", script])
        .stdout(stdout)
        .spawn()
        .expect("start the static keepwell");
    let pid = kw.id() as i32;
    let out = || read(&dir.path().join("out"));
    wait_until(Duration::from_secs(10), "the child to be ready", || {
        out().contains("ready")
    });
    for signo in [32, 33, 34, 35] {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signo) }, 0, "kill -{signo}");
    }
    let status = wait_for(Duration::from_secs(10), "keepwell to exit", || {
        kw.try_wait().expect("try_wait")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "keepwell died: {status:?}; child said {}",
        out()
    );
    assert!(out().contains("got 35"), "{}", out());
}
