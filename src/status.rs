//! The published snapshot of keepwell's verdict, and its renderings: `/status` JSON,
//! `/metrics` Prometheus text, and the reply on the container-local socket.
//!
//! The supervisor publishes a new `Snapshot` after every step; readers (HTTP server, local
//! socket) only ever see copies, so nothing they do can touch the state machine.

use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state::Health;

/// The most recent probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastProbe {
    /// When it finished, in seconds since the Unix epoch.
    pub at_unix: f64,
    pub ok: bool,
    pub detail: String,
    pub latency_ms: f64,
}

impl LastProbe {
    /// Make this a copy of `from`, reusing this one's detail string.
    pub fn copy_from(&mut self, from: &LastProbe) {
        let LastProbe {
            at_unix,
            ok,
            detail,
            latency_ms,
        } = from;
        self.at_unix = *at_unix;
        self.ok = *ok;
        self.detail.clone_from(detail);
        self.latency_ms = *latency_ms;
    }
}

/// Everything readers may know, as of the last step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub state: Health,
    pub phase: String,
    pub child_pid: Option<i32>,
    pub user: String,
    pub restarts: u64,
    pub live: bool,
    pub ready: bool,
    pub started: bool,
    pub draining: bool,
    pub health_url: Option<String>,
    /// `--socket`: the listening sockets keepwell holds for the app, with the fd it gets
    /// (`"0.0.0.0:8000 (fd 3)"`); empty without `--socket` and once released for an exit.
    #[serde(default)]
    pub sockets: Vec<String>,
    pub last_probe: Option<LastProbe>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub probe_seconds_sum: f64,
    pub started_at_unix: f64,
    pub keepwell_pid: u32,
}

/// The snapshot as the supervisor last published it, shared with the readers' thread.
///
/// A mutex, not a channel: no reader waits for a change (each reads when it is asked), and
/// tokio's watch channel took a lock and woke its eight wait lists on every send, which is
/// every probe (tests/bench/probe_overhead.md). Readers hold the lock only to copy it out, so a
/// flood of requests, each rendering its answer, never holds up the supervisor for longer than
/// one copy.
#[derive(Clone)]
pub struct Published(Arc<Mutex<Snapshot>>);

impl Published {
    pub fn new(initial: Snapshot) -> Published {
        Published(Arc::new(Mutex::new(initial)))
    }

    /// Make what readers see a copy of `snapshot`, copied in place (every string's buffer
    /// reused). Comparing whole snapshots first cost more than copying; the supervisor calls
    /// this only when its own few fields say something changed.
    pub fn publish(&self, snapshot: &Snapshot) {
        self.lock().copy_from(snapshot);
    }

    /// A copy of the published snapshot.
    pub fn current(&self) -> Snapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Snapshot {
    /// Make this a copy of `from`, reusing this one's strings: the supervisor publishes after
    /// every probe, and a derived `clone_from` allocates every string anew and frees the old
    /// ones (a sixth of a probe's instructions). Destructured, so a new field cannot be missed.
    pub fn copy_from(&mut self, from: &Snapshot) {
        let Snapshot {
            state,
            phase,
            child_pid,
            user,
            restarts,
            live,
            ready,
            started,
            draining,
            health_url,
            sockets,
            last_probe,
            probes_ok,
            probes_failed,
            probe_seconds_sum,
            started_at_unix,
            keepwell_pid,
        } = from;
        self.state = *state;
        self.phase.clone_from(phase);
        self.child_pid = *child_pid;
        self.user.clone_from(user);
        self.restarts = *restarts;
        self.live = *live;
        self.ready = *ready;
        self.started = *started;
        self.draining = *draining;
        self.health_url.clone_from(health_url);
        self.sockets.clone_from(sockets);
        match (&mut self.last_probe, last_probe) {
            (Some(to), Some(from)) => to.copy_from(from),
            (to, from) => to.clone_from(from),
        }
        self.probes_ok = *probes_ok;
        self.probes_failed = *probes_failed;
        self.probe_seconds_sum = *probe_seconds_sum;
        self.started_at_unix = *started_at_unix;
        self.keepwell_pid = *keepwell_pid;
    }

    pub fn uptime_seconds(&self) -> f64 {
        (unix_now() - self.started_at_unix).max(0.0)
    }

    /// `/status`: the snapshot plus the uptime as of now.
    pub fn to_status_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("uptime_seconds".into(), self.uptime_seconds().into());
        }
        value.to_string()
    }

    /// `/metrics` in the Prometheus text exposition format (0.0.4).
    pub fn to_metrics(&self) -> String {
        let mut out = String::with_capacity(1536);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        metric(
            "keepwell_child_up",
            "gauge",
            "1 while the supervised child runs.",
            &[("", flag(self.child_pid.is_some()))],
        );
        let states = [Health::Starting, Health::Healthy, Health::Unhealthy];
        let labels: Vec<String> = states
            .iter()
            .map(|s| format!("{{state=\"{}\"}}", s.as_str()))
            .collect();
        let samples: Vec<(&str, f64)> = states
            .iter()
            .zip(&labels)
            .map(|(s, l)| (l.as_str(), flag(*s == self.state)))
            .collect();
        metric(
            "keepwell_health_state",
            "gauge",
            "1 for the app's current health state.",
            &samples,
        );
        metric(
            "keepwell_ready",
            "gauge",
            "1 when /readyz answers 200.",
            &[("", flag(self.ready))],
        );
        metric(
            "keepwell_live",
            "gauge",
            "1 when /livez answers 200.",
            &[("", flag(self.live))],
        );
        metric(
            "keepwell_restarts_total",
            "counter",
            "Restarts of the child (after exits or unhealthiness).",
            &[("", self.restarts as f64)],
        );
        metric(
            "keepwell_probes_total",
            "counter",
            "Health probes by result.",
            &[
                ("{result=\"success\"}", self.probes_ok as f64),
                ("{result=\"failure\"}", self.probes_failed as f64),
            ],
        );
        metric(
            "keepwell_probe_duration_seconds",
            "summary",
            "Time health probes took.",
            &[
                ("_sum", self.probe_seconds_sum),
                ("_count", (self.probes_ok + self.probes_failed) as f64),
            ],
        );
        if let Some(last) = &self.last_probe {
            metric(
                "keepwell_last_probe_success",
                "gauge",
                "1 when the last probe succeeded.",
                &[("", flag(last.ok))],
            );
            metric(
                "keepwell_last_probe_duration_seconds",
                "gauge",
                "Time the last probe took.",
                &[("", last.latency_ms / 1000.0)],
            );
            metric(
                "keepwell_last_probe_timestamp_seconds",
                "gauge",
                "When the last probe finished, in Unix time.",
                &[("", last.at_unix)],
            );
        }
        metric(
            "keepwell_uptime_seconds",
            "gauge",
            "Seconds since keepwell started.",
            &[("", self.uptime_seconds())],
        );
        out
    }

    /// The one line `keepwell check` prints for this verdict.
    pub fn check_line(&self) -> String {
        let verdict = self.state.as_str();
        let child = match self.child_pid {
            Some(pid) => format!("child pid {pid}"),
            None => format!("no child running ({})", self.phase),
        };
        let last = match &self.last_probe {
            Some(p) => format!(
                "; last probe {:.0}s ago: {} in {:.1}ms",
                (unix_now() - p.at_unix).max(0.0),
                p.detail,
                p.latency_ms
            ),
            None if self.health_url.is_none() => {
                "; no --health-url, so healthy while the child runs".into()
            }
            None => "; no probe has finished yet".into(),
        };
        format!(
            "{verdict}: keepwell (pid {}) reports {child}{last}",
            self.keepwell_pid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(n: u64, last_probe: Option<&str>) -> Snapshot {
        Snapshot {
            state: if n % 2 == 0 {
                Health::Healthy
            } else {
                Health::Unhealthy
            },
            phase: format!("phase {n}"),
            child_pid: Some(n as i32),
            user: format!("user {n}"),
            restarts: n,
            live: n % 2 == 0,
            ready: n % 3 == 0,
            started: n % 5 == 0,
            draining: n % 7 == 0,
            health_url: (n % 2 == 0).then(|| format!("http://127.0.0.1:{n}/health")),
            sockets: (0..n).map(|i| format!("0.0.0.0:{i} (fd 3)")).collect(),
            last_probe: last_probe.map(|detail| LastProbe {
                at_unix: n as f64,
                ok: n % 2 == 0,
                detail: detail.to_string(),
                latency_ms: n as f64 / 3.0,
            }),
            probes_ok: n * 10,
            probes_failed: n * 11,
            probe_seconds_sum: n as f64 / 7.0,
            started_at_unix: n as f64 * 2.0,
            keepwell_pid: n as u32 + 1,
        }
    }

    #[test]
    fn copy_from_makes_an_equal_snapshot_whatever_was_there() {
        let lasts = [
            None,
            Some("200 OK from http://127.0.0.1:8000/health"),
            Some(""),
        ];
        for (i, before) in lasts.iter().enumerate() {
            for (j, after) in lasts.iter().enumerate() {
                let mut current = snapshot(i as u64 + 1, *before);
                let next = snapshot(j as u64 + 4, *after);
                current.copy_from(&next);
                assert_eq!(current, next, "from {before:?} to {after:?}");
            }
        }
    }
}
