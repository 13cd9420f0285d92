//! `keepwell check`: the curl replacement (`check URL`) against an in-test app, and the
//! container-local verdict (`check` without a TARGET) reached through a PID namespace as
//! `docker exec` and HEALTHCHECK reach it, as root and as another user.

mod common;

use std::time::{Duration, Instant};

use common::app::{App, Behaviour};
use common::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// `keepwell check ARGS` run to completion: exit code, stdout; stderr must be empty.
fn run(args: &[&str]) -> (i32, String) {
    let all = [&["check"][..], args].concat();
    let ran = run_keepwell(&all, &[]);
    assert_eq!(ran.stderr, "", "keepwell check {args:?}");
    (ran.code, ran.stdout)
}

/// `healthy: 200 OK from URL in 1.3ms` → the latency text's number checked, the rest returned.
fn strip_latency(line: &str) -> String {
    let (rest, latency) = line
        .trim_end()
        .rsplit_once(" in ")
        .unwrap_or_else(|| panic!("no latency in {line:?}"));
    let ms = latency
        .strip_suffix("ms")
        .unwrap_or_else(|| panic!("latency {latency:?} in ms"));
    let (whole, tenth) = ms
        .split_once('.')
        .unwrap_or_else(|| panic!("latency {latency:?} with one decimal"));
    assert!(
        whole.parse::<u32>().is_ok() && tenth.len() == 1 && tenth.parse::<u32>().is_ok(),
        "latency {latency:?}"
    );
    rest.to_string()
}

// --- keepwell check URL ------------------------------------------------------------------

#[test]
fn ok_exits_0_with_one_line_naming_status_url_and_latency() {
    let app = App::http(Behaviour::Status(200));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert_eq!(
        strip_latency(&out),
        format!("healthy: 200 OK from {}", app.url())
    );
}

#[test]
fn status_500_exits_1() {
    let app = App::http(Behaviour::Status(500));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!("unhealthy: 500 Internal Server Error from {}\n", app.url())
    );
}

#[test]
fn a_hang_is_bounded_by_timeout() {
    let app = App::http(Behaviour::Hang);
    let started = Instant::now();
    let (code, out) = run(&["--timeout", "500ms", &app.url()]);
    let took = started.elapsed();
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: no answer within 500ms from {} (is the app hung or overloaded? a slow \
             health endpoint needs a longer --timeout)\n",
            app.url()
        )
    );
    // The line above says the 500ms timeout ended it (the default is 2s); the lower bound
    // says it did not give up early. No upper bound: on a loaded machine process start-up
    // alone may take a while.
    assert!(
        took >= Duration::from_millis(500),
        "check --timeout 500ms took {took:?}"
    );
    assert_eq!(app.requests(), 1);
}

#[test]
fn refused_says_is_the_app_listening() {
    let port = free_port();
    let (code, out) = run(&[&format!("http://127.0.0.1:{port}/health")]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: connection refused to 127.0.0.1:{port} (is the app listening? keepwell \
             probed 127.0.0.1:{port}; the app may listen on another address or port, see its \
             --bind)\n"
        )
    );
}

#[test]
fn garbage_is_a_bad_response() {
    let app = App::http(Behaviour::Garbage);
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("unhealthy: bad response from {}: ", app.url())),
        "{out:?}"
    );
    assert_eq!(out.lines().count(), 1, "{out:?}");

    app.set(Behaviour::Close);
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: bad response from {}: connection closed before message completed\n",
            app.url()
        )
    );
}

#[test]
fn an_endless_body_is_read_only_up_to_64_kib() {
    let app = App::http(Behaviour::Endless);
    app.set_body("ready");
    let (code, out) = run(&["--body", "ready", &app.url()]);
    assert_eq!(code, 0, "{out}");
    app.set_body("");
    let (code, out) = run(&["--body", "ready", &app.url()]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: 200 OK from {}, but its body (first 64 KiB) does not contain \"ready\"\n",
            app.url()
        )
    );
}

#[test]
fn a_response_head_over_64_kib_is_a_bad_response() {
    let app = App::http(Behaviour::HugeHeader(60 * 1024));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 0, "a 60 KiB header is fine: {out}");
    app.set(Behaviour::HugeHeader(100 * 1024));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1, "keepwell read a 100 KiB response head: {out}");
    assert_eq!(
        out,
        format!(
            "unhealthy: bad response from {}: message head is too large\n",
            app.url()
        )
    );
}

#[test]
fn a_status_without_a_standard_reason_reads_cleanly() {
    let app = App::http(Behaviour::Status(299));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        strip_latency(&out),
        format!("healthy: 299 from {}", app.url())
    );
    app.set(Behaviour::Status(599));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out, format!("unhealthy: 599 from {}\n", app.url()));
}

#[test]
fn status_ranges_decide_success() {
    // A 3xx that is not a redirect (redirects are followed: tests/redirects.rs).
    let not_modified = App::http(Behaviour::Status(304));
    let (code, out) = run(&[&not_modified.url()]);
    assert_eq!(code, 0, "304 is healthy by default: {out}");
    assert_eq!(
        strip_latency(&out),
        format!("healthy: 304 Not Modified from {}", not_modified.url())
    );
    let (code, out) = run(&["--status", "200-299", &not_modified.url()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!("unhealthy: 304 Not Modified from {}\n", not_modified.url())
    );

    let error = App::http(Behaviour::Status(503));
    let (code, _) = run(&["--status", "200-299,503", &error.url()]);
    assert_eq!(code, 0);
}

#[test]
fn header_sets_the_host_the_app_requires() {
    let app = App::http(Behaviour::RequireHost("app.example.com".into()));
    let (code, out) = run(&[&app.url()]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: 400 Bad Request from {} (a 400 to a health probe is usually the Host \
             header: Django answers 400 when the Host is not in ALLOWED_HOSTS; send one it \
             accepts with --header 'Host: your.domain')\n",
            app.url()
        )
    );
    let (code, out) = run(&["--header", "Host: app.example.com", &app.url()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        app.hosts(),
        [
            format!("127.0.0.1:{}", app.port()),
            "app.example.com".into()
        ]
    );
}

#[test]
fn body_must_contain_the_text() {
    let app = App::http(Behaviour::Status(200));
    app.set_body("{\"status\": \"pass\"}");
    let (code, out) = run(&["--body", "\"pass\"", &app.url()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["--body", "\"fail\"", &app.url()]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: 200 OK from {}, but its body (first 64 KiB) does not contain \"\\\"fail\\\"\"\n",
            app.url()
        )
    );
}

#[test]
fn quiet_prints_nothing_and_keeps_the_exit_code() {
    let ok = App::http(Behaviour::Status(200));
    assert_eq!(run(&["--quiet", &ok.url()]), (0, String::new()));
    let bad = App::http(Behaviour::Status(500));
    assert_eq!(run(&["--quiet", &bad.url()]), (1, String::new()));
}

#[test]
fn tcp_and_unix_targets() {
    let app = App::http(Behaviour::Hang);
    let (code, out) = run(&[&app.tcp_url()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        strip_latency(&out),
        format!("healthy: connected to {}", app.tcp_url())
    );
    let port = free_port();
    let (code, out) = run(&[&format!("tcp://127.0.0.1:{port}")]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "unhealthy: connection refused to 127.0.0.1:{port} (is the app listening? keepwell \
             probed 127.0.0.1:{port}; the app may listen on another address or port, see its \
             --bind)\n"
        )
    );

    let unix = App::unix(Behaviour::Status(200));
    let (code, out) = run(&[&unix.url()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        strip_latency(&out),
        format!("healthy: 200 OK from {}", unix.url())
    );
}

#[test]
fn check_url_runs_on_one_thread_for_ip_literals_and_localhost() {
    let app = App::http(Behaviour::Hang);
    for host in ["127.0.0.1", "localhost"] {
        let before = app.requests();
        let url = format!("http://{host}:{}/health", app.port());
        let mut child = keepwell_command(&["check", "--quiet", "--timeout", "5s", &url])
            .spawn()
            .map(KillOnDrop)
            .expect("start keepwell check");
        let pid = child.id() as i32;
        wait_until(DEADLINE, "the check's request", || app.requests() > before);
        let threads = status_field(pid, "Threads");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert_eq!(threads.as_deref(), Some("1"), "keepwell check {url}");
    }
}

// --- keepwell check without a TARGET -----------------------------------------------------

/// keepwell as PID 1 of its own PID namespace (sharing the network), probing `app`.
fn container(app: &App) -> Keepwell {
    keepwell(&[
        "--health-url",
        &app.url(),
        "--health-interval",
        "200ms",
        "--health-start-interval",
        "100ms",
        "--health-timeout",
        "300ms",
        "--health-start-period",
        "0",
        "--health-retries",
        "1",
        "--on-unhealthy",
        "ignore",
        "--grace",
        "1s",
        "--",
        "sleep",
        "1000",
    ])
    .pid1()
    .start()
}

const NOBODY: &[&str] = &[
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

/// The keepwell binary where any user can run it: the build's own path may lie under a
/// directory only root may enter (a clone in /root). Linked, or copied, into a 0755 directory
/// that lives as long as the returned guard.
fn for_any_user() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("keepwell-bin")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 755");
    let path = dir.path().join("keepwell");
    if std::fs::hard_link(KEEPWELL, &path).is_err() {
        std::fs::copy(KEEPWELL, &path).expect("copy keepwell");
    }
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `keepwell check` (the binary at `bin`) run inside the container, optionally as nobody:
/// exit code and stdout.
fn check_inside(kw: &Keepwell, bin: &str, as_nobody: bool) -> (i32, String) {
    let mut args: Vec<&str> = Vec::new();
    if as_nobody {
        args.extend(NOBODY);
    }
    args.extend([bin, "check"]);
    let ran = kw.exec_output(&args);
    assert_eq!(ran.stderr, "", "keepwell check inside: {args:?}");
    (ran.code, ran.stdout)
}

#[test]
fn without_target_it_asks_the_supervisor_of_its_container_as_any_user() {
    let (_bin_dir, bin) = for_any_user();
    let app = App::http(Behaviour::Status(200));
    let kw = container(&app);
    kw.wait_log(DEADLINE, "health changed: starting → healthy");
    for as_nobody in [false, true] {
        let (code, out) = check_inside(&kw, &bin, as_nobody);
        assert_eq!(code, 0, "as nobody: {as_nobody}: {out}");
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(
            out.starts_with("healthy: keepwell (pid 1) reports child pid "),
            "{out:?}"
        );
        assert!(
            out.contains(&format!("200 OK from {}", app.url())),
            "{out:?}"
        );
    }

    app.set(Behaviour::Status(500));
    kw.wait_log(DEADLINE, "health changed: healthy → unhealthy");
    for as_nobody in [false, true] {
        let (code, out) = check_inside(&kw, &bin, as_nobody);
        assert_eq!(code, 1, "as nobody: {as_nobody}: {out}");
        assert!(
            out.starts_with("unhealthy: keepwell (pid 1) reports"),
            "{out:?}"
        );
        assert!(out.contains("500 Internal Server Error"), "{out:?}");
    }
}

#[test]
fn without_target_it_reaches_a_supervisor_that_is_not_root() {
    let (_bin_dir, bin) = for_any_user();
    // As in an image with `USER 999`: keepwell itself is PID 1 without root, while
    // `docker exec` comes in as root or as any other user.
    let app = App::http(Behaviour::Status(200));
    let all = [
        "--health-url",
        &app.url(),
        "--health-start-interval",
        "100ms",
        "--",
        "sleep",
        "1000",
    ];
    let kw = keepwell(&all)
        .pid1()
        .setup(&format!(
            "exec setpriv --reuid 999 --regid 999 --clear-groups {bin} \"$@\""
        ))
        .start();
    kw.wait_log(DEADLINE, "health changed: starting → healthy");
    assert_eq!(
        status_field(kw.pid, "Uid").as_deref(),
        Some("999\t999\t999\t999")
    );
    assert!(
        kw.stderr().contains("user=uid 999, gid 999"),
        "{}",
        kw.stderr()
    );
    for as_nobody in [false, true] {
        let (code, out) = check_inside(&kw, &bin, as_nobody);
        assert_eq!(code, 0, "as nobody: {as_nobody}: {out}");
        assert!(
            out.starts_with("healthy: keepwell (pid 1) reports"),
            "{out:?}"
        );
    }
}

#[test]
fn without_target_and_no_supervisor_it_says_so_and_exits_1() {
    let ran: Ran =
        run_with_deadline(&mut pid1_command_for(KEEPWELL, &["check"]), RUN_DEADLINE).into();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert_eq!(
        ran.stdout,
        "unhealthy: no keepwell supervisor answers in this container (is keepwell the \
         ENTRYPOINT? to probe an app directly, use keepwell check http://127.0.0.1:PORT/health)\n"
    );
}

#[test]
fn a_verdict_from_outside_the_pid_namespace_is_refused() {
    let (_bin_dir, bin) = for_any_user();
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    // A squatter in another PID namespace (this test process) takes the container's socket
    // name before its keepwell starts.
    let dir = tempfile::tempdir().expect("dir");
    let (ids, go) = (dir.path().join("ids"), dir.path().join("go"));
    let setup = format!(
        "echo $(readlink /proc/self/ns/pid) $(readlink /proc/self/ns/mnt) > {ids} && \
         while [ ! -e {go} ]; do sleep 0.02; done",
        ids = ids.display(),
        go = go.display()
    );
    let app = App::http(Behaviour::Status(200));
    let launch = keepwell(&["--health-url", &app.url(), "--", "sleep", "1000"])
        .pid1()
        .setup(&setup);
    let starting = std::thread::spawn(move || launch.start());
    let text = wait_for(DEADLINE, "the namespace ids", || {
        let text = read(&ids);
        text.ends_with('\n').then_some(text)
    });
    let number = |link: &str| -> String { link.chars().filter(char::is_ascii_digit).collect() };
    let mut parts = text.split_whitespace();
    let name = format!(
        "keepwell/{}/{}",
        number(parts.next().expect("pid ns")),
        number(parts.next().expect("mnt ns"))
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let _squatter = UnixListener::bind_addr(&addr).expect("squat the name");
    std::fs::write(&go, "").expect("go");
    let kw = starting.join().expect("keepwell started");

    kw.wait_log(DEADLINE, "the local verdict socket is unavailable");
    for as_nobody in [false, true] {
        let (code, out) = check_inside(&kw, &bin, as_nobody);
        assert_eq!(code, 1, "{out}");
        assert_eq!(
            out,
            "unhealthy: the process answering is outside this container's PID namespace: \
             refusing its verdict\n"
        );
    }
}

#[test]
fn two_containers_on_one_network_each_read_their_own_verdict() {
    let (_bin_dir, bin) = for_any_user();
    let good_app = App::http(Behaviour::Status(200));
    let bad_app = App::http(Behaviour::Status(500));
    let good = container(&good_app);
    let bad = container(&bad_app);
    good.wait_log(DEADLINE, "health changed: starting → healthy");
    bad.wait_log(DEADLINE, "health changed: starting → unhealthy");
    for _ in 0..3 {
        for as_nobody in [false, true] {
            let (code, out) = check_inside(&good, &bin, as_nobody);
            assert_eq!(code, 0, "{out}");
            assert!(out.contains(&good_app.url()), "{out}");
            let (code, out) = check_inside(&bad, &bin, as_nobody);
            assert_eq!(code, 1, "{out}");
            assert!(out.contains(&bad_app.url()), "{out}");
        }
    }
}

#[test]
fn the_supervisor_answers_no_process_outside_its_pid_namespace() {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    // The socket's name can be read by anyone on the network namespace (/proc/net/unix); a
    // process outside the container's PID namespace (this test, on the host) gets nothing.
    let mut kw = common::keepwell(&["--", "sleep", "30"]).pid1().start();
    kw.wait_child(Duration::from_secs(10));
    let ns = |kind: &str| {
        let link = std::fs::read_link(format!("/proc/{}/ns/{kind}", kw.pid)).expect("ns link");
        let text = link.to_string_lossy().to_string();
        text.trim_start_matches(|c: char| !c.is_ascii_digit())
            .trim_end_matches(']')
            .to_string()
    };
    let name = format!("keepwell/{}/{}", ns("pid"), ns("mnt"));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let mut stream = common::wait_for(Duration::from_secs(10), "the supervisor's socket", || {
        std::os::unix::net::UnixStream::connect_addr(&addr).ok()
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The supervisor must close the connection without a word: an empty read that ended in
    // EOF. A read that timed out says nothing about what the supervisor did.
    let mut reply = String::new();
    match stream.read_to_string(&mut reply) {
        Ok(_) => assert_eq!(reply, "", "a process outside the namespace got the verdict"),
        Err(e) => panic!("the supervisor neither answered nor closed the connection: {e}"),
    }
    // From inside, the same supervisor answers (healthy once it has published its child).
    common::wait_until(Duration::from_secs(10), "a healthy verdict inside", || {
        kw.exec_output(&[common::KEEPWELL, "check"])
            .stdout
            .starts_with("healthy:")
    });
    kw.signal(nix::sys::signal::Signal::SIGTERM);
    kw.wait_exit(Duration::from_secs(10));
}
