//! Restarts that lose no request: real gunicorn 27 and uvicorn from PyPI
//! (tests/support/sockets-requirements.txt) under keepwell `--socket`, with a bounded loopback
//! load generator (tests/support/loadgen.py: many concurrent connections, each request on a
//! connection of its own, refused, reset, timeout and non-2xx counted apart).
//!
//! What each test pins down: through an unhealthy restart and through a crash restart
//! (`--restart always`, SIGKILL to the gunicorn master) no request is lost with `--socket`,
//! while the same run without it loses requests (so the test proves the difference); uvicorn
//! loses at most 5 % of what it loses without; gunicorn takes the socket (LISTEN_PID is its
//! master's own pid); a port below 1024 bound by root keepwell serves an app that runs as
//! nobody, with no capability left in any process.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::load::{self, Report};
use common::venv::sockets_venv;
use common::*;
use nix::sys::signal::Signal;

/// gunicorn and uvicorn boot in about a second; a cold, busy machine may need far more.
const BOOT: Duration = Duration::from_secs(40);
/// Load: connections at once, requests per second over all of them, the most one may take.
const CONNECTIONS: u32 = 30;
const RATE: u32 = 200;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const LOAD_LIMIT: Duration = Duration::from_secs(120);
const HEALTHY: &str = "health changed: starting → healthy";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Gunicorn,
    Uvicorn,
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// /health turns 500: keepwell stops the app and starts it again.
    Unhealthy,
    /// SIGKILL to the server's main process; `--restart always` starts it again.
    Crash,
}

struct Served {
    kw: Keepwell,
    port: u16,
    fail_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A world-readable directory holding the test apps, so an unprivileged server can read them.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for app in ["wsgi_app.py", "asgi_app.py"] {
        std::fs::copy(support(app), dir.path().join(app)).expect("copy the app");
    }
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make the app dir readable");
    dir
}

/// The server's command line: with `--socket` it takes fd 3 (gunicorn from LISTEN_FDS, which
/// makes it ignore --bind; uvicorn with --fd 3), without it binds the port itself.
fn server_command(server: Server, port: u16, dir: &str, socket: bool) -> Vec<String> {
    let venv = sockets_venv();
    let bin = |name: &str| venv.join("bin").join(name).to_string_lossy().into_owned();
    let bind = format!("127.0.0.1:{port}");
    // gunicorn's command is the same either way: it binds --bind only without LISTEN_FDS.
    match server {
        Server::Gunicorn => vec![
            bin("gunicorn"),
            "--bind".into(),
            bind,
            "--workers".into(),
            "2".into(),
            "--graceful-timeout".into(),
            "3".into(),
            "--worker-tmp-dir".into(),
            "/dev/shm".into(),
            "--no-control-socket".into(),
            "--chdir".into(),
            dir.into(),
            "wsgi_app:app".into(),
        ],
        Server::Uvicorn => {
            let mut c = vec![
                bin("uvicorn"),
                "--app-dir".into(),
                dir.into(),
                "--timeout-graceful-shutdown".into(),
                "3".into(),
                "--no-access-log".into(),
            ];
            if socket {
                c.extend(["--fd".into(), "3".into()]);
            } else {
                c.extend([
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                ]);
            }
            c.push("asgi_app:app".into());
            c
        }
    }
}

/// keepwell as PID 1 supervising the server, probing its /health, once it is healthy.
fn serve(server: Server, socket: bool, port: u16, extra: &[&str]) -> Served {
    let dir = app_dir();
    let fail_file = dir.path().join("fail-health");
    let app_dir = dir.path().to_string_lossy().into_owned();
    let health_url = format!("http://127.0.0.1:{port}/health");
    let socket_addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--health-url",
        &health_url,
        "--health-interval",
        "300ms",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "2",
        "--grace",
        "8s",
        "--restart",
        "always",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if socket {
        args.extend(["--socket".into(), socket_addr]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(server_command(server, port, &app_dir, socket));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kw = keepwell(&args)
        .env("HEALTH_FAIL_FILE", fail_file.to_str().expect("utf-8 path"))
        .pid1()
        .start();
    kw.wait_log(BOOT, HEALTHY);
    Served {
        kw,
        port,
        fail_file,
        _dir: dir,
    }
}

/// Put the server under load, restart it the given way, wait until the new one is healthy,
/// and report what every request got.
fn restart_under_load(served: &Served, restart: Restart) -> Report {
    let kw = &served.kw;
    let addr = SocketAddr::from(([127, 0, 0, 1], served.port));
    let load = load::start(served.port, CONNECTIONS, RATE, REQUEST_TIMEOUT, LOAD_LIMIT);
    // The load runs before the restart as long as the test needs to see the app serve
    // SERVED_AROUND requests of its own, one after the other, and as long again after it.
    serve_in_turn(addr, "before the restart");
    let first = kw.wait_child(BOOT);
    match restart {
        Restart::Unhealthy => {
            std::fs::write(&served.fail_file, "on").expect("turn the unhealthy switch on");
            kw.wait_log(BOOT, "stopping the child");
            // Off again before the new server boots, or it would be unhealthy too.
            std::fs::remove_file(&served.fail_file).expect("turn the switch off");
        }
        Restart::Crash => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL)
                .expect("kill the server's main process");
        }
    }
    wait_for(BOOT, "the new server to be healthy", || {
        let log = kw.stderr();
        (log.matches(HEALTHY).count() >= 2 && log.matches("child started").count() >= 2)
            .then_some(())
    });
    serve_in_turn(addr, "after the restart");
    let report = load.finish();
    eprintln!("{restart:?}: {}", report.summary());
    report
}

/// Requests the test sends itself, one after the other, beside the load, before and after a
/// restart: the load covers the restart with time to spare on both sides.
const SERVED_AROUND: usize = 150;

fn serve_in_turn(addr: SocketAddr, when: &str) {
    let mut served = 0;
    wait_until(
        BOOT,
        &format!("{SERVED_AROUND} requests served {when}"),
        || {
            if http::get(addr, "/").is_ok_and(|r| r.status == 200) {
                served += 1;
            }
            served >= SERVED_AROUND
        },
    );
}

fn restart_with_and_without_socket(server: Server, restart: Restart) -> (Report, Report) {
    let with = {
        let served = serve(server, true, free_port(), &[]);
        restart_under_load(&served, restart)
    };
    let without = {
        let served = serve(server, false, free_port(), &[]);
        restart_under_load(&served, restart)
    };
    (with, without)
}

fn assert_no_loss_with_socket_and_losses_without(restart: Restart) {
    let (with, without) = restart_with_and_without_socket(Server::Gunicorn, restart);
    assert!(with.ok > 100, "the load ran: {}", with.raw);
    assert_eq!(
        with.lost(),
        0,
        "with --socket, gunicorn restarted ({restart:?}) lost requests: {}",
        with.raw
    );
    assert!(
        without.lost() > 0,
        "without --socket the restart must show losses, or this test proves nothing: {}",
        without.raw
    );
}

#[test]
fn gunicorn_unhealthy_restart_loses_no_request_with_socket_and_loses_some_without() {
    assert_no_loss_with_socket_and_losses_without(Restart::Unhealthy);
}

#[test]
fn gunicorn_crash_restart_loses_no_request_with_socket_and_loses_some_without() {
    assert_no_loss_with_socket_and_losses_without(Restart::Crash);
}

#[test]
fn uvicorn_restarts_lose_at_most_5_percent_of_what_they_lose_without_socket() {
    for restart in [Restart::Unhealthy, Restart::Crash] {
        let (with, without) = restart_with_and_without_socket(Server::Uvicorn, restart);
        assert!(with.ok > 100, "the load ran: {}", with.raw);
        assert!(
            without.lost() > 0,
            "without --socket the restart must show losses: {}",
            without.raw
        );
        assert!(
            with.lost() * 20 <= without.lost(),
            "{restart:?}: with --socket uvicorn lost {} requests, more than 5 % of the {} lost \
             without\nwith: {}\nwithout: {}",
            with.lost(),
            without.lost(),
            with.raw,
            without.raw
        );
    }
}

#[test]
fn gunicorn_takes_the_socket_listen_pid_is_its_masters_own_pid() {
    let served = serve(Server::Gunicorn, true, free_port(), &[]);
    let master = served.kw.wait_child(BOOT);
    let environ = std::fs::read(format!("/proc/{master}/environ")).expect("the master's environ");
    let listen_pid = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"LISTEN_PID="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let own = status_field(master, "NSpid")
        .and_then(|ns| ns.split_whitespace().last().map(str::to_string));
    assert_eq!(listen_pid, own, "LISTEN_PID of gunicorn's master");
    // gunicorn serves on keepwell's socket, not one it bound itself.
    let log = served.kw.stdout() + &served.kw.stderr();
    assert!(
        !log.contains("Connection in use"),
        "gunicorn tried to bind the port itself: {log}"
    );
}

/// A free port below 1024 on 127.0.0.1 (80 is often taken on a build machine).
fn privileged_port() -> u16 {
    (900..1024)
        .rev()
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below 1024")
}

#[test]
fn root_keepwell_binds_a_port_below_1024_for_an_app_that_runs_as_nobody_with_no_capability() {
    let port = privileged_port();
    let served = serve(Server::Gunicorn, true, port, &["--user", "nobody"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let page = http::get(addr, "/").expect("GET / on the low port");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Healthy: OK"), "{}", page.text());
    let kw = &served.kw;
    // keepwell, the master and both workers (the second may still be booting).
    let everyone: Vec<i32> = wait_for(BOOT, "gunicorn's master and two workers", || {
        let all: Vec<i32> = std::iter::once(kw.pid)
            .chain(descendants_of(kw.pid))
            .collect();
        (all.len() >= 4).then_some(all)
    });
    for pid in everyone {
        let Some(cap) = status_field(pid, "CapEff") else {
            continue; // gone meanwhile
        };
        assert_eq!(cap, "0000000000000000", "CapEff of pid {pid}");
        assert_ne!(
            status_field(pid, "Uid")
                .as_deref()
                .and_then(|u| u.split_whitespace().next()),
            Some("0"),
            "pid {pid} runs as root"
        );
    }
}
