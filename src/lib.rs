//! keepwell: one small static PID 1 for Python containers.
//!
//! The binary (`main.rs`) is the table of contents; this library holds every part, so that the
//! fuzz targets and benchmarks reach the same code the binary runs.
//!
//! # Layout
//! - `cli`: the command line and its `KEEPWELL_*` variables, as raw strings.
//! - `config`: validation into one `Config`; every error names the flag or variable.
//! - `startup`: the order PID 1 sets itself up in, up to the supervisor's first step.
//! - `state`: the state machine, pure: phases, health, restart policy, exit codes.
//! - `supervisor`: the one task that owns the machine: signals, reaping, probes, timers.
//! - `alarm`: the supervisor's one timer (a timerfd), set at the next deadline.
//! - `signals`: every signal blocked and read from one signalfd; terminal hand-over.
//! - `reaper`: the only waitpid loop; subreaper registration.
//! - `sockets`: the app's listening sockets keepwell holds (`--socket`), handed down as fd 3, ….
//! - `child`: spawning the child in its own session; signalling it or its group.
//! - `leftovers`: what the child left behind, found through /proc and signalled.
//! - `privileges`: `--user` resolved from /etc files; the verified drop.
//! - `probe`: one health probe of any kind (HTTP, TCP, heartbeat file, command, gRPC), bounded
//!   in time and size; one module per kind under `probe/`.
//! - `status`: the published snapshot and its JSON and Prometheus renderings.
//! - `server`: the `--listen` endpoints; `local`: the socket `keepwell check` asks.
//! - `check`: `keepwell check`; `logging`: keepwell's own lines, never blocking the loop.

pub mod alarm;
pub mod check;
pub mod child;
pub mod cli;
pub mod config;
pub mod leftovers;
pub mod local;
pub mod logging;
pub mod privileges;
pub mod probe;
pub mod reaper;
pub mod server;
pub mod signals;
pub mod sockets;
pub mod startup;
pub mod state;
pub mod status;
pub mod supervisor;

/// Exit code for bad usage and for setup that fails before anything is started.
pub const EXIT_USAGE: i32 = 2;
