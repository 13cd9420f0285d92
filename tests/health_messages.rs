//! What a misconfigured check says, and when (README "Health"; issue 11, item 1): inside the
//! start period the first failed probe, and each change of its reason, is logged at info, so a
//! wrong check shows within a second instead of after the start period; and the failure names
//! the fix for the usual causes: a 400 is the Host header (Django's ALLOWED_HOSTS), a 404 the
//! path, a refused connection names the address probed, a timeout names the flag.
//!
//! Lines are read as JSON (`--log-format json`) and compared whole.

mod common;

use std::time::Duration;

use common::app::{App, Behaviour};
use common::*;

const DEADLINE: Duration = Duration::from_secs(10);
const START_FAILURE: &str = "probe failed in the start period (not counted yet)";

fn hint_400(url: &str, flag: &str) -> String {
    format!(
        "400 Bad Request from {url} (a 400 to a health probe is usually the Host header: Django \
         answers 400 when the Host is not in ALLOWED_HOSTS; send one it accepts with {flag} \
         'Host: your.domain')"
    )
}

fn hint_404(url: &str) -> String {
    format!(
        "404 Not Found from {url} (is the path right? the app has no such page; probe the path \
         of its health endpoint, e.g. /health or /health/)"
    )
}

fn hint_refused(address: &str) -> String {
    format!(
        "connection refused to {address} (is the app listening? keepwell probed {address}; the \
         app may listen on another address or port, see its --bind)"
    )
}

/// keepwell with the default 60 s start period, probing `url` every 100 ms, JSON logs.
fn supervise(url: &str, extra: &[&str]) -> Keepwell {
    let mut args = vec![
        "--log-format",
        "json",
        "--health-url",
        url,
        "--health-start-interval",
        "100ms",
        "--health-timeout",
        "300ms",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "1000"]);
    keepwell(&args).start()
}

/// The (level, detail) of every start-period failure line so far.
fn start_failures(kw: &Keepwell) -> Vec<(String, String)> {
    kw.stderr()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == START_FAILURE)
        .map(|event| {
            (
                event["level"].as_str().unwrap_or_default().to_string(),
                event["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn info(detail: String) -> (String, String) {
    ("INFO".to_string(), detail)
}

fn wait_more_probes(app: &App, more: usize) {
    let base = app.requests();
    wait_until(DEADLINE, &format!("{more} more probes"), || {
        app.requests() >= base + more
    });
}

#[test]
fn the_first_failure_and_each_change_of_reason_are_logged_at_info_with_the_fix() {
    let app = App::http(Behaviour::Status(400));
    let url = app.url();
    let kw = supervise(&url, &[]);
    wait_more_probes(&app, 5);
    assert_eq!(
        start_failures(&kw),
        [info(hint_400(&url, "--health-header"))]
    );

    app.set(Behaviour::Status(404));
    wait_more_probes(&app, 5);
    assert_eq!(
        start_failures(&kw),
        [
            info(hint_400(&url, "--health-header")),
            info(hint_404(&url))
        ]
    );

    app.set(Behaviour::Status(400));
    wait_more_probes(&app, 3);
    assert_eq!(start_failures(&kw).len(), 3, "{}", kw.stderr());

    // Fixed: healthy, and no more lines about failures.
    app.set(Behaviour::Status(200));
    kw.wait_log(DEADLINE, "health changed: starting → healthy");
    assert_eq!(start_failures(&kw).len(), 3, "{}", kw.stderr());
}

#[test]
fn a_refused_connection_names_the_address_probed() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let kw = supervise(&url, &[]);
    let address = format!("127.0.0.1:{port}");
    wait_until(DEADLINE, "the start-period failure line", || {
        !start_failures(&kw).is_empty()
    });
    assert_eq!(start_failures(&kw), [info(hint_refused(&address))]);
}

#[test]
fn a_timeout_names_the_flag_that_gives_more_time() {
    let app = App::http(Behaviour::Hang);
    let url = app.url();
    let kw = supervise(&url, &[]);
    wait_until(DEADLINE, "the start-period failure line", || {
        !start_failures(&kw).is_empty()
    });
    wait_more_probes(&app, 2);
    assert_eq!(
        start_failures(&kw),
        [info(format!(
            "no answer within 300ms from {url} (is the app hung or overloaded? a slow health \
             endpoint needs a longer --health-timeout)"
        ))]
    );
}

#[test]
fn check_names_its_own_flags_in_the_fix() {
    let app = App::http(Behaviour::Status(400));
    let out = std::process::Command::new(KEEPWELL)
        .args(["check", &app.url()])
        .env_remove("KEEPWELL_HEALTH_HEADER")
        .output()
        .expect("run keepwell check");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("unhealthy: {}\n", hint_400(&app.url(), "--header"))
    );
    app.set(Behaviour::Status(404));
    let out = std::process::Command::new(KEEPWELL)
        .args(["check", &app.url()])
        .output()
        .expect("run keepwell check");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("unhealthy: {}\n", hint_404(&app.url()))
    );
}
