//! `--health-header` / `keepwell check --header`: lines, `\n` separators, name and value.
#![no_main]

use keepwell::probe::http::split_headers;
use keepwell::probe::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for line in split_headers(text) {
        assert!(!line.contains('\n') && !line.contains("\\n"), "{line:?}");
        if let Ok((name, value)) = parse_header(line) {
            // What the config accepts, the probe can send: otherwise the request could not be
            // built and every probe would fail at run time instead of the flag at start.
            assert!(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{line:?}: name {name:?}"
            );
            assert!(
                hyper::header::HeaderValue::from_str(&value).is_ok(),
                "{line:?}: value {value:?}"
            );
        }
    }
});
