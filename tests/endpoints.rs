//! Serving probes (SPEC "Serving probes" and "Health"): `/livez`, `/readyz`, `/startupz`,
//! `/status` and `/metrics` through every phase of the app, the methods and paths the server
//! accepts, `--drain`, and clients that hold, stall or flood the server. All against the real
//! binary, with a Python app whose `/health` a test switches with a file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);
/// keepwell's header-read timeout (src/server.rs): a connection that has not sent a whole
/// request head by then is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Short health timing so phases change within a second.
const FAST_HEALTH: &[&str] = &[
    "--health-interval",
    "200ms",
    "--health-start-interval",
    "100ms",
    "--health-retries",
    "2",
    "--health-timeout",
    "500ms",
    "--grace",
    "2s",
];

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// keepwell with `--listen`, supervising tests/support/switch_app.py.
struct SwitchApp {
    kw: Keepwell,
    /// keepwell's `--listen` address.
    listen: SocketAddr,
    /// The app's own port.
    app: SocketAddr,
    files: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Boot {
    /// The app listens at once, healthy or not.
    Listening { healthy: bool },
    /// The app does not listen until the test says so: its health URL refuses connections.
    NotListening,
}

impl SwitchApp {
    /// `health`: whether keepwell gets `--health-url` for the app's /health.
    fn start(extra: &[&str], boot: Boot, health: bool, pid1: bool) -> SwitchApp {
        let files = tempfile::tempdir().expect("temp dir");
        let listen = loopback(free_port());
        let app = loopback(free_port());
        let path = |name: &str| files.path().join(name).to_string_lossy().into_owned();
        let (listen_arg, app_port) = (listen.to_string(), app.port().to_string());
        let health_url = format!("http://{app}/health");
        let mut args = vec!["--listen", &listen_arg];
        if health {
            args.extend(["--health-url", &health_url]);
            args.extend(FAST_HEALTH);
        } else {
            args.extend(["--grace", "2s"]);
        }
        args.extend(extra);
        let (script, health_file, events, bind_when) = (
            support("switch_app.py"),
            path("healthy"),
            path("events"),
            path("bind"),
        );
        args.extend(["--", "python3", &script, &app_port, &health_file, &events]);
        if boot == (Boot::Listening { healthy: true }) {
            fs::write(&health_file, "").expect("health file");
        }
        let mut launch = keepwell(&args);
        if boot == Boot::NotListening {
            launch = launch.env("BIND_WHEN", &bind_when);
        }
        if pid1 {
            launch = launch.pid1();
        }
        let kw = launch.start();
        let started = SwitchApp {
            kw,
            listen,
            app,
            files,
        };
        wait_until(DEADLINE, "keepwell to serve --listen", || {
            http::status(listen, "/status") == 200
        });
        if boot != Boot::NotListening {
            started.wait_listening();
        }
        started
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// Let a NotListening app bind its port.
    fn let_it_listen(&self) {
        fs::write(self.file("bind"), "").expect("bind file");
        self.wait_listening();
    }

    fn wait_listening(&self) {
        wait_until(DEADLINE, "the app to listen", || {
            self.events().contains("listening")
        });
    }

    fn set_healthy(&self, healthy: bool) {
        if healthy {
            fs::write(self.file("healthy"), "").expect("health file");
        } else {
            fs::remove_file(self.file("healthy")).expect("remove the health file");
        }
    }

    fn events(&self) -> String {
        read(&self.file("events"))
    }

    /// When the app got SIGTERM, in Unix time, if it did.
    fn term_at(&self) -> Option<f64> {
        self.events()
            .lines()
            .find_map(|l| l.strip_prefix("TERM "))
            .map(|t| t.parse().expect("a time after TERM"))
    }

    fn status(&self) -> Value {
        status_json(self.listen)
    }

    /// (/livez, /readyz, /startupz)
    fn probes(&self) -> (u16, u16, u16) {
        probe_codes(self.listen)
    }

    fn wait_probes(&self, want: (u16, u16, u16), what: &str) {
        wait_until(DEADLINE, what, || self.probes() == want);
    }

    fn metrics(&self) -> Metrics {
        let response = http::get(self.listen, "/metrics").expect("GET /metrics");
        assert_eq!(response.status, 200);
        parse_metrics(&response.text())
    }
}

fn probe_codes(listen: SocketAddr) -> (u16, u16, u16) {
    (
        http::status(listen, "/livez"),
        http::status(listen, "/readyz"),
        http::status(listen, "/startupz"),
    )
}

fn status_json(listen: SocketAddr) -> Value {
    let response = http::get(listen, "/status").expect("GET /status");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", response.text()))
}

fn num(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {value}"))
}

// ---------------------------------------------------------------------------------------------
// Every endpoint through every phase

#[test]
fn endpoints_follow_the_app_from_booting_to_healthy_to_unhealthy_and_back() {
    let app = SwitchApp::start(
        &["--on-unhealthy", "ignore", "--health-start-period", "60s"],
        Boot::NotListening,
        true,
        false,
    );

    // Booting: the health URL refuses connections, the start period is long.
    wait_until(DEADLINE, "/livez once the child runs", || {
        http::status(app.listen, "/livez") == 200
    });
    let pid = app.kw.wait_child(DEADLINE);
    wait_until(
        DEADLINE,
        "five failed probes inside the start period",
        || {
            assert_eq!(
                app.probes(),
                (200, 503, 503),
                "booting: live, not ready, not started"
            );
            let status = app.status();
            assert_eq!(status["state"], "starting", "{status}");
            assert_eq!(status["child_pid"], pid, "{status}");
            num(&status, "probes_failed") >= 5.0
        },
    );
    let status = app.status();
    assert_eq!(status["last_probe"]["ok"], false, "{status}");
    assert_eq!(
        app.metrics()
            .value("keepwell_health_state", &[("state", "starting")]),
        1.0
    );

    // Healthy: everything answers 200.
    app.set_healthy(true);
    app.let_it_listen();
    app.wait_probes((200, 200, 200), "healthy: all 200");
    let status = app.status();
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["child_pid"], pid, "{status}");
    assert_eq!(status["last_probe"]["ok"], true, "{status}");

    // Unhealthy under --on-unhealthy ignore: not ready, but live (ignore means a liveness
    // probe must not restart it either), and it did start once.
    app.set_healthy(false);
    app.wait_probes(
        (200, 503, 200),
        "unhealthy under ignore: /readyz 503, /livez and /startupz 200",
    );
    let failed = num(&app.status(), "probes_failed");
    wait_until(
        DEADLINE,
        "three more failed probes, still unhealthy",
        || {
            assert_eq!(app.probes(), (200, 503, 200), "unhealthy stays unhealthy");
            let status = app.status();
            assert_eq!(status["state"], "unhealthy", "{status}");
            assert_eq!(status["child_pid"], pid, "ignore: no restart: {status}");
            assert_eq!(status["restarts"], 0, "{status}");
            num(&status, "probes_failed") >= failed + 3.0
        },
    );
    assert_eq!(app.kw.child(), Some(pid));
    let metrics = app.metrics();
    assert_eq!(metrics.value("keepwell_live", &[]), 1.0);
    assert_eq!(metrics.value("keepwell_ready", &[]), 0.0);
    assert_eq!(
        metrics.value("keepwell_health_state", &[("state", "unhealthy")]),
        1.0
    );
    assert_eq!(metrics.value("keepwell_last_probe_success", &[]), 0.0);

    // Recovered: one success (the default success threshold) makes it healthy again.
    app.set_healthy(true);
    app.wait_probes((200, 200, 200), "recovered: all 200 again");
    assert_eq!(app.status()["child_pid"], pid);

    let mut kw = app.kw;
    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
}

#[test]
fn drain_drops_readiness_at_once_and_stops_the_child_only_after_it() {
    let drain = Duration::from_secs(2);
    let app = SwitchApp::start(
        &["--drain", "2s"],
        Boot::Listening { healthy: true },
        true,
        true,
    );
    app.wait_probes((200, 200, 200), "healthy before the drain");
    let child = app.kw.wait_child(DEADLINE);

    let sent_unix = now_unix();
    let sent = Instant::now();
    app.kw.signal(Signal::SIGTERM);
    wait_until(
        Duration::from_millis(500),
        "/readyz 503 right after TERM",
        || http::status(app.listen, "/readyz") == 503,
    );
    eprintln!("/readyz turned 503 {:?} after TERM", sent.elapsed());
    let status = app.status();
    assert_eq!(status["phase"], "draining", "{status}");
    assert_eq!(status["draining"], true, "{status}");

    // During the drain: keepwell is live, the child has not been told anything and still serves.
    let mut checks = 0;
    while sent.elapsed() < drain / 2 {
        assert_eq!(app.probes(), (200, 503, 200), "during the drain");
        assert!(is_alive(child), "the child must run through the drain");
        assert_eq!(app.term_at(), None, "the child got TERM during the drain");
        let own = http::get(app.app, "/health").expect("the app serves during the drain");
        assert_eq!(own.status, 200);
        checks += 1;
    }
    assert!(checks > 0);

    let mut kw = app.kw;
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    let term_at = app_term_at(&app.files);
    let delay = term_at - sent_unix;
    eprintln!("the child got TERM {delay:.3}s after keepwell did (--drain 2s)");
    assert!(
        delay >= drain.as_secs_f64() - 0.1,
        "the stop must follow the drain: TERM reached the child after {delay:.3}s"
    );
    assert!(delay < drain.as_secs_f64() + 3.0, "TERM after {delay:.3}s");
    assert!(!is_alive(child));
    let log = kw.stderr();
    assert!(log.contains("/readyz now answers 503"), "{log}");
}

#[test]
fn a_second_term_during_the_drain_stops_the_child_at_once() {
    let app = SwitchApp::start(
        &["--drain", "30s"],
        Boot::Listening { healthy: true },
        true,
        false,
    );
    app.wait_probes((200, 200, 200), "healthy before the drain");
    app.kw.signal(Signal::SIGTERM);
    wait_until(DEADLINE, "/readyz 503 in the drain", || {
        http::status(app.listen, "/readyz") == 503
    });
    assert_eq!(
        app.term_at(),
        None,
        "the child got TERM at the start of the drain"
    );
    let second = now_unix();
    app.kw.signal(Signal::SIGTERM);
    let mut kw = app.kw;
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    let delay = app_term_at(&app.files) - second;
    eprintln!("after a second TERM the child got TERM in {delay:.3}s (--drain 30s)");
    assert!(
        delay < 5.0,
        "the second TERM must end the drain: {delay:.3}s"
    );
}

#[test]
fn startupz_turns_503_again_when_the_child_restarts() {
    let app = SwitchApp::start(
        &["--health-start-period", "60s"],
        Boot::Listening { healthy: true },
        true,
        false,
    );
    app.wait_probes((200, 200, 200), "healthy");
    let first = app.kw.wait_child(DEADLINE);
    // Unhealthy under the default --on-unhealthy restart: a new child, which has not been
    // healthy yet and stays in its start period while /health answers 500.
    app.set_healthy(false);
    wait_until(DEADLINE, "a new child after the restart", || {
        app.kw.child().is_some_and(|pid| pid != first) && app.status()["restarts"] == 1
    });
    app.wait_probes(
        (200, 503, 503),
        "the new child: live, not ready, not started",
    );
    let status = app.status();
    assert_eq!(status["state"], "starting", "{status}");
    app.set_healthy(true);
    app.wait_probes((200, 200, 200), "the new child is healthy and started");
}

#[test]
fn listen_accepts_every_documented_address_form() {
    for (form, reach) in [
        (":{}", "127.0.0.1:{}"),
        ("0.0.0.0:{}", "127.0.0.1:{}"),
        ("127.0.0.1:{}", "127.0.0.1:{}"),
        ("[::1]:{}", "[::1]:{}"),
    ] {
        let port = free_port().to_string();
        let arg = form.replace("{}", &port);
        let addr: SocketAddr = reach.replace("{}", &port).parse().expect("an address");
        let kw = keepwell(&["--listen", &arg, "--", "sleep", "600"]).start();
        wait_until(DEADLINE, &format!("/livez on --listen {arg}"), || {
            http::status(addr, "/livez") == 200
        });
        drop(kw);
    }
}

fn app_term_at(files: &tempfile::TempDir) -> f64 {
    read(&files.path().join("events"))
        .lines()
        .find_map(|l| l.strip_prefix("TERM "))
        .expect("the app got TERM")
        .parse()
        .expect("a time after TERM")
}

#[test]
fn without_a_health_url_the_app_is_healthy_while_the_child_runs() {
    let app = SwitchApp::start(
        &["--restart", "always"],
        Boot::Listening { healthy: false },
        false,
        false,
    );
    app.wait_probes((200, 200, 200), "healthy while the child runs");
    let first = app.kw.wait_child(DEADLINE);
    let status = app.status();
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["last_probe"], Value::Null, "{status}");
    assert_eq!(status["health_url"], Value::Null, "{status}");
    let metrics = app.metrics();
    assert_eq!(
        metrics.value("keepwell_probes_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(metrics.value("keepwell_child_up", &[]), 1.0);

    // Between the child's death and the restart nothing runs: not live, not ready, not started.
    kill(Pid::from_raw(first), Signal::SIGKILL).expect("kill the child");
    app.wait_probes((503, 503, 503), "no child during the backoff");
    let status = app.status();
    assert_eq!(status["child_pid"], Value::Null, "{status}");
    assert_eq!(app.metrics().value("keepwell_child_up", &[]), 0.0);

    app.wait_probes((200, 200, 200), "healthy again with the new child");
    let status = app.status();
    assert_eq!(status["restarts"], 1, "{status}");
    assert_ne!(status["child_pid"], first, "{status}");
}

// ---------------------------------------------------------------------------------------------
// Methods, paths, /status, /metrics

const ENDPOINTS: &[&str] = &["/livez", "/readyz", "/startupz", "/status", "/metrics"];

/// Send raw bytes, read until the server closes; the whole answer.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = http::connect(addr).expect("connect");
    stream.write_all(bytes).expect("send");
    // Half-close, so the server ends the connection after its answer instead of keeping it.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn head_is_get_without_a_body_other_methods_are_405_unknown_paths_404() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    for path in ENDPOINTS {
        let answer = raw(
            app.listen,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 "), "HEAD {path}: {text}");
        let (_, body) = text.split_once("\r\n\r\n").expect("a header block");
        assert_eq!(body, "", "HEAD {path} must not send a body");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ENDPOINTS.iter().chain(&["/nope"]) {
            let response = http::request(app.listen, method, path).expect("request");
            assert_eq!(response.status, 405, "{method} {path}");
            assert_eq!(
                response.header("allow"),
                Some("GET, HEAD"),
                "{method} {path}"
            );
        }
    }
    for path in [
        "/",
        "/nope",
        "/livez/",
        "/LIVEZ",
        "/health",
        "/metrics/x",
        "/status.json",
    ] {
        let response = http::get(app.listen, path).expect("GET");
        assert_eq!(response.status, 404, "GET {path}: {}", response.text());
        assert_eq!(
            http::request(app.listen, "HEAD", path)
                .expect("HEAD")
                .status,
            404
        );
    }
    // A query string does not change the answer (kubelet may add none, people may).
    assert_eq!(http::status(app.listen, "/livez?verbose=1"), 200);
    // Probe answers are plain text and never cached.
    let response = http::get(app.listen, "/readyz").expect("GET /readyz");
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

#[test]
fn a_prober_that_half_closes_after_its_request_is_answered() {
    // `printf 'GET /livez HTTP/1.0\r\n\r\n' | nc -N host 9000` shuts down its write side
    // right after the request; before half_close(true), some of these got no answer.
    let (_kw, listen) = sleeper();
    for i in 0..200 {
        let answer = raw(listen, b"GET /livez HTTP/1.0\r\n\r\n");
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n")
                || answer.starts_with(b"HTTP/1.0 200 OK\r\n"),
            "attempt {i}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[test]
fn status_is_json_with_state_child_user_restarts_last_probe_and_uptime() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    let child = app.kw.wait_child(DEADLINE);
    let response = http::get(app.listen, "/status").expect("GET /status");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let status: Value = serde_json::from_slice(&response.body).expect("/status is JSON");
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["child_pid"], child, "{status}");
    let uid = nix::unistd::getuid();
    let user = status["user"].as_str().expect("user is a string");
    assert!(user.contains(&format!("uid {uid}")), "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    let probe = &status["last_probe"];
    let at = num(probe, "at_unix");
    assert!(
        (now_unix() - at).abs() < 10.0,
        "last probe at {at}: {status}"
    );
    assert_eq!(probe["ok"], true, "{status}");
    assert!(
        !probe["detail"].as_str().expect("detail").is_empty(),
        "{status}"
    );
    let latency = num(probe, "latency_ms");
    assert!((0.0..500.0).contains(&latency), "{status}");
    let uptime = num(&status, "uptime_seconds");
    assert!((0.0..60.0).contains(&uptime), "{status}");
    wait_until(DEADLINE, "uptime to grow", || {
        num(&app.status(), "uptime_seconds") > uptime
    });
}

/// A strictly parsed Prometheus text exposition: samples by (name, sorted labels).
struct Metrics {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    families: BTreeMap<String, String>,
}

impl Metrics {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics"))
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` → sorted pairs; strict about quoting and escapes.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("bad label set in {line:?}"));
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(
            is_metric_name(name) && !name.contains(':'),
            "bad label name {name:?} in {line:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else {
            assert!(rest.is_empty(), "junk after a label in {line:?}");
        }
    }
    labels.sort();
    labels
}

/// Parse the text format strictly: every sample belongs to the family declared just before it
/// with `# HELP` and `# TYPE`; values are floats; no sample twice; the text ends with a newline.
fn parse_metrics(text: &str) -> Metrics {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut samples = BTreeMap::new();
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut help: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(doc)) => {
                    assert!(is_metric_name(name), "bad name in {line:?}");
                    assert!(!doc.trim().is_empty(), "empty HELP in {line:?}");
                    assert!(help.insert(name.to_string()), "HELP twice for {name}");
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(help.contains(name), "TYPE before HELP for {name}");
                    assert!(
                        ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                        "bad TYPE in {line:?}"
                    );
                    assert!(
                        families.insert(name.into(), kind.into()).is_none(),
                        "TYPE twice for {name}"
                    );
                    current = Some((name.to_string(), kind.to_string()));
                }
                _ => panic!("a comment that is neither HELP nor TYPE: {line:?}"),
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "blank line in /metrics");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a float in {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], parse_labels(&series[i..], line)),
            None => (series, Vec::new()),
        };
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let belongs = name == family
            || (kind == "summary" || kind == "histogram")
                && ["_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()));
        assert!(
            belongs,
            "{name} is not part of the family {family} declared before it"
        );
        assert!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "sample twice: {line:?}"
        );
    }
    Metrics { samples, families }
}

#[test]
fn metrics_is_strict_prometheus_text_with_every_documented_series() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    let response = http::get(app.listen, "/metrics").expect("GET /metrics");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let metrics = parse_metrics(&response.text());
    for (family, kind) in [
        ("keepwell_child_up", "gauge"),
        ("keepwell_health_state", "gauge"),
        ("keepwell_ready", "gauge"),
        ("keepwell_live", "gauge"),
        ("keepwell_restarts_total", "counter"),
        ("keepwell_probes_total", "counter"),
        ("keepwell_probe_duration_seconds", "summary"),
        ("keepwell_last_probe_success", "gauge"),
        ("keepwell_last_probe_duration_seconds", "gauge"),
        ("keepwell_last_probe_timestamp_seconds", "gauge"),
        ("keepwell_uptime_seconds", "gauge"),
    ] {
        assert_eq!(
            metrics.families.get(family).map(String::as_str),
            Some(kind),
            "# TYPE of {family}"
        );
    }
    assert_eq!(metrics.value("keepwell_child_up", &[]), 1.0);
    for (state, want) in [("starting", 0.0), ("healthy", 1.0), ("unhealthy", 0.0)] {
        assert_eq!(
            metrics.value("keepwell_health_state", &[("state", state)]),
            want,
            "{state}"
        );
    }
    assert_eq!(metrics.value("keepwell_ready", &[]), 1.0);
    assert_eq!(metrics.value("keepwell_live", &[]), 1.0);
    assert_eq!(metrics.value("keepwell_restarts_total", &[]), 0.0);
    let ok = metrics.value("keepwell_probes_total", &[("result", "success")]);
    let failed = metrics.value("keepwell_probes_total", &[("result", "failure")]);
    // Probes may fail before the app listens; they count, inside the start period or not.
    assert!(ok >= 1.0, "{ok} successful probes");
    assert_eq!(
        metrics.value("keepwell_probe_duration_seconds_count", &[]),
        ok + failed
    );
    let sum = metrics.value("keepwell_probe_duration_seconds_sum", &[]);
    assert!(
        sum > 0.0 && sum < ok,
        "probe seconds sum {sum} for {ok} probes"
    );
    assert_eq!(metrics.value("keepwell_last_probe_success", &[]), 1.0);
    let last = metrics.value("keepwell_last_probe_duration_seconds", &[]);
    assert!(last > 0.0 && last < 0.5, "last probe took {last}s");
    let at = metrics.value("keepwell_last_probe_timestamp_seconds", &[]);
    assert!((now_unix() - at).abs() < 10.0, "last probe at {at}");
    let uptime = metrics.value("keepwell_uptime_seconds", &[]);
    assert!((0.0..60.0).contains(&uptime), "uptime {uptime}");

    // The counters count: more probes later, never fewer.
    wait_until(DEADLINE, "more successful probes", || {
        app.metrics()
            .value("keepwell_probes_total", &[("result", "success")])
            > ok
    });
}

#[test]
fn nothing_over_http_changes_anything() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    let child = app.kw.wait_child(DEADLINE);
    let paths = [
        "/livez",
        "/readyz",
        "/startupz",
        "/status",
        "/metrics",
        "/restart",
        "/stop",
        "/kill",
        "/signal?sig=TERM",
        "/quitquitquit",
        "/shutdown",
        "/exit",
        "/debug/pprof",
        "/../etc/passwd",
        "/status/restart",
        "//livez",
        "/*",
    ];
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "GET", "HEAD", "OPTIONS", "TRACE",
    ] {
        for path in paths {
            let response = http::request(app.listen, method, path).expect("an answer");
            assert!(
                [200, 404, 405].contains(&response.status),
                "{method} {path}: {}",
                response.status
            );
        }
    }
    // Bodies, garbage and protocol games get an error status or a close, never an action.
    for bytes in [
        &b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nTERM"[..],
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",
        b"KILL / HTTP/1.1\r\n\r\n",
        b"GET /livez HTTP/9.9\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let answer = raw(app.listen, bytes);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{:?} was answered {text:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // An upgrade request is served as the plain GET it is; nothing is upgraded.
    let answer = raw(
        app.listen,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n",
    );
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(app.probes(), (200, 200, 200));
    let status = app.status();
    assert_eq!(status["child_pid"], child, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["phase"], "running", "{status}");
    assert_eq!(app.kw.child(), Some(child));
    assert!(is_alive(app.kw.pid));
    let log = app.kw.stderr();
    assert!(!log.contains("forwarded"), "{log}");
    assert!(!log.contains("stopping"), "{log}");
    assert_eq!(app.events().matches("TERM").count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile clients

/// keepwell with --listen and no health URL, supervising a sleeping child.
fn sleeper() -> (Keepwell, SocketAddr) {
    let listen = loopback(free_port());
    let listen_arg = listen.to_string();
    let kw = keepwell(&["--listen", &listen_arg, "--", "sleep", "600"]).start();
    wait_until(DEADLINE, "/livez 200", || {
        http::status(listen, "/livez") == 200
    });
    (kw, listen)
}

/// One GET /livez on a fresh connection; how long the answer took.
fn timed_livez(listen: SocketAddr) -> Duration {
    let asked = Instant::now();
    let response = http::get(listen, "/livez").expect("GET /livez answered");
    assert_eq!(response.status, 200);
    asked.elapsed()
}

/// Wait until the server has closed every one of these connections.
fn wait_closed_by_server(mut streams: Vec<TcpStream>, deadline: Duration, what: &str) {
    let until = Instant::now() + deadline;
    for stream in &mut streams {
        let left = until.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut sink = [0u8; 1024];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{what}: still open after {deadline:?} ({e})"),
            }
        }
    }
}

fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open `count` connections that send `send` and nothing more, keeping at most `held` of
/// them (keepwell's bound) in keepwell's hands. They go in batches, each waited for in
/// keepwell's file descriptors: a connect succeeds once the kernel has queued it, and a burst
/// longer than the listen backlog would be accepted only after SYN-ACK retransmissions, seconds
/// later. Two descriptors of slack cover earlier requests the server had not closed yet.
fn hold(
    kw: &Keepwell,
    listen: SocketAddr,
    count: usize,
    held: usize,
    send: &[u8],
) -> Vec<TcpStream> {
    const BATCH: usize = 50;
    let before = open_fds(kw.pid);
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        for _ in 0..BATCH.min(count - streams.len()) {
            let mut stream = http::connect(listen).expect("connect");
            if !send.is_empty() {
                stream.write_all(send).expect("send");
            }
            streams.push(stream);
        }
        let want = before + streams.len().min(held);
        wait_until(
            DEADLINE,
            &format!("keepwell to hold {} connections", want - before),
            || open_fds(kw.pid) + 2 >= want,
        );
    }
    streams
}

#[test]
fn idle_and_stalled_connections_never_starve_livez_and_are_closed() {
    let (kw, listen) = sleeper();

    let idle = hold(&kw, listen, 300, 300, b"");
    let took = timed_livez(listen);
    eprintln!("/livez with 300 idle connections held: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_closed_by_server(idle, HEADER_READ_TIMEOUT + DEADLINE, "an idle connection");

    let stalled = hold(&kw, listen, 300, 300, b"GET /livez HT");
    let took = timed_livez(listen);
    eprintln!("/livez with 300 stalled request lines held: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_closed_by_server(
        stalled,
        HEADER_READ_TIMEOUT + DEADLINE,
        "a stalled connection",
    );

    // Slowloris: a header trickled a byte at a time does not keep its connection alive.
    let mut slow = http::connect(listen).expect("connect");
    slow.write_all(b"GET /livez HTTP/1.1\r\nX-Slow: ")
        .expect("send");
    let opened = Instant::now();
    let closed = loop {
        if slow.write_all(b"a").is_err() {
            break opened.elapsed();
        }
        let mut sink = [0u8; 64];
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        match slow.read(&mut sink) {
            Ok(_) => break opened.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break opened.elapsed(),
            Err(_) => {}
        }
        assert!(
            opened.elapsed() < HEADER_READ_TIMEOUT + DEADLINE,
            "a trickled header kept its connection open"
        );
    };
    eprintln!("a trickled header was cut off after {closed:?}");
    assert!(
        closed >= HEADER_READ_TIMEOUT - Duration::from_millis(200),
        "{closed:?}"
    );

    assert!(timed_livez(listen) < Duration::from_secs(1));
    assert!(is_alive(kw.pid));
}

#[test]
fn past_the_connection_bound_the_oldest_is_evicted_and_livez_answers_at_once() {
    let (kw, listen) = sleeper();
    // keepwell keeps at most 512 connections (src/server.rs); a new one evicts the oldest.
    let held = hold(&kw, listen, 600, 512, b"");
    let took = timed_livez(listen);
    eprintln!("/livez with 600 idle connections opened (bound 512): {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The first connections opened were the ones evicted: the server closed them already.
    let oldest: Vec<TcpStream> = held.into_iter().take(50).collect();
    wait_closed_by_server(oldest, Duration::from_secs(1), "an evicted connection");
}

fn vm_rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS of keepwell")
}

#[test]
fn a_flood_is_answered_while_signals_still_reach_the_child_and_memory_stays_small() {
    let listen = loopback(free_port());
    let listen_arg = listen.to_string();
    let out_dir = tempfile::tempdir().expect("dir");
    let out = out_dir.path().join("signals");
    let (script, out_arg) = (
        support("echo_signals.py"),
        out.to_string_lossy().to_string(),
    );
    // The health URL is a TCP port the test accepts and closes: probes every 200 ms.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind a probe target");
    let health_url = format!("tcp://{}", target.local_addr().expect("address"));
    thread::spawn(move || target.incoming().for_each(drop));
    let mut kw = keepwell(&[
        "--listen",
        &listen_arg,
        "--health-url",
        &health_url,
        "--health-interval",
        "200ms",
        "--health-start-interval",
        "100ms",
        "--",
        "python3",
        &script,
        &out_arg,
    ])
    .env("EXIT_ON", "TERM")
    .pid1()
    .start();
    wait_until(DEADLINE, "the echo child", || read(&out).contains("ready"));
    wait_until(DEADLINE, "/readyz 200", || {
        http::status(listen, "/readyz") == 200
    });
    let rss_before = vm_rss_kib(kw.pid);

    const THREADS: usize = 8;
    const REQUESTS: usize = 1500;
    let flood: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let keep_alive = t % 2 == 0;
                let mut client = None;
                let mut answered = 0;
                for i in 0..REQUESTS {
                    let path = if i % 2 == 0 { "/metrics" } else { "/livez" };
                    let response = if keep_alive {
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => client.insert(http::Client::connect(listen).expect("connect")),
                        };
                        match c.send("GET", path) {
                            Ok(r) => Ok(r),
                            // The server may end a keep-alive connection: reconnect once.
                            Err(_) => {
                                let c = client.insert(http::Client::connect(listen).expect("re"));
                                c.send("GET", path)
                            }
                        }
                    } else {
                        http::get(listen, path)
                    };
                    match response {
                        Ok(r) if r.status == 200 => answered += 1,
                        Ok(r) => panic!("thread {t}: {path} answered {}", r.status),
                        Err(e) => panic!("thread {t}: {path} unanswered: {e}"),
                    }
                }
                answered
            })
        })
        .collect();

    // While the flood runs: signals reach the child promptly, probes keep their pace, memory
    // stays small.
    let started = Instant::now();
    let probes_before = num(&status_json(listen), "probes_ok");
    let mut rss_max = rss_before;
    let mut latencies = Vec::new();
    let mut probe_age_max: f64 = 0.0;
    while !flood.iter().all(|h| h.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood took too long"
        );
        rss_max = rss_max.max(vm_rss_kib(kw.pid));
        let status = status_json(listen);
        probe_age_max = probe_age_max.max(now_unix() - num(&status["last_probe"], "at_unix"));
        if latencies.len() < 5 {
            let before = echoed(&out).len();
            let sent = Instant::now();
            kw.signal(Signal::SIGUSR1);
            wait_until(
                Duration::from_secs(1),
                "USR1 at the child during the flood",
                || echoed(&out).len() > before,
            );
            latencies.push(sent.elapsed());
        } else {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let took = started.elapsed();
    let answered: usize = flood
        .into_iter()
        .map(|h| h.join().expect("a flood thread"))
        .sum();
    let rss_after = vm_rss_kib(kw.pid);
    let probes = num(&status_json(listen), "probes_ok") - probes_before;
    eprintln!(
        "flood: {probes} probes succeeded during it; the last probe was at most \
         {probe_age_max:.3}s old (--health-interval 200ms)"
    );
    eprintln!(
        "flood: {answered} requests from {THREADS} clients in {took:?}; USR1 reached the child \
         in {latencies:?}; keepwell VmRSS before {rss_before} KiB, max during {rss_max} KiB, \
         after {rss_after} KiB"
    );
    assert_eq!(answered, THREADS * REQUESTS);
    assert!(!latencies.is_empty(), "no signal was sent during the flood");
    assert_eq!(
        echoed(&out),
        vec!["USR1".to_string(); latencies.len()],
        "each USR1 sent reaches the child once"
    );
    assert!(
        rss_max < 16 * 1024,
        "keepwell's VmRSS reached {rss_max} KiB"
    );
    assert!(probe_age_max < 1.0, "a probe was {probe_age_max:.3}s late");
    assert_eq!(status_json(listen)["state"], "healthy");

    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
}

// ---------------------------------------------------------------------------------------------
// --listen errors

fn run_keepwell(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(KEEPWELL)
        .args(args)
        .env_remove("KEEPWELL_HEALTH_URL")
        .env_remove("KEEPWELL_LISTEN")
        .envs(env.iter().copied())
        .output()
        .expect("run keepwell");
    (
        output.status.code().expect("an exit code"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn listen_with_a_bad_address_is_a_usage_error_that_shows_the_forms() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("started");
    let marker_arg = marker.to_string_lossy().to_string();
    let expected = "expected an address such as :9000, 0.0.0.0:9000 or 127.0.0.1:9000";
    for bad in ["nonsense", ":x", "9000", "127.0.0.1:99999", "127.0.0.1"] {
        let (code, stderr) = run_keepwell(&["--listen", bad, "--", "touch", &marker_arg], &[]);
        assert_eq!(code, 2, "--listen {bad}: {stderr}");
        assert_eq!(
            stderr,
            format!("keepwell: --listen {bad:?} is not valid: {expected}\n")
        );
    }
    let (code, stderr) = run_keepwell(
        &["--", "touch", &marker_arg],
        &[("KEEPWELL_LISTEN", "nonsense")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        format!("keepwell: KEEPWELL_LISTEN \"nonsense\" is not valid: {expected}\n")
    );
    assert!(!marker.exists(), "nothing may start after a usage error");
}

#[test]
fn listen_on_a_port_in_use_exits_2_naming_listen() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("started");
    let marker_arg = marker.to_string_lossy().to_string();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (code, stderr) = run_keepwell(&["--listen", &addr, "--", "touch", &marker_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("--listen {addr}")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--listen {addr}: cannot bind: Address already in use (os error 98) (another process \
             already listens on that port: choose a free one or stop it)"
        )),
        "{stderr}"
    );
    assert!(
        !marker.exists(),
        "nothing may start when --listen cannot bind"
    );
}

#[test]
fn endless_request_headers_are_cut_at_8_kib_and_memory_stays_bounded() {
    let (kw, listen) = sleeper();
    // One oversized head: refused with 431, as hyper does past its buffer.
    let mut stream = http::connect(listen).expect("connect");
    let mut request = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend(b"\r\n\r\n");
    let _ = stream.write_all(&request);
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).expect("an answer");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // 200 clients each pushing 100 KB of never-ending headers: keepwell holds at most 8 KiB
    // of each (before, this was ~400 KiB each: 80 MB).
    let before = vm_rss_kib(kw.pid);
    let chunk = vec![b'a'; 100_000];
    let clients: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = http::connect(listen).ok()?;
            s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
            let _ = s.write_all(b"GET /livez HTTP/1.1\r\nX-Endless: ");
            let _ = s.write_all(&chunk);
            Some(s)
        })
        .collect();
    // Answered after the floods were read: the server thread has been through them.
    assert_eq!(http::status(listen, "/livez"), 200);
    let during = vm_rss_kib(kw.pid);
    eprintln!("VmRSS before {before} KiB, with 200 endless headers {during} KiB");
    assert!(during < before + 16 * 1024, "{before} -> {during} KiB");
    drop(clients);
}
