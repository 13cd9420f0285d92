//! The one task that owns the state machine and carries out what it decides.
//!
//! It waits on three things only — the signal queue (SIGCHLD included), the probe in flight,
//! and one alarm set at the next deadline (the machine's, or the probe's timeout) — turns
//! whatever arrives into events, feeds them to [`Machine::step_into`], performs the actions,
//! and publishes a snapshot for the readers. A probe is just one more future in that wait, so a
//! hung app can never hold up a signal or a reap.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::alarm::Alarm;
use crate::child;
use crate::config::Config;
use crate::leftovers;
use crate::probe::{self, ProbeFuture, ProbeResult, Prober};
use crate::reaper;
use crate::signals::SignalQueue;
use crate::sockets::HeldSockets;
use crate::state::{Action, Event, Machine, Report, Scope, Step, Target};
use crate::status::{unix_now, LastProbe, Published, Snapshot};

pub struct Supervisor {
    command: Vec<String>,
    user: Option<crate::privileges::Identity>,
    prober: Option<Prober>,
    take_terminal: bool,
    /// `--socket`: held across restarts, handed to every app child, released before an exit.
    sockets: HeldSockets,
    machine: Machine,
    /// The machine's last step, kept for its memory: most steps act once or not at all.
    step: Step,
    signals: SignalQueue,
    pending: VecDeque<Work>,
    child_pid: Option<i32>,
    /// How many leftovers the last cleanup signal reached, for the line when they are gone.
    leftovers_signalled: usize,
    probe: Option<ProbeFuture>,
    /// When the probe in flight started: at its timeout it is dropped and counts as timed out.
    probe_started: Option<Instant>,
    /// Which of the three waits `poll_wake` polls first this time.
    first_polled: usize,
    snapshot: Snapshot,
    /// The snapshot has changes of the supervisor's own (a probe's result, the sockets) that
    /// readers do not see yet; the machine's view is compared instead.
    unpublished: bool,
    publish: Published,
}

/// One item of the supervisor's queue, handled strictly in order.
enum Work {
    Event(Event),
    /// SIGCHLD arrived: reap now, in order with the signals around it, so a signal read before
    /// the SIGCHLD goes to a child that is at worst a zombie, never to a reaped (reusable) pid.
    Reap,
}

/// While waiting for the leftovers to go, how often to look even without a SIGCHLD (the last
/// leftover may be the child of another process, not of keepwell).
const LEFTOVERS_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many leftovers a log line names before it only counts the rest.
const NAMED_LEFTOVERS: usize = 8;

/// What woke the loop.
enum Wake {
    Signals(std::io::Result<Vec<i32>>),
    Probe(ProbeResult),
    Deadline,
    AlarmFailed(std::io::Error),
}

/// Poll what the loop waits on, from the `first` of the three: the loop moves it on every
/// wake, as tokio's `select!` starts from a random branch, so a flood of signals cannot keep
/// the alarm (a stop's SIGKILL) or a probe's answer from being seen. Polled by hand rather
/// than through `select!`, whose futures, made anew on every wake, each joined and left a
/// wait list under a lock (a tenth of a probe's instructions, tests/bench/probe_overhead.md).
fn poll_wake(
    cx: &mut std::task::Context<'_>,
    first: usize,
    signals: &mut SignalQueue,
    probe: &mut Option<ProbeFuture>,
    alarm: &mut Alarm,
    deadline: Option<Instant>,
) -> Poll<Wake> {
    for turn in 0..3 {
        let woke = match (first + turn) % 3 {
            0 => signals.poll_next(cx).map(Wake::Signals),
            1 => match probe {
                Some(probe) => probe.as_mut().poll(cx).map(Wake::Probe),
                None => Poll::Pending,
            },
            _ => alarm.poll_until(cx, deadline).map(|rang| match rang {
                Ok(()) => Wake::Deadline,
                Err(e) => Wake::AlarmFailed(e),
            }),
        };
        if woke.is_ready() {
            return woke;
        }
    }
    Poll::Pending
}

impl Supervisor {
    pub fn new(
        config: Config,
        signals: SignalQueue,
        held_back: Vec<i32>,
        take_terminal: bool,
        sockets: HeldSockets,
        publish: Published,
    ) -> Supervisor {
        let snapshot = publish.current();
        let prober = config
            .probe
            .map(|spec| Prober::new(spec, config.user.as_ref()));
        let mut supervisor = Supervisor {
            command: config.command,
            user: config.user,
            prober,
            take_terminal,
            sockets,
            machine: Machine::new(config.policy),
            step: Step::default(),
            signals,
            pending: VecDeque::new(),
            child_pid: None,
            leftovers_signalled: 0,
            probe: None,
            probe_started: None,
            first_polled: 0,
            snapshot,
            unpublished: false,
            publish,
        };
        // Signals that came in while keepwell was setting up come before the start: a stop
        // signal then ends keepwell before anything was started, as the machine's Idle says.
        supervisor.on_signals(held_back);
        supervisor.pending.push_back(Work::Event(Event::Start));
        supervisor
    }

    /// Run until the machine says exit; returns keepwell's exit code.
    pub async fn run(mut self) -> i32 {
        let mut alarm = match Alarm::new() {
            Ok(alarm) => alarm,
            Err(e) => {
                tracing::error!(
                    "cannot create the supervisor's timer (a timerfd): {e}; when it says too \
                     many open files, raise the container's limit (docker run --ulimit nofile=...)"
                );
                return 1;
            }
        };
        loop {
            while let Some(work) = self.pending.pop_front() {
                let event = match work {
                    Work::Event(event) => event,
                    Work::Reap => {
                        self.reap();
                        continue;
                    }
                };
                let now = Instant::now();
                let mut step = std::mem::take(&mut self.step);
                self.machine.step_into(event, now, &mut step);
                let mut exit = None;
                for action in step.actions.drain(..) {
                    exit = exit.or(self.execute(action, now));
                }
                // Logged after acting, so a forwarded signal never waits for a log line.
                step.reports.iter().for_each(log_report);
                self.step = step;
                if let Some(code) = exit {
                    self.publish_snapshot();
                    return code;
                }
            }
            // Checked after every wake, not only after events: the last leftover is usually an
            // orphan whose reaping produces no event of its own.
            if let Some(scope) = self.machine.awaiting_leftovers() {
                if !leftovers::anything_left(scope) {
                    if self.leftovers_signalled > 0 {
                        tracing::info!(
                            "the {} process{} left behind {} gone",
                            self.leftovers_signalled,
                            if self.leftovers_signalled == 1 {
                                ""
                            } else {
                                "es"
                            },
                            if self.leftovers_signalled == 1 {
                                "is"
                            } else {
                                "are"
                            },
                        );
                        self.leftovers_signalled = 0;
                    }
                    self.pending.push_back(Work::Event(Event::LeftoversGone));
                    continue;
                }
            }
            self.publish_snapshot();

            let mut deadline = self.machine.next_deadline();
            if self.machine.awaiting_leftovers().is_some() {
                let poll = Instant::now() + LEFTOVERS_POLL;
                deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
            }
            let probe_deadline = match (&self.prober, self.probe_started) {
                (Some(prober), Some(started)) => Some(started + prober.spec().timeout),
                _ => None,
            };
            if let Some(at) = probe_deadline {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            self.first_polled = (self.first_polled + 1) % 3;
            let first = self.first_polled;
            let wake = std::future::poll_fn(|cx| {
                poll_wake(
                    cx,
                    first,
                    &mut self.signals,
                    &mut self.probe,
                    &mut alarm,
                    deadline,
                )
            })
            .await;
            // A probe past its timeout is dropped (which cancels it) and counts as timed out.
            let wake = match (wake, &self.prober, self.probe_started) {
                (Wake::Deadline, Some(prober), Some(started))
                    if probe_deadline.is_some_and(|at| Instant::now() >= at) =>
                {
                    self.probe = None;
                    Wake::Probe(prober.timed_out(started))
                }
                (wake, _, _) => wake,
            };
            match wake {
                Wake::Signals(Ok(batch)) => self.on_signals(batch),
                Wake::Signals(Err(e)) => {
                    tracing::error!("reading signals failed: {e}; keepwell cannot go on as PID 1");
                    return 1;
                }
                Wake::Probe(result) => {
                    self.probe = None;
                    self.probe_started = None;
                    let event = if !result.ok && out_of_descriptors(&result.detail) {
                        // keepwell's own shortage says nothing about the app: not counted.
                        Event::ProbeInconclusive {
                            detail: result.detail,
                        }
                    } else {
                        self.record_probe(&result);
                        Event::ProbeDone {
                            ok: result.ok,
                            detail: result.detail,
                            reason: result.reason,
                        }
                    };
                    self.pending.push_back(Work::Event(event));
                }
                Wake::Deadline => self.pending.push_back(Work::Event(Event::Tick)),
                Wake::AlarmFailed(e) => {
                    tracing::error!(
                        "waiting on the supervisor's timer failed: {e}; keepwell cannot go on as \
                         PID 1"
                    );
                    return 1;
                }
            }
        }
    }

    fn on_signals(&mut self, batch: Vec<i32>) {
        for signo in batch {
            let work = if signo == libc::SIGCHLD {
                Work::Reap
            } else {
                match Signal::try_from(signo) {
                    Ok(signal) => Work::Event(Event::Signal(signal)),
                    Err(_) => Work::Event(Event::RealtimeSignal(signo)),
                }
            };
            self.pending.push_back(work);
        }
    }

    /// Reap everything that exited; the child's exit goes first in the queue, so the signals
    /// read after this SIGCHLD meet a machine that already knows the child is gone.
    fn reap(&mut self) {
        for (pid, status) in reaper::reap_all() {
            // A command check's exit goes to the probe waiting for it, never to a waiter of
            // its own.
            if let Some(prober) = &self.prober {
                if prober.claim_exit(pid, status) {
                    continue;
                }
            }
            if Some(pid) == self.child_pid {
                self.child_pid = None;
                self.pending
                    .push_front(Work::Event(Event::ChildExited { pid, status }));
            } else {
                tracing::debug!(pid, "reaped an orphan");
            }
        }
    }

    /// Carry out one action of the step taken at `now`; `Some(code)` means exit now.
    fn execute(&mut self, action: Action, now: Instant) -> Option<i32> {
        match action {
            Action::Spawn => {
                if let Some(prober) = &mut self.prober {
                    prober.child_starting();
                }
                let handover = self.sockets.handover();
                match child::spawn(
                    &self.command,
                    self.user.as_ref(),
                    self.take_terminal,
                    handover.as_ref(),
                ) {
                    Ok(pid) => {
                        self.child_pid = Some(pid);
                        tracing::info!(
                            pid,
                            user = %self.snapshot.user,
                            command = ?self.command,
                            "child started"
                        );
                        // First in the queue: what follows must see the child running.
                        self.pending
                            .push_front(Work::Event(Event::ChildSpawned { pid }));
                    }
                    Err(e) => {
                        tracing::error!("{}", e.message);
                        self.pending
                            .push_front(Work::Event(Event::SpawnFailed { failure: e.failure }));
                    }
                }
            }
            Action::Signal { target, signal } => {
                if let Err(e) = child::send(target, signal as i32) {
                    tracing::warn!(
                        ?target,
                        signal = signal.as_str(),
                        "sending the signal failed: {e}"
                    );
                }
            }
            Action::SignalNumber { target, signo } => {
                if let Err(e) = child::send(target, signo) {
                    tracing::warn!(?target, signo, "sending the signal failed: {e}");
                } else {
                    tracing::info!("forwarded signal {signo} to {}", target_text(&target));
                }
            }
            Action::SignalScope { scope, signal } => {
                let found = leftovers::signal(scope, signal as i32);
                // SIGCONT follows every stop signal: one line for the pair is enough.
                if signal != Signal::SIGCONT && !found.is_empty() {
                    self.leftovers_signalled = found.len();
                    tracing::info!(
                        signal = signal.as_str(),
                        "{} to {} left behind ({}): {}",
                        signal.as_str(),
                        match found.len() {
                            1 => "1 process".to_string(),
                            n => format!("{n} processes"),
                        },
                        scope_text(scope),
                        leftovers::describe(&found, NAMED_LEFTOVERS)
                    );
                }
            }
            Action::StartProbe => {
                if let Some(prober) = &self.prober {
                    self.probe = Some(prober.start(now));
                    self.probe_started = Some(now);
                }
            }
            Action::CancelProbe => {
                self.probe = None;
                self.probe_started = None;
            }
            Action::ReleaseSockets => {
                if !self.sockets.is_empty() {
                    self.sockets.release();
                    self.snapshot.sockets = self.sockets.listing();
                    self.unpublished = true;
                    tracing::debug!(
                        "closed the held --socket copies: keepwell exits after this stop"
                    );
                }
            }
            Action::Exit(code) => return Some(code),
        }
        None
    }

    fn record_probe(&mut self, result: &ProbeResult) {
        self.unpublished = true;
        let snapshot = &mut self.snapshot;
        if result.ok {
            snapshot.probes_ok += 1;
        } else {
            snapshot.probes_failed += 1;
            tracing::debug!(detail = %result.detail, "probe failed");
        }
        snapshot.probe_seconds_sum += result.latency.as_secs_f64();
        // Updated in place: the previous detail's buffer takes the new one.
        let last = snapshot.last_probe.get_or_insert_with(|| LastProbe {
            at_unix: 0.0,
            ok: false,
            detail: String::new(),
            latency_ms: 0.0,
        });
        last.at_unix = unix_now();
        last.ok = result.ok;
        last.detail.clone_from(&result.detail);
        last.latency_ms = result.latency.as_secs_f64() * 1000.0;
    }

    /// Publish what changed since the last time, if anything did: half the wakes change
    /// nothing readers see (a probe starting), and copying the snapshot under the readers' lock
    /// was a thirteenth of a probe's instructions.
    fn publish_snapshot(&mut self) {
        let view = self.machine.view();
        let snapshot = &mut self.snapshot;
        let unchanged = !self.unpublished
            && snapshot.state == view.health
            && snapshot.phase == view.phase
            && snapshot.child_pid == view.child_pid
            && snapshot.restarts == view.restarts
            && snapshot.live == view.live
            && snapshot.ready == view.ready
            && snapshot.started == view.started
            && snapshot.draining == view.draining;
        if unchanged {
            return;
        }
        self.unpublished = false;
        snapshot.state = view.health;
        if snapshot.phase != view.phase {
            snapshot.phase = view.phase.to_string();
        }
        snapshot.child_pid = view.child_pid;
        snapshot.restarts = view.restarts;
        snapshot.live = view.live;
        snapshot.ready = view.ready;
        snapshot.started = view.started;
        snapshot.draining = view.draining;
        self.publish.publish(snapshot);
    }
}

fn scope_text(scope: Scope) -> &'static str {
    match scope {
        Scope::Descendants { .. } => "keepwell's descendants",
        Scope::Namespace => "every other process in the container",
    }
}

/// Whether a failed probe failed for want of a file descriptor: the error in its detail says so
/// (EMFILE is os error 24, ENFILE 23, whatever the C library calls them), or keepwell cannot get
/// a socket itself right now.
fn out_of_descriptors(detail: &str) -> bool {
    if detail.contains("(os error 24)") || detail.contains("(os error 23)") {
        return true;
    }
    // SAFETY: socket(2) and close(2) on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return matches!(
                nix::errno::Errno::last(),
                nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE
            );
        }
        libc::close(fd);
    }
    false
}

fn target_text(target: &Target) -> String {
    match target {
        Target::Child(pid) => format!("child {pid}"),
        Target::Group(pgid) => format!("process group {pgid}"),
    }
}

/// One log line per event that matters.
fn log_report(report: &Report) {
    match report {
        Report::HealthChanged { from, to, detail } => {
            let unhealthy = *to == crate::state::Health::Unhealthy;
            let (from, to) = (from.as_str(), to.as_str());
            if unhealthy {
                tracing::warn!(from, to, %detail, "health changed: {from} → {to}");
            } else {
                tracing::info!(from, to, %detail, "health changed: {from} → {to}");
            }
        }
        Report::StartPeriodFailure { detail } => {
            tracing::info!(%detail, "probe failed in the start period (not counted yet)")
        }
        Report::Draining { signal, drain } => tracing::info!(
            signal = signal.as_str(),
            "{} received: /readyz now answers 503; the child is stopped in {}",
            signal.as_str(),
            probe::human_duration(*drain)
        ),
        Report::Stopping {
            cause,
            signal,
            grace,
        } => tracing::info!(
            signal = signal.as_str(),
            "stopping the child with {} ({cause}); SIGKILL after {}",
            signal.as_str(),
            probe::human_duration(*grace)
        ),
        Report::Killed { reason } => {
            tracing::warn!("SIGKILL to the child and what it left behind: {reason}")
        }
        Report::GaveUpWaiting { for_child } => {
            let what = if *for_child {
                "the child"
            } else {
                "what the child left behind"
            };
            tracing::warn!(
                "{what} still lives {} after SIGKILL (stuck in the kernel?): going on without it",
                probe::human_duration(crate::state::AFTER_KILL_LIMIT)
            )
        }
        Report::ProbeInconclusive { detail } => tracing::warn!(
            %detail,
            "a probe could not be made: keepwell is out of file descriptors, which is its own \
             shortage, not the app's failure (not counted); raise the limit, e.g. docker run \
             --ulimit nofile=65536"
        ),
        Report::RestartScheduled {
            cause,
            delay,
            restarts_in_window,
        } => tracing::warn!(
            restarts_in_window,
            "restarting in {} because {cause}",
            probe::human_duration(*delay)
        ),
        Report::GivingUp {
            restarts_in_window,
            window,
        } => tracing::error!(
            "giving up: {restarts_in_window} restart{} inside {} already (--max-restarts)",
            if *restarts_in_window == 1 { "" } else { "s" },
            probe::human_duration(*window)
        ),
        Report::Forwarded {
            received,
            sent,
            target,
        } => {
            if received == sent {
                tracing::info!("forwarded {} to {}", sent.as_str(), target_text(target));
            } else {
                tracing::info!(
                    "forwarded {} as {} to {}",
                    received.as_str(),
                    sent.as_str(),
                    target_text(target)
                );
            }
        }
        Report::Exiting {
            code,
            why,
            remapped_from: None,
        } => tracing::info!(code, "exiting with code {code}: {why}"),
        Report::Exiting {
            code,
            why,
            remapped_from: Some(from),
        } => tracing::info!(
            code,
            "exiting with code {code} ({from} remapped by --remap-exit): {why}"
        ),
    }
}
