//! `--socket`: keepwell binds the app's listening sockets and hands them down (systemd socket
//! activation). What each test pins down: the child gets exactly 0, 1, 2 and the sockets at
//! 3, 4, … (keepwell's own descriptors stay behind), with LISTEN_FDS, LISTEN_FDNAMES and a
//! LISTEN_PID that is its own pid, through `sh -c 'exec …'` too, across restarts; a Unix socket
//! belongs to the `--user` with mode 0660; `/status` lists the sockets; a stop that ends in
//! keepwell's exit closes the port once the app has closed its copy (clients are refused, as
//! without `--socket`); bad addresses, ports that cannot be bound and a `tcp://` health URL at
//! a held socket are refused with exit 2 and one line, before anything starts.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(15);

/// The descriptor numbers a process holds, and what each points at.
fn fds(pid: i32) -> Vec<(i32, String)> {
    let mut found: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    found.sort();
    found
}

/// Descriptors above 2 that this test process would pass to anything it starts (no
/// close-on-exec), such as one a CI runner leaked to it: keepwell inherits them as any program
/// would, and they are not keepwell's to close.
fn inherited_from_the_test() -> BTreeSet<i32> {
    fds(std::process::id() as i32)
        .into_iter()
        .map(|(fd, _)| fd)
        .filter(|&fd| fd > 2)
        .filter(|fd| {
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
                .is_some_and(|flags| flags & libc::O_CLOEXEC as u32 == 0)
        })
        .collect()
}

/// The environment a process started with, from /proc/PID/environ.
fn environ(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn env_value(pid: i32, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    environ(pid)
        .into_iter()
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
}

/// A keepwell run to its end: exit code and stderr.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut launch = keepwell(args);
    for (key, value) in env {
        launch = launch.env(key, value);
    }
    let mut kw = launch.start();
    let code = kw.wait_exit(DEADLINE);
    (code, kw.stderr())
}

#[test]
fn the_child_gets_exactly_its_sockets_at_3_and_4_with_its_own_pid_in_listen_pid() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let unix = dir.path().join("app.sock");
    let listen_port = free_port();
    let sockets = format!("127.0.0.1:{port},unix:{}", unix.display());
    let listen = format!("127.0.0.1:{listen_port}");
    // keepwell holds a signalfd, epoll and eventfd descriptors, the --listen socket, the local
    // verdict socket and probe connections: none of them may reach the child. Stale LISTEN_*
    // variables in keepwell's own environment are replaced. `sh -c 'exec …'` execs in the
    // process keepwell forked, so LISTEN_PID is still right after the exec.
    let kw = keepwell(&[
        "--listen",
        &listen,
        "--restart",
        "always",
        "--",
        "sh",
        "-c",
        "exec sleep 60",
    ])
    .env("KEEPWELL_SOCKET", &sockets)
    .env("LISTEN_PID", "1")
    .env("LISTEN_FDS", "7")
    .pid1()
    .start();

    for round in 0..2 {
        // Asleep, not only exec'd: until then sleep itself has its locale files open.
        let child = wait_for(DEADLINE, "the child to exec sleep and sleep", || {
            kw.child().filter(|&pid| {
                let is_sleep = fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|exe| exe.to_string_lossy().contains("sleep"))
                    .unwrap_or(false);
                let asleep = fs::read_to_string(format!("/proc/{pid}/wchan"))
                    .map(|wchan| wchan.contains("nanosleep"))
                    .unwrap_or(false);
                is_sleep && asleep
            })
        });
        let child_fds = fds(child);
        let numbers: BTreeSet<i32> = child_fds.iter().map(|(fd, _)| *fd).collect();
        let mut expected = BTreeSet::from([0, 1, 2, 3, 4]);
        expected.extend(inherited_from_the_test());
        assert_eq!(
            numbers,
            expected,
            "round {round}: the child's descriptors: {child_fds:?}\nkeepwell's: {:?}",
            fds(kw.pid)
        );
        // fd 3 and 4 are keepwell's two sockets, the same open sockets (not copies of them).
        let keepwell_sockets: BTreeSet<String> = fds(kw.pid)
            .into_iter()
            .map(|(_, target)| target)
            .filter(|t| t.starts_with("socket:"))
            .collect();
        for (fd, target) in &child_fds[3..5] {
            assert!(
                keepwell_sockets.contains(target),
                "round {round}: fd {fd} ({target}) is not one of keepwell's sockets {keepwell_sockets:?}"
            );
        }
        assert_ne!(child_fds[3].1, child_fds[4].1, "two different sockets");
        // The pid the child has in its own PID namespace, which getpid() returns there.
        let own_pid = status_field(child, "NSpid")
            .and_then(|ns| ns.split_whitespace().last().map(str::to_string));
        assert_eq!(env_value(child, "LISTEN_PID"), own_pid);
        assert_eq!(env_value(child, "LISTEN_FDS").as_deref(), Some("2"));
        assert_eq!(
            env_value(child, "LISTEN_FDNAMES"),
            Some(format!("tcp-127.0.0.1-{port}:unix-{}", unix.display()))
        );
        // A restart: the new child gets the same sockets and its own pid.
        kill(child, Signal::SIGKILL);
        wait_until(DEADLINE, "the killed child to be gone", || !is_alive(child));
    }

    // The port is open and keepwell never accepts on it: the connection waits in the queue.
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .expect("the held port takes connections");
    let meta = fs::metadata(&unix).expect("the Unix socket file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

fn kill(pid: i32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

#[test]
fn a_unix_socket_belongs_to_the_user_the_app_runs_as() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unix = dir.path().join("app.sock");
    // A socket file left by an earlier run is replaced, not an error.
    let stale = std::os::unix::net::UnixListener::bind(&unix).expect("a stale socket");
    drop(stale);
    let socket = format!("unix:{}", unix.display());
    let kw = keepwell(&["--socket", &socket, "--user", "nobody", "--", "sleep", "60"])
        .pid1()
        .start();
    kw.wait_child(DEADLINE);
    let meta = fs::metadata(&unix).expect("the Unix socket file");
    let nobody = fs::read_to_string("/etc/passwd")
        .expect("/etc/passwd")
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields[0] == "nobody")
                .then(|| (fields[2].parse::<u32>().ok(), fields[3].parse::<u32>().ok()))
        })
        .expect("a nobody user in /etc/passwd");
    assert_eq!((Some(meta.uid()), Some(meta.gid())), nobody);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    std::os::unix::net::UnixStream::connect(&unix).expect("the socket takes connections");
}

#[test]
fn status_lists_the_held_sockets() {
    let port = free_port();
    let listen_port = free_port();
    let socket = format!("127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{listen_port}");
    let kw = keepwell(&[
        "--socket", &socket, "--listen", &listen, "--", "sleep", "60",
    ])
    .start();
    kw.wait_child(DEADLINE);
    let addr = SocketAddr::from(([127, 0, 0, 1], listen_port));
    let body = wait_for(DEADLINE, "/status", || http::get(addr, "/status").ok()).text();
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        status["sockets"],
        serde_json::json!([format!("127.0.0.1:{port} (fd 3)")]),
        "{body}"
    );
}

#[test]
fn a_stop_that_ends_in_exit_closes_the_port_once_the_app_has_closed_its_copy() {
    let port = free_port();
    let socket = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("closed");
    let app = support("fd_app.py");
    let mut kw = keepwell(&[
        "--socket",
        &socket,
        "--grace",
        "20s",
        "--",
        "/usr/bin/python3",
        &app,
        marker.to_str().expect("utf-8 path"),
    ])
    .pid1()
    .start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(DEADLINE, "the app to serve on the held socket", || {
        http::get(addr, "/")
            .ok()
            .filter(|r| r.status == 200 && r.text() == "fd app")
    });
    kw.signal(Signal::SIGTERM);
    wait_until(DEADLINE, "the app to close its listening socket", || {
        read(&marker).contains("closed")
    });
    // The app lingers (its last requests), keepwell waits for it: a new client must be refused
    // at once and try elsewhere, not wait in a queue nobody will serve.
    wait_until(
        DEADLINE,
        "a connection to the port to be refused while the app finishes",
        || {
            matches!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    );
    assert!(kw.child().is_some(), "the app still finishes its work");
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 137);
}

/// Arguments, variables, and what stderr must say.
type Case<'a> = (Vec<String>, Vec<(&'a str, String)>, &'a str);

#[test]
fn bad_addresses_and_binds_exit_2_with_one_line_and_start_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("started");
    let touch = format!("touch {}", marker.display());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let busy_port = busy.local_addr().expect("addr").port();
    let free = free_port();
    // (arguments, variables, what stderr says); a "COMMAND" entry replaces the sh -c line.
    let cases: Vec<Case> = vec![
        (
            vec!["--socket".into(), "8000".into()],
            vec![],
            "--socket \"8000\" is not valid: expected :8000, 0.0.0.0:8000",
        ),
        (
            vec![],
            vec![("KEEPWELL_SOCKET", format!(":{free},unix:relative.sock"))],
            "KEEPWELL_SOCKET \"unix:relative.sock\" is not valid: a Unix socket needs an absolute path",
        ),
        (
            vec!["--socket".into(), ":0".into()],
            vec![],
            "port 0 would be a different port at every start",
        ),
        (
            vec!["--socket".into(), format!("127.0.0.1:{busy_port}")],
            vec![],
            "cannot bind: Address already in use",
        ),
        (
            vec!["--socket".into(), format!("unix:{}/missing/app.sock", dir.path().display())],
            vec![],
            "does not exist: create it in the image",
        ),
        (
            vec![
                "--socket".into(),
                format!(":{free}"),
                "--health-url".into(),
                format!("tcp://127.0.0.1:{free}"),
            ],
            vec![],
            "which keepwell holds open itself: a connection there always succeeds",
        ),
    ];
    let reuse_port = format!("{touch}; exec gunicorn --reuse-port app:app");
    let mut cases = cases;
    cases.push((
        vec!["--socket".into(), format!(":{free}")],
        vec![("COMMAND", reuse_port)],
        "--socket and gunicorn --reuse-port do not go together",
    ));
    for (args, env, expected) in cases {
        let command = env
            .iter()
            .find(|(k, _)| *k == "COMMAND")
            .map_or(touch.clone(), |(_, v)| v.clone());
        let env: Vec<(&str, String)> = env.into_iter().filter(|(k, _)| *k != "COMMAND").collect();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--", "sh", "-c", &command]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stderr) = run_to_exit(&all, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!marker.exists(), "{args:?}: COMMAND was started");
    }
    // The same health URL at a port keepwell does not hold is fine.
    let other = free_port();
    let socket = format!(":{free}");
    let url = format!("tcp://127.0.0.1:{other}");
    let (code, stderr) = run_to_exit(
        &[
            "--socket",
            &socket,
            "--health-url",
            &url,
            "--",
            "sh",
            "-c",
            &touch,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(marker.exists());
}
