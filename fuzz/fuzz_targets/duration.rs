//! Every duration flag (`--grace`, `--drain`, `--health-*`, `--restart-window`, `--timeout`).
#![no_main]

use std::time::Instant;

use keepwell::config::parse_duration;
use keepwell::probe::human_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Some(duration) = parse_duration(text) else {
        return;
    };
    // The machine adds every duration to the clock (deadlines): no accepted value overflows it.
    assert!(
        Instant::now().checked_add(duration).is_some(),
        "{text:?} overflows a deadline"
    );
    // What the log lines show reads back as the same duration, when it is exact.
    let shown = human_duration(duration);
    if !shown.contains('.') {
        assert_eq!(
            parse_duration(&shown),
            Some(duration),
            "{text:?} is shown as {shown}"
        );
    }
});
