//! The whole command line, supervise and check: every flag's value at once, through clap and
//! the config (durations, signals, rules, ranges, headers, URLs, --socket, --listen, --user).
//! Arguments are the input split at NUL bytes.
#![no_main]

use keepwell::cli::{self, Invocation};
use keepwell::config::{CheckConfig, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut args = vec!["keepwell".to_string()];
    args.extend(text.split('\0').map(str::to_string));
    let outcome = match cli::parse(args) {
        Err(exit) => {
            if exit.code != 0 {
                assert_eq!(exit.code, 2, "{}", exit.message);
                assert!(!exit.message.trim_end().contains('\n'), "{}", exit.message);
            }
            return;
        }
        Ok(Invocation::Supervise(parsed)) => Config::from_args(&parsed).map(|_| ()),
        Ok(Invocation::Check(parsed)) => CheckConfig::from_args(&parsed).map(|_| ()),
    };
    if let Err(e) = outcome {
        // Bad input is one line that names what was wrong (SPEC).
        let line = e.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("keepwell: "), "{line}");
    }
});
