//! Redirects (README "Health", `--health-url`): HTTP probes follow redirects to the same host,
//! at most 10, and judge the final answer, as the kubelet's httpGet does; a redirect to
//! another host, or to https, is not followed and the redirect itself is judged, the detail
//! saying so. `keepwell check URL` the same. The case that made it matter: Django's
//! APPEND_SLASH answers `/health` with a 301 to `/health/`, which is the page that fails.
//!
//! The app is a small server in the test whose routes the test sets while it runs.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// What the app answers on one path: a status, and a Location for redirects.
#[derive(Clone)]
struct Route {
    status: u16,
    location: Option<String>,
}

fn answer(status: u16) -> Route {
    Route {
        status,
        location: None,
    }
}

fn redirect(status: u16, to: &str) -> Route {
    Route {
        status,
        location: Some(to.to_string()),
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    /// (path, Host header) of every request, in order.
    seen: Vec<(String, String)>,
}

/// An HTTP/1.1 server on 127.0.0.1 whose routes the test sets; unknown paths get 404.
struct Site {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Site {
    fn start(routes: &[(&str, Route)]) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test site");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut state = state.lock().expect("site state");
            for (path, route) in routes {
                state.routes.insert(path.to_string(), route.clone());
            }
        }
        let (shared, stopping) = (state.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            let (state, stop) = (shared, stopping);
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        serve(&mut stream, &state);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Site {
            port,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn set(&self, path: &str, route: Route) {
        let mut state = self.state.lock().expect("site state");
        state.routes.insert(path.to_string(), route);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.state.lock().expect("site state").seen.clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(stream: &mut std::net::TcpStream, state: &Mutex<State>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let route = {
        let mut state = state.lock().expect("site state");
        state.seen.push((path.clone(), host));
        state.routes.get(&path).cloned().unwrap_or(answer(404))
    };
    let location = route
        .location
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let body = "body";
    let response = format!(
        "HTTP/1.1 {} X\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        route.status,
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// `keepwell check ARGS`: exit code and stdout with the latency cut off.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(KEEPWELL)
        .arg("check")
        .args(args)
        .output()
        .expect("run keepwell check");
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let stdout = match stdout.rsplit_once(" in ") {
        Some((line, latency)) if latency.ends_with("ms") || latency.ends_with('s') => {
            line.to_string()
        }
        _ => stdout,
    };
    (out.status.code().expect("an exit code"), stdout)
}

#[test]
fn a_redirect_to_a_failing_page_is_unhealthy_and_to_a_good_one_healthy() {
    // Django's APPEND_SLASH, with the database down behind /health/.
    let site = Site::start(&[
        ("/health", redirect(301, "/health/")),
        ("/health/", answer(503)),
    ]);
    let (code, out) = check(&[&site.url("/health")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: 503 Service Unavailable from {} (after 1 redirect from {})",
            site.url("/health/"),
            site.url("/health")
        )
    );
    site.set("/health/", answer(200));
    let (code, out) = check(&[&site.url("/health")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!(
            "healthy: 200 OK from {} (after 1 redirect from {})",
            site.url("/health/"),
            site.url("/health")
        )
    );
}

#[test]
fn a_redirect_to_a_login_page_that_carries_a_url_is_followed() {
    // A login redirect whose ?next= holds a URL is a path on the same host, not another
    // scheme: a 302 to a login page is not a healthy answer of its own.
    let login = "/accounts/login/?next=http://127.0.0.1/health";
    let site = Site::start(&[("/health", redirect(302, login)), (login, answer(503))]);
    let (code, out) = check(&[&site.url("/health")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: 503 Service Unavailable from {} (after 1 redirect from {})",
            site.url(login),
            site.url("/health")
        )
    );
}

#[test]
fn the_supervisor_follows_the_redirect_and_restarts_on_the_final_answer() {
    let site = Site::start(&[
        ("/health", redirect(302, "/health/")),
        ("/health/", answer(200)),
    ]);
    let url = site.url("/health");
    let kw = keepwell(&[
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "1",
        "--grace",
        "1s",
        "--",
        "sleep",
        "1000",
    ])
    .start();
    let log = kw.wait_log(DEADLINE, "health changed: starting → healthy");
    assert!(
        log.contains(&format!(
            "detail=200 OK from {} (after 1 redirect from {url})",
            site.url("/health/")
        )),
        "{log}"
    );
    site.set("/health/", answer(500));
    let log = kw.wait_log(DEADLINE, "health changed: healthy → unhealthy");
    assert!(
        log.contains(&format!(
            "detail=500 Internal Server Error from {} (after 1 redirect from {url})",
            site.url("/health/")
        )),
        "{log}"
    );
    kw.wait_log(
        DEADLINE,
        "restarting in 100ms because the app stayed unhealthy",
    );
}

#[test]
fn ten_redirects_are_followed_and_the_eleventh_is_a_failure() {
    // /r0 → /r1 → … → /r10 → /ok: eleven redirects, one too many.
    let mut routes: Vec<(String, Route)> = (0..=10)
        .map(|i| (format!("/r{i}"), redirect(307, &format!("/r{}", i + 1))))
        .collect();
    routes[10].1 = redirect(307, "/ok");
    routes.push(("/ok".into(), answer(200)));
    let borrowed: Vec<(&str, Route)> = routes
        .iter()
        .map(|(p, r)| (p.as_str(), r.clone()))
        .collect();
    let site = Site::start(&borrowed);
    let (code, out) = check(&[&site.url("/r0")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: stopped after 10 redirects from {}; the last one, 307 Temporary \
             Redirect from {}, points to \"/ok\" (a redirect loop? probe the final path \
             directly)",
            site.url("/r0"),
            site.url("/r10")
        )
    );
    assert_eq!(site.seen().len(), 11, "eleven requests, no more");
    // Ten are fine.
    let (code, out) = check(&[&site.url("/r1")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!(
            "healthy: 200 OK from {} (after 10 redirects from {})",
            site.url("/ok"),
            site.url("/r1")
        )
    );
}

#[test]
fn a_redirect_to_another_host_or_to_https_is_judged_not_followed() {
    let site = Site::start(&[
        ("/away", redirect(302, "http://elsewhere.example/health")),
        ("/tls", redirect(301, "https://127.0.0.1/health")),
    ]);
    let (code, out) = check(&[&site.url("/away")]);
    assert_eq!(
        code, 0,
        "a 302 counts as success, as the kubelet counts it: {out}"
    );
    assert_eq!(
        out,
        format!(
            "healthy: 302 Found from {} (a redirect to \"http://elsewhere.example/health\", \
             another host: not followed)",
            site.url("/away")
        )
    );
    let (code, out) = check(&["--status", "200-299", &site.url("/tls")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: 301 Moved Permanently from {} (a redirect to \
             \"https://127.0.0.1/health\", to https, which keepwell does not speak (exempt the \
             health path from the HTTPS redirect, e.g. Django's SECURE_REDIRECT_EXEMPT): not \
             followed)",
            site.url("/tls")
        )
    );
    // Nothing went to the other host: every request reached this site.
    assert_eq!(site.seen().len(), 2);
}

#[test]
fn a_redirect_to_the_host_keepwell_named_is_followed_with_the_same_headers() {
    // Django builds absolute Locations from the Host it was sent.
    let site = Site::start(&[
        ("/health", redirect(301, "http://app.example.com/health/")),
        ("/health/", answer(200)),
    ]);
    let (code, out) = check(&["--header", "Host: app.example.com", &site.url("/health")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        site.seen(),
        [
            ("/health".to_string(), "app.example.com".to_string()),
            ("/health/".to_string(), "app.example.com".to_string())
        ]
    );
    // Without the header the app's absolute Location names another host.
    let (code, out) = check(&["--status", "200-299", &site.url("/health")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.ends_with("another host: not followed)"), "{out}");
}
