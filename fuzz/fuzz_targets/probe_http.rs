//! The HTTP probe's handling of whatever an app answers: the real probe (redirects, the body
//! check, every bound) over in-process connections that replay the input as the app's bytes.
//!
//! Input: one byte of options (`--health-body`, a `Host` header, a Unix-socket URL, which
//! `--health-status`), then the answer to each connection the probe makes, separated by two
//! NUL bytes (a redirect's next request gets the next answer).
#![no_main]

mod common;

use std::time::Duration;

use keepwell::probe::http::{probe_via, Dial, Endpoint, Socket};
use keepwell::probe::{Failure, Mode, Outcome, ProbeSpec, StatusRanges, Target};
use libfuzzer_sys::fuzz_target;

/// Each connection gets the next answer of the input once the request is sent, then the app
/// closes its side.
struct Replay {
    answers: Vec<Vec<u8>>,
    dialled: usize,
}

impl Dial for Replay {
    async fn dial(&mut self, _to: &Endpoint) -> Result<Box<dyn Socket>, Failure> {
        let answer = self.answers[self.dialled % self.answers.len()].clone();
        self.dialled += 1;
        Ok(Box::new(common::peer_answering(answer)))
    }
}

fn spec(options: u8) -> ProbeSpec {
    let target = if options & 4 == 0 {
        Target::Http {
            host: "127.0.0.1".into(),
            port: 8000,
            path: "/health".into(),
        }
    } else {
        Target::Unix {
            socket: "/run/app.sock".into(),
            path: "/health".into(),
        }
    };
    let mut spec = ProbeSpec::new(target, Mode::Supervise);
    if options & 1 != 0 {
        spec.body = Some("healthy".into());
    }
    if options & 2 != 0 {
        spec.headers = vec![("Host".into(), "app.example.com".into())];
    }
    let ranges = ["200-399", "200", "200-299,304", "100-599"][usize::from(options >> 3) % 4];
    spec.status = StatusRanges::parse(ranges).expect("a valid range");
    spec
}

/// A detail goes into one log line and the `/status` JSON: nothing the app sent may break it.
fn one_line(detail: &str) {
    assert!(!detail.is_empty());
    assert!(!detail.contains(['\n', '\r']), "{detail:?}");
}

/// The answers in the input, split at each pair of NUL bytes.
fn answers(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    while let Some(at) = rest.windows(2).position(|w| w == [0, 0]) {
        answers.push(rest[..at].to_vec());
        rest = &rest[at + 2..];
    }
    answers.push(rest.to_vec());
    answers
}

/// One probe against the answers: its outcome, and how many connections it made.
fn probe_once(spec: &ProbeSpec, answers: &[Vec<u8>]) -> (Outcome, usize) {
    let mut replay = Replay {
        answers: answers.to_vec(),
        dialled: 0,
    };
    let runtime = common::paused_runtime();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), probe_via(spec, &mut replay)).await
    });
    // The app closed every connection: the probe must come to its verdict without waiting
    // out its timeout.
    let outcome = outcome.expect("the probe waited for an app that had hung up");
    (outcome, replay.dialled)
}

fn verdict(outcome: &Outcome) -> Result<&str, (&str, &str)> {
    match outcome {
        Ok(detail) => Ok(detail),
        Err(failure) => Err((&failure.reason, &failure.detail)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let spec = spec(options);
    let answers = answers(rest);
    let (outcome, dialled) = probe_once(&spec, &answers);
    // The same bytes get the same verdict: nothing may depend on which of the probe's futures
    // the runtime polls first (tokio::select! picks at random).
    let (again, _) = probe_once(&spec, &answers);
    assert_eq!(
        verdict(&outcome),
        verdict(&again),
        "the verdict changed between runs"
    );
    if std::env::var_os("KEEPWELL_FUZZ_SHOW").is_some() {
        // Triage: the verdict on a crash or corpus file, e.g. KEEPWELL_FUZZ_SHOW=1 TARGET FILE.
        eprintln!("{outcome:?}");
    }
    assert!(dialled <= 11, "{dialled} connections");
    match outcome {
        Ok(detail) => {
            one_line(&detail);
            assert!(
                // Empty lines before a response are skipped, as RFC 9112 section 2.2 allows.
                answers.iter().any(|a| {
                    let start = a.iter().position(|b| !b"\r\n".contains(b));
                    start.is_some_and(|i| a[i..].starts_with(b"HTTP/1."))
                }),
                "healthy without an HTTP answer"
            );
        }
        Err(failure) => {
            one_line(&failure.detail);
            assert!(!failure.reason.is_empty());
        }
    }
});
