//! The state machine, edge by edge, on a fake clock: `t(ms)` is a moment after a fixed origin.

use super::*;

fn origin() -> Instant {
    // One origin per test run; every moment is an offset from it, so no test reads the clock.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn t(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

fn timing() -> HealthTiming {
    HealthTiming {
        interval: Duration::from_secs(10),
        start_period: Duration::from_secs(60),
        start_interval: Duration::from_secs(1),
        retries: 3,
        success_threshold: 1,
    }
}

fn policy() -> Policy {
    Policy {
        stop_signal: Signal::SIGTERM,
        grace: Duration::from_secs(8),
        drain: Duration::ZERO,
        rewrites: BTreeMap::new(),
        signal_group: false,
        restart: RestartPolicy::No,
        max_restarts: 5,
        restart_window: Duration::from_secs(300),
        health: None,
        on_unhealthy: OnUnhealthy::Restart,
        remap_exit: BTreeMap::new(),
        pid1: false,
    }
}

const PID: i32 = 100;

/// A machine with its child running since t(0).
fn running(policy: Policy) -> Machine {
    let mut m = Machine::new(policy);
    assert_eq!(m.step(Event::Start, t(0)).actions, vec![Action::Spawn]);
    m.step(Event::ChildSpawned { pid: PID }, t(0));
    m
}

fn probing(policy: Policy) -> Machine {
    running(Policy {
        health: policy.health.clone().or(Some(timing())),
        ..policy
    })
}

fn signal_to(target: Target, signal: Signal) -> Action {
    Action::Signal { target, signal }
}

fn scope_signal(scope: Scope, signal: Signal) -> Action {
    Action::SignalScope { scope, signal }
}

/// The scope of a subreaper's leftovers, and of everyone's before a restart.
const DESCENDANTS: Scope = Scope::Descendants { pgid: PID };

/// The signals a step sends, in order, whatever their target.
fn signals_sent(step: &Step) -> Vec<Signal> {
    step.actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { signal, .. } | Action::SignalScope { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

fn probe(m: &mut Machine, ok: bool, at: u64) -> Step {
    m.step(Event::Tick, t(at));
    m.step(
        Event::ProbeDone {
            ok,
            detail: if ok { "200 OK" } else { "500" }.into(),
            reason: if ok { "ok" } else { "http 500" }.into(),
        },
        t(at),
    )
}

fn exit_code(step: &Step) -> Option<i32> {
    step.actions.iter().find_map(|a| match a {
        Action::Exit(code) => Some(*code),
        _ => None,
    })
}

// --- process lifecycle -------------------------------------------------------------------

#[test]
fn start_spawns_once_and_spawned_child_runs_healthy_without_health_url() {
    let mut m = running(policy());
    let view = m.view();
    assert_eq!(view.child_pid, Some(PID));
    assert_eq!(view.health, Health::Healthy);
    assert!(view.live && view.ready && view.started);
    assert!(m.step(Event::Start, t(1)).actions.is_empty());
}

#[test]
fn spawn_failure_exits_with_its_code() {
    let mut m = Machine::new(policy());
    m.step(Event::Start, t(0));
    let step = m.step(
        Event::SpawnFailed {
            failure: SpawnFailure::Exec { code: 127 },
        },
        t(0),
    );
    assert_eq!(exit_code(&step), Some(127));
}

#[test]
fn child_exit_signals_leftovers_then_exits_with_child_status_when_group_is_gone() {
    let mut m = running(policy());
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(7),
        },
        t(5),
    );
    assert!(step
        .actions
        .contains(&scope_signal(DESCENDANTS, Signal::SIGTERM)));
    assert_eq!(m.awaiting_leftovers(), Some(DESCENDANTS));
    assert_eq!(exit_code(&m.step(Event::LeftoversGone, t(6))), Some(7));
}

#[test]
fn leftovers_that_outlive_grace_get_sigkill_and_the_child_status_is_kept() {
    let mut m = running(policy());
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(3),
        },
        t(0),
    );
    assert_eq!(m.next_deadline(), Some(t(8_000)));
    let step = m.step(Event::Tick, t(8_000));
    assert!(step
        .actions
        .contains(&scope_signal(DESCENDANTS, Signal::SIGKILL)));
    assert_eq!(exit_code(&m.step(Event::LeftoversGone, t(8_010))), Some(3));
}

#[test]
fn a_group_that_never_empties_after_sigkill_is_given_up_on() {
    let mut m = running(policy());
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(0),
    );
    m.step(Event::Tick, t(8_000));
    let step = m.step(Event::Tick, t(8_000) + AFTER_KILL_LIMIT);
    assert_eq!(exit_code(&step), Some(0));
}

#[test]
fn exits_of_other_pids_are_ignored() {
    let mut m = running(policy());
    let step = m.step(
        Event::ChildExited {
            pid: PID + 1,
            status: ExitStatus::Code(1),
        },
        t(1),
    );
    assert!(step.actions.is_empty());
    assert_eq!(m.view().child_pid, Some(PID));
}

// --- signals ------------------------------------------------------------------------------

#[test]
fn ordinary_signals_are_forwarded_to_the_child_or_its_group() {
    let mut m = running(policy());
    for signal in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGWINCH,
    ] {
        let step = m.step(Event::Signal(signal), t(1));
        assert_eq!(step.actions, vec![signal_to(Target::Child(PID), signal)]);
    }
    let mut m = running(Policy {
        signal_group: true,
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGHUP), t(1));
    assert_eq!(
        step.actions,
        vec![signal_to(Target::Group(PID), Signal::SIGHUP)]
    );
}

#[test]
fn rewrites_apply_to_forwarded_and_stop_signals() {
    let mut rewrites = BTreeMap::new();
    rewrites.insert(Signal::SIGUSR1, Signal::SIGUSR2);
    rewrites.insert(Signal::SIGTERM, Signal::SIGQUIT);
    let mut m = running(Policy {
        rewrites,
        stop_signal: Signal::SIGINT,
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGUSR1), t(1));
    assert_eq!(
        step.actions,
        vec![signal_to(Target::Child(PID), Signal::SIGUSR2)]
    );
    let step = m.step(Event::Signal(Signal::SIGTERM), t(2));
    assert!(step
        .actions
        .contains(&signal_to(Target::Child(PID), Signal::SIGQUIT)));
}

#[test]
fn term_int_quit_are_forwarded_as_they_came_then_sigkill_after_grace() {
    for received in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        // --stop-signal is for the stops keepwell decides itself, not for these.
        let mut m = running(Policy {
            stop_signal: Signal::SIGUSR2,
            ..policy()
        });
        let step = m.step(Event::Signal(received), t(10));
        assert_eq!(
            signals_sent(&step),
            vec![received, Signal::SIGCONT],
            "{received}"
        );
        assert!(step
            .actions
            .contains(&signal_to(Target::Child(PID), received)));
        assert!(!m.view().ready, "a stopping app is not ready");
        assert_eq!(m.next_deadline(), Some(t(8_010)));
        let step = m.step(Event::Tick, t(8_010));
        assert_eq!(
            step.actions,
            vec![scope_signal(DESCENDANTS, Signal::SIGKILL)]
        );
        m.step(
            Event::ChildExited {
                pid: PID,
                status: ExitStatus::Signaled(9),
            },
            t(8_011),
        );
        assert_eq!(
            exit_code(&m.step(Event::LeftoversGone, t(8_012))),
            Some(137)
        );
    }
}

#[test]
fn a_second_stop_signal_during_grace_kills_at_once() {
    let mut m = running(policy());
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    let step = m.step(Event::Signal(Signal::SIGINT), t(100));
    assert!(step
        .actions
        .contains(&scope_signal(DESCENDANTS, Signal::SIGKILL)));
    // A third one does not kill again.
    assert!(m
        .step(Event::Signal(Signal::SIGTERM), t(200))
        .actions
        .is_empty());
}

#[test]
fn a_child_that_exits_on_the_stop_signal_gives_its_own_status() {
    let mut m = running(policy());
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(50),
    );
    assert!(step
        .actions
        .contains(&scope_signal(DESCENDANTS, Signal::SIGTERM)));
    assert_eq!(exit_code(&m.step(Event::LeftoversGone, t(51))), Some(0));
}

#[test]
fn drain_drops_readiness_first_and_stops_after_the_drain() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGTERM), t(0));
    assert!(
        step.actions.is_empty(),
        "the child keeps serving during the drain"
    );
    let view = m.view();
    assert!(!view.ready && view.live && view.phase == "draining");
    assert_eq!(m.next_deadline(), Some(t(5_000)));
    assert!(m.step(Event::Tick, t(4_999)).actions.is_empty());
    let step = m.step(Event::Tick, t(5_000));
    assert!(step
        .actions
        .contains(&signal_to(Target::Child(PID), Signal::SIGTERM)));
}

#[test]
fn a_second_stop_signal_cuts_the_drain_short() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    let step = m.step(Event::Signal(Signal::SIGTERM), t(100));
    assert!(step
        .actions
        .contains(&signal_to(Target::Child(PID), Signal::SIGTERM)));
}

#[test]
fn stop_request_while_no_child_runs_exits_at_once() {
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        ..policy()
    });
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(1),
        },
        t(0),
    );
    m.step(Event::LeftoversGone, t(1));
    assert_eq!(m.view().phase, "restarting");
    let step = m.step(Event::Signal(Signal::SIGTERM), t(2));
    assert_eq!(exit_code(&step), Some(143));
}

// --- restart policy -----------------------------------------------------------------------

/// The child exits and its group empties: both steps' output together.
fn exit_and_restart(m: &mut Machine, status: ExitStatus, at: u64) -> Step {
    let mut step = m.step(Event::ChildExited { pid: PID, status }, t(at));
    let gone = m.step(Event::LeftoversGone, t(at));
    step.actions.extend(gone.actions);
    step.reports.extend(gone.reports);
    step
}

#[test]
fn restart_no_exits_with_the_child() {
    let mut m = running(policy());
    let step = exit_and_restart(&mut m, ExitStatus::Code(1), 0);
    assert_eq!(exit_code(&step), Some(1));
}

#[test]
fn restart_on_failure_restarts_failures_only() {
    let mut m = running(Policy {
        restart: RestartPolicy::OnFailure,
        ..policy()
    });
    let step = exit_and_restart(&mut m, ExitStatus::Signaled(11), 0);
    assert!(step
        .reports
        .iter()
        .any(|r| matches!(r, Report::RestartScheduled { .. })));
    m.step(Event::Tick, t(1_000));
    m.step(Event::ChildSpawned { pid: PID }, t(1_000));
    let step = exit_and_restart(&mut m, ExitStatus::Code(0), 2_000);
    assert_eq!(exit_code(&step), Some(0));
}

#[test]
fn backoff_is_100ms_first_then_doubles_from_one_second_to_thirty_and_the_budget_gives_up() {
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        max_restarts: 7,
        ..policy()
    });
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..7 {
        let step = exit_and_restart(&mut m, ExitStatus::Code(1), now);
        let until = m.next_deadline().expect("backoff deadline");
        delays.push(until.duration_since(t(now)).as_millis());
        assert!(step
            .reports
            .iter()
            .any(|r| matches!(r, Report::RestartScheduled { .. })));
        assert!(m
            .step(Event::Tick, until - Duration::from_millis(1))
            .actions
            .is_empty());
        now = until.duration_since(origin()).as_millis() as u64;
        assert_eq!(m.step(Event::Tick, t(now)).actions, vec![Action::Spawn]);
        m.step(Event::ChildSpawned { pid: PID }, t(now));
    }
    assert_eq!(
        delays,
        vec![100, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000]
    );
    assert_eq!(m.view().restarts, 7);
    let step = exit_and_restart(&mut m, ExitStatus::Code(1), now);
    assert!(step
        .reports
        .iter()
        .any(|r| matches!(r, Report::GivingUp { .. })));
    assert_eq!(exit_code(&step), Some(EXIT_RESTARTS_EXHAUSTED));
}

#[test]
fn restarts_outside_the_window_are_forgotten_and_backoff_resets() {
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        max_restarts: 1,
        restart_window: Duration::from_secs(60),
        ..policy()
    });
    exit_and_restart(&mut m, ExitStatus::Code(1), 0);
    assert_eq!(m.next_deadline(), Some(t(100)));
    m.step(Event::Tick, t(100));
    m.step(Event::ChildSpawned { pid: PID }, t(100));
    // A healthy window later, the one restart no longer counts: restart again, and the
    // backoff is the first one's again, 100 ms.
    let step = exit_and_restart(&mut m, ExitStatus::Code(1), 61_000);
    assert_eq!(exit_code(&step), None);
    assert_eq!(m.next_deadline(), Some(t(61_100)));
}

#[test]
fn a_stop_request_during_a_restart_turns_it_into_an_exit() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Restart,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    assert_eq!(m.view().phase, "stopping");
    let deadline = m.next_deadline();
    let step = m.step(Event::Signal(Signal::SIGTERM), t(31_100));
    assert_eq!(
        step.actions,
        vec![
            signal_to(Target::Child(PID), Signal::SIGTERM),
            signal_to(Target::Child(PID), Signal::SIGCONT),
            // The restart became an exit: the held sockets go with it.
            Action::ReleaseSockets,
        ]
    );
    assert_eq!(
        m.next_deadline(),
        deadline,
        "the grace already running stays"
    );
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(31_200),
    );
    assert_eq!(exit_code(&m.step(Event::LeftoversGone, t(31_300))), Some(0));
}

// --- health -------------------------------------------------------------------------------

#[test]
fn probes_come_every_start_interval_in_the_start_period_then_every_interval() {
    let mut m = probing(policy());
    assert_eq!(m.view().health, Health::Starting);
    assert!(!m.view().ready && m.view().live && !m.view().started);
    assert_eq!(m.next_deadline(), Some(t(1_000)));
    assert!(m.step(Event::Tick, t(999)).actions.is_empty());
    assert_eq!(
        m.step(Event::Tick, t(1_000)).actions,
        vec![Action::StartProbe]
    );
    assert_eq!(
        m.next_deadline(),
        None,
        "no second probe while one is in flight"
    );
    m.step(
        Event::ProbeDone {
            ok: false,
            detail: "refused".into(),
            reason: "refused".into(),
        },
        t(1_100),
    );
    assert_eq!(
        m.next_deadline(),
        Some(t(2_100)),
        "measured from the end of the probe"
    );
    let step = probe(&mut m, true, 2_100);
    assert!(matches!(
        step.reports[..],
        [Report::HealthChanged {
            from: Health::Starting,
            to: Health::Healthy,
            ..
        }]
    ));
    assert_eq!(m.next_deadline(), Some(t(12_100)));
    assert!(m.view().ready && m.view().started);
}

#[test]
fn failures_inside_the_start_period_do_not_count() {
    let mut m = probing(policy());
    for at in (1..=59).map(|s| s * 1_000) {
        let step = probe(&mut m, false, at);
        // Only the first failure is worth a line; the same reason again is not.
        if at == 1_000 {
            assert_eq!(
                step.reports,
                [Report::StartPeriodFailure {
                    detail: "500".into()
                }]
            );
        } else {
            assert!(step.reports.is_empty(), "at {at}ms");
        }
    }
    assert_eq!(m.view().health, Health::Starting);
}

fn failed_probe(m: &mut Machine, reason: &str, detail: &str, at: u64) -> Step {
    m.step(Event::Tick, t(at));
    m.step(
        Event::ProbeDone {
            ok: false,
            detail: detail.into(),
            reason: reason.to_string().into(),
        },
        t(at),
    )
}

#[test]
fn each_change_of_reason_inside_the_start_period_is_reported_once() {
    let mut m = probing(policy());
    let reported = |step: &Step| match &step.reports[..] {
        [Report::StartPeriodFailure { detail }] => Some(detail.clone()),
        [] => None,
        other => panic!("unexpected reports {other:?}"),
    };
    let refused = failed_probe(&mut m, "refused", "refused to :8000", 1_000);
    assert_eq!(reported(&refused).as_deref(), Some("refused to :8000"));
    // The same reason with a detail that changes (an age, an output) is the same problem.
    assert_eq!(
        reported(&failed_probe(&mut m, "refused", "other words", 2_000)),
        None
    );
    let status = failed_probe(&mut m, "http 400", "400 Bad Request", 3_000);
    assert_eq!(reported(&status).as_deref(), Some("400 Bad Request"));
    let back = failed_probe(&mut m, "refused", "refused to :8000", 4_000);
    assert_eq!(reported(&back).as_deref(), Some("refused to :8000"));
    // After the start period failures count, and speak through the health change instead.
    for at in [60_000, 70_000] {
        assert!(failed_probe(&mut m, "timeout", "no answer", at)
            .reports
            .is_empty());
    }
    let counted = failed_probe(&mut m, "timeout", "no answer", 80_000);
    assert!(matches!(
        counted.reports[..],
        [
            Report::HealthChanged {
                to: Health::Unhealthy,
                ..
            },
            ..
        ]
    ));
}

#[test]
fn the_start_period_running_out_lets_failures_count() {
    let mut m = probing(policy());
    for at in (1..=59).map(|s| s * 1_000) {
        probe(&mut m, false, at);
    }
    probe(&mut m, false, 60_000);
    probe(&mut m, false, 70_000);
    assert_eq!(m.view().health, Health::Starting);
    let step = probe(&mut m, false, 80_000);
    assert!(matches!(
        step.reports[0],
        Report::HealthChanged {
            to: Health::Unhealthy,
            ..
        }
    ));
}

#[test]
fn consecutive_failures_reach_retries_and_a_success_resets_the_count() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Ignore,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    probe(&mut m, false, 11_000);
    probe(&mut m, false, 21_000);
    probe(&mut m, true, 31_000);
    probe(&mut m, false, 41_000);
    probe(&mut m, false, 51_000);
    assert_eq!(m.view().health, Health::Healthy);
    let step = probe(&mut m, false, 61_000);
    assert_eq!(m.view().health, Health::Unhealthy);
    assert!(step.actions.is_empty(), "ignore only reports");
    let view = m.view();
    // Under ignore, /livez stays up: only /readyz says unhealthy.
    assert!(view.live && !view.ready && view.started);
}

#[test]
fn success_threshold_needs_consecutive_successes_to_recover() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Ignore,
        health: Some(HealthTiming {
            success_threshold: 2,
            ..timing()
        }),
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    probe(&mut m, true, 41_000);
    probe(&mut m, false, 51_000);
    probe(&mut m, true, 61_000);
    assert_eq!(m.view().health, Health::Unhealthy);
    probe(&mut m, true, 71_000);
    assert_eq!(m.view().health, Health::Healthy);
}

#[test]
fn unhealthy_with_restart_stops_the_child_and_respawns_after_backoff() {
    let mut m = probing(policy());
    probe(&mut m, true, 1_000);
    probe(&mut m, false, 11_000);
    probe(&mut m, false, 21_000);
    let step = probe(&mut m, false, 31_000);
    assert!(step.actions.contains(&Action::CancelProbe));
    assert!(step
        .actions
        .contains(&signal_to(Target::Child(PID), Signal::SIGTERM)));
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(31_500),
    );
    let step = m.step(Event::LeftoversGone, t(31_500));
    assert!(matches!(
        step.reports[0],
        Report::RestartScheduled {
            cause: StopCause::Unhealthy(_),
            ..
        }
    ));
    assert_eq!(m.step(Event::Tick, t(32_500)).actions, vec![Action::Spawn]);
    m.step(Event::ChildSpawned { pid: PID + 1 }, t(32_500));
    let view = m.view();
    assert_eq!(
        (view.child_pid, view.health, view.restarts),
        (Some(PID + 1), Health::Starting, 1)
    );
    assert!(!view.started, "startupz is per child start");
}

#[test]
fn unhealthy_with_exit_exits_with_its_own_code() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Exit,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(31_100),
    );
    assert_eq!(
        exit_code(&m.step(Event::LeftoversGone, t(31_100))),
        Some(EXIT_UNHEALTHY)
    );
}

#[test]
fn probe_results_after_the_child_stopped_are_ignored() {
    let mut m = probing(policy());
    m.step(Event::Signal(Signal::SIGTERM), t(500));
    let step = m.step(
        Event::ProbeDone {
            ok: true,
            detail: "late".into(),
            reason: "ok".into(),
        },
        t(600),
    );
    assert!(step.reports.is_empty() && step.actions.is_empty());
}

#[test]
fn realtime_signals_are_forwarded_by_number_while_a_child_runs() {
    let mut m = running(policy());
    let step = m.step(Event::RealtimeSignal(40), t(1));
    assert_eq!(
        step.actions,
        vec![Action::SignalNumber {
            target: Target::Child(PID),
            signo: 40
        }]
    );
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(2),
    );
    assert!(m.step(Event::RealtimeSignal(40), t(3)).actions.is_empty());
}

#[test]
fn quit_stops_at_once_even_with_a_drain() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGQUIT), t(0));
    assert!(step
        .actions
        .contains(&signal_to(Target::Child(PID), Signal::SIGQUIT)));
    assert_eq!(m.view().phase, "stopping");
}

#[test]
fn a_stop_request_during_an_unhealthy_exit_keeps_exit_code_3() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Exit,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    m.step(Event::Signal(Signal::SIGTERM), t(31_100));
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(31_200),
    );
    assert_eq!(
        exit_code(&m.step(Event::LeftoversGone, t(31_300))),
        Some(EXIT_UNHEALTHY)
    );
}

#[test]
fn a_stop_signal_before_the_start_exits_without_starting_anything() {
    let mut m = Machine::new(policy());
    let step = m.step(Event::Signal(Signal::SIGTERM), t(0));
    assert_eq!(exit_code(&step), Some(143));
    assert!(m.step(Event::Start, t(1)).actions.is_empty());
}

#[test]
fn the_view_says_draining_only_while_draining() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    assert!(!m.view().draining);
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    assert!(m.view().draining);
    m.step(Event::Tick, t(5_000));
    assert!(!m.view().draining);
}

#[test]
fn a_child_that_outlives_sigkill_is_waited_for_never_replaced() {
    let mut m = probing(policy());
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    assert_eq!(m.view().phase, "stopping", "an unhealthy restart");
    m.step(Event::Tick, t(39_000));
    // Stuck in the kernel: no second child beside it, deadline after deadline.
    for at in [40_000, 42_000, 60_000] {
        let step = m.step(Event::Tick, t(at));
        assert!(step.actions.is_empty(), "at {at}: {:?}", step.actions);
        assert_eq!(m.view().phase, "stopping");
    }
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Signaled(9),
        },
        t(61_000),
    );
    m.step(Event::LeftoversGone, t(61_000));
    assert_eq!(m.view().phase, "restarting");
}

// --- stops from outside and stops keepwell decides ------------------------------------------

#[test]
fn a_stop_keepwell_decides_sends_the_stop_signal() {
    let mut m = probing(Policy {
        stop_signal: Signal::SIGUSR2,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    probe(&mut m, false, 11_000);
    probe(&mut m, false, 21_000);
    let step = probe(&mut m, false, 31_000);
    assert_eq!(signals_sent(&step), vec![Signal::SIGUSR2, Signal::SIGCONT]);
}

#[test]
fn every_stop_signal_is_followed_by_sigcont_to_the_same_target() {
    let mut m = running(Policy {
        signal_group: true,
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGTERM), t(0));
    assert_eq!(
        step.actions,
        vec![
            Action::CancelProbe,
            signal_to(Target::Group(PID), Signal::SIGTERM),
            signal_to(Target::Group(PID), Signal::SIGCONT),
            Action::ReleaseSockets,
        ]
    );
    // The leftovers get theirs the same way.
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(10),
    );
    assert_eq!(
        step.actions,
        vec![
            scope_signal(DESCENDANTS, Signal::SIGTERM),
            scope_signal(DESCENDANTS, Signal::SIGCONT),
        ]
    );
    // A stop signal that is SIGCONT itself is not sent twice; SIGKILL needs none.
    let mut m = running(Policy {
        rewrites: BTreeMap::from([(Signal::SIGTERM, Signal::SIGCONT)]),
        ..policy()
    });
    let step = m.step(Event::Signal(Signal::SIGTERM), t(0));
    assert_eq!(signals_sent(&step), vec![Signal::SIGCONT]);
}

#[test]
fn a_drain_ends_with_the_signal_that_started_it_after_rewrite() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        stop_signal: Signal::SIGUSR2,
        rewrites: BTreeMap::from([(Signal::SIGINT, Signal::SIGHUP)]),
        ..policy()
    });
    m.step(Event::Signal(Signal::SIGINT), t(0));
    let step = m.step(Event::Tick, t(5_000));
    assert_eq!(signals_sent(&step), vec![Signal::SIGHUP, Signal::SIGCONT]);
}

#[test]
fn a_second_signal_that_cuts_a_drain_short_is_forwarded_as_it_came() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    let step = m.step(Event::Signal(Signal::SIGQUIT), t(100));
    assert_eq!(signals_sent(&step), vec![Signal::SIGQUIT, Signal::SIGCONT]);
}

#[test]
fn a_stop_from_outside_during_a_restart_reaches_the_living_child_once() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Restart,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    probe(&mut m, false, 11_000);
    probe(&mut m, false, 21_000);
    probe(&mut m, false, 31_000);
    let step = m.step(Event::Signal(Signal::SIGQUIT), t(31_100));
    assert_eq!(
        step.actions,
        vec![
            signal_to(Target::Child(PID), Signal::SIGQUIT),
            signal_to(Target::Child(PID), Signal::SIGCONT),
            // The restart became an exit: the held sockets go with it.
            Action::ReleaseSockets,
        ]
    );
    // Now it is an exit, and the next stop request kills.
    let step = m.step(Event::Signal(Signal::SIGTERM), t(31_200));
    assert_eq!(signals_sent(&step), vec![Signal::SIGKILL]);
}

// --- leftovers ----------------------------------------------------------------------------

#[test]
fn as_pid1_the_leftovers_before_an_exit_are_everyone_and_before_a_restart_the_descendants() {
    let pid1 = |restart| {
        running(Policy {
            pid1: true,
            restart,
            ..policy()
        })
    };
    let mut m = pid1(RestartPolicy::No);
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(0),
    );
    assert!(step
        .actions
        .contains(&scope_signal(Scope::Namespace, Signal::SIGTERM)));
    assert_eq!(m.awaiting_leftovers(), Some(Scope::Namespace));
    assert_eq!(
        m.step(Event::Tick, t(8_000)).actions,
        vec![scope_signal(Scope::Namespace, Signal::SIGKILL)]
    );

    let mut m = pid1(RestartPolicy::Always);
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(0),
    );
    assert!(step
        .actions
        .contains(&scope_signal(DESCENDANTS, Signal::SIGTERM)));
    assert_eq!(m.awaiting_leftovers(), Some(DESCENDANTS));
    m.step(Event::LeftoversGone, t(1));
    assert_eq!(m.view().phase, "restarting");
}

#[test]
fn leftovers_of_a_stop_get_the_stop_signal_only_for_the_rest_of_the_grace() {
    let mut m = running(policy());
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(3_000),
    );
    assert_eq!(
        step.actions,
        vec![
            scope_signal(DESCENDANTS, Signal::SIGTERM),
            scope_signal(DESCENDANTS, Signal::SIGCONT),
        ]
    );
    // SIGKILL no later than grace after the first stop signal, not after this one.
    assert_eq!(m.next_deadline(), Some(t(8_000)));
}

#[test]
fn leftovers_that_outlive_sigkill_hold_the_stop_no_longer_than_the_bound() {
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        ..policy()
    });
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(1),
        },
        t(0),
    );
    m.step(Event::Tick, t(8_000));
    assert_eq!(m.next_deadline(), Some(t(8_000) + AFTER_KILL_LIMIT));
    let step = m.step(Event::Tick, t(8_000) + AFTER_KILL_LIMIT);
    assert!(step
        .reports
        .contains(&Report::GaveUpWaiting { for_child: false }));
    assert_eq!(m.view().phase, "restarting");
    assert!(AFTER_KILL_LIMIT < STOP_BOUND);
}

#[test]
fn a_child_stuck_past_sigkill_does_not_hold_an_exit_past_the_bound() {
    let mut m = running(policy());
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    m.step(Event::Tick, t(8_000));
    let step = m.step(Event::Tick, t(8_000) + AFTER_KILL_LIMIT);
    assert_eq!(exit_code(&step), Some(137));
    assert!(step
        .reports
        .contains(&Report::GaveUpWaiting { for_child: true }));
}

// --- spawn failures -----------------------------------------------------------------------

fn no_resources() -> Event {
    Event::SpawnFailed {
        failure: SpawnFailure::Resources {
            detail: "the pids limit is reached".into(),
        },
    }
}

#[test]
fn a_spawn_without_resources_is_retried_with_backoff_under_a_restart_policy() {
    let mut m = running(Policy {
        restart: RestartPolicy::OnFailure,
        ..policy()
    });
    exit_and_restart(&mut m, ExitStatus::Code(1), 0);
    assert_eq!(m.step(Event::Tick, t(100)).actions, vec![Action::Spawn]);
    let step = m.step(no_resources(), t(100));
    assert_eq!(exit_code(&step), None);
    assert_eq!(m.view().phase, "restarting");
    assert!(step.reports.iter().any(|r| matches!(
        r,
        Report::RestartScheduled { cause: StopCause::CouldNotSpawn(detail), delay, .. }
            if detail.contains("pids limit") && *delay == Duration::from_secs(1)
    )));
    assert_eq!(m.next_deadline(), Some(t(1_100)));
    assert_eq!(m.step(Event::Tick, t(1_100)).actions, vec![Action::Spawn]);
    m.step(Event::ChildSpawned { pid: PID + 1 }, t(1_100));
    assert_eq!(m.view().child_pid, Some(PID + 1));
}

#[test]
fn spawns_without_resources_count_against_max_restarts() {
    let mut m = Machine::new(Policy {
        restart: RestartPolicy::Always,
        max_restarts: 2,
        ..policy()
    });
    m.step(Event::Start, t(0));
    let mut at = 0;
    for _ in 0..2 {
        m.step(no_resources(), t(at));
        at += 60_000;
        assert_eq!(m.step(Event::Tick, t(at)).actions, vec![Action::Spawn]);
    }
    assert_eq!(
        exit_code(&m.step(no_resources(), t(at))),
        Some(EXIT_RESTARTS_EXHAUSTED)
    );
}

#[test]
fn a_first_spawn_without_resources_and_no_restart_policy_exits_with_its_own_code() {
    let mut m = Machine::new(policy());
    m.step(Event::Start, t(0));
    assert_eq!(
        exit_code(&m.step(no_resources(), t(0))),
        Some(EXIT_NO_RESOURCES)
    );
}

#[test]
fn a_respawn_after_an_unhealthy_restart_is_retried_even_without_restart_policy() {
    let mut m = probing(policy());
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Signaled(15),
        },
        t(31_100),
    );
    m.step(Event::LeftoversGone, t(31_100));
    m.step(Event::Tick, t(32_100));
    m.step(no_resources(), t(32_100));
    assert_eq!(m.view().phase, "restarting");
}

#[test]
fn exec_failures_are_not_retried_even_under_restart_always() {
    let mut m = Machine::new(Policy {
        restart: RestartPolicy::Always,
        ..policy()
    });
    m.step(Event::Start, t(0));
    let step = m.step(
        Event::SpawnFailed {
            failure: SpawnFailure::Exec { code: 126 },
        },
        t(0),
    );
    assert_eq!(exit_code(&step), Some(126));
}

// --- probes keepwell could not make --------------------------------------------------------

#[test]
fn a_probe_keepwell_could_not_make_counts_for_nothing_and_comes_again() {
    let mut m = probing(policy());
    probe(&mut m, true, 1_000);
    probe(&mut m, false, 11_000);
    probe(&mut m, false, 21_000);
    m.step(Event::Tick, t(31_000));
    let step = m.step(
        Event::ProbeInconclusive {
            detail: "No file descriptors available (os error 24)".into(),
        },
        t(31_000),
    );
    assert!(step.actions.is_empty());
    assert_eq!(m.view().health, Health::Healthy);
    assert_eq!(m.next_deadline(), Some(t(41_000)));
    // The count of real failures is where it was: one more makes it unhealthy.
    probe(&mut m, false, 41_000);
    assert_eq!(m.view().health, Health::Unhealthy);
}

// --- exit codes and /livez --------------------------------------------------------------------

#[test]
fn remap_exit_changes_the_code_keepwell_exits_with() {
    let remap = BTreeMap::from([(143, 0), (4, 10)]);
    let mut m = running(Policy {
        remap_exit: remap.clone(),
        ..policy()
    });
    m.step(Event::Signal(Signal::SIGTERM), t(0));
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Signaled(15),
        },
        t(10),
    );
    let step = m.step(Event::LeftoversGone, t(11));
    assert_eq!(exit_code(&step), Some(0));
    assert!(step.reports.iter().any(|r| matches!(
        r,
        Report::Exiting {
            code: 0,
            remapped_from: Some(143),
            ..
        }
    )));
    // Codes not named stay as they are.
    let mut m = running(Policy {
        remap_exit: remap,
        ..policy()
    });
    let step = exit_and_restart(&mut m, ExitStatus::Code(3), 0);
    assert_eq!(exit_code(&step), Some(3));
}

#[test]
fn livez_stays_up_under_on_unhealthy_ignore_while_readyz_drops() {
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Ignore,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    let view = m.view();
    assert_eq!(view.health, Health::Unhealthy);
    assert!(view.live && !view.ready);
    // Not under restart: there the child is being stopped, and /livez says so.
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Exit,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    for at in [11_000, 21_000, 31_000] {
        probe(&mut m, false, at);
    }
    assert!(!m.view().live);
}

// --- counterexamples the model check (properties.rs) found, shrunk -------------------------

/// Docker counts a failure against the start period by when the probe *started*
/// (`result.Start.Sub(c.State.StartedAt)` in moby): a probe that began inside the boot time and
/// failed after it (a slow timeout) is still boot time.
#[test]
fn a_failed_probe_that_started_inside_the_start_period_does_not_count() {
    let mut m = probing(Policy {
        health: Some(HealthTiming {
            retries: 1,
            ..timing()
        }),
        ..policy()
    });
    assert_eq!(
        m.step(Event::Tick, t(59_000)).actions,
        vec![Action::StartProbe]
    );
    let step = m.step(
        Event::ProbeDone {
            ok: false,
            detail: "no answer within 2s".into(),
            reason: "no answer".into(),
        },
        t(61_000),
    );
    assert!(step.actions.is_empty(), "{:?}", step.actions);
    assert_eq!(m.view().health, Health::Starting);
    // The next one started after the start period: it counts.
    probe(&mut m, false, 71_000);
    assert_eq!(m.view().health, Health::Unhealthy);
}

/// How many times a step asked for the held sockets to be closed.
fn releases(step: &Step) -> usize {
    step.actions
        .iter()
        .filter(|a| **a == Action::ReleaseSockets)
        .count()
}

#[test]
fn held_sockets_stay_through_a_restart_and_go_once_an_exit_is_decided() {
    let mut m = probing(Policy {
        restart: RestartPolicy::Always,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    // Unhealthy → restart: the sockets stay, so clients wait in the queue meanwhile.
    let mut steps = vec![];
    for at in [11_000, 21_000, 31_000] {
        steps.push(probe(&mut m, false, at));
    }
    steps.push(m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(0),
        },
        t(31_100),
    ));
    steps.push(m.step(Event::LeftoversGone, t(31_100)));
    assert_eq!(m.view().phase, "restarting");
    steps.push(m.step(Event::Tick, t(31_200)));
    m.step(Event::ChildSpawned { pid: PID }, t(31_200));
    // A crash under --restart always: a restart too.
    steps.push(m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Signaled(9),
        },
        t(32_000),
    ));
    steps.push(m.step(Event::LeftoversGone, t(32_000)));
    steps.push(m.step(Event::Tick, t(33_000)));
    m.step(Event::ChildSpawned { pid: PID }, t(33_000));
    assert_eq!(steps.iter().map(releases).sum::<usize>(), 0);

    // docker stop: released with the stop signal, once, however the stop goes on.
    let stop = m.step(Event::Signal(Signal::SIGTERM), t(40_000));
    assert_eq!(releases(&stop), 1);
    let rest = [
        m.step(Event::Signal(Signal::SIGTERM), t(40_100)),
        m.step(
            Event::ChildExited {
                pid: PID,
                status: ExitStatus::Signaled(9),
            },
            t(40_200),
        ),
        m.step(Event::LeftoversGone, t(40_200)),
    ];
    assert_eq!(rest.iter().map(releases).sum::<usize>(), 0);
    assert_eq!(exit_code(&rest[2]), Some(137));
}

#[test]
fn held_sockets_go_when_the_child_exits_for_good_or_the_budget_is_spent() {
    // --restart no: the child's exit ends it all.
    let mut m = running(policy());
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(1),
        },
        t(10),
    );
    assert_eq!(releases(&step), 1);

    // --on-unhealthy exit.
    let mut m = probing(Policy {
        on_unhealthy: OnUnhealthy::Exit,
        ..policy()
    });
    probe(&mut m, true, 1_000);
    let steps: Vec<Step> = [11_000, 21_000, 31_000]
        .into_iter()
        .map(|at| probe(&mut m, false, at))
        .collect();
    assert_eq!(
        steps.iter().map(releases).collect::<Vec<_>>(),
        vec![0, 0, 1]
    );

    // More restarts than --max-restarts: the stop that gives up releases them.
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        max_restarts: 0,
        ..policy()
    });
    let step = m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(1),
        },
        t(10),
    );
    assert!(step
        .reports
        .iter()
        .any(|r| matches!(r, Report::GivingUp { .. })));
    assert_eq!(releases(&step), 1);

    // A stop while nothing runs (during the backoff) exits at once.
    let mut m = running(Policy {
        restart: RestartPolicy::Always,
        ..policy()
    });
    m.step(
        Event::ChildExited {
            pid: PID,
            status: ExitStatus::Code(1),
        },
        t(10),
    );
    m.step(Event::LeftoversGone, t(10));
    let step = m.step(Event::Signal(Signal::SIGTERM), t(50));
    assert_eq!(exit_code(&step), Some(143));
    assert_eq!(releases(&step), 1);
}

#[test]
fn the_backoff_schedule() {
    let delays: Vec<u128> = (0..9).map(|n| backoff(n).as_millis()).collect();
    assert_eq!(
        delays,
        vec![100, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    );
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn under_drain_the_held_sockets_stay_until_the_drain_ends() {
    let mut m = running(Policy {
        drain: Duration::from_secs(5),
        ..policy()
    });
    // The app keeps serving through the drain: new clients must still get in.
    let drain = m.step(Event::Signal(Signal::SIGTERM), t(1_000));
    assert_eq!(m.view().phase, "draining");
    assert_eq!(releases(&drain), 0);
    let stop = m.step(Event::Tick, t(6_000));
    assert_eq!(signals_sent(&stop), vec![Signal::SIGTERM, Signal::SIGCONT]);
    assert_eq!(releases(&stop), 1);
}
