//! keepwell: one small static PID 1 for Python containers.
//!
//! This file is the table of contents: parse, configure, run, exit. The parts live in the
//! library (`lib.rs` lists them).

use keepwell::config::{CheckConfig, Config, UsageError};
use keepwell::{check, cli, logging, startup, EXIT_USAGE};

/// musl's allocator hands every buffer of a probe back to the kernel at once (an mmap and a
/// munmap per allocation, with TLB shootdowns across keepwell's two threads); dlmalloc keeps
/// freed memory for the next probe and trims only past a threshold.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// How long the exit may wait for the last log lines to reach stderr: with the wait after
/// SIGKILL, part of the bound a stop keeps past its grace (`state::STOP_BOUND`).
const LOG_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

fn main() {
    let code = match cli::parse(std::env::args().collect()) {
        Err(exit) => {
            if exit.code == 0 {
                print!("{}", exit.message);
            } else {
                eprintln!("{}", exit.message);
            }
            exit.code
        }
        Ok(cli::Invocation::Check(parsed)) => match CheckConfig::from_args(&parsed) {
            Ok(config) => check::run(config),
            Err(e) => usage(e),
        },
        Ok(cli::Invocation::Supervise(parsed)) => match Config::from_args(&parsed) {
            Ok(config) => {
                let code = startup::supervise(config);
                logging::flush(LOG_FLUSH_LIMIT);
                code
            }
            Err(e) => usage(e),
        },
    };
    std::process::exit(code);
}

fn usage(e: UsageError) -> i32 {
    eprintln!("{e}");
    EXIT_USAGE
}
