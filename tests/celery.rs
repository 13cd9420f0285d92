//! A real Celery worker under keepwell (README "Health", `file:`; examples/celery-worker):
//! celery[redis] from PyPI, Debian's redis-server started by the test, the example's own
//! `worker.py` with its heartbeat bootstep. The worker becomes healthy from its heartbeat; a
//! SIGSTOPped worker goes stale and is restarted; TERM gives Celery's warm shutdown, which
//! lets the running task finish, and keepwell exits 0.
//!
//! keepwell runs as PID 1 of a fresh PID namespace, as in the example's container.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BOOT: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(30);
const TO_HEALTHY: &str = "health changed: starting → healthy";
const TO_UNHEALTHY: &str = "health changed: healthy → unhealthy";

/// Debian's redis-server on a free port of 127.0.0.1, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server; tests/run.sh does)");
        let redis = Redis { child, port };
        wait_until(DEADLINE, "redis-server to answer PING", || redis.ping());
        redis
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/celery-worker")
}

/// keepwell as PID 1 supervising the example's worker, probing its heartbeat file.
fn worker(redis: &Redis, heartbeat: &Path) -> Keepwell {
    let venv = common::venv::health_venv();
    let celery = venv.join("bin/celery");
    let (celery, workdir) = (celery.to_string_lossy(), example());
    let workdir = workdir.to_string_lossy();
    let url = format!("file:{}", heartbeat.display());
    keepwell(&[
        "--health-url",
        &url,
        // Above 3× the heartbeat's period (500 ms), as the example's README says.
        "--health-max-age",
        "2s",
        "--health-interval",
        "500ms",
        "--health-start-interval",
        "200ms",
        "--health-retries",
        "2",
        "--grace",
        "10s",
        "--",
        &celery,
        "--workdir",
        &workdir,
        "-A",
        "worker",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--without-mingle",
        "--without-gossip",
    ])
    .pid1()
    .env("CELERY_BROKER_URL", &redis.url())
    .env("HEARTBEAT_FILE", &heartbeat.to_string_lossy())
    .env("HEARTBEAT_SECONDS", "0.5")
    .start()
}

/// Send `worker.pause(seconds)` through the broker, as an app would.
fn send_pause(redis: &Redis, seconds: u32) {
    let python = common::venv::health_venv().join("bin/python");
    let mut sender = Command::new(python)
        .current_dir(example())
        .env("CELERY_BROKER_URL", redis.url())
        .args([
            "-c",
            &format!("from worker import pause; pause.delay({seconds})"),
        ])
        .spawn()
        .expect("run the task sender");
    let status = wait_or_kill(&mut sender, DEADLINE, "sending the task");
    assert!(status.success(), "sending the task failed: {status}");
}

#[test]
fn a_stopped_worker_goes_stale_and_is_restarted_and_term_is_a_warm_shutdown() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let heartbeat = dir.path().join("heartbeat");
    let mut kw = worker(&redis, &heartbeat);
    let log = kw.wait_log(BOOT, TO_HEALTHY);
    let prefix = format!("detail=heartbeat {} written ", heartbeat.display());
    assert!(log.contains(&prefix), "{log}");
    let first = kw.wait_child(DEADLINE);

    // A worker that stops (SIGSTOP: as hung as it gets) writes no heartbeat.
    kill(Pid::from_raw(first), Signal::SIGSTOP).expect("SIGSTOP the worker");
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY);
    let stale = format!("detail=the heartbeat {} was written ", heartbeat.display());
    assert!(
        log.lines().any(|l| l.contains(TO_UNHEALTHY)
            && l.contains(&stale)
            && l.contains("--health-max-age 2s")),
        "{log}"
    );
    kw.wait_log(DEADLINE, "because the app stayed unhealthy");
    let second = wait_for(DEADLINE, "a new worker", || {
        kw.child().filter(|&pid| pid != first)
    });
    wait_until(BOOT, "the new worker healthy", || {
        kw.stderr().matches(TO_HEALTHY).count() == 2
    });

    // TERM while a task runs: Celery's warm shutdown lets it finish, then exits 0.
    send_pause(&redis, 2);
    kw.wait_log(DEADLINE, "Task worker.pause[");
    kw.signal(Signal::SIGTERM);
    let code = kw.wait_exit(DEADLINE);
    let log = kw.stderr();
    assert_eq!(code, 0, "{log}");
    // Celery says so on its stdout.
    assert!(
        kw.stdout().contains("worker: Warm shutdown (MainProcess)"),
        "{}",
        kw.stdout()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Task worker.pause[") && l.contains("succeeded")),
        "the running task finished before the exit:\n{log}"
    );
    assert!(!is_alive(second));
}
