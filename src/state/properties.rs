//! The machine model-checked: long random runs against a simulated world, with the documented
//! contract checked after every step.
//!
//! A run is a random [`Policy`] and a random sequence of what the world does: time passes (every
//! deadline the machine asks for gets its `Tick`, on time or a few ms late as under load, and
//! the loop also wakes early, as the supervisor's leftovers poll does), signals of every kind
//! arrive (real-time ones and a second or third TERM at any point included), the child exits by
//! itself with any code or signal or dies of what it was sent, leftovers die or outlive SIGKILL,
//! probes end in success, failure or inconclusively. The world answers the machine's actions as
//! the supervisor does: a `Spawn` gets `ChildSpawned` or `SpawnFailed` (exec or resources) at
//! once; signals reach the child and its leftovers, which may die of them; `LeftoversGone` comes
//! as soon as nothing is left.
//!
//! Only the machine's public face is read: its actions, `view`, `next_deadline` and
//! `awaiting_leftovers`. What it should do comes from the README's contract (the process rules,
//! the stop bound, the restart budget and backoff, the exit-code table, the endpoints) and from
//! [`Docker`], a model of Docker's HEALTHCHECK rules (moby's `handleProbeResult` and its probe
//! interval) plus Kubernetes' success threshold, written here from those rules rather than from
//! the machine's code.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

use super::*;

/// How late a tick may come after its deadline (a loaded machine).
const LATE_MAX: u64 = 5;
const AFTER_KILL: u64 = AFTER_KILL_LIMIT.as_millis() as u64;

/// Sequences per run of the property, unless `PROPTEST_CASES` says otherwise. Sized so that the
/// unit tests stay well under a minute on a loaded 2-core machine (README "Model-checked").
const CASES: u32 = 5000;
/// The longest sequence of world moves in one case.
const MOVES: usize = 400;

fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

fn ms_of(instant: Instant) -> u64 {
    u64::try_from(instant.duration_since(origin()).as_millis()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// --- the world's inputs --------------------------------------------------------------------

/// How a process takes the signals it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Temper {
    /// Handles any terminating signal and exits with this code (gunicorn's graceful stop).
    Graceful(i32),
    /// Dies of any terminating signal (the default action).
    Default,
    /// Ignores everything but SIGKILL.
    Stubborn,
    /// Outlives even SIGKILL (state D) until `Unstick`.
    Stuck,
}

/// What the next `Spawn` gets.
#[derive(Clone, Debug)]
enum SpawnPlan {
    Runs {
        temper: Temper,
        /// What the child leaves behind, by temper: dies of the stop signal, of SIGKILL only,
        /// outlives SIGKILL.
        soft: u8,
        hard: u8,
        stuck: u8,
    },
    NoResources,
    ExecFails(i32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeEnd {
    Ok,
    /// Failed, for one of two reasons (a status, a refused connection).
    Failed(u8),
    Inconclusive,
}

/// One thing the world does.
#[derive(Clone, Debug)]
enum Move {
    /// Time passes; every deadline inside gets its tick, `late` ms late.
    Wait {
        ms: u64,
        late: u64,
    },
    /// Straight to the machine's next deadline (boundaries are where bugs live).
    ToDeadline {
        late: u64,
    },
    /// To 1 ms before the next deadline, no tick.
    JustBeforeDeadline,
    Signal(Signal),
    Realtime(i32),
    /// The child exits by itself (crash, clean exit, killed from outside).
    ChildExits(ExitStatus),
    /// A child that was sent a signal it dies of is reaped now.
    ChildReacts,
    /// Leftovers that were sent a signal they die of are gone now.
    LeftoversReact,
    /// Whatever was stuck in the kernel and got SIGKILL can die now.
    Unstick,
    ProbeEnds(ProbeEnd),
    /// The loop wakes with no deadline passed (the supervisor polls leftovers every 100 ms).
    SpuriousTick,
}

#[derive(Clone, Debug)]
struct Case {
    policy: Policy,
    /// Signals that came in while keepwell was setting up, before `Start`.
    held_back: Vec<Signal>,
    spawns: Vec<SpawnPlan>,
    moves: Vec<Move>,
    /// Whether TERM, INT and QUIT come at all: a third of the runs live through long chains of
    /// crashes, restarts and health changes instead of ending at the first stop request.
    stop_requests: bool,
}

/// Every signal the signalfd can deliver (SIGKILL and SIGSTOP cannot be caught; SIGCHLD is
/// the reaper's).
fn deliverable_signals() -> Vec<Signal> {
    Signal::iterator()
        .filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD))
        .collect()
}

fn any_signal() -> impl Strategy<Value = Signal> {
    select(Signal::iterator().collect::<Vec<_>>())
}

fn stop_request() -> impl Strategy<Value = Signal> {
    select(vec![Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT])
}

fn policy() -> impl Strategy<Value = Policy> {
    let timing = (
        select(vec![10u64, 1_000, 10_000]),
        select(vec![0u64, 100, 2_000, 60_000]),
        select(vec![5u64, 100, 1_000]),
        1..=4u32,
        1..=3u32,
    )
        .prop_map(
            |(interval, start_period, start_interval, retries, success_threshold)| HealthTiming {
                interval: Duration::from_millis(interval),
                start_period: Duration::from_millis(start_period),
                start_interval: Duration::from_millis(start_interval),
                retries,
                success_threshold,
            },
        );
    let codes = || {
        prop_oneof![
            3 => select(vec![0, 1, 3, 4, 5, 126, 127, 130, 131, 137, 143]),
            1 => 0..=255i32,
        ]
    };
    (
        (
            prop_oneof![
                6 => Just(Signal::SIGTERM),
                1 => Just(Signal::SIGQUIT),
                1 => Just(Signal::SIGINT),
                1 => Just(Signal::SIGHUP),
                1 => Just(Signal::SIGKILL),
            ],
            select(vec![0u64, 1, 50, 1_000, 8_000]),
            prop_oneof![2 => Just(0u64), 1 => Just(30), 1 => Just(2_000)],
            prop_oneof![
                3 => btree_map(any_signal(), any_signal(), 0..2),
                1 => btree_map(stop_request(), any_signal(), 1..3),
            ],
            any::<bool>(),
        ),
        (
            prop_oneof![
                1 => Just(RestartPolicy::No),
                2 => Just(RestartPolicy::OnFailure),
                4 => Just(RestartPolicy::Always),
            ],
            prop_oneof![1 => 0..=2u32, 3 => 3..=8u32],
            select(vec![500u64, 5_000, 300_000]),
            proptest::option::weighted(0.75, timing),
            select(vec![
                OnUnhealthy::Restart,
                OnUnhealthy::Exit,
                OnUnhealthy::Ignore,
            ]),
            btree_map(codes(), codes(), 0..3),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (stop_signal, grace, drain, rewrites, signal_group),
                (restart, max_restarts, window, health, on_unhealthy, remap_exit, pid1),
            )| Policy {
                stop_signal,
                grace: Duration::from_millis(grace),
                drain: Duration::from_millis(drain),
                rewrites,
                signal_group,
                restart,
                max_restarts,
                restart_window: Duration::from_millis(window),
                health,
                on_unhealthy,
                remap_exit,
                pid1,
            },
        )
}

fn spawn_plan() -> impl Strategy<Value = SpawnPlan> {
    let temper = prop_oneof![
        3 => select(vec![0, 1, 143]).prop_map(Temper::Graceful),
        3 => Just(Temper::Default),
        2 => Just(Temper::Stubborn),
        1 => Just(Temper::Stuck),
    ];
    prop_oneof![
        60 => (temper, 0..=2u8, 0..=2u8, prop_oneof![6 => Just(0u8), 1 => Just(1u8)])
            .prop_map(|(temper, soft, hard, stuck)| SpawnPlan::Runs { temper, soft, hard, stuck }),
        8 => Just(SpawnPlan::NoResources),
        1 => select(vec![126, 127]).prop_map(SpawnPlan::ExecFails),
    ]
}

/// A move from three random numbers: proptest builds a tree per generated value, and on an
/// unoptimized test build a union of sixteen strategies per move cost ten times what a run of
/// the machine does. Small numbers decode to simple moves, so shrinking still simplifies.
fn world_move() -> impl Strategy<Value = Move> {
    any::<(u8, u16, u8)>().prop_map(|(kind, a, b)| decode_move(kind, a, b))
}

fn decode_move(kind: u8, a: u16, b: u8) -> Move {
    const WEIGHTS: [u32; 16] = [10, 4, 1, 6, 1, 1, 3, 1, 2, 4, 3, 1, 3, 3, 1, 1];
    let total: u32 = WEIGHTS.iter().sum();
    let mut pick = u32::from(kind) * total / 256;
    let arm = WEIGHTS
        .iter()
        .position(|&w| {
            let here = pick < w;
            pick = pick.saturating_sub(w);
            here
        })
        .unwrap_or(0);
    let a64 = u64::from(a);
    // Mostly on time, sometimes up to LATE_MAX ms late.
    let late = if b < 192 {
        0
    } else {
        u64::from(b) % (LATE_MAX + 1)
    };
    let signals = deliverable_signals();
    match arm {
        0 => Move::Wait { ms: a64 % 20, late },
        1 => Move::Wait {
            ms: 20 + a64 % 2_980,
            late,
        },
        2 => Move::Wait {
            ms: 3_000 + a64 * 37_000 / 65_536,
            late,
        },
        3 => Move::ToDeadline { late },
        4 => Move::JustBeforeDeadline,
        5 => Move::Signal([Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT][usize::from(a) % 3]),
        6 => Move::Signal(signals[usize::from(a) % signals.len()]),
        7 => Move::Realtime(34 + i32::from(a) % 31),
        8 => Move::ChildExits(match b {
            0..=127 => {
                ExitStatus::Code([0, 1, 2, 3, 4, 5, 126, 127, 137, 143][usize::from(a) % 10])
            }
            128..=169 => ExitStatus::Code(i32::from(a) % 256),
            _ => ExitStatus::Signaled(1 + i32::from(a) % 64),
        }),
        9 => Move::ChildReacts,
        10 => Move::LeftoversReact,
        11 => Move::Unstick,
        12 => Move::ProbeEnds(ProbeEnd::Ok),
        13 => Move::ProbeEnds(ProbeEnd::Failed(b & 1)),
        14 => Move::ProbeEnds(ProbeEnd::Inconclusive),
        _ => Move::SpuriousTick,
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        policy(),
        prop_oneof![
            8 => Just(vec![]),
            1 => vec(select(deliverable_signals()), 1..3),
        ],
        vec(spawn_plan(), 1..8),
        vec(world_move(), 1..MOVES),
        proptest::bool::weighted(0.67),
    )
        .prop_map(|(policy, held_back, spawns, moves, stop_requests)| Case {
            policy,
            held_back,
            spawns,
            moves,
            stop_requests,
        })
}

// --- the reference models --------------------------------------------------------------------

/// Docker's HEALTHCHECK rules, as moby's `handleProbeResult` and probe loop have them, plus
/// Kubernetes' success threshold for recovering from unhealthy:
/// - a success resets the failing streak and makes the container healthy (from unhealthy only
///   after `success_threshold` successes in a row);
/// - a failure counts unless the status is still `starting` and the probe *started* inside the
///   start period; `retries` counted failures in a row make it unhealthy;
/// - the next probe comes `start_interval` after the end of the last while the status is
///   `starting` and the start period lasts, `interval` after it otherwise; the first comes
///   `start_interval` after the start.
#[derive(Clone, Debug)]
struct Docker {
    status: Health,
    started_at: u64,
    failing_streak: u32,
    success_streak: u32,
    healthy_once: bool,
    /// When the next probe is due; `None` while one runs.
    due: Option<u64>,
    /// The last boot-time failure reported.
    boot_failure_reported: Option<ProbeEnd>,
}

impl Docker {
    fn new(now: u64, timing: Option<&HealthTiming>) -> Docker {
        match timing {
            None => Docker {
                status: Health::Healthy,
                started_at: now,
                failing_streak: 0,
                success_streak: 0,
                healthy_once: true,
                due: None,
                boot_failure_reported: None,
            },
            Some(timing) => Docker {
                status: Health::Starting,
                started_at: now,
                failing_streak: 0,
                success_streak: 0,
                healthy_once: false,
                due: Some(now + ms(timing.start_interval)),
                boot_failure_reported: None,
            },
        }
    }

    /// Takes a probe's result; true when it is a boot-time failure to report (README: the first,
    /// and each change of reason).
    fn result(&mut self, end: ProbeEnd, probe_start: u64, now: u64, timing: &HealthTiming) -> bool {
        let mut report = false;
        match end {
            ProbeEnd::Ok => {
                self.failing_streak = 0;
                self.success_streak += 1;
                let recovers = match self.status {
                    Health::Starting => true,
                    Health::Unhealthy => self.success_streak >= timing.success_threshold,
                    Health::Healthy => true,
                };
                if recovers {
                    self.status = Health::Healthy;
                    self.healthy_once = true;
                }
            }
            ProbeEnd::Failed(_) => {
                self.success_streak = 0;
                let boot_time = self.status == Health::Starting
                    && probe_start - self.started_at < ms(timing.start_period);
                if boot_time {
                    report = self.boot_failure_reported != Some(end);
                    self.boot_failure_reported = Some(end);
                } else {
                    self.failing_streak += 1;
                    if self.failing_streak >= timing.retries {
                        self.status = Health::Unhealthy;
                    }
                }
            }
            ProbeEnd::Inconclusive => {}
        }
        let in_start_period = now - self.started_at < ms(timing.start_period);
        let wait = if in_start_period && self.status == Health::Starting {
            timing.start_interval
        } else {
            timing.interval
        };
        self.due = Some(now + ms(wait));
        report
    }
}

/// What a stop under way ends in, by the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Restart,
    /// keepwell exits with the child's status.
    ChildStatus,
    /// Exit code 3.
    Unhealthy,
    /// Exit code 4.
    Exhausted,
}

#[derive(Clone, Debug)]
struct StopWatch {
    pid: i32,
    began: u64,
    intent: Intent,
    /// A TERM/INT/QUIT from outside is part of this stop: the next one means SIGKILL now.
    from_outside: bool,
    killed_at: Option<u64>,
    child_status: Option<ExitStatus>,
    /// When a wait for a child that outlives SIGKILL ended (its exit was reported, or a stop
    /// from outside turned the restart into an exit): the wait for leftovers counts from there.
    waited_until: Option<u64>,
}

#[derive(Clone, Debug)]
struct Child {
    pid: i32,
    temper: Temper,
    dying_of: Option<ExitStatus>,
    sigkilled: bool,
    /// Its exit is in the supervisor's queue.
    reap_queued: bool,
    reported: bool,
}

#[derive(Clone, Debug)]
struct Leftover {
    temper: Temper,
    dying: bool,
    sigkilled: bool,
}

fn failure_reason(which: u8) -> &'static str {
    if which == 0 {
        "503 Service Unavailable"
    } else {
        "connection refused"
    }
}

/// Signals whose default action is not to terminate: nobody dies of them.
fn harmless(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::SIGCONT
            | Signal::SIGCHLD
            | Signal::SIGWINCH
            | Signal::SIGURG
            | Signal::SIGTSTP
            | Signal::SIGTTIN
            | Signal::SIGTTOU
            | Signal::SIGSTOP
    )
}

/// Totals over every case, for the figures the README reports, and how often each edge of the
/// contract was seen: a property that never reaches an edge checks nothing there.
#[derive(Default)]
struct Totals {
    steps: Cell<u64>,
    runs: Cell<u64>,
    seen: RefCell<BTreeMap<&'static str, u64>>,
}

impl Totals {
    fn note(&self, what: &'static str) {
        *self.seen.borrow_mut().entry(what).or_default() += 1;
    }
}

struct World<'t> {
    policy: Policy,
    machine: Machine,
    now: u64,
    spawns: Vec<SpawnPlan>,
    next_spawn: usize,
    next_pid: i32,
    child: Option<Child>,
    /// The child a `Spawn` made, until the machine hears of it.
    spawned: Option<Child>,
    leftovers: Vec<Leftover>,
    /// When the probe in flight started.
    probe: Option<u64>,
    /// The probe that is ending in the event being delivered: its start and result.
    ending_probe: Option<(u64, ProbeEnd)>,
    docker: Option<Docker>,
    stop: Option<StopWatch>,
    drain: Option<(u64, Signal)>,
    /// The first TERM/INT/QUIT that reached keepwell while a child was there.
    requested_at: Option<u64>,
    restarts: Vec<u64>,
    backoff_until: Option<u64>,
    exited: Option<i32>,
    /// The exit is decided: a stop under way ends in it, or keepwell exits.
    exit_decided: bool,
    queue: VecDeque<Event>,
    trace: VecDeque<String>,
    totals: &'t Totals,
}

impl<'t> World<'t> {
    fn new(case: &Case, totals: &'t Totals) -> World<'t> {
        World {
            policy: case.policy.clone(),
            machine: Machine::new(case.policy.clone()),
            now: 0,
            spawns: case.spawns.clone(),
            next_spawn: 0,
            next_pid: 100,
            child: None,
            spawned: None,
            leftovers: Vec::new(),
            probe: None,
            ending_probe: None,
            docker: None,
            stop: None,
            drain: None,
            requested_at: None,
            restarts: Vec::new(),
            backoff_until: None,
            exited: None,
            exit_decided: false,
            queue: VecDeque::new(),
            trace: VecDeque::new(),
            totals,
        }
    }

    /// A broken promise: the message, and the last steps that led to it.
    #[track_caller]
    fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "{what}\n  at t={} ms; the last steps:\n  {}",
            self.now,
            trace.join("\n  ")
        );
    }

    #[track_caller]
    fn require(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    fn live_child(&self) -> Option<&Child> {
        self.child.as_ref().filter(|c| !c.reported)
    }

    fn target(&self, pid: i32) -> Target {
        if self.policy.signal_group {
            Target::Group(pid)
        } else {
            Target::Child(pid)
        }
    }

    fn rewritten(&self, signal: Signal) -> Signal {
        *self.policy.rewrites.get(&signal).unwrap_or(&signal)
    }

    fn remapped(&self, code: i32) -> i32 {
        *self.policy.remap_exit.get(&code).unwrap_or(&code)
    }

    fn scope(&self, pid: i32, intent: Intent) -> Scope {
        if self.policy.pid1 && intent != Intent::Restart {
            Scope::Namespace
        } else {
            Scope::Descendants { pgid: pid }
        }
    }

    /// Restarts that count against `--max-restarts` now.
    fn restarts_in_window(&self) -> u32 {
        let window = ms(self.policy.restart_window);
        self.restarts
            .iter()
            .filter(|&&t| self.now - t < window)
            .count() as u32
    }

    /// A restart is wanted: the README's budget decides between a restart and exit code 4.
    fn restart_or_give_up(&self) -> Intent {
        if self.restarts_in_window() >= self.policy.max_restarts {
            Intent::Exhausted
        } else {
            Intent::Restart
        }
    }

    /// README: 1 s doubling per restart already in the window, at most 30 s.
    /// README: 100 ms when it is the first in the window, then 1 s, 2 s, 4 s, … doubling per
    /// restart already in the window, at most 30 s.
    fn backoff(&self, in_window: u32) -> u64 {
        match in_window {
            0 => 100,
            n => (1_000u64 << (n - 1).min(5)).min(30_000),
        }
    }

    /// A stop signal to a target, then SIGCONT to the same target.
    fn stop_pair(&self, target: Target, signal: Signal) -> Vec<Action> {
        let mut out = vec![Action::Signal { target, signal }];
        if !matches!(signal, Signal::SIGCONT | Signal::SIGKILL) {
            out.push(Action::Signal {
                target,
                signal: Signal::SIGCONT,
            });
        }
        out
    }

    fn sweep(&self, scope: Scope, signal: Signal) -> Vec<Action> {
        let mut out = vec![Action::SignalScope { scope, signal }];
        if !matches!(signal, Signal::SIGCONT | Signal::SIGKILL) {
            out.push(Action::SignalScope {
                scope,
                signal: Signal::SIGCONT,
            });
        }
        out
    }

    // --- delivering events, as the supervisor does ---------------------------------------

    fn deliver(&mut self, event: Event) {
        let before = self.machine.view();
        let deadline_before = self.machine.next_deadline().map(ms_of);
        let step = self.machine.step(event.clone(), at(self.now));
        self.totals.steps.set(self.totals.steps.get() + 1);
        let after = self.machine.view();
        if self.trace.len() == 40 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!(
            "t={} {event:?}: {} -> {} {:?}",
            self.now, before.phase, after.phase, step.actions
        ));
        self.expect(&event, &before, deadline_before, &step, &after);
        self.carry_out(&step);
        self.check_state();
    }

    /// What the README says this event must do, compared with what the machine did.
    fn expect(
        &mut self,
        event: &Event,
        before: &View,
        deadline_before: Option<u64>,
        step: &Step,
        after: &View,
    ) {
        let now = self.now;
        let signals: Vec<Action> = step
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Signal { .. }
                        | Action::SignalNumber { .. }
                        | Action::SignalScope { .. }
                )
            })
            .cloned()
            .collect();
        let count = |wanted: &Action| step.actions.iter().filter(|a| *a == wanted).count();
        let exit = step.actions.iter().find_map(|a| match a {
            Action::Exit(code) => Some(*code),
            _ => None,
        });

        if before.phase == "exited" {
            self.require(step.actions.is_empty() && after.phase == "exited", || {
                "after its exit the machine must do nothing".into()
            });
            return;
        }

        let mut want_signals: Vec<Action> = Vec::new();
        let mut want_exit: Option<i32> = None;
        let mut want_spawn = false;
        let mut want_probe = false;

        match event {
            Event::Start => {
                want_spawn = before.phase == "idle";
            }
            Event::ChildSpawned { pid } => {
                self.child = self.spawned.take();
                self.require(
                    after.phase == "running" && after.child_pid == Some(*pid),
                    || format!("a spawned child must run: {after:?}"),
                );
                self.docker = Some(Docker::new(now, self.policy.health.as_ref()));
            }
            Event::SpawnFailed { failure } => match failure {
                SpawnFailure::Exec { code } => {
                    self.totals.note("exec failed: exit 126/127");
                    want_exit = Some(self.remapped(*code));
                }
                SpawnFailure::Resources { .. } => {
                    let retried =
                        self.policy.restart != RestartPolicy::No || !self.restarts.is_empty();
                    if !retried {
                        self.totals.note("no resources, nothing retries: exit 5");
                        want_exit = Some(self.remapped(EXIT_NO_RESOURCES));
                    } else if self.restart_or_give_up() == Intent::Exhausted {
                        self.totals.note("no resources, budget spent: exit 4");
                        want_exit = Some(self.remapped(EXIT_RESTARTS_EXHAUSTED));
                    } else {
                        self.totals.note("no resources: retried after a backoff");
                        self.restart_scheduled(after);
                    }
                }
            },
            Event::Signal(signal) if is_stop_request(*signal) => {
                match before.phase {
                    "idle" | "starting" | "restarting" => {
                        self.totals
                            .note("stop signal while no child runs: exit 128+N");
                        want_exit = Some(self.remapped(128 + *signal as i32));
                    }
                    "running" => {
                        self.requested_at.get_or_insert(now);
                        if !self.policy.drain.is_zero() && *signal != Signal::SIGQUIT {
                            self.require(after.phase == "draining" && !after.ready, || {
                                format!("TERM/INT under --drain must drain first: {after:?}")
                            });
                            self.drain = Some((now, *signal));
                            self.totals.note("drain begun");
                        } else {
                            self.totals.note("stop from outside");
                            want_signals = self.begin_outside_stop(*signal, after);
                        }
                    }
                    "draining" => {
                        // A second stop cuts the drain short; the child gets what came now.
                        self.drain = None;
                        self.totals.note("drain cut short by a second stop signal");
                        want_signals = self.begin_outside_stop(*signal, after);
                    }
                    "stopping" => {
                        self.requested_at.get_or_insert(now);
                        let live = self.live_child().map(|c| c.pid);
                        let Some(stop) = self.stop.clone() else {
                            self.fail("stopping without a stop under way".into());
                        };
                        if stop.from_outside {
                            // A second TERM during the grace: SIGKILL at once.
                            if stop.killed_at.is_none() {
                                self.totals.note("second stop signal: SIGKILL at once");
                                want_signals = vec![Action::SignalScope {
                                    scope: self.scope(stop.pid, stop.intent),
                                    signal: Signal::SIGKILL,
                                }];
                                self.killed();
                            } else {
                                self.totals.note("stop signal after SIGKILL: nothing more");
                            }
                        } else {
                            // A stop from outside during one keepwell decided: a restart
                            // becomes an exit; an exit keeps its code; a living child gets it.
                            let watch = self.stop.as_mut().expect("checked just above");
                            watch.from_outside = true;
                            if watch.intent == Intent::Restart {
                                watch.intent = Intent::ChildStatus;
                                watch.waited_until = Some(now);
                                self.totals
                                    .note("stop from outside turned a restart into an exit");
                            } else {
                                self.totals.note("stop from outside kept keepwell's exit");
                            }
                            if live.is_some() && stop.killed_at.is_none() {
                                want_signals =
                                    self.stop_pair(self.target(stop.pid), self.rewritten(*signal));
                            }
                        }
                        self.require(after.phase == "stopping", || {
                            "a stop signal during a stop keeps stopping".into()
                        });
                    }
                    phase => self.fail(format!("the harness has no rule for {phase}")),
                }
            }
            Event::Signal(signal) => {
                // Not a stop: forwarded (after --rewrite) while a child lives, dropped otherwise.
                if let Some(pid) = self.live_child().map(|c| c.pid) {
                    self.totals.note("signal forwarded");
                    want_signals = vec![Action::Signal {
                        target: self.target(pid),
                        signal: self.rewritten(*signal),
                    }];
                }
                self.require(before == after, || {
                    format!("forwarding {signal} must change nothing else")
                });
            }
            Event::RealtimeSignal(signo) => {
                if let Some(pid) = self.live_child().map(|c| c.pid) {
                    self.totals.note("real-time signal forwarded");
                    want_signals = vec![Action::SignalNumber {
                        target: self.target(pid),
                        signo: *signo,
                    }];
                }
                self.require(before == after, || {
                    "forwarding a real-time signal must change nothing else".into()
                });
            }
            Event::ChildExited { pid, status } => match before.phase {
                "running" | "draining" => {
                    let from_outside = before.phase == "draining";
                    let wants_restart = !from_outside
                        && match self.policy.restart {
                            RestartPolicy::No => false,
                            RestartPolicy::OnFailure => *status != ExitStatus::Code(0),
                            RestartPolicy::Always => true,
                        };
                    let intent = if wants_restart {
                        self.restart_or_give_up()
                    } else {
                        Intent::ChildStatus
                    };
                    self.drain = None;
                    self.totals.note(match (from_outside, intent) {
                        (true, _) => "child exited during a drain",
                        (_, Intent::Restart) => "child exited: restart",
                        (_, Intent::Exhausted) => "child exited: budget spent",
                        _ => "child exited: exit with its status",
                    });
                    self.stop = Some(StopWatch {
                        pid: *pid,
                        began: now,
                        intent,
                        from_outside,
                        killed_at: None,
                        child_status: Some(*status),
                        waited_until: Some(now),
                    });
                    want_signals = self.sweep(self.scope(*pid, intent), self.policy.stop_signal);
                    self.require(after.phase == "stopping", || {
                        format!("a child that exits must be cleaned up after: {after:?}")
                    });
                }
                "stopping" => {
                    let Some(stop) = self.stop.as_mut() else {
                        self.fail("stopping without a stop under way".into());
                    };
                    stop.child_status = Some(*status);
                    stop.waited_until = Some(now);
                    let stop = stop.clone();
                    if stop.killed_at.is_none() {
                        self.totals.note("child exited on its stop signal");
                        want_signals =
                            self.sweep(self.scope(stop.pid, stop.intent), self.policy.stop_signal);
                    } else {
                        self.totals.note("child died after SIGKILL");
                    }
                }
                phase => self.fail(format!("a child exited in {phase}")),
            },
            Event::ProbeDone { .. } | Event::ProbeInconclusive { .. } => {
                let (probe_start, end) = self
                    .ending_probe
                    .take()
                    .unwrap_or_else(|| self.fail("a probe result without a probe".into()));
                let timing = self
                    .policy
                    .health
                    .clone()
                    .expect("probes only with a health URL");
                let docker = self.docker.as_mut().expect("probes only for a child");
                let was = docker.status;
                let report = docker.result(end, probe_start, now, &timing);
                let (status, failing_streak) = (docker.status, docker.failing_streak);
                let reported = step
                    .reports
                    .iter()
                    .filter(|r| matches!(r, Report::StartPeriodFailure { .. }))
                    .count();
                self.require(reported == usize::from(report), || {
                    format!("{reported} start-period failures reported, wanted {report}")
                });
                let became_unhealthy = was != Health::Unhealthy && status == Health::Unhealthy;
                self.totals.note(match (end, was, status) {
                    (ProbeEnd::Inconclusive, ..) => "probe inconclusive",
                    (_, Health::Unhealthy, Health::Healthy) => "health: recovered",
                    (_, Health::Unhealthy, _) => "health: still unhealthy",
                    (_, _, Health::Unhealthy) => "health: turned unhealthy",
                    (ProbeEnd::Failed(_), Health::Starting, _) if failing_streak == 0 => {
                        "health: boot-time failure not counted"
                    }
                    (ProbeEnd::Failed(_), ..) => "health: failure counted",
                    (ProbeEnd::Ok, ..) => "health: success",
                });
                if before.phase == "running"
                    && became_unhealthy
                    && self.policy.on_unhealthy != OnUnhealthy::Ignore
                {
                    let intent = match self.policy.on_unhealthy {
                        OnUnhealthy::Exit => Intent::Unhealthy,
                        _ => self.restart_or_give_up(),
                    };
                    let pid = before.child_pid.expect("running has a child");
                    self.stop = Some(StopWatch {
                        pid,
                        began: now,
                        intent,
                        from_outside: false,
                        killed_at: None,
                        child_status: None,
                        waited_until: None,
                    });
                    want_signals = self.stop_pair(self.target(pid), self.policy.stop_signal);
                    self.require(after.phase == "stopping", || {
                        format!("an app that turned unhealthy must be stopped: {after:?}")
                    });
                } else {
                    self.require(after.phase == before.phase, || {
                        format!("a probe result that changes nothing moved the phase: {after:?}")
                    });
                }
            }
            Event::Tick => {
                let due = deadline_before.filter(|&d| d <= now);
                if due.is_none() {
                    self.totals.note("tick before the deadline");
                    self.require(step.actions.is_empty() && before == after, || {
                        "a tick before any deadline must change nothing".into()
                    });
                } else {
                    // A tick that was due and did nothing must not leave the deadline where it
                    // was: the supervisor would wake again at once, for ever.
                    let deadline_after = self.machine.next_deadline().map(ms_of);
                    let idle = step.actions.is_empty() && before == after;
                    self.require(!idle || deadline_after.map_or(true, |d| d > now), || {
                        format!("a due tick left the deadline at {deadline_after:?}: a busy loop")
                    });
                    match before.phase {
                        "running" => {
                            self.totals.note("probe started");
                            let docker = self.docker.as_ref().expect("running has a child");
                            self.require(docker.due.is_some_and(|d| d <= now), || {
                                format!("probe started before it was due ({:?})", docker.due)
                            });
                            want_probe = true;
                        }
                        "draining" => {
                            let (began, signal) = self
                                .drain
                                .take()
                                .unwrap_or_else(|| self.fail("draining without a drain".into()));
                            self.require(now >= began + ms(self.policy.drain), || {
                                "the drain ended early".into()
                            });
                            // The drain is over: the stop goes on with the signal that began it.
                            self.totals.note("drain over");
                            want_signals = self.begin_outside_stop(signal, after);
                        }
                        "stopping" => {
                            let Some(stop) = self.stop.clone() else {
                                self.fail("stopping without a stop under way".into());
                            };
                            match stop.killed_at {
                                None => {
                                    self.require(now >= stop.began + ms(self.policy.grace), || {
                                        "SIGKILL before the grace was over".into()
                                    });
                                    self.totals.note("grace over: SIGKILL");
                                    want_signals = vec![Action::SignalScope {
                                        scope: self.scope(stop.pid, stop.intent),
                                        signal: Signal::SIGKILL,
                                    }];
                                    self.killed();
                                }
                                Some(killed_at) => {
                                    self.require(now >= killed_at + AFTER_KILL, || {
                                        "gave up on the killed before AFTER_KILL_LIMIT".into()
                                    });
                                    let child_lives = stop.child_status.is_none();
                                    self.totals.note(match (child_lives, stop.intent) {
                                        (true, Intent::Restart) => {
                                            "restart waits for a child that outlives SIGKILL"
                                        }
                                        (true, _) => "exit past a child that outlives SIGKILL",
                                        _ => "gone on without leftovers that outlive SIGKILL",
                                    });
                                    if child_lives && stop.intent == Intent::Restart {
                                        // Never a second child beside one that outlives SIGKILL.
                                        self.require(after.phase == "stopping", || {
                                            "restarted beside a child that still lives".into()
                                        });
                                    } else {
                                        want_exit = self.stop_ends(after);
                                    }
                                }
                            }
                        }
                        "restarting" => {
                            let until = self.backoff_until.take();
                            self.require(until.is_some_and(|u| u <= now), || {
                                format!("respawned before the backoff ended ({until:?})")
                            });
                            self.totals.note("respawned after the backoff");
                            want_spawn = true;
                        }
                        phase => self.fail(format!("a deadline in {phase}")),
                    }
                }
            }
            Event::LeftoversGone => {
                self.require(before.phase == "stopping", || {
                    "LeftoversGone outside a stop".into()
                });
                want_exit = self.stop_ends(after);
            }
        }

        self.require(signals == want_signals, || {
            format!("signals sent: {signals:?}\n  the contract says: {want_signals:?}")
        });
        self.require(exit == want_exit, || {
            format!("exit {exit:?}, the exit-code table says {want_exit:?}")
        });
        self.require(count(&Action::Spawn) == usize::from(want_spawn), || {
            format!("spawns: {}, wanted {want_spawn}", count(&Action::Spawn))
        });
        self.require(
            count(&Action::StartProbe) == usize::from(want_probe),
            || {
                format!(
                    "probes started: {}, wanted {want_probe}",
                    count(&Action::StartProbe)
                )
            },
        );
        // --socket: keepwell lets go of the held sockets once, in the step that decides the exit;
        // never for a restart.
        let decided = want_exit.is_some()
            || self
                .stop
                .as_ref()
                .is_some_and(|stop| stop.intent != Intent::Restart);
        let want_release = decided && !self.exit_decided;
        self.exit_decided |= decided;
        self.require(
            count(&Action::ReleaseSockets) == usize::from(want_release),
            || {
                format!(
                    "sockets released {} times, wanted {want_release}",
                    count(&Action::ReleaseSockets)
                )
            },
        );
        let running = |v: &View| matches!(v.phase, "running" | "draining");
        let want_cancel = running(before) && !running(after);
        self.require(
            count(&Action::CancelProbe) == usize::from(want_cancel),
            || {
                format!(
                    "probe cancels: {}, wanted {want_cancel}",
                    count(&Action::CancelProbe)
                )
            },
        );
    }

    /// A stop from outside begins: the child gets the signal that came (after --rewrite).
    fn begin_outside_stop(&mut self, signal: Signal, after: &View) -> Vec<Action> {
        let pid = self
            .live_child()
            .map(|c| c.pid)
            .unwrap_or_else(|| self.fail("a stop begins without a child".into()));
        self.stop = Some(StopWatch {
            pid,
            began: self.now,
            intent: Intent::ChildStatus,
            from_outside: true,
            killed_at: None,
            child_status: None,
            waited_until: None,
        });
        self.require(after.phase == "stopping", || {
            format!("a stop request must stop: {after:?}")
        });
        self.stop_pair(self.target(pid), self.rewritten(signal))
    }

    fn killed(&mut self) {
        let now = self.now;
        if let Some(stop) = self.stop.as_mut() {
            stop.killed_at = Some(now);
        }
    }

    /// The stop is over: a restart's backoff, or the exit its intent says.
    fn stop_ends(&mut self, after: &View) -> Option<i32> {
        let stop = self
            .stop
            .take()
            .unwrap_or_else(|| self.fail("a stop ends that never began".into()));
        let status = stop
            .child_status
            .unwrap_or(ExitStatus::Signaled(libc::SIGKILL));
        let code = match stop.intent {
            Intent::Restart => {
                self.totals.note("stop over: restart scheduled");
                self.restart_scheduled(after);
                return None;
            }
            Intent::ChildStatus => status.exit_code(),
            Intent::Unhealthy => EXIT_UNHEALTHY,
            Intent::Exhausted => EXIT_RESTARTS_EXHAUSTED,
        };
        self.totals.note(match stop.intent {
            Intent::Unhealthy => "stop over: exit 3",
            Intent::Exhausted => "stop over: exit 4",
            _ => "stop over: exit with the child's status",
        });
        if self.remapped(code) != code {
            self.totals.note("exit code remapped");
        }
        Some(self.remapped(code))
    }

    fn restart_scheduled(&mut self, after: &View) {
        let in_window = self.restarts_in_window();
        self.require(after.phase == "restarting", || {
            format!("a restart the budget allows must come: {after:?}")
        });
        self.restarts.push(self.now);
        self.backoff_until = Some(self.now + self.backoff(in_window));
    }

    /// The world carries out the actions, as the supervisor and the kernel would.
    fn carry_out(&mut self, step: &Step) {
        for action in &step.actions {
            match action {
                Action::Spawn => {
                    self.require(self.live_child().is_none(), || {
                        "a second child spawned beside one that lives".into()
                    });
                    let plan = self.spawns[self.next_spawn % self.spawns.len()].clone();
                    self.next_spawn += 1;
                    // The supervisor puts the spawn's outcome first in its queue.
                    let event = match plan {
                        SpawnPlan::Runs {
                            temper,
                            soft,
                            hard,
                            stuck,
                        } => {
                            let pid = self.next_pid;
                            self.next_pid += 1;
                            self.spawned = Some(Child {
                                pid,
                                temper,
                                dying_of: None,
                                sigkilled: false,
                                reap_queued: false,
                                reported: false,
                            });
                            for (temper, n) in [
                                (Temper::Default, soft),
                                (Temper::Stubborn, hard),
                                (Temper::Stuck, stuck),
                            ] {
                                for _ in 0..n {
                                    self.leftovers.push(Leftover {
                                        temper: temper.clone(),
                                        dying: false,
                                        sigkilled: false,
                                    });
                                }
                            }
                            Event::ChildSpawned { pid }
                        }
                        SpawnPlan::NoResources => Event::SpawnFailed {
                            failure: SpawnFailure::Resources {
                                detail: "the pids limit is reached".into(),
                            },
                        },
                        SpawnPlan::ExecFails(code) => Event::SpawnFailed {
                            failure: SpawnFailure::Exec { code },
                        },
                    };
                    self.queue.push_front(event);
                }
                Action::Signal { target, signal } => {
                    let pid = match target {
                        Target::Child(pid) | Target::Group(pid) => *pid,
                    };
                    let wanted = self.target(pid);
                    self.require(*target == wanted, || {
                        format!("signal to {target:?}, --signal-group says {wanted:?}")
                    });
                    self.signal_child(pid, *signal);
                }
                Action::SignalNumber { target, .. } => {
                    let pid = match target {
                        Target::Child(pid) | Target::Group(pid) => *pid,
                    };
                    // A real-time signal's default action terminates.
                    self.signal_child(pid, Signal::SIGUSR1);
                }
                Action::SignalScope { signal, .. } => {
                    let allowed = [self.policy.stop_signal, Signal::SIGCONT, Signal::SIGKILL];
                    self.require(allowed.contains(signal), || {
                        format!("{signal} to the leftovers")
                    });
                    if let Some(pid) = self.live_child().map(|c| c.pid) {
                        // The child is in every scope (descendants, namespace).
                        self.signal_child(pid, *signal);
                    }
                    for leftover in &mut self.leftovers {
                        match (&leftover.temper, *signal) {
                            (_, s) if harmless(s) => {}
                            (Temper::Stuck, Signal::SIGKILL) => leftover.sigkilled = true,
                            (Temper::Stuck, _) => {}
                            (Temper::Stubborn, s) if s != Signal::SIGKILL => {}
                            _ => leftover.dying = true,
                        }
                    }
                    if *signal == Signal::SIGKILL {
                        // Nothing but the kernel holds a SIGKILL up.
                        self.leftovers.retain(|l| l.temper == Temper::Stuck);
                    }
                }
                Action::StartProbe => {
                    self.require(self.probe.is_none(), || "two probes at once".into());
                    self.probe = Some(self.now);
                    if let Some(docker) = self.docker.as_mut() {
                        docker.due = None;
                    }
                }
                Action::CancelProbe => self.probe = None,
                Action::ReleaseSockets => {}
                Action::Exit(code) => self.exited = Some(*code),
            }
        }
    }

    fn signal_child(&mut self, pid: i32, signal: Signal) {
        let Some(child) = self.child.as_mut().filter(|c| c.pid == pid) else {
            self.fail(format!("{signal} to {pid}, which was never the child"));
        };
        if child.reported {
            self.fail(format!("{signal} to {pid} after its exit was reported"));
        }
        match (&child.temper, signal) {
            (_, s) if harmless(s) => {}
            (Temper::Stuck, Signal::SIGKILL) => child.sigkilled = true,
            (Temper::Stuck, _) => {}
            (_, Signal::SIGKILL) => {
                // Nothing but the kernel holds a SIGKILL up: reaped with the next SIGCHLD.
                child.sigkilled = true;
                let status = *child
                    .dying_of
                    .get_or_insert(ExitStatus::Signaled(libc::SIGKILL));
                if !child.reap_queued {
                    child.reap_queued = true;
                    self.queue.push_back(Event::ChildExited { pid, status });
                }
            }
            (Temper::Stubborn, _) => {}
            (Temper::Graceful(code), _) => {
                let code = *code;
                child.dying_of.get_or_insert(ExitStatus::Code(code));
            }
            (Temper::Default, s) => {
                child.dying_of.get_or_insert(ExitStatus::Signaled(s as i32));
            }
        }
    }

    /// Invariants that hold between any two steps.
    fn check_state(&self) {
        let view = self.machine.view();
        let now = self.now;
        let deadline = self.machine.next_deadline().map(ms_of);
        let phase = view.phase;
        let running = matches!(phase, "running" | "draining");

        // At most one child alive or being spawned.
        if matches!(phase, "idle" | "starting" | "restarting") {
            self.require(self.live_child().is_none(), || {
                format!("{phase} while the last child still lives")
            });
        }
        if !running {
            self.require(self.probe.is_none(), || {
                format!("a probe left in flight in {phase}")
            });
        }

        // The published view.
        let docker = self.docker.as_ref();
        let health = docker.map(|d| d.status);
        self.require(
            view.ready == (phase == "running" && health == Some(Health::Healthy)),
            || format!("ready is {} in {phase} with health {health:?}", view.ready),
        );
        self.require(view.draining == (phase == "draining"), || {
            "draining must say draining".into()
        });
        let ignored = self.policy.on_unhealthy == OnUnhealthy::Ignore;
        self.require(
            view.live == (running && (ignored || health != Some(Health::Unhealthy))),
            || format!("live is {} in {phase} with health {health:?}", view.live),
        );
        if running {
            self.require(
                Some(view.health) == health && Some(view.started) == docker.map(|d| d.healthy_once),
                || format!("health {:?}, Docker's rules say {docker:?}", view.health),
            );
        } else {
            self.require(view.health != Health::Healthy, || {
                format!("healthy in {phase}, without a running app")
            });
        }
        if phase != "exited" {
            let child = self.live_child().map(|c| c.pid);
            self.require(view.child_pid == child, || {
                format!(
                    "child_pid {:?}, the live child is {child:?}",
                    view.child_pid
                )
            });
        }
        self.require(view.restarts == self.restarts.len() as u64, || {
            format!(
                "{} restarts shown, {} made",
                view.restarts,
                self.restarts.len()
            )
        });
        self.require(
            self.restarts_in_window() <= self.policy.max_restarts,
            || format!("{} restarts inside the window", self.restarts_in_window()),
        );

        // Every deadline the contract needs, and no other.
        let want_deadline = match phase {
            "running" => docker.and_then(|d| d.due),
            "draining" => self.drain.map(|(t, _)| t + ms(self.policy.drain)),
            "restarting" => self.backoff_until,
            "stopping" => match &self.stop {
                Some(StopWatch {
                    began,
                    killed_at: None,
                    ..
                }) => Some(began + ms(self.policy.grace)),
                // After SIGKILL: the wait for the killed (extended while a child lives on);
                // u64::MAX stands for "none, or too late".
                Some(StopWatch {
                    killed_at: Some(killed_at),
                    ..
                }) => Some(
                    deadline
                        .filter(|&d| d <= now.max(*killed_at) + AFTER_KILL)
                        .unwrap_or(u64::MAX),
                ),
                None => None,
            },
            _ => None,
        };
        self.require(deadline == want_deadline, || {
            format!("next deadline {deadline:?} in {phase}, wanted {want_deadline:?}")
        });
        let want_awaiting = match &self.stop {
            Some(stop) if phase == "stopping" && stop.child_status.is_some() => {
                Some(self.scope(stop.pid, stop.intent))
            }
            _ => None,
        };
        self.require(self.machine.awaiting_leftovers() == want_awaiting, || {
            format!(
                "awaiting leftovers {:?}, wanted {want_awaiting:?}",
                self.machine.awaiting_leftovers()
            )
        });
        self.check_bounds();
    }

    /// The stop bound: SIGKILL no later than grace after the stop signal, the stop over within
    /// AFTER_KILL_LIMIT of SIGKILL, and keepwell gone within drain + grace + 1 s of a TERM.
    fn check_bounds(&self) {
        let now = self.now;
        if let Some(stop) = &self.stop {
            match stop.killed_at {
                None => self.require(now <= stop.began + ms(self.policy.grace) + LATE_MAX, || {
                    format!("no SIGKILL {} ms after the stop began", now - stop.began)
                }),
                Some(killed_at) => {
                    // A restart waits for a child that outlives SIGKILL; then the leftovers get
                    // AFTER_KILL_LIMIT more at most.
                    let waits_for_child =
                        stop.intent == Intent::Restart && stop.child_status.is_none();
                    let since = killed_at.max(stop.waited_until.unwrap_or(0));
                    self.require(
                        waits_for_child || now <= since + AFTER_KILL + LATE_MAX,
                        || format!("the stop lasts {} ms past SIGKILL", now - killed_at),
                    );
                }
            }
        }
        if let (Some(requested), None) = (self.requested_at, self.exited) {
            let bound = ms(self.policy.drain) + ms(self.policy.grace) + AFTER_KILL + 3 * LATE_MAX;
            self.require(now <= requested + bound, || {
                format!(
                    "still no exit {} ms after TERM (bound {bound} ms)",
                    now - requested
                )
            });
        }
        self.require(ms(STOP_BOUND) >= AFTER_KILL, || {
            "STOP_BOUND must cover the wait after SIGKILL".into()
        });
    }

    /// The supervisor's loop: queued events first, then LeftoversGone once nothing is left.
    fn settle(&mut self) {
        loop {
            while let Some(event) = self.queue.pop_front() {
                if let Event::ChildExited { .. } = event {
                    if let Some(child) = self.child.as_mut() {
                        child.reported = true;
                    }
                }
                self.deliver(event);
            }
            let nothing_left = self.live_child().is_none() && self.leftovers.is_empty();
            if self.exited.is_none() && self.machine.awaiting_leftovers().is_some() && nothing_left
            {
                self.deliver(Event::LeftoversGone);
                continue;
            }
            break;
        }
    }

    /// Time passes to `target`: every deadline inside gets its tick, `late` ms late.
    fn advance(&mut self, target: u64, late: u64) {
        for _ in 0..10_000 {
            self.settle();
            if self.exited.is_some() {
                return;
            }
            match self.machine.next_deadline().map(ms_of) {
                Some(deadline) if deadline <= target => {
                    self.now = self.now.max(deadline + late);
                    self.check_bounds();
                    self.deliver(Event::Tick);
                }
                _ => {
                    self.now = self.now.max(target);
                    self.check_bounds();
                    return;
                }
            }
        }
        self.fail("10,000 ticks without time moving on: a busy loop".into());
    }

    fn play(&mut self, mv: &Move) {
        match mv {
            Move::Wait { ms, late } => self.advance(self.now + ms, *late),
            Move::ToDeadline { late } => {
                if let Some(deadline) = self.machine.next_deadline().map(ms_of) {
                    self.advance(deadline.max(self.now), *late);
                }
            }
            Move::JustBeforeDeadline => {
                if let Some(deadline) = self.machine.next_deadline().map(ms_of) {
                    if deadline > self.now + 1 {
                        self.advance(deadline - 1, 0);
                    }
                }
            }
            Move::Signal(signal) => self.deliver(Event::Signal(*signal)),
            Move::Realtime(signo) => self.deliver(Event::RealtimeSignal(*signo)),
            Move::ChildExits(status) => {
                if let Some(child) = self.child.as_mut().filter(|c| !c.reported) {
                    child.reported = true;
                    let pid = child.pid;
                    self.deliver(Event::ChildExited {
                        pid,
                        status: *status,
                    });
                }
            }
            Move::ChildReacts => {
                if let Some(child) = self.child.as_mut().filter(|c| !c.reported) {
                    if let Some(status) = child.dying_of {
                        child.reported = true;
                        let pid = child.pid;
                        self.deliver(Event::ChildExited { pid, status });
                    }
                }
            }
            Move::LeftoversReact => self.leftovers.retain(|l| !l.dying),
            Move::Unstick => {
                if let Some(child) = self.child.as_mut() {
                    if child.temper == Temper::Stuck && child.sigkilled {
                        child
                            .dying_of
                            .get_or_insert(ExitStatus::Signaled(libc::SIGKILL));
                    }
                }
                for leftover in &mut self.leftovers {
                    leftover.dying |= leftover.sigkilled;
                }
            }
            Move::ProbeEnds(end) => {
                if let Some(started) = self.probe.take() {
                    self.ending_probe = Some((started, *end));
                    let event = match end {
                        ProbeEnd::Ok => Event::ProbeDone {
                            ok: true,
                            detail: "200 OK".into(),
                            reason: "200 OK".into(),
                        },
                        ProbeEnd::Failed(reason) => Event::ProbeDone {
                            ok: false,
                            detail: format!("{} (probe {})", failure_reason(*reason), self.now),
                            reason: failure_reason(*reason).into(),
                        },
                        ProbeEnd::Inconclusive => Event::ProbeInconclusive {
                            detail: "Too many open files (os error 24)".into(),
                        },
                    };
                    self.deliver(event);
                }
            }
            Move::SpuriousTick => self.deliver(Event::Tick),
        }
        self.settle();
        self.check_bounds();
    }
}

/// One case, start to end.
fn run(case: &Case, totals: &Totals) {
    let mut world = World::new(case, totals);
    for signal in &case.held_back {
        world.deliver(Event::Signal(*signal));
    }
    world.deliver(Event::Start);
    world.settle();
    for mv in &case.moves {
        if world.exited.is_some() {
            break;
        }
        if matches!(mv, Move::Signal(s) if is_stop_request(*s)) && !case.stop_requests {
            continue;
        }
        world.play(mv);
    }
    totals.note(if world.exited.is_some() {
        "run ended: keepwell exited"
    } else {
        "run ended: moves used up"
    });
    if world.exited.is_some() {
        // Nothing moves a machine that has exited.
        for event in [
            Event::Tick,
            Event::Signal(Signal::SIGTERM),
            Event::RealtimeSignal(40),
            Event::LeftoversGone,
            Event::Start,
        ] {
            world.deliver(event);
        }
    }
    totals.runs.set(totals.runs.get() + 1);
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // Shrunk counterexamples become unit tests in tests.rs, not files in the tree.
        failure_persistence: None,
        // ChaCha, the default, costs most of the run in an unoptimized test build.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..Config::default()
    }
}

#[test]
fn the_machine_keeps_its_contract_over_long_random_runs() {
    let totals = Totals::default();
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&case(), |case| {
        run(&case, &totals);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    eprintln!(
        "model check: {} sequences, {} steps checked in {:.1?}",
        totals.runs.get(),
        totals.steps.get(),
        started.elapsed()
    );
    for (what, n) in totals.seen.borrow().iter() {
        eprintln!("  {n:>8}  {what}");
    }
}
