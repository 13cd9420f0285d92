//! `grpc://HOST:PORT[/SERVICE]` (README "Health"): the grpc.health.v1 Check RPC against a real
//! grpcio server with grpcio-health-checking from PyPI, judged as the kubelet judges it:
//! SERVING is healthy; NOT_SERVING (after `set()`), an unknown service (NOT_FOUND) and a server
//! without a health service (UNIMPLEMENTED) are not, each named; refused, a hang and a server
//! that does not speak gRPC are failures within the deadline, never a hang of keepwell.
//!
//! The server is tests/support/grpc_health_server.py in the health venv
//! (tests/support/health-requirements.txt).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::app::{App, Behaviour};
use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// The grpcio server, killed when dropped.
struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Server {
    fn start(mode: &[&str]) -> Server {
        let python = common::venv::health_venv().join("bin/python");
        let mut child = Command::new(python)
            .arg(support("grpc_health_server.py"))
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the grpcio server");
        let stdin = child.stdin.take().expect("stdin was piped");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let ready = lines
            .recv_timeout(DEADLINE)
            .expect("the grpcio server says ready");
        let port = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a ready line: {ready:?}"));
        Server {
            child,
            stdin,
            lines,
            port,
        }
    }

    fn url(&self, service: &str) -> String {
        match service {
            "" => format!("grpc://127.0.0.1:{}", self.port),
            s => format!("grpc://127.0.0.1:{}/{s}", self.port),
        }
    }

    /// `HealthServicer.set(service, status)` in the server, acknowledged.
    fn set(&mut self, service: &str, status: &str) {
        writeln!(self.stdin, "set {service} {status}").expect("write to the server");
        self.stdin.flush().expect("flush to the server");
        let ack = self.lines.recv_timeout(DEADLINE).expect("the server's ack");
        assert_eq!(ack, "ok");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keepwell check ARGS`: exit code and stdout with the latency cut off.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(KEEPWELL)
        .arg("check")
        .args(args)
        .env_remove("KEEPWELL_HEALTH_TIMEOUT")
        .output()
        .expect("run keepwell check");
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let line = match stdout.rsplit_once(" in ") {
        Some((line, _)) if stdout.starts_with("healthy") => line.to_string(),
        _ => stdout,
    };
    (out.status.code().expect("an exit code"), line)
}

#[test]
fn serving_not_serving_and_an_unknown_service() {
    let mut server = Server::start(&[]);
    let (whole, worker) = (server.url(""), server.url("app.Worker"));
    assert_eq!(
        check(&[&whole]),
        (0, format!("healthy: SERVING from {whole}"))
    );
    assert_eq!(
        check(&[&worker]),
        (0, format!("healthy: SERVING from {worker}"))
    );

    server.set("app.Worker", "NOT_SERVING");
    assert_eq!(
        check(&[&worker]),
        (
            1,
            format!(
                "unhealthy: NOT_SERVING from {worker} for service \"app.Worker\" (the app says \
                 it cannot serve)"
            )
        )
    );
    assert_eq!(check(&[&whole]).0, 0, "the server as a whole still serves");

    let unknown = server.url("app.Nope");
    assert_eq!(
        check(&[&unknown]),
        (
            1,
            format!(
                "unhealthy: NOT_FOUND from {unknown}: its health service knows no service \
                 \"app.Nope\" (check the name after the port; it must be one the server \
                 registered with set())"
            )
        )
    );
}

#[test]
fn a_server_without_a_health_service_is_unimplemented() {
    let server = Server::start(&["--no-health"]);
    let url = server.url("");
    assert_eq!(
        check(&[&url]),
        (
            1,
            format!(
                "unhealthy: UNIMPLEMENTED from {url}: the server has no grpc.health.v1.Health \
                 service: Method not found! (register one, e.g. grpcio-health-checking's \
                 HealthServicer)"
            )
        )
    );
}

#[test]
fn refused_a_hang_and_not_grpc_fail_within_the_timeout() {
    let port = free_port();
    assert_eq!(
        check(&[&format!("grpc://127.0.0.1:{port}")]),
        (
            1,
            format!(
                "unhealthy: connection refused to 127.0.0.1:{port} (is the app listening? \
                 keepwell probed 127.0.0.1:{port}; the app may listen on another address or \
                 port, see its --bind)"
            )
        )
    );

    let hung = Server::start(&["--hang"]);
    let url = hung.url("");
    let started = Instant::now();
    let (code, line) = check(&["--timeout", "500ms", &url]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{line}");
    // keepwell's deadline fires first; should the server's own (grpc-timeout) answer reach
    // it in the same instant, that answer is the verdict.
    assert!(
        line == format!(
            "unhealthy: no answer within 500ms from {url} (is the app hung or overloaded? a \
             slow health endpoint needs a longer --timeout)"
        ) || line.starts_with(&format!("unhealthy: DEADLINE_EXCEEDED (4) from {url}")),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(3),
        "a hung server held keepwell check for {took:?}"
    );

    // An HTTP/1 server on the port: not gRPC.
    let http = App::http(Behaviour::Status(200));
    let (code, line) = check(&[&format!("grpc://127.0.0.1:{}", http.port())]);
    assert_eq!(code, 1);
    assert!(
        line.starts_with(&format!(
            "unhealthy: bad HTTP/2 answer from grpc://127.0.0.1:{}",
            http.port()
        )) && line.ends_with(
            "(is it a gRPC server on that port? keepwell speaks plaintext HTTP/2, not TLS)"
        ),
        "{line}"
    );
}

#[test]
fn the_supervisor_restarts_a_service_that_stops_serving() {
    let mut server = Server::start(&[]);
    let url = server.url("app.Worker");
    let kw = keepwell(&[
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "2",
        "--grace",
        "1s",
        "--",
        "sleep",
        "1000",
    ])
    .start();
    let first = kw.wait_child(DEADLINE);
    let log = kw.wait_log(DEADLINE, "health changed: starting → healthy");
    assert!(log.contains(&format!("detail=SERVING from {url}")), "{log}");
    server.set("app.Worker", "NOT_SERVING");
    let log = kw.wait_log(DEADLINE, "health changed: healthy → unhealthy");
    assert!(
        log.contains(&format!(
            "detail=NOT_SERVING from {url} for service \"app.Worker\" (the app says it cannot \
             serve)"
        )),
        "{log}"
    );
    kw.wait_log(
        DEADLINE,
        "restarting in 100ms because the app stayed unhealthy",
    );
    server.set("app.Worker", "SERVING");
    wait_for(DEADLINE, "a new child", || {
        kw.child().filter(|&pid| pid != first)
    });
    wait_until(DEADLINE, "healthy again", || {
        kw.stderr()
            .matches("health changed: starting → healthy")
            .count()
            == 2
    });
}
