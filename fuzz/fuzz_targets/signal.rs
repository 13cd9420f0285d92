//! `--stop-signal` and each side of `--rewrite FROM:TO`.
#![no_main]

use keepwell::config::parse_signal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Some(signal) = parse_signal(text) else {
        return;
    };
    // The name and the number in keepwell's log lines read back as the same signal.
    assert_eq!(parse_signal(signal.as_str()), Some(signal));
    assert_eq!(parse_signal(&(signal as i32).to_string()), Some(signal));
});
