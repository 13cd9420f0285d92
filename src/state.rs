//! The one state machine: what keepwell does about each fact it learns.
//!
//! `Machine::step(event, now)` is pure: no clocks, no syscalls, no logging. Facts come in as
//! [`Event`]s (a signal arrived, the child exited, a probe finished, a deadline passed); the
//! machine answers with [`Action`]s for the supervisor to carry out and with [`Report`]s worth a
//! log line. Everything else — `/readyz`, `keepwell check`, the restart policy — reads the same
//! [`View`], so there is one verdict on the app's health.
//!
//! # Phases
//!
//! "Stop signal (+CONT)" means the signal, then SIGCONT to the same target, so a stopped process
//! (`kill -STOP`, a debugger, a job-control suspend) wakes up and acts on it. "The leftovers"
//! are what the child left behind once it is gone: before a restart (and as a subreaper) every
//! process descended from keepwell, setsid() escapees included, never a `docker exec` session;
//! before keepwell exits as PID 1, every other process in the PID namespace.
//!
//! | from | event | to | why |
//! | --- | --- | --- | --- |
//! | Idle | Start | Spawning | the supervisor is ready: start the app |
//! | Spawning | ChildSpawned | Running | the child runs; health starts as `starting` (or `healthy` without a health URL) |
//! | Spawning | SpawnFailed(exec) | Exited(126/127) | exec says COMMAND is missing or not executable; retrying would fail the same way |
//! | Spawning | SpawnFailed(resources) | Backoff | a pids, memory or fd limit: transient, so retried like a crash under `--restart` (or after a restart keepwell decided), counted against `--max-restarts` |
//! | Spawning | SpawnFailed(resources) | Exited(4) | as above, but the restart budget is spent |
//! | Spawning | SpawnFailed(resources) | Exited(5) | the first start under `--restart no`: nothing would retry it |
//! | Idle | Signal(TERM/INT/QUIT) | Exited(128+N) | a stop that came during setup: start nothing |
//! | Running | Signal(TERM/INT) | Draining | `--drain` > 0: readiness drops first so load balancers stop sending traffic |
//! | Running | Signal(TERM/INT/QUIT) | Stopping(exit) | no drain (or QUIT, which means now): the child gets the signal that came (after `--rewrite`, +CONT) at once |
//! | Running | Signal(other) | Running | forwarded (after `--rewrite`) to the child or its group |
//! | Running | RealtimeSignal | Running | forwarded as is (as in Draining, and Stopping while the child lives) |
//! | Running | ProbeDone → unhealthy | Stopping(restart) | `--on-unhealthy restart` and the restart budget allows it: `--stop-signal` (+CONT), keepwell decided |
//! | Running | ProbeDone → unhealthy | Stopping(exit 3) | `--on-unhealthy exit`, so the orchestrator replaces the container |
//! | Running | ProbeDone → unhealthy | Stopping(exit 4) | restart wanted but the budget is spent: show the crash loop |
//! | Running | ProbeDone → unhealthy | Running | `--on-unhealthy ignore`: reported only; `/livez` stays 200 |
//! | Running | ProbeInconclusive | Running | keepwell could not run the probe (out of descriptors): its own fault, never the app's; probed again at the usual interval |
//! | Running | ChildExited | Stopping(restart) | `--restart always`, or `on-failure` and it failed, budget allowing: the leftovers get `--stop-signal` (+CONT) and a full grace |
//! | Running | ChildExited | Stopping(exit) | no restart: the leftovers get `--stop-signal` (+CONT) and a full grace, then keepwell exits with the child's status |
//! | Draining | Tick past the drain | Stopping(exit) | the drain is over: the child gets the signal that started it (after `--rewrite`, +CONT) |
//! | Draining | second TERM/INT/QUIT | Stopping(exit) | the user is impatient: skip the rest of the drain; the child gets this second signal as it came |
//! | Stopping | ChildExited | Stopping | the leftovers get `--stop-signal` (+CONT) for what remains of the grace |
//! | Stopping | Tick past grace | Stopping | SIGKILL to the child and the leftovers: the grace is over |
//! | Stopping | second TERM/INT/QUIT | Stopping | SIGKILL to the child and the leftovers at once, as tini and docker users expect |
//! | Stopping(restart) | TERM/INT/QUIT | Stopping(exit) | a stop from outside beats a restart in progress; a living child gets that signal too (+CONT) |
//! | Stopping(exit 3 or 4) | TERM/INT/QUIT | Stopping(same exit) | the exit already decided keeps its code; a living child gets that signal too (+CONT) |
//! | Stopping | LeftoversGone | Backoff / Exited | the child and its leftovers are gone: restart later, or exit |
//! | Stopping | Tick past SIGKILL + [`AFTER_KILL_LIMIT`] | Backoff / Exited | leftovers outlive SIGKILL (stuck in the kernel): go on without them, so a stop ends inside grace + [`STOP_BOUND`] |
//! | Stopping(exit) | Tick past SIGKILL + [`AFTER_KILL_LIMIT`], child alive | Exited(128+9 or 3/4) | the child itself outlives SIGKILL: exit anyway (the kernel kills what is left with PID 1) |
//! | Stopping(restart) | Tick past SIGKILL + [`AFTER_KILL_LIMIT`], child alive | Stopping | never start a second child beside one that still lives: keep waiting for it |
//! | Stopping | LeftoversGone, restart | Backoff(100 ms first, then 1 s, 2 s, … 30 s) | the first restart in `--restart-window` comes as fast as Docker's; each further one waits twice as long, so a crash loop does not spin (the budget, `--max-restarts`, still ends it) |
//! | Backoff | Tick past the delay | Spawning | the backoff is over: spawn again |
//! | Backoff | TERM/INT/QUIT | Exited(128+N) | nothing runs, so there is nothing to wait for |
//! | any | Exited(code) | — | `--remap-exit FROM:TO` turns FROM into TO on the way out |
//! | any | a step that decides the exit (to Stopping(exit) or Exited) | — | ReleaseSockets, once: keepwell closes its copies of the `--socket`s, so the port closes with the app's own copies and clients are refused as without `--socket`; a restart keeps them, so clients wait in the queue instead |
//!
//! # Health (Docker's HEALTHCHECK semantics, plus Kubernetes' success threshold)
//!
//! | from | probe | to | why |
//! | --- | --- | --- | --- |
//! | starting | success | healthy | the first success ends the start period |
//! | starting | failure of a probe that started inside the start period | starting | boot time: failures do not count (Docker compares the probe's start, not its end); the first, and each change of reason, is reported |
//! | starting | `retries` failures after the start period | unhealthy | it never came up |
//! | healthy | `retries` consecutive failures | unhealthy | one failure is noise; `retries` is a pattern |
//! | healthy | success | healthy | resets the failure count |
//! | unhealthy | `success_threshold` consecutive successes | healthy | recovered (under `--on-unhealthy ignore`) |
//!
//! Probes come every `start_interval` inside the start period and every `interval` after it,
//! measured from the end of one probe to the start of the next.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// keepwell's own exit code when the app stayed unhealthy under `--on-unhealthy exit`.
pub const EXIT_UNHEALTHY: i32 = 3;
/// keepwell's own exit code when more than `--max-restarts` restarts fell inside the window.
pub const EXIT_RESTARTS_EXHAUSTED: i32 = 4;

/// The backoff before the first restart in the window: as short as Docker's restart policy.
/// A one-off crash or an unhealthy app is back as soon as it can boot (with `--socket`,
/// clients wait in the kernel's queue meanwhile); a crash loop still meets `--max-restarts`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The backoff before the second restart in the window; it doubles for every further one.
const SECOND_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff, however many restarts came before.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// keepwell's own exit code when COMMAND could not be started for lack of resources (a pids,
/// memory or descriptor limit) and no restart policy retries it.
pub const EXIT_NO_RESOURCES: i32 = 5;

/// After SIGKILL, how long to wait for the killed to be gone before going on without them (a
/// process stuck in the kernel, state D, outlives SIGKILL). Zombies never hold the wait: the
/// supervisor counts only live processes.
pub const AFTER_KILL_LIMIT: Duration = Duration::from_millis(500);
/// The most a stop takes past `--drain` + `--grace`: the wait after SIGKILL, plus at most as
/// long again for keepwell's last log lines to reach stderr (`main`'s flush limit). The README
/// states it, and the examples' limits are sized from it.
pub const STOP_BOUND: Duration = Duration::from_secs(1);

/// What `--restart` says to do when the child exits by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

/// What `--on-unhealthy` says to do when the app stays unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnhealthy {
    Restart,
    Exit,
    Ignore,
}

/// The health timing of `--health-*`; present only when there is a health URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTiming {
    pub interval: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
    pub success_threshold: u32,
}

/// Everything the machine's policy depends on, already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub stop_signal: Signal,
    pub grace: Duration,
    pub drain: Duration,
    pub rewrites: BTreeMap<Signal, Signal>,
    pub signal_group: bool,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub health: Option<HealthTiming>,
    pub on_unhealthy: OnUnhealthy,
    /// `--remap-exit FROM:TO`: keepwell exits with TO where it would exit with FROM.
    pub remap_exit: BTreeMap<i32, i32>,
    /// keepwell is PID 1 of its PID namespace: before it exits, the leftovers are every other
    /// process there (the kernel would SIGKILL them anyway once PID 1 is gone).
    pub pid1: bool,
}

/// How a child ended, as waitpid reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention Docker and Kubernetes show: the code, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    fn is_success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// The app's health as Docker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A fact the supervisor learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The supervisor is set up: start the app.
    Start,
    ChildSpawned {
        pid: i32,
    },
    /// COMMAND could not be started.
    SpawnFailed {
        failure: SpawnFailure,
    },
    /// The child (not some other reaped orphan) exited.
    ChildExited {
        pid: i32,
        status: ExitStatus,
    },
    /// Nothing is left of the last child: no live process in the scope of
    /// [`Machine::awaiting_leftovers`].
    LeftoversGone,
    /// keepwell received this signal (SIGCHLD never comes here: it is the reaper's).
    Signal(Signal),
    /// keepwell received a real-time signal (SIGRTMIN..SIGRTMAX), by number: forwarded as is.
    RealtimeSignal(i32),
    /// A probe finished: success or failure, with what a person would want to know, and the
    /// cause without what changes from probe to probe (an age, a command's output).
    ProbeDone {
        ok: bool,
        detail: String,
        reason: Cow<'static, str>,
    },
    /// keepwell could not carry out a probe for a reason of its own (no file descriptor left):
    /// says nothing about the app.
    ProbeInconclusive {
        detail: String,
    },
    /// Time passed; the machine checks its deadlines.
    Tick,
}

/// Why COMMAND could not be started, told apart by what fork and exec said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnFailure {
    /// exec says COMMAND is not found (127) or cannot be executed (126).
    Exec { code: i32 },
    /// fork or exec ran out of a resource (the pids limit, memory, descriptors): transient.
    Resources { detail: String },
}

/// Who a cleanup signal reaches: the child and what it left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every live process descended from keepwell (through /proc), setsid() escapees included;
    /// never a `docker exec` session, which is not keepwell's descendant. `pgid` is the child's
    /// process group: the fallback when /proc cannot be read.
    Descendants { pgid: i32 },
    /// Every other process in keepwell's PID namespace (`kill(-1, …)`): only as PID 1, before
    /// it exits.
    Namespace,
}

/// Who gets a signal: the child alone or its whole process group (pgid == child pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Child(i32),
    Group(i32),
}

/// What the supervisor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Signal {
        target: Target,
        signal: Signal,
    },
    /// A real-time signal, which has no `Signal` variant.
    SignalNumber {
        target: Target,
        signo: i32,
    },
    /// Signal everything in the scope; the supervisor finds who that is and logs them.
    SignalScope {
        scope: Scope,
        signal: Signal,
    },
    StartProbe,
    /// A probe in flight belongs to a child that is going away: drop it.
    CancelProbe,
    /// The stop under way ends in keepwell's exit: close the `--socket`s keepwell holds, so the
    /// port closes once the app has closed its copies and clients are refused (and go
    /// elsewhere) instead of waiting for a child that will not come. Restarts keep them.
    ReleaseSockets,
    Exit(i32),
}

/// Why keepwell is stopping the child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// TERM, INT or QUIT reached keepwell.
    Requested(Signal),
    /// The probe failures crossed `--health-retries`; the last one's reason.
    Unhealthy(String),
    ChildExited(ExitStatus),
    /// COMMAND could not be started for lack of resources; what ran out.
    CouldNotSpawn(String),
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Requested(signal) => write!(f, "keepwell received {signal}"),
            StopCause::Unhealthy(detail) => write!(f, "the app stayed unhealthy ({detail})"),
            StopCause::ChildExited(status) => write!(f, "{}", describe_status(*status)),
            StopCause::CouldNotSpawn(detail) => write!(f, "COMMAND could not be started: {detail}"),
        }
    }
}

/// A line worth logging; the supervisor formats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    HealthChanged {
        from: Health,
        to: Health,
        detail: String,
    },
    /// A probe failed inside the start period (not counted): the first such failure, and each
    /// one whose reason differs from the one before, so a misconfigured check shows at once.
    StartPeriodFailure {
        detail: String,
    },
    Draining {
        signal: Signal,
        drain: Duration,
    },
    Stopping {
        cause: StopCause,
        signal: Signal,
        grace: Duration,
    },
    Killed {
        reason: &'static str,
    },
    /// Something outlived SIGKILL by [`AFTER_KILL_LIMIT`]: keepwell goes on without it.
    GaveUpWaiting {
        for_child: bool,
    },
    /// A probe keepwell could not carry out (its own fault): not counted against the app.
    ProbeInconclusive {
        detail: String,
    },
    RestartScheduled {
        cause: StopCause,
        delay: Duration,
        restarts_in_window: u32,
    },
    GivingUp {
        restarts_in_window: u32,
        window: Duration,
    },
    Forwarded {
        received: Signal,
        sent: Signal,
        target: Target,
    },
    Exiting {
        code: i32,
        why: String,
        /// The code before `--remap-exit` changed it.
        remapped_from: Option<i32>,
    },
}

/// Why keepwell will exit once the child and its leftovers are gone; each has its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExitReason {
    /// With the child's own status (container semantics).
    ChildStatus,
    /// `--on-unhealthy exit`.
    Unhealthy,
    /// More than `--max-restarts` restarts inside `--restart-window`.
    RestartsExhausted,
}

/// What happens once the child and its leftovers are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum After {
    Exit(ExitReason),
    Restart(StopCause),
}

/// The health of the current child and when to probe it next.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HealthTrack {
    health: Health,
    spawned_at: Instant,
    /// The start period ended early with the first success.
    start_period_ended: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
    probe_due: Option<Instant>,
    /// When the probe in flight started: whether its failure is boot time depends on that
    /// (Docker compares the probe's start with the container's), not on when it ended.
    probing_since: Option<Instant>,
    healthy_once: bool,
    /// The reason of the last failure reported inside the start period.
    start_failure_reported: Option<Cow<'static, str>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Spawning,
    Running {
        pid: i32,
        track: HealthTrack,
    },
    Draining {
        pid: i32,
        track: HealthTrack,
        until: Instant,
        received: Signal,
    },
    Stopping {
        pid: i32,
        child_status: Option<ExitStatus>,
        deadline: Instant,
        killed: bool,
        requested: bool,
        after: After,
    },
    Backoff {
        until: Instant,
    },
    Exited(i32),
}

/// What the rest of keepwell may know of the machine: a copy, never a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub phase: &'static str,
    pub health: Health,
    pub child_pid: Option<i32>,
    /// `/livez`: a running child that is not unhealthy.
    pub live: bool,
    /// `/readyz`: healthy, and not draining or stopping.
    pub ready: bool,
    /// `/startupz`: healthy at least once since the child last started.
    pub started: bool,
    /// Between a TERM/INT and the stop signal under `--drain`.
    pub draining: bool,
    pub restarts: u64,
}

/// The supervisor's policy, as a value: feed it events, carry out its actions.
#[derive(Debug)]
pub struct Machine {
    policy: Policy,
    phase: Phase,
    restart_times: VecDeque<Instant>,
    restarts_total: u64,
}

/// What one step produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub actions: Vec<Action>,
    pub reports: Vec<Report>,
}

impl Step {
    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }
    fn report(&mut self, report: Report) {
        self.reports.push(report);
    }
}

fn is_stop_request(signal: Signal) -> bool {
    matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

impl Machine {
    pub fn new(policy: Policy) -> Self {
        Machine {
            policy,
            phase: Phase::Idle,
            restart_times: VecDeque::new(),
            restarts_total: 0,
        }
    }

    /// The earliest moment at which a `Tick` may change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Running { track, .. } => {
                track.probe_due.filter(|_| track.probing_since.is_none())
            }
            Phase::Draining { until, .. } => Some(*until),
            Phase::Stopping { deadline, .. } => Some(*deadline),
            Phase::Backoff { until } => Some(*until),
            Phase::Idle | Phase::Spawning | Phase::Exited(_) => None,
        }
    }

    /// Once the child is gone: the scope the supervisor should watch until nothing lives in it
    /// (then it sends `LeftoversGone`).
    pub fn awaiting_leftovers(&self) -> Option<Scope> {
        match &self.phase {
            Phase::Stopping {
                pid,
                child_status: Some(_),
                after,
                ..
            } => Some(self.leftovers_scope(*pid, after)),
            _ => None,
        }
    }

    pub fn view(&self) -> View {
        let (phase, health, child_pid, started) = match &self.phase {
            Phase::Idle => ("idle", Health::Starting, None, false),
            Phase::Spawning => ("starting", Health::Starting, None, false),
            Phase::Running { pid, track } => {
                ("running", track.health, Some(*pid), track.healthy_once)
            }
            Phase::Draining { pid, track, .. } => {
                ("draining", track.health, Some(*pid), track.healthy_once)
            }
            Phase::Stopping {
                pid, child_status, ..
            } => (
                "stopping",
                Health::Unhealthy,
                child_status.is_none().then_some(*pid),
                false,
            ),
            Phase::Backoff { .. } => ("restarting", Health::Starting, None, false),
            Phase::Exited(_) => ("exited", Health::Unhealthy, None, false),
        };
        let running = matches!(self.phase, Phase::Running { .. } | Phase::Draining { .. });
        // Under `--on-unhealthy ignore` a liveness probe must not restart the container for what
        // the user said not to act on: alive while the child runs.
        let ignored = self.policy.on_unhealthy == OnUnhealthy::Ignore;
        View {
            phase,
            health,
            child_pid,
            live: running && (health != Health::Unhealthy || ignored),
            ready: matches!(self.phase, Phase::Running { .. }) && health == Health::Healthy,
            started,
            draining: matches!(self.phase, Phase::Draining { .. }),
            restarts: self.restarts_total,
        }
    }

    /// Whether keepwell will exit once the stop under way ends (or exits now).
    fn exit_decided(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopping {
                after: After::Exit(_),
                ..
            } | Phase::Exited(_)
        )
    }

    /// Feed one event; get back what to do.
    pub fn step(&mut self, event: Event, now: Instant) -> Step {
        let mut out = Step::default();
        self.step_into(event, now, &mut out);
        out
    }

    /// [`Machine::step`] into `out`, emptied first: the supervisor reuses one `Step`, so a
    /// step allocates nothing unless it acts more than before.
    pub fn step_into(&mut self, event: Event, now: Instant, out: &mut Step) {
        out.actions.clear();
        out.reports.clear();
        let exit_decided_before = self.exit_decided();
        self.step_inner(event, now, out);
        if !exit_decided_before && self.exit_decided() {
            out.act(Action::ReleaseSockets);
        }
    }

    fn step_inner(&mut self, event: Event, now: Instant, out: &mut Step) {
        match event {
            Event::Start => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Spawning;
                    out.act(Action::Spawn);
                }
            }
            Event::ChildSpawned { pid } => {
                if self.phase == Phase::Spawning {
                    let track = self.new_track(now);
                    self.phase = Phase::Running { pid, track };
                }
            }
            Event::SpawnFailed { failure } => self.on_spawn_failed(failure, now, out),
            Event::ChildExited { pid, status } => self.on_child_exited(pid, status, now, out),
            Event::LeftoversGone => self.on_leftovers_gone(now, out),
            Event::Signal(signal) => self.on_signal(signal, now, out),
            Event::RealtimeSignal(signo) => {
                if let Some(pid) = self.child_to_signal() {
                    let target = self.target(pid);
                    out.act(Action::SignalNumber { target, signo });
                }
            }
            Event::ProbeDone { ok, detail, reason } => self.on_probe(ok, detail, reason, now, out),
            Event::ProbeInconclusive { detail } => self.on_probe_inconclusive(detail, now, out),
            Event::Tick => self.on_tick(now, out),
        }
    }

    fn new_track(&self, now: Instant) -> HealthTrack {
        match &self.policy.health {
            Some(timing) => HealthTrack {
                health: Health::Starting,
                spawned_at: now,
                start_period_ended: false,
                consecutive_failures: 0,
                consecutive_successes: 0,
                probe_due: Some(now + timing.start_interval),
                probing_since: None,
                healthy_once: false,
                start_failure_reported: None,
            },
            // Without a health URL the app is healthy while the child runs.
            None => HealthTrack {
                health: Health::Healthy,
                spawned_at: now,
                start_period_ended: true,
                consecutive_failures: 0,
                consecutive_successes: 0,
                probe_due: None,
                probing_since: None,
                healthy_once: true,
                start_failure_reported: None,
            },
        }
    }

    /// The one way out: `--remap-exit` applies to every code keepwell exits with.
    fn exit(&mut self, code: i32, why: String, out: &mut Step) {
        let remapped = self.policy.remap_exit.get(&code).copied();
        let final_code = remapped.unwrap_or(code);
        self.phase = Phase::Exited(final_code);
        out.report(Report::Exiting {
            code: final_code,
            why,
            remapped_from: remapped.map(|_| code),
        });
        out.act(Action::Exit(final_code));
    }

    /// A received signal as the child gets it: `--rewrite` applied.
    fn rewritten(&self, received: Signal) -> Signal {
        self.policy
            .rewrites
            .get(&received)
            .copied()
            .unwrap_or(received)
    }

    /// The signal that begins a stop: a stop from outside forwards what came (after
    /// `--rewrite`); a stop keepwell decides itself sends `--stop-signal`.
    fn stop_signal_for(&self, received: Option<Signal>) -> Signal {
        received
            .map(|r| self.rewritten(r))
            .unwrap_or(self.policy.stop_signal)
    }

    fn target(&self, pid: i32) -> Target {
        if self.policy.signal_group {
            Target::Group(pid)
        } else {
            Target::Child(pid)
        }
    }

    /// Who the leftovers are: before a restart (or as a subreaper) keepwell's descendants; before
    /// PID 1 exits, everyone else in the namespace.
    fn leftovers_scope(&self, pid: i32, after: &After) -> Scope {
        match after {
            After::Exit(_) if self.policy.pid1 => Scope::Namespace,
            _ => Scope::Descendants { pgid: pid },
        }
    }

    /// A stop signal, then SIGCONT to the same target: a stopped process cannot act on the stop
    /// signal until it is continued (systemd does the same).
    fn send_stop(target: Target, signal: Signal, out: &mut Step) {
        out.act(Action::Signal { target, signal });
        if !matches!(signal, Signal::SIGCONT | Signal::SIGKILL) {
            out.act(Action::Signal {
                target,
                signal: Signal::SIGCONT,
            });
        }
    }

    /// The stop signal (then SIGCONT) to the leftovers.
    fn sweep(scope: Scope, signal: Signal, out: &mut Step) {
        out.act(Action::SignalScope { scope, signal });
        if !matches!(signal, Signal::SIGCONT | Signal::SIGKILL) {
            out.act(Action::SignalScope {
                scope,
                signal: Signal::SIGCONT,
            });
        }
    }

    fn restarts_in_window(&mut self, now: Instant) -> u32 {
        while let Some(&oldest) = self.restart_times.front() {
            if now.saturating_duration_since(oldest) >= self.policy.restart_window {
                self.restart_times.pop_front();
            } else {
                break;
            }
        }
        self.restart_times.len() as u32
    }

    /// A restart is wanted: either the budget allows it, or keepwell gives up with its own code.
    fn after_restart_wanted(&mut self, cause: StopCause, now: Instant, out: &mut Step) -> After {
        let in_window = self.restarts_in_window(now);
        if in_window >= self.policy.max_restarts {
            out.report(Report::GivingUp {
                restarts_in_window: in_window,
                window: self.policy.restart_window,
            });
            After::Exit(ExitReason::RestartsExhausted)
        } else {
            After::Restart(cause)
        }
    }

    /// Count the restart and wait out its backoff: 100 ms for the first restart in the window,
    /// then 1 s doubling per restart already in it, at most 30 s.
    fn schedule_restart(&mut self, cause: StopCause, now: Instant, out: &mut Step) {
        let in_window = self.restarts_in_window(now);
        let delay = backoff(in_window);
        self.restart_times.push_back(now);
        self.restarts_total += 1;
        out.report(Report::RestartScheduled {
            cause,
            delay,
            restarts_in_window: in_window + 1,
        });
        self.phase = Phase::Backoff { until: now + delay };
    }

    /// Exit for a reason decided earlier; `status` is the child's, for `ChildStatus`.
    fn exit_for(&mut self, reason: ExitReason, status: ExitStatus, out: &mut Step) {
        let (code, why) = match reason {
            ExitReason::ChildStatus => (status.exit_code(), describe_status(status)),
            ExitReason::Unhealthy => (
                EXIT_UNHEALTHY,
                "the app stayed unhealthy (--on-unhealthy exit)".to_string(),
            ),
            ExitReason::RestartsExhausted => (
                EXIT_RESTARTS_EXHAUSTED,
                "too many restarts inside --restart-window (--max-restarts)".to_string(),
            ),
        };
        self.exit(code, why, out);
    }

    fn on_spawn_failed(&mut self, failure: SpawnFailure, now: Instant, out: &mut Step) {
        if self.phase != Phase::Spawning {
            return;
        }
        match failure {
            SpawnFailure::Exec { code } => {
                self.exit(code, "COMMAND could not be started".into(), out)
            }
            SpawnFailure::Resources { detail } => {
                // A restart policy, or a restart keepwell already decided, means the user wants
                // the app kept running: a full pids table is a crash like any other.
                let retry = self.policy.restart != RestartPolicy::No || self.restarts_total > 0;
                let cause = StopCause::CouldNotSpawn(detail);
                if !retry {
                    self.exit(
                        EXIT_NO_RESOURCES,
                        format!("{cause}; without --restart nothing retries it"),
                        out,
                    );
                    return;
                }
                match self.after_restart_wanted(cause, now, out) {
                    After::Restart(cause) => self.schedule_restart(cause, now, out),
                    After::Exit(reason) => self.exit_for(reason, ExitStatus::Code(1), out),
                }
            }
        }
    }

    /// Begin stopping a running child: its stop signal (+CONT) now, SIGKILL at the deadline.
    fn begin_stop(
        &mut self,
        pid: i32,
        cause: StopCause,
        received: Option<Signal>,
        after: After,
        now: Instant,
        out: &mut Step,
    ) {
        let signal = self.stop_signal_for(received);
        out.act(Action::CancelProbe);
        Self::send_stop(self.target(pid), signal, out);
        out.report(Report::Stopping {
            cause,
            signal,
            grace: self.policy.grace,
        });
        self.phase = Phase::Stopping {
            pid,
            child_status: None,
            deadline: now + self.policy.grace,
            killed: false,
            requested: received.is_some(),
            after,
        };
    }

    fn on_child_exited(&mut self, pid: i32, status: ExitStatus, now: Instant, out: &mut Step) {
        match &mut self.phase {
            Phase::Running { pid: child, .. } | Phase::Draining { pid: child, .. }
                if *child == pid =>
            {
                let requested = matches!(self.phase, Phase::Draining { .. });
                let wants_restart = !requested
                    && match self.policy.restart {
                        RestartPolicy::No => false,
                        RestartPolicy::OnFailure => !status.is_success(),
                        RestartPolicy::Always => true,
                    };
                let cause = StopCause::ChildExited(status);
                let after = if wants_restart {
                    self.after_restart_wanted(cause, now, out)
                } else {
                    After::Exit(ExitReason::ChildStatus)
                };
                // The child is gone; what it left behind gets the stop signal now and SIGKILL
                // after a full grace period.
                out.act(Action::CancelProbe);
                Self::sweep(
                    self.leftovers_scope(pid, &after),
                    self.policy.stop_signal,
                    out,
                );
                self.phase = Phase::Stopping {
                    pid,
                    child_status: Some(status),
                    deadline: now + self.policy.grace,
                    killed: false,
                    requested,
                    after,
                };
            }
            Phase::Stopping {
                pid: child,
                child_status,
                killed,
                after,
                ..
            } if *child == pid && child_status.is_none() => {
                *child_status = Some(status);
                // Already SIGKILLed with the child; otherwise the leftovers get the stop signal
                // for what remains of the grace.
                if !*killed {
                    let after = after.clone();
                    Self::sweep(
                        self.leftovers_scope(pid, &after),
                        self.policy.stop_signal,
                        out,
                    );
                }
            }
            _ => {}
        }
    }

    fn on_leftovers_gone(&mut self, now: Instant, out: &mut Step) {
        let Phase::Stopping {
            child_status: Some(status),
            after,
            ..
        } = &self.phase
        else {
            return;
        };
        let status = *status;
        match after.clone() {
            After::Exit(reason) => self.exit_for(reason, status, out),
            After::Restart(cause) => self.schedule_restart(cause, now, out),
        }
    }

    fn on_signal(&mut self, signal: Signal, now: Instant, out: &mut Step) {
        let stop = is_stop_request(signal);
        match self.phase.clone() {
            Phase::Running { pid, track } if stop => {
                // QUIT means "now" (gunicorn's quick shutdown): only TERM and INT drain.
                if self.policy.drain > Duration::ZERO && signal != Signal::SIGQUIT {
                    out.report(Report::Draining {
                        signal,
                        drain: self.policy.drain,
                    });
                    self.phase = Phase::Draining {
                        pid,
                        track,
                        until: now + self.policy.drain,
                        received: signal,
                    };
                } else {
                    let cause = StopCause::Requested(signal);
                    self.begin_stop(
                        pid,
                        cause,
                        Some(signal),
                        After::Exit(ExitReason::ChildStatus),
                        now,
                        out,
                    );
                }
            }
            Phase::Draining { pid, .. } if stop => {
                // A second stop cuts the drain short, and it is a stop from outside like the
                // first: the child gets what came now (QUIT after TERM means "quickly").
                self.begin_stop(
                    pid,
                    StopCause::Requested(signal),
                    Some(signal),
                    After::Exit(ExitReason::ChildStatus),
                    now,
                    out,
                );
            }
            Phase::Stopping {
                pid,
                requested,
                killed,
                child_status,
                ..
            } if stop => {
                if requested {
                    if !killed {
                        self.kill(
                            "a second stop signal arrived during the grace period",
                            now,
                            out,
                        );
                    }
                    return;
                }
                // A stop from outside during a stop keepwell decided: it turns a restart in
                // progress into an exit (an exit already decided keeps its reason and code), the
                // grace running stays, and a child that still lives gets what came.
                if let Phase::Stopping {
                    requested, after, ..
                } = &mut self.phase
                {
                    *requested = true;
                    if matches!(after, After::Restart(_)) {
                        *after = After::Exit(ExitReason::ChildStatus);
                    }
                }
                if child_status.is_none() && !killed {
                    let target = self.target(pid);
                    let sent = self.rewritten(signal);
                    Self::send_stop(target, sent, out);
                    out.report(Report::Forwarded {
                        received: signal,
                        sent,
                        target,
                    });
                }
            }
            Phase::Backoff { .. } | Phase::Spawning | Phase::Idle if stop => {
                self.exit(
                    128 + signal as i32,
                    format!("{signal} arrived while no child was running"),
                    out,
                );
            }
            _ => {
                // Not a stop: forwarded while a child runs, dropped otherwise (nothing to get it).
                if let Some(pid) = self.child_to_signal() {
                    let sent = self.rewritten(signal);
                    let target = self.target(pid);
                    out.act(Action::Signal {
                        target,
                        signal: sent,
                    });
                    out.report(Report::Forwarded {
                        received: signal,
                        sent,
                        target,
                    });
                }
            }
        }
    }

    /// The child that forwarded signals go to, while one runs.
    fn child_to_signal(&self) -> Option<i32> {
        match &self.phase {
            Phase::Running { pid, .. }
            | Phase::Draining { pid, .. }
            | Phase::Stopping {
                pid,
                child_status: None,
                ..
            } => Some(*pid),
            _ => None,
        }
    }

    /// SIGKILL to the child (if it still lives) and every leftover; only in Stopping.
    fn kill(&mut self, reason: &'static str, now: Instant, out: &mut Step) {
        let Phase::Stopping {
            pid,
            after,
            killed,
            deadline,
            ..
        } = &mut self.phase
        else {
            return;
        };
        *killed = true;
        *deadline = now + AFTER_KILL_LIMIT;
        let (pid, after) = (*pid, after.clone());
        out.act(Action::SignalScope {
            scope: self.leftovers_scope(pid, &after),
            signal: Signal::SIGKILL,
        });
        out.report(Report::Killed { reason });
    }

    fn on_tick(&mut self, now: Instant, out: &mut Step) {
        match self.phase.clone() {
            Phase::Running { track, .. }
                if track.probing_since.is_none()
                    && track.probe_due.is_some_and(|due| due <= now) =>
            {
                if let Phase::Running { track, .. } = &mut self.phase {
                    track.probing_since = Some(now);
                }
                out.act(Action::StartProbe);
            }
            Phase::Draining {
                pid,
                until,
                received,
                ..
            } if until <= now => {
                // The drain is over: the stop goes on with the signal that began it.
                self.begin_stop(
                    pid,
                    StopCause::Requested(received),
                    Some(received),
                    After::Exit(ExitReason::ChildStatus),
                    now,
                    out,
                );
            }
            Phase::Stopping {
                deadline,
                killed,
                child_status,
                after,
                ..
            } if deadline <= now => {
                if !killed {
                    self.kill("the grace period ran out", now, out);
                    return;
                }
                match child_status {
                    // SIGKILL went out AFTER_KILL_LIMIT ago and something still lives (stuck
                    // in the kernel): go on without it, so the stop keeps its bound.
                    Some(_) => {
                        out.report(Report::GaveUpWaiting { for_child: false });
                        self.on_leftovers_gone(now, out);
                    }
                    // The child itself outlives SIGKILL. Never start a second one beside it:
                    // a restart waits for it. An exit goes ahead, as killed by SIGKILL; as
                    // PID 1 the kernel kills what is left with keepwell.
                    None => match after {
                        After::Restart(_) => {
                            if let Phase::Stopping { deadline, .. } = &mut self.phase {
                                *deadline = now + AFTER_KILL_LIMIT;
                            }
                        }
                        After::Exit(reason) => {
                            out.report(Report::GaveUpWaiting { for_child: true });
                            self.exit_for(reason, ExitStatus::Signaled(libc::SIGKILL), out);
                        }
                    },
                }
            }
            Phase::Backoff { until } if until <= now => {
                self.phase = Phase::Spawning;
                out.act(Action::Spawn);
            }
            _ => {}
        }
    }

    /// The probe interval from now: `start_interval` while the start period lasts.
    fn next_probe_at(track: &HealthTrack, timing: &HealthTiming, now: Instant) -> Instant {
        let still_starting = !track.start_period_ended
            && now.saturating_duration_since(track.spawned_at) < timing.start_period;
        let interval = if still_starting {
            timing.start_interval
        } else {
            timing.interval
        };
        now + interval
    }

    fn on_probe_inconclusive(&mut self, detail: String, now: Instant, out: &mut Step) {
        let Some(timing) = self.policy.health.clone() else {
            return;
        };
        if let Phase::Running { track, .. } | Phase::Draining { track, .. } = &mut self.phase {
            track.probing_since = None;
            track.probe_due = Some(Self::next_probe_at(track, &timing, now));
            out.report(Report::ProbeInconclusive { detail });
        }
    }

    fn on_probe(
        &mut self,
        ok: bool,
        detail: String,
        reason: Cow<'static, str>,
        now: Instant,
        out: &mut Step,
    ) {
        let Some(timing) = self.policy.health.clone() else {
            return;
        };
        let (pid, track) = match &mut self.phase {
            Phase::Running { pid, track } | Phase::Draining { pid, track, .. } => (*pid, track),
            _ => return,
        };
        let started = track.probing_since.take().unwrap_or(now);
        let in_start_period = !track.start_period_ended
            && started.saturating_duration_since(track.spawned_at) < timing.start_period;
        let before = track.health;
        if ok {
            track.consecutive_failures = 0;
            track.consecutive_successes += 1;
            track.start_period_ended = true;
            let recovered = match before {
                Health::Starting => true,
                Health::Unhealthy => track.consecutive_successes >= timing.success_threshold,
                Health::Healthy => false,
            };
            if recovered {
                track.health = Health::Healthy;
                track.healthy_once = true;
            }
        } else {
            track.consecutive_successes = 0;
            if in_start_period && track.start_failure_reported.as_ref() != Some(&reason) {
                track.start_failure_reported = Some(reason);
                out.report(Report::StartPeriodFailure {
                    detail: detail.clone(),
                });
            }
            if !in_start_period {
                track.consecutive_failures += 1;
                if track.consecutive_failures >= timing.retries {
                    track.health = Health::Unhealthy;
                }
            }
        }
        track.probe_due = Some(Self::next_probe_at(track, &timing, now));
        let after = track.health;
        if after == before {
            return;
        }
        out.report(Report::HealthChanged {
            from: before,
            to: after,
            detail: detail.clone(),
        });
        if after != Health::Unhealthy || !matches!(self.phase, Phase::Running { .. }) {
            return;
        }
        match self.policy.on_unhealthy {
            OnUnhealthy::Ignore => {}
            OnUnhealthy::Exit => {
                let after = After::Exit(ExitReason::Unhealthy);
                let cause = StopCause::Unhealthy(detail);
                self.begin_stop(pid, cause, None, after, now, out);
            }
            OnUnhealthy::Restart => {
                let cause = StopCause::Unhealthy(detail);
                let after = self.after_restart_wanted(cause.clone(), now, out);
                self.begin_stop(pid, cause, None, after, now, out);
            }
        }
    }
}

/// The delay before a restart, given the restarts already inside the window.
pub fn backoff(restarts_in_window: u32) -> Duration {
    match restarts_in_window {
        0 => FIRST_BACKOFF,
        n => SECOND_BACKOFF
            .saturating_mul(1u32 << (n - 1).min(5))
            .min(MAX_BACKOFF),
    }
}

/// "exited with code 3", "killed by SIGTERM": for the exit line.
pub fn describe_status(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("the child exited with code {code}"),
        ExitStatus::Signaled(n) => match Signal::try_from(n) {
            Ok(signal) => format!("the child was killed by {signal}"),
            Err(_) => format!("the child was killed by signal {n}"),
        },
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
