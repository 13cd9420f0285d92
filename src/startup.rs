//! The order PID 1 sets itself up in: the app's `--socket`s before any other descriptor, signals
//! before any thread, sockets bound while keepwell may still be root, the privilege drop, the
//! reader thread, then the supervisor.
//!
//! Everything here runs once, before the child starts; a failure is fatal (one line, exit 2,
//! nothing started). What happens after the first step is the supervisor's.

use crate::config::Config;
use crate::sockets::{self, HeldSockets};
use crate::status::{Published, Snapshot};
use crate::EXIT_USAGE;
use crate::{local, logging, privileges, reaper, server, signals, state, status, supervisor};

/// Set up in the order PID 1 needs, then hand over to the supervisor.
pub fn supervise(config: Config) -> i32 {
    logging::init(&config);

    // The app's sockets before any other descriptor, so they hold 3, 4, … (see `sockets`),
    // and while keepwell may still be root: a port below 1024 for an app that is not.
    let owner = config.user.as_ref().map(|who| (who.uid, who.gid));
    let held = match HeldSockets::bind(&config.sockets, owner) {
        Ok(held) => held,
        Err(message) => return fatal(message),
    };
    if !sockets::range_is_held(config.sockets.len()) {
        return fatal(format!(
            "--socket: descriptors 3 to {} are not all open after binding; keepwell cannot \
             hand the sockets down safely",
            2 + config.sockets.len()
        ));
    }

    if !held.is_empty() {
        tracing::info!(
            "holding the app's sockets (LISTEN_FDS, kept open across restarts): {}",
            held.listing().join(", ")
        );
    }

    // Signals next, before any thread exists, so none is ever delivered to a handler.
    let mut signal_fd = match signals::block_all() {
        Ok(fd) => fd,
        Err(e) => return fatal(format!("cannot set up signal handling: {e}")),
    };
    let take_terminal = signals::release_terminal();
    match reaper::become_subreaper_unless_pid1() {
        Ok(true) => tracing::debug!("not PID 1: registered as child subreaper"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!("cannot register as child subreaper ({e}): orphans go to the real init")
        }
    }

    // Sockets are bound while keepwell may still be root, before the drop.
    let http = match config.listen {
        None => None,
        Some(addr) => match bind_listen(addr) {
            Ok(listener) => Some(listener),
            Err(e) => {
                return fatal(format!(
                    "--listen {addr}: cannot bind: {e} ({})",
                    bind_hint(&e)
                ))
            }
        },
    };
    let local = match local::bind() {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!("the local verdict socket is unavailable ({e}): keepwell check without a TARGET will not reach this supervisor");
            None
        }
    };

    if let Some(user) = &config.user {
        if let Err(e) = privileges::drop_to(user) {
            return fatal(format!("--user {}: cannot drop privileges: {e}", user.name));
        }
    }

    // The first thread other than main: after the drop, with every signal blocked.
    if let Err(e) = logging::start_writer() {
        tracing::warn!("cannot start the log writer thread ({e}): logging directly to stderr");
    }

    if let Some(warning) = root_group_warning(&config) {
        tracing::warn!("{warning}");
    }

    let user = match &config.user {
        Some(who) => format!("{} (uid {}, gid {})", who.name, who.uid, who.gid),
        None => format!(
            "uid {}, gid {}",
            nix::unistd::getuid(),
            nix::unistd::getgid()
        ),
    };
    let initial = Snapshot {
        state: state::Health::Starting,
        phase: "starting".into(),
        child_pid: None,
        user,
        restarts: 0,
        live: false,
        ready: false,
        started: false,
        draining: false,
        health_url: config.probe.as_ref().map(|p| p.target.display()),
        sockets: held.listing(),
        last_probe: None,
        probes_ok: 0,
        probes_failed: 0,
        probe_seconds_sum: 0.0,
        started_at_unix: status::unix_now(),
        keepwell_pid: std::process::id(),
    };
    let publish = Published::new(initial);
    let snapshots = publish.clone();
    if http.is_some() || local.is_some() {
        let spawned = std::thread::Builder::new()
            .name("keepwell-serve".into())
            .stack_size(256 * 1024)
            .spawn(move || serve_readers(http, local, snapshots));
        if let Err(e) = spawned {
            return fatal(format!("cannot start the server thread: {e}"));
        }
    }

    // No tokio timer: the supervisor's deadlines and the probe's timeout are one timerfd
    // (`alarm`; a command check's wait for the previous one has its own), and a time driver
    // polled on every wake cost a twentieth of a probe's instructions
    // (tests/bench/probe_overhead.md). What runs here must not use tokio::time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fatal(format!("cannot start the event loop: {e}")),
    };
    // Signals that came during setup (a `docker stop` right after the start) are handled
    // before the child starts: a stop then starts nothing.
    let held_back = signals::read_pending(&mut signal_fd);
    runtime.block_on(async move {
        let queue = match signals::SignalQueue::new(signal_fd) {
            Ok(queue) => queue,
            Err(e) => return fatal(format!("cannot watch signals: {e}")),
        };
        supervisor::Supervisor::new(config, queue, held_back, take_terminal, held, publish)
            .run()
            .await
    })
}

/// `docker run --user 1234` gives uid 1234 and gid 0, root's group: every file of group root
/// that is group-writable stays writable, though "nothing keeps root". Said once, at start.
fn root_group_warning(config: &Config) -> Option<String> {
    let (uid, gid, groups, how) = match &config.user {
        Some(who) => (
            who.uid,
            who.gid,
            who.groups.clone(),
            format!("--user {}", who.name),
        ),
        None => (
            nix::unistd::getuid(),
            nix::unistd::getgid(),
            nix::unistd::getgroups().unwrap_or_default(),
            "the image's USER or docker run --user".to_string(),
        ),
    };
    let root_group = nix::unistd::Gid::from_raw(0);
    if uid.is_root() || (gid != root_group && !groups.contains(&root_group)) {
        return None;
    }
    Some(format!(
        "keepwell and the child run as uid {uid} in group 0 (root's group, from {how}), which \
         can write every file group root may write: give a group of its own, e.g. \
         --user {uid}:{uid} (docker run --user {uid}:{uid}, USER {uid}:{uid})"
    ))
}

fn bind_listen(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The fix for a `--listen` address that cannot be bound, by what went wrong.
fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process already listens on that port: choose a free one or stop it"
        }
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need root; try :9000",
        std::io::ErrorKind::AddrNotAvailable => {
            "that address is not on this machine; try :9000 or 127.0.0.1:9000"
        }
        _ => "try :9000",
    }
}

/// The readers' thread: HTTP endpoints and the local socket, on a runtime of their own.
fn serve_readers(
    http: Option<std::net::TcpListener>,
    local: Option<std::os::unix::net::UnixListener>,
    snapshots: Published,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("the server thread cannot start its event loop: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let http_task = async {
            if let Some(listener) = http {
                server::serve(listener, snapshots.clone()).await;
            }
        };
        let local_task = async {
            if let Some(listener) = local {
                local::serve(listener, snapshots.clone()).await;
            }
        };
        tokio::join!(http_task, local_task);
    });
}

fn fatal(message: String) -> i32 {
    tracing::error!("{message}");
    EXIT_USAGE
}
