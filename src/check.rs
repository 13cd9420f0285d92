//! `keepwell check`: the HEALTHCHECK command that replaces curl.
//!
//! Without TARGET it asks this container's supervisor over the local socket (plain blocking
//! I/O, no runtime at all). With TARGET, or a command after `--`, it runs one probe of that
//! kind on a current-thread runtime: no worker threads, no resolver thread for IP literals and
//! `localhost`. A command check makes this process the subreaper of what the check starts, so
//! that at the timeout it can kill and reap all of it before exiting: nothing is left behind.
//! It prints one line a person can act on and exits 0 (healthy) or 1 (not), as Docker's
//! HEALTHCHECK expects.

use crate::config::CheckConfig;
use crate::local::{self, AskError};
use crate::probe::{self, human_duration, Target};
use crate::state::Health;

pub const HEALTHY: i32 = 0;
pub const UNHEALTHY: i32 = 1;

/// After a command check, how long to wait for what it left to die of SIGKILL.
const LEFTOVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(config: CheckConfig) -> i32 {
    let (healthy, line) = match &config.probe {
        None => ask_supervisor(&config),
        Some(spec) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("unhealthy: keepwell check cannot start its event loop: {e}");
                    return UNHEALTHY;
                }
            };
            let command = matches!(spec.target, Target::Command(_));
            if command {
                // Orphans of the check come to this process rather than to the container's
                // init, so the cleanup below can reap them. Without it, they go to PID 1,
                // which (keepwell or not) reaps them.
                let _ = nix::sys::prctl::set_child_subreaper(true);
            }
            let result = runtime.block_on(probe::once(spec));
            if command {
                probe::cmd::reap_own_children(LEFTOVER_LIMIT);
            }
            let line = if result.ok {
                format!("healthy: {} in {}", result.detail, latency(result.latency))
            } else {
                format!("unhealthy: {}", result.detail)
            };
            (result.ok, line)
        }
    };
    if !config.quiet {
        println!("{line}");
    }
    if healthy {
        HEALTHY
    } else {
        UNHEALTHY
    }
}

fn latency(d: std::time::Duration) -> String {
    if d.as_millis() >= 1000 {
        human_duration(d)
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

fn ask_supervisor(config: &CheckConfig) -> (bool, String) {
    match local::ask(config.timeout) {
        Ok(snapshot) => (snapshot.state == Health::Healthy, snapshot.check_line()),
        Err(AskError::NoSupervisor) => (
            false,
            "unhealthy: no keepwell supervisor answers in this container (is keepwell the \
             ENTRYPOINT? to probe an app directly, use keepwell check http://127.0.0.1:PORT/health)"
                .into(),
        ),
        Err(AskError::Bad(why)) => (false, format!("unhealthy: {why}")),
    }
}
