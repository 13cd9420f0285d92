//! keepwell with `--listen`, supervising tests/support/switch_app.py: a Python app whose
//! `/health` a test switches with a file, that can hold off listening (a slow boot), and that
//! writes down when it got its stop signal. The tests of `/livez`, `/readyz`, `/startupz`,
//! `/status`, `/metrics` and `--drain` drive it; and the helpers that read those endpoints.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::http::{self, loopback};
use super::prometheus::{self, Metrics};
use super::{free_port, keepwell, read, support, wait_until, Keepwell};

const DEADLINE: Duration = Duration::from_secs(10);

/// Short health timing so phases change within a second.
pub const FAST_HEALTH: &[&str] = &[
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

pub struct SwitchApp {
    pub kw: Keepwell,
    /// keepwell's `--listen` address.
    pub listen: SocketAddr,
    /// The app's own address.
    pub app: SocketAddr,
    files: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Boot {
    /// The app listens at once, healthy or not.
    Listening { healthy: bool },
    /// The app does not listen until the test says so: its health URL refuses connections.
    NotListening,
}

impl SwitchApp {
    /// `health`: whether keepwell gets `--health-url` for the app's /health (with
    /// [`FAST_HEALTH`] timing); `extra` flags come after, so they win.
    pub fn start(extra: &[&str], boot: Boot, health: bool, pid1: bool) -> SwitchApp {
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

    pub fn file(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// Let a NotListening app bind its port.
    pub fn let_it_listen(&self) {
        fs::write(self.file("bind"), "").expect("bind file");
        self.wait_listening();
    }

    pub fn wait_listening(&self) {
        wait_until(DEADLINE, "the app to listen", || {
            self.events().contains("listening")
        });
    }

    pub fn set_healthy(&self, healthy: bool) {
        if healthy {
            fs::write(self.file("healthy"), "").expect("health file");
        } else {
            fs::remove_file(self.file("healthy")).expect("remove the health file");
        }
    }

    /// What the app wrote: "listening PID", then its stop signal and when.
    pub fn events(&self) -> String {
        read(&self.file("events"))
    }

    /// The stop signal the app got (TERM, INT or QUIT) and when, in Unix time, if it got one.
    pub fn stopped_by(&self) -> Option<(String, f64)> {
        self.events().lines().find_map(|line| {
            let (name, at) = line.split_once(' ')?;
            ["TERM", "INT", "QUIT"].contains(&name).then(|| {
                (
                    name.to_string(),
                    at.parse().expect("a time after the signal"),
                )
            })
        })
    }

    /// When the app got SIGTERM, in Unix time, if it did.
    pub fn term_at(&self) -> Option<f64> {
        self.stopped_by()
            .filter(|(name, _)| name == "TERM")
            .map(|(_, at)| at)
    }

    pub fn status(&self) -> Value {
        status_json(self.listen)
    }

    /// (/livez, /readyz, /startupz)
    pub fn probes(&self) -> (u16, u16, u16) {
        probe_codes(self.listen)
    }

    pub fn wait_probes(&self, want: (u16, u16, u16), what: &str) {
        wait_until(DEADLINE, what, || self.probes() == want);
    }

    pub fn metrics(&self) -> Metrics {
        let response = http::get(self.listen, "/metrics").expect("GET /metrics");
        assert_eq!(response.status, 200);
        prometheus::parse(&response.text())
    }
}

/// The status codes of (/livez, /readyz, /startupz); 0 for no answer.
pub fn probe_codes(listen: SocketAddr) -> (u16, u16, u16) {
    (
        http::status(listen, "/livez"),
        http::status(listen, "/readyz"),
        http::status(listen, "/startupz"),
    )
}

/// GET /status, which must answer 200 with JSON.
pub fn status_json(listen: SocketAddr) -> Value {
    let response = http::get(listen, "/status").expect("GET /status");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", response.text()))
}

/// A number in a JSON object; panics naming the key.
pub fn num(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {value}"))
}
