//! `--health-status` / `keepwell check --status`.
#![no_main]

use keepwell::probe::StatusRanges;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Some(ranges) = StatusRanges::parse(text) else {
        return;
    };
    // Only HTTP status codes can count as success, and each code the text names does.
    for code in (0..100).chain(600..=u16::MAX) {
        assert!(!ranges.contains(code), "{text:?} accepts {code}");
    }
    for part in text.split(',') {
        if let Ok(code) = part.trim().parse::<u16>() {
            assert!(ranges.contains(code), "{text:?} does not accept {code}");
        }
    }
});
