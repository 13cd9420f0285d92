//! Health supervision: keepwell probes an in-test app over HTTP, TCP and a Unix socket, decides
//! `starting → healthy ⇄ unhealthy` as Docker does, and restarts, exits or only reports as
//! `--on-unhealthy` says. `--restart`, `--max-restarts` and backoff are in restart_policy.rs;
//! bad health configuration in usage.rs.
//!
//! Every test runs with short intervals and polls against deadlines; none asserts after a fixed
//! sleep.

mod common;

use std::time::{Duration, Instant};

use common::app::{self, supervise, supervising, App, Behaviour};
use common::*;
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(10);

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
        // A mount namespace of its own gives this keepwell its own local verdict socket
        // (tests/common): no "socket unavailable" warning from sharing the host's name.
        .lines()
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
        "restarting in 100ms because the app stayed unhealthy",
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

/// Against an app that behaves as `behaviour`, the probe fails at `--health-timeout` (300ms),
/// `/status` reports about that latency, and probing goes on past the given-up connections.
fn the_probe_fails_within_health_timeout(behaviour: Behaviour, what: &str) {
    let app = App::http(behaviour);
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
        "a {what} probe took {latency} ms with --health-timeout 300ms"
    );
    // The hung connections are given up: probing goes on.
    wait_more_probes(&app, 3);
}

#[test]
fn a_hung_app_fails_the_probe_within_health_timeout() {
    the_probe_fails_within_health_timeout(Behaviour::Hang, "hung");
}

#[test]
fn a_head_trickled_forever_fails_the_probe_within_health_timeout() {
    // Each read brings a byte, so only the probe's own timeout can end it.
    the_probe_fails_within_health_timeout(Behaviour::Trickle, "trickled");
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
            .expect("RssAnon of keepwell")
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

#[test]
fn every_health_header_is_sent_with_each_probe_from_flags_and_from_the_variable() {
    let app = App::http(Behaviour::RequireHost("app.example.com".into()));
    let strict = ["--health-start-period", "0", "--health-retries", "1"];
    let headers = [
        "Host: app.example.com",
        "X-Probe: keepwell",
        "Authorization: Bearer t0ken",
    ];
    let flags = supervise(
        &app.url(),
        &[
            &strict[..],
            &[
                "--health-header",
                headers[0],
                "--health-header",
                headers[1],
                "--health-header",
                headers[2],
            ],
        ]
        .concat(),
    );
    flags.wait_log(DEADLINE, TO_HEALTHY);
    drop(flags);
    let from_flags = app.heads();
    // README: the variable takes one header per line.
    let variable = supervising(&app.url(), &strict, &["sleep", "1000"])
        .env("KEEPWELL_HEALTH_HEADER", &headers.join("\n"))
        .start();
    variable.wait_log(DEADLINE, TO_HEALTHY);
    let from_variable = app.heads()[from_flags.len()..].to_vec();
    for (source, heads) in [("flags", from_flags), ("variable", from_variable)] {
        assert!(!heads.is_empty(), "no probe from the {source}");
        for head in &heads {
            for header in headers {
                let (name, value) = header.split_once(": ").expect("a header");
                let sent: Vec<&str> = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim())
                    .collect();
                assert_eq!(sent, [value], "{header:?} from the {source} in:\n{head}");
            }
        }
    }
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
    // Before keepwell starts, so before its first probe: a lower bound no load can break.
    let started = Instant::now();
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
    wait_until(DEADLINE, "five probes", || app.requests() >= 5);
    let took = started.elapsed();
    // Each hung probe takes the 300ms timeout, then 200ms of interval: the fifth starts 4 ×
    // 500ms after the first at the earliest.
    assert!(
        took >= Duration::from_millis(2000),
        "5 probes in {took:?}: probes overlap or the interval runs from their start"
    );
    // And no probe connected while the one before it was still open.
    assert_eq!(app.overlapping(), 0, "probes overlapped");
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
fn a_start_period_that_runs_out_with_failures_turns_unhealthy_only_then() {
    // The app never listens. Inside the 2 s start period failures do not count, however many
    // there are; once it runs out, --health-retries failures make the app unhealthy.
    let port = free_port();
    let listen = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let listen_arg = format!("127.0.0.1:{listen}");
    let start_period = Duration::from_secs(2);
    let started = Instant::now();
    let kw = supervise(
        &url,
        &[
            "--health-start-period",
            "2s",
            "--health-retries",
            "2",
            "--on-unhealthy",
            "ignore",
            "--listen",
            &listen_arg,
        ],
    );
    let status = || common::switch_app::status_json(common::http::loopback(listen));
    wait_until(DEADLINE, "--listen", || {
        common::http::status(common::http::loopback(listen), "/status") == 200
    });
    wait_until(
        DEADLINE,
        "more failures than --health-retries, still starting",
        || {
            let status = status();
            if status["state"] != "starting" {
                panic!(
                    "unhealthy with only {} failed probes: {status}",
                    status["probes_failed"]
                );
            }
            status["probes_failed"].as_u64().is_some_and(|n| n > 2)
        },
    );
    let log = kw.wait_log(DEADLINE, TO_UNHEALTHY_FROM_STARTING);
    // A lower bound: no load can make it come early.
    assert!(
        started.elapsed() >= start_period,
        "unhealthy {:?} after start, inside the 2 s start period",
        started.elapsed()
    );
    assert!(
        line_with(&log, TO_UNHEALTHY_FROM_STARTING)
            .contains(&format!("connection refused to 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(!log.contains(TO_HEALTHY), "{log}");
    assert_eq!(status()["state"], "unhealthy");
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
    let mut kw = supervising(
        &app.url(),
        &["--health-timeout", "30s"],
        &["python3", &script, &out_str],
    )
    .env("EXIT_ON", "TERM")
    .start();
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
    // keepwell logs after forwarding, through its log thread: the line may trail the child's.
    kw.wait_log(DEADLINE, "forwarded SIGUSR1 to child");
    assert_eq!(app.requests(), 1, "still the one hung probe");

    kw.signal(Signal::SIGTERM);
    assert_eq!(kw.wait_exit(DEADLINE), 0, "{}", kw.stderr());
    assert_eq!(echoed_through_stop(&out), ["USR1", "TERM"]);
}

#[test]
fn the_child_exiting_is_seen_at_once_while_a_probe_hangs() {
    let app = App::http(Behaviour::Hang);
    let mut kw = supervising(
        &app.url(),
        &["--health-timeout", "30s"],
        &["sh", "-c", "sleep 1; exit 5"],
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
