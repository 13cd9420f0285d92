//! `--user`: names and ids from the image's /etc files, supplementary groups, HOME/USER/LOGNAME,
//! and no process left with root: not the child, not keepwell itself.
//!
//! Each test runs keepwell as PID 1 of a fresh PID and mount namespace with a test /etc/passwd
//! and /etc/group bind-mounted over the real ones, as an image would ship them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    app:x:4242:4242:App:/home/app:/bin/sh\n\
    web:x:4343:100:Web:/srv/web:/bin/sh\n";
const GROUP: &str = "root:x:0:\n\
    app:x:4242:\n\
    users:x:100:\n\
    audio:x:4501:app,web\n\
    video:x:4502:web\n\
    staff:x:4503:app\n";

/// What the child reports about itself: its /proc status lines and its environment.
const REPORT: &str = "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|NoNewPrivs):' /proc/self/status; \
    echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME; echo done; sleep 30";

struct Dropped {
    child: String,
    keepwell: String,
}

fn run_as(user: &str) -> Dropped {
    let etc = tempfile::tempdir().expect("dir");
    std::fs::write(etc.path().join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.path().join("group"), GROUP).expect("group");
    let mut kw = keepwell(&["--user", user, "--", "sh", "-c", REPORT])
        .pid1()
        .setup(&format!(
            "mount --bind {0}/passwd /etc/passwd && mount --bind {0}/group /etc/group",
            etc.path().display()
        ))
        .start();
    wait_until(Duration::from_secs(10), "the child's report", || {
        kw.stdout().contains("done")
    });
    let keepwell_status =
        std::fs::read_to_string(format!("/proc/{}/status", kw.pid)).expect("status");
    let keepwell = keepwell_status
        .lines()
        .filter(|l| {
            ["Uid:", "Gid:", "Groups:", "CapEff:", "NoNewPrivs:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let child = kw.stdout();
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    kw.wait_exit(Duration::from_secs(10));
    Dropped { child, keepwell }
}

fn line<'a>(text: &'a str, field: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .trim()
}

fn assert_dropped(text: &str, uid: u32, gid: u32, groups: &str) {
    assert_eq!(
        line(text, "Uid:"),
        format!("{uid}\t{uid}\t{uid}\t{uid}"),
        "{text}"
    );
    assert_eq!(
        line(text, "Gid:"),
        format!("{gid}\t{gid}\t{gid}\t{gid}"),
        "{text}"
    );
    assert_eq!(line(text, "Groups:"), groups, "{text}");
    assert_eq!(line(text, "CapEff:"), "0000000000000000", "{text}");
    assert_eq!(line(text, "NoNewPrivs:"), "1", "{text}");
}

#[test]
fn by_name_with_supplementary_groups_and_home() {
    let got = run_as("app");
    assert_dropped(&got.child, 4242, 4242, "4242 4501 4503");
    assert_dropped(&got.keepwell, 4242, 4242, "4242 4501 4503");
    assert!(
        got.child.contains("HOME=/home/app USER=app LOGNAME=app"),
        "{}",
        got.child
    );
}

#[test]
fn by_uid_finds_the_passwd_entry() {
    let got = run_as("4343");
    assert_dropped(&got.child, 4343, 100, "100 4501 4502");
    assert!(
        got.child.contains("HOME=/srv/web USER=web"),
        "{}",
        got.child
    );
}

#[test]
fn by_uid_and_gid_numbers() {
    let got = run_as("4242:4503");
    assert_dropped(&got.child, 4242, 4503, "4503");
    assert_dropped(&got.keepwell, 4242, 4503, "4503");
}

#[test]
fn by_user_and_group_names() {
    let got = run_as("web:audio");
    assert_dropped(&got.child, 4343, 4501, "4501");
}

#[test]
fn an_unknown_uid_gets_its_own_number_as_gid_never_root() {
    let got = run_as("5555");
    assert_dropped(&got.child, 5555, 5555, "5555");
    assert!(got.child.contains("HOME=/ USER=5555"), "{}", got.child);
}

#[test]
fn unknown_names_are_usage_errors_and_nothing_starts() {
    let out = run_keepwell(
        &[
            "--user",
            "no-such-user-here",
            "--",
            "sh",
            "-c",
            "echo started",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "keepwell: --user \"no-such-user-here\" is not valid: no user \"no-such-user-here\" in \
         /etc/passwd: create it in the image or give a numeric uid\n"
    );
}

#[test]
fn a_non_root_keepwell_asked_for_another_user_exits_2() {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            KEEPWELL,
        ])
        .args(["--user", "0", "--", "sh", "-c", "echo started"]);
    clear_keepwell_env(&mut command);
    let out: Ran = run_with_deadline(&mut command, RUN_DEADLINE).into();
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "", "nothing may start");
    assert_eq!(
        out.stderr,
        "keepwell: --user \"0\" is not valid: keepwell runs as uid 65534 gid 65534 and only root \
         can switch users: run keepwell as root, or drop --user and rely on the image's USER\n"
    );
}

/// A port below 1024 (where only root, or CAP_NET_BIND_SERVICE, may bind) that is free now.
fn free_privileged_port() -> u16 {
    let unprivileged_start: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1024);
    assert!(
        unprivileged_start > 900,
        "net.ipv4.ip_unprivileged_port_start is {unprivileged_start}: any user may bind low \
         ports here, so this test could not tell the order of bind and drop"
    );
    (900..unprivileged_start.min(1024))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port from 900 to 1023")
}

#[test]
fn listen_below_1024_is_bound_before_the_privileges_are_dropped() {
    let port = free_privileged_port();
    let listen = format!("127.0.0.1:{port}");
    // The control: uid 65534 itself cannot bind there.
    let mut control = Command::new("setpriv");
    control
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "python3",
            "-c",
        ])
        .arg(format!(
            "import socket; socket.socket().bind(('127.0.0.1', {port}))"
        ));
    let control: Ran = run_with_deadline(&mut control, RUN_DEADLINE).into();
    assert_ne!(control.code, 0, "nobody could bind {listen}: {control:?}");
    assert!(control.stderr.contains("Permission denied"), "{control:?}");

    let mut kw = keepwell(&[
        "--user",
        "65534:65534",
        "--listen",
        &listen,
        "--",
        "sleep",
        "600",
    ])
    .pid1()
    .start();
    let addr = common::http::loopback(port);
    wait_until(Duration::from_secs(10), "/livez on the low port", || {
        common::http::status(addr, "/livez") == 200
    });
    assert_eq!(
        status_field(kw.pid, "Uid").as_deref(),
        Some("65534\t65534\t65534\t65534"),
        "keepwell dropped its own root after binding"
    );
    assert_eq!(
        status_field(kw.pid, "CapEff").as_deref(),
        Some("0000000000000000")
    );
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(kw.wait_exit(Duration::from_secs(10)), 143);
}

#[test]
fn the_user_can_come_from_the_environment() {
    let etc = tempfile::tempdir().expect("dir");
    std::fs::write(etc.path().join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.path().join("group"), GROUP).expect("group");
    let mut kw = keepwell(&["--", "sh", "-c", "id -u; echo done; sleep 30"])
        .env("KEEPWELL_USER", "app")
        .pid1()
        .setup(&format!(
            "mount --bind {0}/passwd /etc/passwd && mount --bind {0}/group /etc/group",
            etc.path().display()
        ))
        .start();
    wait_until(Duration::from_secs(10), "the child's report", || {
        kw.stdout().contains("done")
    });
    assert!(kw.stdout().starts_with("4242\n"), "{}", kw.stdout());
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(kw.wait_exit(Duration::from_secs(10)), 143);
}
