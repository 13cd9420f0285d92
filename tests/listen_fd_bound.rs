//! A burst of connections to `--listen` never holds more descriptors than the connection bound:
//! the oldest connection is closed before a new one is accepted, not some time after, so a
//! flood faster than the server's evictions cannot take the descriptors a probe needs. (Found
//! by the chaos soak, tests/soak: keepwell held 610 descriptors under a bound of 512.)

mod common;

use std::fs;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(15);
/// keepwell's limit here: its connection bound is NOFILE less 64 reserved descriptors.
const NOFILE: usize = 160;
const BOUND: usize = NOFILE - 64;
/// Threads that connect as fast as they can, each holding its last HELD connections: many
/// connections wait in the listen queue at once, more than the server accepts per wake-up.
const OPENERS: usize = 8;
const HELD: usize = 60;
const FLOOD: Duration = Duration::from_secs(3);

fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_connection_burst_never_holds_more_descriptors_than_the_bound() {
    let (_app, listen, kw) = common::fd_limit::listening_under(NOFILE, DEADLINE);
    let at_rest = open_fds(kw.pid);

    let flooding = Arc::new(AtomicBool::new(true));
    let opened = Arc::new(AtomicUsize::new(0));
    let openers: Vec<_> = (0..OPENERS)
        .map(|_| {
            let (flooding, opened) = (flooding.clone(), opened.clone());
            thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                while flooding.load(Ordering::Relaxed) {
                    if let Ok(stream) = TcpStream::connect_timeout(&listen, Duration::from_secs(1))
                    {
                        opened.fetch_add(1, Ordering::Relaxed);
                        held.push_back(stream);
                        if held.len() > HELD {
                            held.pop_front();
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < FLOOD {
        most = most.max(open_fds(kw.pid));
    }
    flooding.store(false, Ordering::Relaxed);
    for opener in openers {
        opener.join().expect("an opener thread panicked");
    }

    let log = kw.stderr();
    assert!(
        opened.load(Ordering::Relaxed) > 2 * BOUND,
        "the flood opened only {} connections",
        opened.load(Ordering::Relaxed)
    );
    // At rest keepwell holds its fixed descriptors (and maybe a probe's socket); a flood adds at
    // most BOUND connections, plus the one being accepted and a probe's socket.
    assert!(
        most <= at_rest + BOUND + 2,
        "keepwell held {most} descriptors during the flood: {at_rest} at rest, bound {BOUND}"
    );
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.contains("a probe could not be made"), "{log}");
    assert!(!log.contains("→ unhealthy"), "{log}");
}
