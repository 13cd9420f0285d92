//! The gRPC probe's handling of whatever a server answers: the real probe (HTTP/2, the
//! grpc.health.v1 response, trailers, every bound) over an in-process connection that replays
//! the input as the server's bytes.
//!
//! Input: one byte choosing the SERVICE (none, or "app"), then the server's bytes.
#![no_main]

mod common;

use std::time::Duration;

use keepwell::probe::grpc::probe_via;
use keepwell::probe::http::{Dial, Endpoint, Socket};
use keepwell::probe::{Failure, Mode, Outcome, ProbeSpec, Target};
use libfuzzer_sys::fuzz_target;

struct Replay {
    answer: Vec<u8>,
    dialled: usize,
}

impl Dial for Replay {
    async fn dial(&mut self, _to: &Endpoint) -> Result<Box<dyn Socket>, Failure> {
        self.dialled += 1;
        let answer = std::mem::take(&mut self.answer);
        Ok(Box::new(common::peer_answering(answer)))
    }
}

fn probe_once(spec: &ProbeSpec, service: &str, answer: &[u8]) -> Outcome {
    let mut replay = Replay {
        answer: answer.to_vec(),
        dialled: 0,
    };
    let runtime = common::paused_runtime();
    let outcome = runtime.block_on(async {
        let probe = probe_via("127.0.0.1", 50051, service, spec, &mut replay);
        tokio::time::timeout(Duration::from_secs(2), probe).await
    });
    assert_eq!(replay.dialled, 1);
    outcome.expect("the probe waited for a server that had hung up")
}

fn verdict(outcome: &Outcome) -> Result<&str, (&str, &str)> {
    match outcome {
        Ok(detail) => Ok(detail),
        Err(failure) => Err((&failure.reason, &failure.detail)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, answer)) = data.split_first() else {
        return;
    };
    let service = if choice & 1 == 0 { "" } else { "app" };
    let spec = ProbeSpec::new(
        Target::Grpc {
            host: "127.0.0.1".into(),
            port: 50051,
            service: service.into(),
        },
        Mode::Supervise,
    );
    let outcome = probe_once(&spec, service, answer);
    // The same bytes get the same verdict, whichever future the runtime polls first.
    let again = probe_once(&spec, service, answer);
    assert_eq!(
        verdict(&outcome),
        verdict(&again),
        "the verdict changed between runs"
    );
    if std::env::var_os("KEEPWELL_FUZZ_SHOW").is_some() {
        // Triage: the verdict on a crash or corpus file, e.g. KEEPWELL_FUZZ_SHOW=1 TARGET FILE.
        eprintln!("{outcome:?}");
    }
    let detail = match &outcome {
        Ok(detail) => detail,
        Err(failure) => &failure.detail,
    };
    assert!(
        !detail.is_empty() && !detail.contains(['\n', '\r']),
        "{detail:?}"
    );
    if outcome.is_ok() {
        // SERVING needs the HTTP/2 preface's SETTINGS from the server at least.
        assert!(answer.len() > 9, "healthy from {answer:?}");
    }
});
