//! `--rewrite FROM:TO` and `--remap-exit FROM:TO`, through the real command line and config.
#![no_main]

use keepwell::cli::{self, Invocation};
use keepwell::config::{parse_signal, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|rules: (Vec<String>, Vec<String>)| {
    let (rewrites, remaps) = rules;
    let mut args = vec!["keepwell".to_string()];
    args.extend(rewrites.iter().map(|r| format!("--rewrite={r}")));
    args.extend(remaps.iter().map(|r| format!("--remap-exit={r}")));
    args.extend(["--".to_string(), "true".to_string()]);
    let parsed = match cli::parse(args) {
        Ok(Invocation::Supervise(parsed)) => parsed,
        Ok(Invocation::Check(_)) => panic!("a supervise command line parsed as check"),
        Err(exit) => {
            assert_eq!(exit.code, 2, "{}", exit.message);
            assert!(!exit.message.trim_end().contains('\n'), "{}", exit.message);
            return;
        }
    };
    match Config::from_args(&parsed) {
        Err(e) => {
            let line = e.to_string();
            // One line naming the flag and the value (SPEC: bad input).
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.contains("--rewrite") || line.contains("--remap-exit"),
                "{line}"
            );
        }
        Ok(config) => {
            // Every rule is in force as written (a later rule for the same FROM wins).
            let rules = rewrites.iter().flat_map(|r| r.split(','));
            for rule in rules.filter(|r| !r.trim().is_empty()) {
                let (from, to) = rule.split_once(':').expect("accepted rules have FROM:TO");
                let (from, to) = (parse_signal(from), parse_signal(to));
                let (from, _) = (from.expect("accepted"), to.expect("accepted"));
                assert!(config.policy.rewrites.contains_key(&from));
            }
            for (from, to) in &config.policy.remap_exit {
                assert!((0..=255).contains(from) && (0..=255).contains(to));
            }
        }
    }
});
