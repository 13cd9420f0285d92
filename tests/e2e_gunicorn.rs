//! End to end: keepwell supervising real gunicorn + Flask from PyPI (pinned in
//! tests/support/e2e-requirements.txt, installed into a venv that tests/common/venv.rs builds
//! once), and the stdlib demo app of examples/hello.
//!
//! What each test pins down: the app serves pages through keepwell and keepwell sees it
//! healthy; a /health that turns 500 gets gunicorn restarted with a new master; TTIN and TTOU
//! reach gunicorn and change its worker count; TERM is a graceful exit 0 inside the grace
//! period; with `--user` no process in the container keeps any privilege. Every wait has a
//! deadline and polls a condition.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::venv::venv;
use common::*;
use nix::sys::signal::Signal;

/// gunicorn boots in about a second; a cold machine under a parallel test run may need more.
const BOOT: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(15);
/// The page text of tests/support/flask_app.py.
const FLASK_PAGE: &str = "Hello from Flask under keepwell";
const HEALTHY: &str = "health changed: starting → healthy";

/// GET PATH from 127.0.0.1:PORT: (status, body), or None when it cannot be had.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    common::app::get(port, path)
}

/// Wait until GET PATH answers STATUS; returns the body.
fn wait_get(port: u16, path: &str, status: u16) -> String {
    wait_for(DEADLINE, &format!("GET {path} to answer {status}"), || {
        get(port, path).and_then(|(s, body)| (s == status).then_some(body))
    })
}

/// How many times `text` is in keepwell's log.
fn count(kw: &Keepwell, text: &str) -> usize {
    kw.stderr().matches(text).count()
}

/// gunicorn's live workers: the live children of its master.
fn workers(master: i32) -> usize {
    children_of(master)
        .into_iter()
        .filter(|&p| is_alive(p))
        .count()
}

struct Gunicorn {
    kw: Keepwell,
    port: u16,
    /// While this file exists, the app's /health answers 500.
    fail_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// keepwell with short timings supervising gunicorn (2 workers) serving tests/support/flask_app.py,
/// after the app answers and keepwell has logged it healthy.
fn gunicorn(extra: &[&str], pid1: bool) -> Gunicorn {
    let venv = venv();
    let dir = tempfile::tempdir().expect("temp dir");
    let fail_file = dir.path().join("fail-health");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let health_url = format!("http://{bind}/health");
    let gunicorn = venv.join("bin/gunicorn");
    // The app is copied next to the fail file, in a world-readable temp dir: wherever the
    // repository is cloned, an unprivileged gunicorn (--user) can still read it.
    std::fs::copy(support("flask_app.py"), dir.path().join("flask_app.py")).expect("copy the app");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make the app dir readable");
    let support_dir = dir.path().to_string_lossy().to_string();
    let mut args: Vec<&str> = vec![
        "--health-url",
        &health_url,
        "--health-interval",
        "300ms",
        "--health-start-interval",
        "200ms",
        "--health-retries",
        "2",
        "--grace",
        "5s",
    ];
    args.extend_from_slice(extra);
    args.extend([
        "--",
        gunicorn.to_str().expect("utf-8 venv path"),
        "--bind",
        &bind,
        "--workers",
        "2",
        "--worker-tmp-dir",
        "/dev/shm",
        "--chdir",
        &support_dir,
        "flask_app:app",
    ]);
    let mut launch =
        keepwell(&args).env("HEALTH_FAIL_FILE", fail_file.to_str().expect("utf-8 path"));
    if pid1 {
        launch = launch.pid1();
    }
    let kw = launch.start();
    wait_for(BOOT, "gunicorn to serve /health", || {
        get(port, "/health").filter(|(status, _)| *status == 200)
    });
    kw.wait_log(DEADLINE, HEALTHY);
    Gunicorn {
        kw,
        port,
        fail_file,
        _dir: dir,
    }
}

#[test]
fn flask_serves_pages_and_keepwell_sees_it_healthy() {
    let g = gunicorn(&[], true);
    let (status, body) = get(g.port, "/").expect("GET /");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(FLASK_PAGE), "{body}");
    let (status, body) = get(g.port, "/health").expect("GET /health");
    assert_eq!((status, body.trim()), (200, "Healthy: OK"));
    let log = g.kw.stderr();
    assert!(log.contains(HEALTHY), "{log}");
    assert!(!log.contains("restarting in"), "{log}");
}

#[test]
fn a_health_endpoint_that_turns_500_gets_gunicorn_restarted() {
    let g = gunicorn(&[], true);
    let first_master = g.kw.wait_child(DEADLINE);

    std::fs::write(&g.fail_file, "fail").expect("create the fail file");
    assert_eq!(get(g.port, "/health").map(|(s, _)| s), Some(500));
    let log =
        g.kw.wait_log(DEADLINE, "health changed: healthy → unhealthy");
    let why = log
        .lines()
        .find(|l| l.contains("→ unhealthy"))
        .expect("the unhealthy line");
    assert!(why.contains("500"), "the change names the status: {why}");
    g.kw.wait_log(DEADLINE, "restarting in");
    let second_master = wait_for(DEADLINE, "a new gunicorn master", || {
        g.kw.child().filter(|&pid| pid != first_master)
    });
    assert!(!is_alive(first_master), "the old master still runs");

    std::fs::remove_file(&g.fail_file).expect("remove the fail file");
    wait_until(DEADLINE, "keepwell healthy again", || {
        count(&g.kw, HEALTHY) == 2
    });
    assert_eq!(g.kw.child(), Some(second_master));
    assert!(wait_get(g.port, "/", 200).contains(FLASK_PAGE));
}

#[test]
fn ttin_adds_a_gunicorn_worker_and_ttou_removes_one_as_subreaper() {
    let g = gunicorn(&[], false);
    let master = g.kw.wait_child(DEADLINE);
    wait_until(DEADLINE, "2 workers", || workers(master) == 2);

    g.kw.signal(Signal::SIGTTIN);
    wait_until(DEADLINE, "a 3rd worker after TTIN", || workers(master) == 3);
    g.kw.signal(Signal::SIGTTOU);
    wait_until(DEADLINE, "2 workers after TTOU", || workers(master) == 2);

    assert_eq!(
        g.kw.child(),
        Some(master),
        "TTIN/TTOU must not restart gunicorn"
    );
    let log = g.kw.stderr();
    assert!(log.contains("forwarded SIGTTIN"), "{log}");
    assert!(log.contains("forwarded SIGTTOU"), "{log}");
}

fn term_is_a_graceful_exit_0_within_the_grace(pid1: bool) {
    let mut g = gunicorn(&[], pid1);
    let master = g.kw.wait_child(DEADLINE);
    let tree = descendants_of(g.kw.pid);
    assert!(tree.len() >= 3, "master and 2 workers: {tree:?}");

    let asked = Instant::now();
    g.kw.signal(Signal::SIGTERM);
    let code = g.kw.wait_exit(DEADLINE);
    let took = asked.elapsed();
    let log = g.kw.stderr();
    assert_eq!(code, 0, "{log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, the grace is 5s\n{log}"
    );
    assert!(
        !log.contains("SIGKILL to the child's process group"),
        "gunicorn needed SIGKILL:\n{log}"
    );
    // gunicorn's own log (inherited stderr) shows the graceful path.
    assert!(log.contains("Shutting down: Master"), "{log}");
    for pid in tree {
        assert!(!is_alive(pid), "{pid} outlived keepwell (master {master})");
    }
}

#[test]
fn term_is_a_graceful_exit_0_within_the_grace_as_pid1() {
    term_is_a_graceful_exit_0_within_the_grace(true);
}

#[test]
fn term_is_a_graceful_exit_0_within_the_grace_as_subreaper() {
    term_is_a_graceful_exit_0_within_the_grace(false);
}

/// The four ids of a Uid: or Gid: line, e.g. "65534\t65534\t65534\t65534".
fn ids(pid: i32, field: &str) -> Vec<u32> {
    status_field(pid, field)
        .unwrap_or_else(|| panic!("{field} of {pid}"))
        .split_whitespace()
        .map(|id| id.parse().expect("numeric id"))
        .collect()
}

#[test]
fn with_user_no_process_in_the_container_keeps_a_privilege() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "--user needs this test to run as root"
    );
    // gunicorn runs as nobody: it must be able to read the venv and the app.
    let venv = venv();
    let readable = run_with_deadline(
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(venv.join("bin/python"))
            .args(["-c", "import flask, gunicorn"]),
        RUN_DEADLINE,
    );
    assert!(
        readable.status.success(),
        "uid 65534 cannot read the venv (every folder above it needs o+rx): {}",
        String::from_utf8_lossy(&readable.stderr)
    );

    let g = gunicorn(&["--user", "65534:65534"], true);
    g.kw.wait_child(DEADLINE);
    let everyone: Vec<i32> = std::iter::once(g.kw.pid)
        .chain(descendants_of(g.kw.pid))
        .collect();
    assert!(
        everyone.len() >= 4,
        "keepwell, master, 2 workers: {everyone:?}"
    );
    for &pid in &everyone {
        let name = status_field(pid, "Name").unwrap_or_default();
        for field in ["Uid", "Gid"] {
            let four = ids(pid, field);
            assert_eq!(four.len(), 4, "{name} ({pid}) {field}: {four:?}");
            assert!(
                four.iter().all(|&id| id != 0),
                "{name} ({pid}) {field}: {four:?}"
            );
        }
        let groups = status_field(pid, "Groups").unwrap_or_default();
        assert!(
            groups.split_whitespace().all(|g| g != "0"),
            "{name} ({pid}) keeps group 0: {groups:?}"
        );
        for (field, want) in [("CapEff", "0000000000000000"), ("NoNewPrivs", "1")] {
            assert_eq!(
                status_field(pid, field).as_deref(),
                Some(want),
                "{name} ({pid}) {field}"
            );
        }
    }
    // The same, seen from inside the container as `docker exec` would.
    let inside =
        g.kw.exec_output(&["sh", "-c", "grep -H '^Uid:' /proc/1/status"]);
    let inside = inside.stdout;
    assert!(inside.contains("65534\t65534\t65534\t65534"), "{inside}");

    let (status, body) = get(g.port, "/").expect("GET /");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(FLASK_PAGE), "{body}");
    let whoami = wait_get(g.port, "/whoami", 200);
    assert!(whoami.starts_with("uid=65534 gid=65534"), "{whoami}");
}

/// The README's "run it" command: keepwell probing and serving probes for examples/hello.
#[test]
fn the_hello_example_runs_healthy_and_stops_gracefully() {
    let port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let health_url = format!("http://127.0.0.1:{port}/health");
    let app = format!("{}/examples/hello/app.py", env!("CARGO_MANIFEST_DIR"));
    let mut kw = keepwell(&[
        "--health-url",
        &health_url,
        "--health-start-interval",
        "200ms",
        "--listen",
        &listen,
        "--grace",
        "5s",
        "--",
        "python3",
        &app,
    ])
    .env("PORT", &port.to_string())
    .pid1()
    .start();
    let listen_port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    assert!(wait_get(port, "/", 200).contains("this app runs under keepwell"));
    assert_eq!(wait_get(port, "/health", 200), "ok\n");
    kw.wait_log(DEADLINE, HEALTHY);
    wait_get(listen_port, "/readyz", 200);

    let asked = Instant::now();
    kw.signal(Signal::SIGTERM);
    let code = kw.wait_exit(DEADLINE);
    let log = kw.stderr();
    assert_eq!(code, 0, "{log}");
    assert!(asked.elapsed() < Duration::from_secs(5), "{log}");
    assert!(log.contains("hello: SIGTERM received"), "{log}");
    assert!(log.contains("hello: stopped"), "{log}");
}
