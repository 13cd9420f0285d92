//! Serving probes (SPEC "Serving probes" and "Health"): `/livez`, `/readyz`, `/startupz`,
//! `/status` and `/metrics` through every phase of the app, `--drain`, the `--listen` address
//! forms, and the methods and paths the server accepts. All against the real binary, with a
//! Python app whose `/health` a test switches with a file (tests/common/switch_app.rs).
//! Clients that hold, stall or flood the server are in endpoints_hostile.rs; bad `--listen`
//! values in usage.rs.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http;
use common::switch_app::{num, Boot, SwitchApp};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Every endpoint through every phase

#[test]
fn endpoints_follow_the_app_from_booting_to_healthy_to_unhealthy_and_back() {
    let mut app = SwitchApp::start(
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

    app.kw.signal(Signal::SIGTERM);
    assert_eq!(app.kw.wait_exit(DEADLINE), 0);
    assert_eq!(app.stopped_by().map(|(name, _)| name), Some("TERM".into()));
}

/// `--drain 2s` begun by `received`: /readyz turns 503 while the child still runs untouched and
/// serves; the child gets `expected` only once the drain is over.
fn drain_drops_readiness_at_once_and_stops_the_child_only_after_it(
    received: Signal,
    expected: &str,
) {
    let drain = Duration::from_secs(2);
    let mut app = SwitchApp::start(
        &["--drain", "2s"],
        Boot::Listening { healthy: true },
        true,
        true,
    );
    app.wait_probes((200, 200, 200), "healthy before the drain");
    let child = app.kw.wait_child(DEADLINE);

    let sent_unix = now_unix();
    let sent = Instant::now();
    app.kw.signal(received);
    wait_until(DEADLINE, &format!("/readyz 503 after {received}"), || {
        http::status(app.listen, "/readyz") == 503
    });
    // "At once" means before the drain is over: the child has not been told anything yet.
    assert_eq!(app.stopped_by(), None, "the drain is over already");
    eprintln!("/readyz turned 503 {:?} after {received}", sent.elapsed());
    let status = app.status();
    assert_eq!(status["phase"], "draining", "{status}");
    assert_eq!(status["draining"], true, "{status}");

    // During the drain: keepwell is live, the child has not been told anything and still serves.
    let mut checks = 0;
    while sent.elapsed() < drain / 2 {
        assert_eq!(app.probes(), (200, 503, 200), "during the drain");
        assert!(is_alive(child), "the child must run through the drain");
        assert_eq!(
            app.stopped_by(),
            None,
            "the child was stopped during the drain"
        );
        let own = http::get(app.app, "/health").expect("the app serves during the drain");
        assert_eq!(own.status, 200);
        checks += 1;
    }
    assert!(checks > 0);

    assert_eq!(app.kw.wait_exit(DEADLINE), 0);
    let (name, at) = app.stopped_by().expect("the app got a stop signal");
    let delay = at - sent_unix;
    eprintln!("the child got {name} {delay:.3}s after keepwell got {received} (--drain 2s)");
    // The app writes down when it took the signal, which is after keepwell sent it, which is
    // at least the drain after the test sent its own: a lower bound that load cannot break.
    assert!(
        delay >= drain.as_secs_f64(),
        "the stop must follow the drain: {name} reached the child after {delay:.3}s"
    );
    assert_eq!(name, expected, "the signal that ends the drain");
    assert!(!is_alive(child));
    let log = app.kw.stderr();
    assert!(log.contains("/readyz now answers 503"), "{log}");
}

#[test]
fn term_drains_then_the_child_gets_term() {
    drain_drops_readiness_at_once_and_stops_the_child_only_after_it(Signal::SIGTERM, "TERM");
}

#[test]
fn int_drains_like_term_then_the_child_gets_int() {
    // SPEC: under --drain, the signal that ends the drain is the one that started it.
    drain_drops_readiness_at_once_and_stops_the_child_only_after_it(Signal::SIGINT, "INT");
}

#[test]
fn a_second_term_during_the_drain_stops_the_child_at_once() {
    let mut app = SwitchApp::start(
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
        app.stopped_by(),
        None,
        "the child got its stop signal at the start of the drain"
    );
    let second = now_unix();
    app.kw.signal(Signal::SIGTERM);
    assert_eq!(app.kw.wait_exit(DEADLINE), 0);
    let (name, at) = app.stopped_by().expect("the app got a stop signal");
    let delay = at - second;
    eprintln!("after a second TERM the child got {name} in {delay:.3}s (--drain 30s)");
    assert_eq!(name, "TERM");
    // keepwell exited within DEADLINE: far inside the 30 s drain.
    assert!(delay < DEADLINE.as_secs_f64(), "{delay:.3}s");
}

#[test]
fn keepwell_check_stays_healthy_while_draining() {
    // README: `keepwell check` without a target exits 0 when the state is healthy, draining or
    // not; Docker's HEALTHCHECK knows no draining, and a container that drains is not sick.
    let app = SwitchApp::start(
        &["--drain", "30s"],
        Boot::Listening { healthy: true },
        true,
        true,
    );
    app.wait_probes((200, 200, 200), "healthy before the drain");
    let checked = app.kw.exec_output(&[KEEPWELL, "check"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    app.kw.signal(Signal::SIGTERM);
    wait_until(DEADLINE, "/readyz 503 in the drain", || {
        http::status(app.listen, "/readyz") == 503
    });
    assert_eq!(app.status()["phase"], "draining");
    let checked = app.kw.exec_output(&[KEEPWELL, "check"]);
    assert_eq!(checked.code, 0, "check while draining: {checked:?}");
    assert!(
        checked
            .stdout
            .starts_with("healthy: keepwell (pid 1) reports child pid "),
        "{checked:?}"
    );
    assert_eq!(checked.stderr, "");
    assert_eq!(app.status()["phase"], "draining", "the drain went on");
    assert_eq!(app.stopped_by(), None);
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

/// Whether a TCP connection to `addr` is refused (nothing listens there); any other outcome,
/// an answer or a timeout, is not.
fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, http::TIMEOUT),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// A `--listen` form, the addresses it must be reached through and those it must refuse
/// (None: this machine has no such address).
type ListenCase = (&'static str, Vec<Option<IpAddr>>, Vec<Option<IpAddr>>);

#[test]
fn listen_binds_exactly_the_addresses_each_documented_form_names() {
    // A non-loopback address of this machine of each family, when it has one: a listener on
    // 127.0.0.1 alone must not be reached through it, one on every address must.
    let hosts = host_addresses();
    let v4 = hosts.iter().copied().find(IpAddr::is_ipv4);
    let v6 = hosts.iter().copied().find(IpAddr::is_ipv6);
    eprintln!("non-loopback addresses tried: IPv4 {v4:?}, IPv6 {v6:?}");
    let lo4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let lo6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    // (form, reached through, refused through); README: `:PORT` is every IPv4 address.
    let cases: [ListenCase; 5] = [
        (":{}", vec![lo4, v4], vec![lo6]),
        ("0.0.0.0:{}", vec![lo4, v4], vec![lo6]),
        ("127.0.0.1:{}", vec![lo4], vec![v4, lo6]),
        ("[::1]:{}", vec![lo6], vec![lo4, v6]),
        ("[::]:{}", vec![lo6, v6], vec![]),
    ];
    for (form, reached, unreached) in cases {
        let port = free_port();
        let arg = form.replace("{}", &port.to_string());
        let kw = keepwell(&["--listen", &arg, "--", "sleep", "600"]).start();
        for ip in reached.into_iter().flatten() {
            let addr = SocketAddr::new(ip, port);
            wait_until(
                DEADLINE,
                &format!("/livez through {addr} on --listen {arg}"),
                || http::status(addr, "/livez") == 200,
            );
        }
        for ip in unreached.into_iter().flatten() {
            let addr = SocketAddr::new(ip, port);
            assert!(
                refused(addr),
                "--listen {arg} must not be reached through {addr}"
            );
        }
        drop(kw);
    }
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

#[test]
fn head_is_get_without_a_body_other_methods_are_405_unknown_paths_404() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    for path in ENDPOINTS {
        let answer = http::raw(
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

#[test]
fn metrics_is_strict_prometheus_text_with_every_documented_series() {
    let app = SwitchApp::start(&[], Boot::Listening { healthy: true }, true, false);
    app.wait_probes((200, 200, 200), "healthy");
    let response = http::get(app.listen, "/metrics").expect("GET /metrics");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let metrics = common::prometheus::parse(&response.text());
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
