//! Health supervision: keepwell probes an in-test app over HTTP, TCP and a Unix socket, decides
//! `starting → healthy ⇄ unhealthy` as Docker does, and restarts, exits or only reports as
//! `--on-unhealthy` says; `--restart` and `--max-restarts` with backoff; bad health
//! configuration is refused before anything starts.
//!
//! Every test runs with short intervals and polls against deadlines; none asserts after a fixed
//! sleep.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, App, Behaviour};
use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);

/// Fast timing, unless a test names the flag itself.
const FAST: &[(&str, &str)] = &[
    ("--health-interval", "200ms"),
    ("--health-start-interval", "100ms"),
    ("--health-timeout", "300ms"),
    ("--grace", "1s"),
];

/// The arguments for supervising `command` with `url` probed: FAST timing, then `extra`
/// (whose flags replace FAST's).
fn args(url: &str, extra: &[&str], command: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for (flag, value) in FAST {
        if !extra.contains(flag) {
            all.extend([flag.to_string(), value.to_string()]);
        }
    }
    all.extend(["--health-url".to_string(), url.to_string()]);
    all.extend(extra.iter().map(|s| s.to_string()));
    all.push("--".into());
    all.extend(command.iter().map(|s| s.to_string()));
    all
}

/// keepwell supervising `sleep 1000` while the in-test app stands in for the app.
fn supervise(url: &str, extra: &[&str]) -> Keepwell {
    let all = args(url, extra, &["sleep", "1000"]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    keepwell(&refs).start()
}

const TO_HEALTHY: &str = "health changed: starting → healthy";
const TO_UNHEALTHY_FROM_STARTING: &str = "health changed: starting → unhealthy";
const HEALTHY_TO_UNHEALTHY: &str = "health changed: healthy → unhealthy";

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The line of the log that contains `text`.
fn line_with(log: &str, text: &str) -> String {
    log.lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} in:\n{log}"))
        .to_string()
}

/// Wait until the app has seen `more` requests beyond what it has seen now: probing goes on.
fn wait_more_probes(app: &App, more: usize) {
    let base = app.requests();
    wait_until(DEADLINE, &format!("{more} more probes"), || {
        app.requests() >= base + more
    });
}

// --- HTTP verdicts -------------------------------------------------------------------------

#[test]
fn status_200_is_healthy_on_readyz_and_in_the_log() {
    let app = App::http(Behaviour::Status(200));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let kw = supervise(&app.url(), &["--listen", &listen]);
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    assert!(
        line_with(&log, TO_HEALTHY).contains("200 OK from http://127.0.0.1:"),
        "{log}"
    );
    wait_until(DEADLINE, "/readyz to answer 200", || {
        matches!(app::get(port, "/readyz"), Some((200, _)))
    });
    // No line per successful probe.
    wait_more_probes(&app, 3);
    let log = kw.stderr();
    let lines: Vec<&str> = log
        .lines()
        // Not PID 1 of a namespace of its own, keepwell may share the local verdict socket's
        // name with another test's keepwell and say so.
        .filter(|l| !l.contains("the local verdict socket is unavailable"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "only 'child started' and the change:\n{log}"
    );
}

#[test]
fn status_500_makes_the_app_unhealthy_and_the_child_is_restarted_in_place() {
    let app = App::http(Behaviour::Status(200));
    let kw = supervise(&app.url(), &["--health-retries", "2"]);
    let first = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_HEALTHY);

    app.set(Behaviour::Status(500));
    let log = kw.wait_log(DEADLINE, HEALTHY_TO_UNHEALTHY);
    assert!(
        line_with(&log, HEALTHY_TO_UNHEALTHY).contains("500 Internal Server Error"),
        "{log}"
    );
    kw.wait_log(
        DEADLINE,
        "restarting in 1s because the app stayed unhealthy",
    );
    let second = wait_for(DEADLINE, "a new child", || {
        kw.child().filter(|&pid| pid != first)
    });
    assert!(!is_alive(first), "the old child is gone");

    // The new child starts over as `starting` and becomes healthy when the app recovers.
    app.set(Behaviour::Status(200));
    wait_until(DEADLINE, "healthy again after the restart", || {
        count(&kw.stderr(), TO_HEALTHY) == 2
    });
    assert_eq!(kw.child(), Some(second));
}

// A 3xx that is not a redirect; redirects are followed (tests/redirects.rs).
#[test]
fn status_304_is_healthy_by_default() {
    let app = App::http(Behaviour::Status(304));
    let kw = supervise(&app.url(), &[]);
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    assert!(
        line_with(&log, TO_HEALTHY).contains("304 Not Modified"),
        "{log}"
    );
}

#[test]
fn status_304_fails_under_health_status_200_299() {
    let app = App::http(Behaviour::Status(304));
    let kw = supervise(
        &app.url(),
        &[
            "--health-status",
            "200-299",
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
        ],
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).contains("304 Not Modified"),
        "{log}"
    );
    assert!(!log.contains(TO_HEALTHY), "{log}");
}

#[test]
fn a_hung_app_fails_the_probe_within_health_timeout() {
    let app = App::http(Behaviour::Hang);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let kw = supervise(
        &app.url(),
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
            "--listen",
            &listen,
        ],
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).contains("no answer within 300ms"),
        "{log}"
    );
    // The probe's own latency, as /status reports it, is the timeout and not much more.
    let status = wait_for(DEADLINE, "/status", || app::get(port, "/status"));
    let json: serde_json::Value = serde_json::from_str(&status.1).expect("/status is JSON");
    let latency = json["last_probe"]["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("last_probe.latency_ms in {json}"));
    assert!(
        (290.0..1500.0).contains(&latency),
        "a hung probe took {latency} ms with --health-timeout 300ms"
    );
    // The hung connections are given up: probing goes on.
    wait_more_probes(&app, 3);
}

#[test]
fn garbage_is_a_bad_response() {
    let app = App::http(Behaviour::Garbage);
    let kw = supervise(
        &app.url(),
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
        ],
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).contains("bad response from http://127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn an_endless_body_is_judged_by_its_first_64_kib_and_memory_stays_small() {
    let app = App::http(Behaviour::Endless);
    // The text comes only after 64 KiB: it must not be found.
    app.set_body(&format!("{}needle", "y".repeat(70 * 1024)));
    let kw = supervise(
        &app.url(),
        &[
            "--health-body",
            "needle",
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--health-interval",
            "100ms",
            // Time to read keepwell's RSS before the first probe.
            "--health-start-interval",
            "500ms",
            "--on-unhealthy",
            "ignore",
        ],
    );
    // Anonymous memory: what probing allocates (the binary's own pages are file-backed).
    let rss_kib = || -> u64 {
        status_field(kw.pid, "RssAnon")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS of keepwell")
    };
    kw.wait_child(DEADLINE);
    let before = rss_kib();
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING)
            .contains("its body (first 64 KiB) does not contain \"needle\""),
        "{log}"
    );
    // Every probe reads 64 KiB of an endless body and still finishes: probing goes on.
    wait_more_probes(&app, 10);
    let after_10 = rss_kib();
    wait_more_probes(&app, 20);
    let after_30 = rss_kib();
    // A debug build maps some 6 MiB of its own before doing anything; what probing adds is
    // the point, and it must not grow from probe to probe.
    assert!(
        after_30 < 8 * 1024 && after_30 < before + 2 * 1024 && after_30 < after_10 + 1024,
        "keepwell's RSS: {before} KiB before probing, {after_10} KiB after 10 endless \
         bodies, {after_30} KiB after 30"
    );

    // The text inside the first 64 KiB: healthy again, without reading the rest.
    app.set_body("needle");
    kw.wait_log(DEADLINE, "health changed: unhealthy → healthy");
    wait_more_probes(&app, 3);
}

#[test]
fn health_body_present_is_healthy_and_missing_is_not() {
    let app = App::http(Behaviour::Status(200));
    app.set_body("{\"database\": \"ok\"}");
    let strict = ["--health-start-period", "0", "--health-retries", "1"];
    let present = supervise(
        &app.url(),
        &[&strict[..], &["--health-body", "\"database\": \"ok\""]].concat(),
    );
    let missing = supervise(
        &app.url(),
        &[
            &strict[..],
            &["--health-body", "redis", "--on-unhealthy", "ignore"],
        ]
        .concat(),
    );
    present.wait_log(DEADLINE, TO_HEALTHY);
    let log = missing.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).contains("200 OK from http://127.0.0.1:")
            && log.contains("does not contain \"redis\""),
        "{log}"
    );
    assert!(
        !present.stderr().contains("unhealthy"),
        "{}",
        present.stderr()
    );
}

#[test]
fn a_required_host_header_is_sent_with_health_header() {
    let app = App::http(Behaviour::RequireHost("app.example.com".into()));
    let strict = [
        "--health-start-period",
        "0",
        "--health-retries",
        "1",
        "--on-unhealthy",
        "ignore",
    ];
    let with = supervise(
        &app.url(),
        &[&strict[..], &["--health-header", "Host: app.example.com"]].concat(),
    );
    let without = supervise(&app.url(), &strict);
    with.wait_log(DEADLINE, TO_HEALTHY);
    let log = without.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(log.contains("400 Bad Request"), "{log}");
    let hosts = app.hosts();
    assert!(hosts.iter().any(|h| h == "app.example.com"), "{hosts:?}");
    // Without the header, the probe sends a proper Host of its own: HOST:PORT.
    let own = format!("127.0.0.1:{}", app.port());
    assert!(hosts.contains(&own), "{hosts:?}");
    assert!(hosts.iter().all(|h| !h.is_empty()), "{hosts:?}");
}

// --- counting: retries, success threshold, spacing ----------------------------------------

#[test]
fn failures_that_are_not_consecutive_never_add_up_to_retries() {
    let app = App::http(Behaviour::Status(200));
    let kw = supervise(
        &app.url(),
        &["--health-retries", "2", "--on-unhealthy", "exit"],
    );
    kw.wait_log(DEADLINE, TO_HEALTHY);
    // fail, pass, fail, pass…: a counter that never reset would reach 2 on the second failure.
    app.set(Behaviour::Alternate(500));
    wait_more_probes(&app, 8);
    assert!(!kw.stderr().contains("unhealthy"), "{}", kw.stderr());
    assert!(is_alive(kw.pid));
}

#[test]
fn retries_consecutive_failures_make_it_unhealthy() {
    let app = App::http(Behaviour::Status(200));
    let kw = supervise(
        &app.url(),
        &[
            "--health-retries",
            "3",
            "--health-interval",
            "300ms",
            "--on-unhealthy",
            "ignore",
        ],
    );
    kw.wait_log(DEADLINE, TO_HEALTHY);
    app.set(Behaviour::Status(500));
    let switched = Instant::now();
    let base = app.requests();
    kw.wait_log(DEADLINE, HEALTHY_TO_UNHEALTHY);
    let took = switched.elapsed();
    // The first failure comes at most one interval after the switch, the third two later.
    assert!(
        took >= Duration::from_millis(550),
        "unhealthy {took:?} after the switch: fewer than 3 failures?"
    );
    assert!(
        app.requests() >= base + 3,
        "{} probes",
        app.requests() - base
    );
}

#[test]
fn success_threshold_needs_consecutive_successes_to_recover() {
    let app = App::http(Behaviour::Status(500));
    let kw = supervise(
        &app.url(),
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--health-interval",
            "300ms",
            "--health-success-threshold",
            "3",
            "--on-unhealthy",
            "ignore",
        ],
    );
    kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    app.set(Behaviour::Status(200));
    let switched = Instant::now();
    let base = app.requests();
    kw.wait_log(DEADLINE, "health changed: unhealthy → healthy");
    let took = switched.elapsed();
    // Three successes, 300ms apart: at least 600ms after the first one.
    assert!(
        took >= Duration::from_millis(550),
        "healthy {took:?} after the switch: fewer than 3 successes?"
    );
    assert!(
        app.requests() >= base + 3,
        "{} probes",
        app.requests() - base
    );
}

#[test]
fn probes_are_spaced_from_the_end_of_the_previous_one_and_never_overlap() {
    let app = App::http(Behaviour::Hang);
    let _kw = supervise(
        &app.url(),
        &[
            "--health-start-period",
            "0",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--on-unhealthy",
            "ignore",
        ],
    );
    wait_until(DEADLINE, "the first probe", || app.requests() >= 1);
    let first = Instant::now();
    wait_until(DEADLINE, "five probes", || app.requests() >= 5);
    let took = first.elapsed();
    // Each hung probe takes the 300ms timeout, then 200ms of interval: 4 × 500ms at least.
    assert!(
        took >= Duration::from_millis(1900),
        "5 probes in {took:?}: probes overlap or the interval runs from their start"
    );
}

// --- start period ------------------------------------------------------------------------

#[test]
fn a_slow_boot_inside_the_start_period_counts_no_failure() {
    let port = free_port();
    let app = App::http_after(port, Duration::from_millis(1500), Behaviour::Status(200));
    let url = format!("http://127.0.0.1:{port}/health");
    // One failure would be enough to exit, if failures in the start period counted.
    let mut kw = supervise(
        &url,
        &[
            "--health-start-period",
            "20s",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "exit",
        ],
    );
    let child = kw.wait_child(DEADLINE);
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    assert!(app.requests() >= 1);
    assert!(!log.contains("unhealthy"), "{log}");
    assert_eq!(kw.child(), Some(child));
    // After the start period ended with that success, one failure counts at once.
    app.set(Behaviour::Status(503));
    assert_eq!(kw.wait_exit(DEADLINE), 3, "{}", kw.stderr());
}

#[test]
fn never_listening_with_no_start_period_is_unhealthy() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let kw = supervise(
        &url,
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "2",
            "--on-unhealthy",
            "ignore",
        ],
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING).contains(&format!(
            "connection refused to 127.0.0.1:{port} (is the app listening? keepwell probed \
             127.0.0.1:{port}; the app may listen on another address or port, see its --bind)"
        )),
        "{log}"
    );
}

// --- TCP and Unix-socket probes ------------------------------------------------------------

#[test]
fn tcp_probes_are_healthy_when_listening_and_unhealthy_when_refused() {
    let app = App::http(Behaviour::Hang);
    let strict = [
        "--health-start-period",
        "0",
        "--health-retries",
        "1",
        "--on-unhealthy",
        "ignore",
    ];
    let listening = supervise(&app.tcp_url(), &strict);
    let refused_port = free_port();
    let refused = supervise(&format!("tcp://127.0.0.1:{refused_port}"), &strict);
    let log = listening.wait_log(DEADLINE, TO_HEALTHY);
    assert!(
        line_with(&log, TO_HEALTHY)
            .contains(&format!("connected to tcp://127.0.0.1:{}", app.port())),
        "{log}"
    );
    let log = refused.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(
        log.contains(&format!("connection refused to 127.0.0.1:{refused_port}")),
        "{log}"
    );
    // A connect-only probe sends no request.
    assert_eq!(app.requests(), 0);
}

#[test]
fn unix_socket_probes_speak_http_over_the_socket() {
    let app = App::unix(Behaviour::Status(200));
    let kw = supervise(
        &app.url(),
        &["--health-retries", "1", "--on-unhealthy", "ignore"],
    );
    let log = kw.wait_log(DEADLINE, TO_HEALTHY);
    assert!(
        line_with(&log, TO_HEALTHY).contains(&format!("200 OK from {}", app.url())),
        "{log}"
    );
    assert!(
        app.hosts().iter().all(|h| h == "localhost"),
        "{:?}",
        app.hosts()
    );
    app.set(Behaviour::Status(500));
    let log = kw.wait_log(DEADLINE, HEALTHY_TO_UNHEALTHY);
    assert!(
        line_with(&log, HEALTHY_TO_UNHEALTHY).contains("500"),
        "{log}"
    );

    let gone = App::unix(Behaviour::Status(200));
    let missing = format!("{}.missing", gone.socket().display());
    let kw = supervise(
        &format!("unix:{missing}:/health"),
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--on-unhealthy",
            "ignore",
        ],
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    assert!(log.contains(&format!("no socket at {missing}")), "{log}");
}

// --- probes never hold up signals ----------------------------------------------------------

#[test]
fn a_signal_reaches_the_child_promptly_while_a_probe_hangs() {
    let app = App::http(Behaviour::Hang);
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals");
    let out_str = out.to_string_lossy().to_string();
    let script = support("echo_signals.py");
    let all = args(
        &app.url(),
        &["--health-timeout", "30s"],
        &["python3", &script, &out_str],
    );
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut kw = keepwell(&refs).env("EXIT_ON", "TERM").start();
    wait_until(DEADLINE, "the echo child to be ready", || {
        read(&out).contains("ready")
    });
    wait_until(DEADLINE, "a probe in flight", || app.requests() >= 1);

    // The probe is bounded only by its 30s timeout: a signal that waited for it would take
    // that long. "Promptly" here is well under it, with room for a loaded machine.
    let sent = Instant::now();
    kw.signal(Signal::SIGUSR1);
    wait_until(Duration::from_secs(5), "USR1 at the child", || {
        echoed(&out) == ["USR1"]
    });
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(5), "USR1 took {took:?}");
    assert!(
        kw.stderr().contains("forwarded SIGUSR1 to child"),
        "{}",
        kw.stderr()
    );
    assert_eq!(app.requests(), 1, "still the one hung probe");

    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    assert_eq!(echoed_through_stop(&out), ["USR1", "TERM"]);
}

#[test]
fn the_child_exiting_is_seen_at_once_while_a_probe_hangs() {
    let app = App::http(Behaviour::Hang);
    let mut kw = keepwell(
        &args(
            &app.url(),
            &["--health-timeout", "30s"],
            &["sh", "-c", "sleep 1; exit 5"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    )
    .start();
    wait_until(DEADLINE, "a probe in flight", || app.requests() >= 1);
    let started = Instant::now();
    // Exit and reap within seconds, not at the end of the 30s probe.
    assert_eq!(kw.wait_exit(Duration::from_secs(5)), 5, "{}", kw.stderr());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.requests(), 1);
}

// --- policies ------------------------------------------------------------------------------

#[test]
fn on_unhealthy_exit_stops_the_child_and_exits_with_code_3() {
    let app = App::http(Behaviour::Status(200));
    let mut kw = supervise(
        &app.url(),
        &["--on-unhealthy", "exit", "--health-retries", "2"],
    );
    let child = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_HEALTHY);
    app.set(Behaviour::Status(500));
    assert_eq!(kw.wait_exit(DEADLINE), 3, "{}", kw.stderr());
    assert!(!is_alive(child));
    let log = kw.stderr();
    assert!(
        log.contains("exiting with code 3: the app stayed unhealthy (--on-unhealthy exit)"),
        "{log}"
    );
    assert!(!log.contains("restarting"), "{log}");
}

#[test]
fn on_unhealthy_ignore_keeps_the_child_and_goes_on_probing() {
    let app = App::http(Behaviour::Status(500));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let kw = supervise(
        &app.url(),
        &[
            "--on-unhealthy",
            "ignore",
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--listen",
            &listen,
        ],
    );
    let child = kw.wait_child(DEADLINE);
    kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    wait_more_probes(&app, 5);
    assert_eq!(kw.child(), Some(child));
    assert!(is_alive(kw.pid));
    assert!(!kw.stderr().contains("stopping"), "{}", kw.stderr());
    wait_until(DEADLINE, "/readyz 503 while unhealthy", || {
        matches!(app::get(port, "/readyz"), Some((503, _)))
    });
    // And it recovers when the app does.
    app.set(Behaviour::Status(200));
    kw.wait_log(DEADLINE, "health changed: unhealthy → healthy");
    assert_eq!(kw.child(), Some(child));
}

#[test]
fn a_crash_loop_gives_up_after_max_restarts_with_code_4() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let mut kw = supervise(
        &url,
        &[
            "--health-start-period",
            "0",
            "--health-retries",
            "1",
            "--max-restarts",
            "1",
        ],
    );
    let first = kw.wait_child(DEADLINE);
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    assert!(!is_alive(first));
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 2, "{log}");
    assert_eq!(count(&log, TO_UNHEALTHY_FROM_STARTING), 2, "{log}");
    assert!(
        log.contains("restarting in 1s because the app stayed unhealthy"),
        "{log}"
    );
    assert!(
        log.contains("giving up: 1 restart inside 5m already (--max-restarts)"),
        "{log}"
    );
    assert!(
        log.contains("exiting with code 4: too many restarts inside --restart-window"),
        "{log}"
    );
}

/// keepwell with a child that exits by itself; no health URL.
fn exiting_child(restart: &str, command: &str) -> Keepwell {
    keepwell(&[
        "--restart",
        restart,
        "--max-restarts",
        "2",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        command,
    ])
    .start()
}

#[test]
fn restart_on_failure_restarts_a_failing_child_with_backoff() {
    let mut kw = exiting_child("on-failure", "exit 3");
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 3, "{log}");
    let first = log.find("restarting in 1s because the child exited with code 3");
    let second = log.find("restarting in 2s because the child exited with code 3");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "backoff 1s then 2s:\n{log}"
    );
    assert!(log.contains("giving up: 2 restarts inside"), "{log}");
}

#[test]
fn restart_on_failure_lets_a_clean_exit_end_keepwell() {
    let mut kw = exiting_child("on-failure", "exit 0");
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 1, "{log}");
    assert!(!log.contains("restarting"), "{log}");
}

#[test]
fn restart_always_restarts_even_a_clean_exit_with_backoff() {
    let mut kw = exiting_child("always", "exit 0");
    assert_eq!(kw.wait_exit(DEADLINE), 4, "{}", kw.stderr());
    let log = kw.stderr();
    assert_eq!(count(&log, "child started"), 3, "{log}");
    let first = log.find("restarting in 1s because the child exited with code 0");
    let second = log.find("restarting in 2s because the child exited with code 0");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "backoff 1s then 2s:\n{log}"
    );
}

#[test]
fn restarts_outside_the_restart_window_do_not_count_and_the_backoff_resets() {
    // Each restart is more than the 1s window after the one before: never "too many", and the
    // backoff never doubles.
    let mut kw = keepwell(&[
        "--restart",
        "always",
        "--max-restarts",
        "1",
        "--restart-window",
        "1s",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ])
    .start();
    wait_until(DEADLINE, "three restarts", || {
        count(
            &kw.stderr(),
            "restarting in 1s because the child exited with code 1",
        ) >= 3
    });
    let log = kw.stderr();
    assert!(!log.contains("restarting in 2s"), "{log}");
    assert!(!log.contains("giving up"), "{log}");
    kw.signal(Signal::SIGTERM);
    let code = kw.wait_exit(DEADLINE);
    assert!(code == 0 || code == 128 + 15, "{code}: {}", kw.stderr());
}

#[test]
fn an_unhealthy_child_that_ignores_the_stop_signal_is_killed_after_grace_and_replaced() {
    let app = App::http(Behaviour::Status(500));
    let kw = keepwell(
        &args(
            &app.url(),
            &["--health-start-period", "0", "--health-retries", "1"],
            // TERM ignored by the shell and, inherited, by its sleep.
            &["sh", "-c", "trap '' TERM; sleep 1000"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    )
    .start();
    let first = kw.wait_child(DEADLINE);
    let log = kw.wait_log(DEADLINE, "the grace period ran out");
    assert!(log.contains(TO_UNHEALTHY_FROM_STARTING), "{log}");
    wait_for(DEADLINE, "a new child", || {
        kw.child().filter(|&pid| pid != first)
    });
    assert!(!is_alive(first));
}

#[test]
fn restart_no_exits_with_the_childs_code() {
    let mut kw = exiting_child("no", "exit 7");
    assert_eq!(kw.wait_exit(DEADLINE), 7, "{}", kw.stderr());
    assert_eq!(count(&kw.stderr(), "child started"), 1);
}

// --- bad configuration ---------------------------------------------------------------------

/// Flags, environment, and the exact line keepwell must print.
type BadConfig = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_health_configuration_exits_2_with_one_line_and_starts_nothing() {
    let cases: &[BadConfig] = &[
        (
            &["--health-url", "ftp://127.0.0.1/health"],
            &[],
            "keepwell: --health-url \"ftp://127.0.0.1/health\" is not valid: expected \
             http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or \
             grpc://HOST:PORT[/SERVICE]",
        ),
        (
            &["--health-url", "https://127.0.0.1/health"],
            &[],
            "keepwell: --health-url \"https://127.0.0.1/health\" is not valid: https is not \
             supported: probe the app inside its container over plain http://HOST:PORT/PATH",
        ),
        (
            &["--health-url", "tcp://127.0.0.1"],
            &[],
            "keepwell: --health-url \"tcp://127.0.0.1\" is not valid: the port is missing; \
             expected tcp://HOST:PORT",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-retries",
                "0",
            ],
            &[],
            "keepwell: --health-retries \"0\" is not valid: expected a whole number of at least 1",
        ),
        (
            &["--health-url", "http://127.0.0.1:1/"],
            &[("KEEPWELL_HEALTH_RETRIES", "0")],
            "keepwell: KEEPWELL_HEALTH_RETRIES \"0\" is not valid: expected a whole number of \
             at least 1",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-status",
                "300-200",
            ],
            &[],
            "keepwell: --health-status \"300-200\" is not valid: expected status codes or ranges \
             from 100 to 599, such as 200-299,304",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-status",
                "2xx",
            ],
            &[],
            "keepwell: --health-status \"2xx\" is not valid: expected status codes or ranges \
             from 100 to 599, such as 200-299,304",
        ),
        (
            &["--on-unhealthy", "reboot"],
            &[],
            "keepwell: --on-unhealthy \"reboot\" is not valid: expected restart, exit or ignore",
        ),
        (
            &[],
            &[("KEEPWELL_ON_UNHEALTHY", "reboot")],
            "keepwell: KEEPWELL_ON_UNHEALTHY \"reboot\" is not valid: expected restart, exit or \
             ignore",
        ),
        (
            &["--restart", "sometimes"],
            &[],
            "keepwell: --restart \"sometimes\" is not valid: expected no, on-failure or always",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-timeout",
                "0",
            ],
            &[],
            "keepwell: --health-timeout \"0\" is not valid: expected a duration above zero, \
             such as 1s",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-interval",
                "10x",
            ],
            &[],
            "keepwell: --health-interval \"10x\" is not valid: expected a duration such as \
             500ms, 10s, 2m or 1h",
        ),
        (
            &[
                "--health-url",
                "http://127.0.0.1:1/",
                "--health-header",
                "no colon",
            ],
            &[],
            "keepwell: --health-header \"no colon\" is not valid: expected 'Name: value', such \
             as 'Host: example.com'",
        ),
    ];
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("started");
    let touch = format!("touch {}", marker.display());
    for (flags, env, expected) in cases {
        let mut command = std::process::Command::new(KEEPWELL);
        command
            .args(*flags)
            .args(["--", "sh", "-c", &touch])
            .env_remove("KEEPWELL_HEALTH_URL");
        for (key, value) in *env {
            command.env(key, value);
        }
        let output = command.output().expect("run keepwell");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?} {env:?}: {stderr}");
        assert_eq!(stderr, format!("{expected}\n"), "{flags:?} {env:?}");
        assert!(output.stdout.is_empty(), "{flags:?}");
        assert!(!marker.exists(), "{flags:?} {env:?} started the child");
    }
}
