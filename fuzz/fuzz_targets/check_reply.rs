//! The reply `keepwell check` reads from the supervisor's local socket, read from a real
//! socket pair as `keepwell check` reads it, then judged and printed.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use keepwell::local::read_verdict;
use keepwell::state::Health;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|reply: &[u8]| {
    // The kernel's buffer (some 200 KiB) holds the whole reply, so it is written before it is
    // read, and the supervisor's end closes as the supervisor's does after its reply.
    if reply.len() > 128 * 1024 {
        return;
    }
    let (mut supervisor, check) = UnixStream::pair().expect("a socket pair");
    supervisor
        .write_all(reply)
        .expect("room in the socket buffer");
    drop(supervisor);
    let verdict = read_verdict(check);
    let Ok(snapshot) = verdict else {
        return;
    };
    // What keepwell check prints and the exit code it gives.
    let line = snapshot.check_line();
    assert!(line.starts_with(snapshot.state.as_str()), "{line}");
    let healthy = snapshot.state == Health::Healthy;
    assert_eq!(line.starts_with("healthy"), healthy);
    let _ = snapshot.to_status_json();
    let _ = snapshot.to_metrics();
});
