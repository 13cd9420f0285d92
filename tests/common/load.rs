//! The bounded loopback load generator (tests/support/loadgen.py) as the tests drive it: start
//! it against a port, do something to the app, close its stdin, read what every request got.

use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How the load ran: every request counted by what it got.
#[derive(Debug)]
pub struct Report {
    pub ok: u64,
    pub non_2xx: u64,
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub other: u64,
    /// The longest time in which no request succeeded.
    pub longest_gap_s: f64,
    pub max_latency_s: f64,
    /// The whole JSON report, for assertion messages.
    pub raw: String,
}

impl Report {
    /// Requests that did not get a 2xx answer, whatever the reason.
    pub fn lost(&self) -> u64 {
        self.non_2xx + self.refused + self.reset + self.timeout + self.other
    }

    /// One line for a log or an assertion message.
    pub fn summary(&self) -> String {
        format!(
            "ok {}, refused {}, reset {}, timeout {}, non-2xx {}, other {}; longest gap {:.3}s, \
             max latency {:.3}s",
            self.ok,
            self.refused,
            self.reset,
            self.timeout,
            self.non_2xx,
            self.other,
            self.longest_gap_s,
            self.max_latency_s
        )
    }
}

/// A running load generator; kill()ed when dropped unfinished.
pub struct Load {
    child: Child,
    stdin: Option<ChildStdin>,
    timeout: Duration,
}

/// `connections` threads sending `rate` requests per second in all to 127.0.0.1:PORT, each on a
/// new connection, each allowed `timeout`; it stops by itself after `max`.
pub fn start(port: u16, connections: u32, rate: u32, timeout: Duration, max: Duration) -> Load {
    let script = format!("{}/tests/support/loadgen.py", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--timeout", &format!("{}", timeout.as_secs_f64())])
        .args(["--max-seconds", &format!("{}", max.as_secs_f64())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tests/support/loadgen.py with /usr/bin/python3");
    let mut load = Load {
        child,
        stdin: None,
        timeout,
    };
    load.stdin = load.child.stdin.take();
    load
}

impl Load {
    /// Stop sending, let the requests in flight finish, and read the report.
    pub fn finish(mut self) -> Report {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.timeout + Duration::from_secs(30);
        loop {
            if self.child.try_wait().expect("try_wait loadgen").is_some() {
                break;
            }
            if Instant::now() >= deadline {
                panic!("loadgen.py did not finish within its timeout");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut raw = String::new();
        self.child
            .stdout
            .take()
            .expect("loadgen's stdout is piped")
            .read_to_string(&mut raw)
            .expect("read loadgen's report");
        let value: serde_json::Value = serde_json::from_str(raw.trim())
            .unwrap_or_else(|e| panic!("loadgen printed no JSON report ({e}): {raw:?}"));
        let count = |key: &str| {
            value[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} in {raw}"))
        };
        let seconds = |key: &str| value[key].as_f64().unwrap_or(0.0);
        Report {
            ok: count("ok"),
            non_2xx: count("non_2xx"),
            refused: count("refused"),
            reset: count("reset"),
            timeout: count("timeout"),
            other: count("other"),
            longest_gap_s: seconds("longest_gap_s"),
            max_latency_s: seconds("max_latency_s"),
            raw,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
