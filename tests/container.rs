//! Container tests: keepwell as PID 1 of the examples' images, in a real Docker engine.
//!
//! What they pin down (SPEC.md "Who uses it", "Build and ship"; seed article practices 4–5):
//! - the examples build from their Dockerfiles with the base images swapped for local
//!   stand-ins, and keepwell's scratch image made from the host-built static binary;
//! - Docker's own HEALTHCHECK (`keepwell check`) reports healthy, with no curl in the image;
//! - PID 1 is keepwell and no process in the container runs as root or holds a capability;
//! - a failing /health makes keepwell restart gunicorn inside the container, and a neighbour
//!   container on the same host network keeps its own verdict;
//! - `docker stop` drains (/readyz 503), stops the app and ends well inside its 10 s timeout,
//!   with exit code 0 for gunicorn;
//! - under load, the gunicorn example restarted by its unhealthy switch loses no request: the
//!   image's KEEPWELL_SOCKET keeps the port's queue open while gunicorn restarts.
//!
//! Setup is `.ci/docker.sh up` (installs docker.io and debootstrap, starts a private dockerd,
//! imports the stand-in python image). Without a Docker engine the tests fail when CI is set;
//! elsewhere they say loudly that they were skipped. Everything a test creates is removed by a
//! guard, even when it fails. Every wait polls against a deadline.
//!
//! Layout: `Env` (engine + static binary, made once per process), `Docker` (the CLI with
//! deadlines), `Cleanup` (the guard), then one test per example.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The bounded loopback load generator the `--socket` tests use.
#[path = "common/load.rs"]
mod load;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PYTHON_IMAGE: &str = "keepwell-test/python:bookworm";
const MUSL: &str = "x86_64-unknown-linux-musl";

const BUILD_DEADLINE: Duration = Duration::from_secs(600);
const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);
const EXEC_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Running commands with a deadline

/// Run a command to completion, capturing its output; kill it and panic past the deadline.
fn run(mut cmd: Command, deadline: Duration) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    // Readers on their own threads, so a chatty `docker build` never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout was piped above");
    let mut err = child.stderr.take().expect("stderr was piped above");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on our own child") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "timed out after {deadline:?}: {shown}\nstderr:\n{}",
                tail(&String::from_utf8_lossy(&stderr), 40)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Poll `check` until it returns Some or the deadline passes; panics naming `what` and
/// whatever `context` says about the state at that moment (e.g. the container's logs).
fn wait_for<T>(
    deadline: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= until {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}",
                context()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A port that was free a moment ago on 127.0.0.1 (containers here share the host network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// GET a path from 127.0.0.1:port; the status code, or None when nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = String::new();
    stream.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The engine and the static binary, made once per test process

struct Env {
    docker: Docker,
    /// target/x86_64-unknown-linux-musl/release/keepwell, freshly built.
    binary: PathBuf,
}

/// None: no engine and not in CI, so the caller skips (after a loud message).
fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let docker = start_engine()?;
        Some(Env {
            docker,
            binary: static_binary(),
        })
    })
    .as_ref()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn start_engine() -> Option<Docker> {
    let script = Path::new(ROOT).join(".ci/docker.sh");
    let mut cmd = Command::new(&script);
    cmd.arg("up");
    // First run: apt-get install and debootstrap; afterwards well under a second.
    let out = run(cmd, Duration::from_secs(900));
    if !out.status.success() {
        let why = format!(
            "{} up failed ({}):\n{}",
            script.display(),
            out.status,
            tail(&text(&out.stderr), 30)
        );
        let no_engine = !Path::new("/usr/sbin/dockerd").exists()
            && Command::new("dockerd").arg("--version").output().is_err();
        if no_engine && !in_ci() {
            eprintln!(
                "\n{0}\n# SKIPPED: container tests need a Docker engine and none could be installed.\n\
                 # (With CI set they fail instead.)\n# {why}\n{0}\n",
                "#".repeat(78)
            );
            return None;
        }
        panic!("container tests need a Docker engine: {why}");
    }
    let stdout = text(&out.stdout);
    let host = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .unwrap_or_else(|| panic!("docker.sh printed no DOCKER_HOST line: {stdout:?}"))
        .to_string();
    // The client that matches Debian's daemon; the newer one in /usr/local/bin also works.
    let cli = if Path::new("/usr/bin/docker").exists() {
        PathBuf::from("/usr/bin/docker")
    } else {
        PathBuf::from("docker")
    };
    Some(Docker { cli, host })
}

/// Build the shipped static binary (cargo skips the work when it is up to date) and return
/// its path, as cargo reports it.
fn static_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(ROOT).args([
        "build",
        "--release",
        "--target",
        MUSL,
        "--bin",
        "keepwell",
        "--message-format=json-render-diagnostics",
    ]);
    let out = run(cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "cargo build --release --target {MUSL} failed:\n{}",
        tail(&text(&out.stderr), 40)
    );
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "keepwell")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the keepwell executable");
    assert!(
        exe.is_file(),
        "{} does not exist after the build",
        exe.display()
    );
    exe
}

// ---------------------------------------------------------------------------------------
// The docker CLI

struct Docker {
    cli: PathBuf,
    host: String,
}

impl Docker {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli);
        // The classic builder: every stage is built, the same with any client version, and
        // `--network host` needs no BuildKit entitlement.
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", "0")
            .args(args);
        cmd
    }

    /// Run docker; panic with its stderr unless it succeeds.
    fn ok(&self, args: &[&str], deadline: Duration) -> String {
        let out = run(self.cmd(args), deadline);
        assert!(
            out.status.success(),
            "docker {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            tail(&text(&out.stdout), 30),
            tail(&text(&out.stderr), 30)
        );
        text(&out.stdout)
    }

    /// Run docker and return its status and output, whatever they are.
    fn status(&self, args: &[&str], deadline: Duration) -> (ExitStatus, String) {
        let out = run(self.cmd(args), deadline);
        let mut all = text(&out.stdout);
        let err = text(&out.stderr);
        if !err.is_empty() {
            all.push('\n');
            all.push_str(&err);
        }
        (out.status, all)
    }

    fn inspect(&self, container: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, container], EXEC_DEADLINE)
    }

    fn exec(&self, container: &str, argv: &[&str]) -> (ExitStatus, String) {
        let mut args = vec!["exec", container];
        args.extend_from_slice(argv);
        self.status(&args, EXEC_DEADLINE)
    }

    fn logs(&self, container: &str) -> String {
        self.status(&["logs", container], EXEC_DEADLINE).1
    }

    /// Wait for Docker's HEALTHCHECK (which runs `keepwell check`) to report healthy.
    fn wait_healthy(&self, container: &str) {
        wait_for(
            HEALTHY_DEADLINE,
            &format!("docker to report {container} healthy"),
            || self.describe(container),
            || (self.inspect(container, "{{.State.Health.Status}}") == "healthy").then_some(()),
        );
    }

    /// What a failure message should show about a container.
    fn describe(&self, container: &str) -> String {
        format!(
            "state: {}\nlast health checks: {}\nlogs:\n{}",
            self.inspect(container, "{{json .State.Status}} exit={{.State.ExitCode}}"),
            self.inspect(container, "{{json .State.Health}}"),
            tail(&self.logs(container), 40)
        )
    }

    /// The pid (in the container) of keepwell's child: gunicorn's master.
    fn child_of_pid1(&self, container: &str) -> Option<String> {
        let (status, out) = self.exec(container, &["cat", "/proc/1/task/1/children"]);
        let first = out.split_whitespace().next()?;
        (status.success() && first.parse::<u32>().is_ok()).then(|| first.to_string())
    }
}

/// Removes what a test created, even when it panicked; shows the logs first when it did.
struct Cleanup<'a> {
    docker: &'a Docker,
    containers: Vec<String>,
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl<'a> Cleanup<'a> {
    fn new(docker: &'a Docker) -> Self {
        Cleanup {
            docker,
            containers: Vec::new(),
            images: Vec::new(),
            dirs: Vec::new(),
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            if thread::panicking() {
                eprintln!("---- logs of {c} ----\n{}", tail(&self.docker.logs(c), 60));
            }
            let _ = self
                .docker
                .status(&["rm", "-f", "-v", c], Duration::from_secs(30));
        }
        // --no-prune keeps the untagged parent layers: the classic builder's cache, so the
        // next run rebuilds in seconds.
        for i in &self.images {
            let _ = self
                .docker
                .status(&["rmi", "--no-prune", i], Duration::from_secs(30));
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A name unique to this test process and this test.
fn unique(what: &str) -> String {
    format!("kwtest-{what}-{}", std::process::id())
}

/// Build keepwell's scratch image from the static binary, via tests/container/Dockerfile.prebuilt.
fn build_keepwell_image(env: &Env, cleanup: &mut Cleanup, tag: &str) -> String {
    let image = format!("keepwell-test/keepwell:{tag}");
    let ctx = std::env::temp_dir().join(unique(&format!("ctx-{tag}")));
    std::fs::create_dir_all(&ctx).expect("create a build context directory");
    cleanup.dirs.push(ctx.clone());
    std::fs::copy(&env.binary, ctx.join("keepwell")).expect("copy the static binary");
    let dockerfile = Path::new(ROOT).join("tests/container/Dockerfile.prebuilt");
    let (dockerfile, ctx) = (dockerfile.to_string_lossy(), ctx.to_string_lossy());
    env.docker.ok(
        &[
            "build",
            "-q",
            "--network",
            "host",
            "-f",
            &dockerfile,
            "-t",
            &image,
            &ctx,
        ],
        BUILD_DEADLINE,
    );
    cleanup.images.push(image.clone());
    image
}

/// Build an example with both base images pointed at the local stand-ins.
fn build_example(env: &Env, cleanup: &mut Cleanup, example: &str, keepwell: &str) -> String {
    let image = format!("keepwell-test/{example}:{}", std::process::id());
    let dir = Path::new(ROOT).join("examples").join(example);
    let (python_arg, keepwell_arg) = (
        format!("PYTHON_IMAGE={PYTHON_IMAGE}"),
        format!("KEEPWELL_IMAGE={keepwell}"),
    );
    let started = Instant::now();
    env.docker.ok(
        &[
            "build",
            "-q",
            "--network",
            "host",
            "--build-arg",
            &python_arg,
            "--build-arg",
            &keepwell_arg,
            "-t",
            &image,
            &dir.to_string_lossy(),
        ],
        BUILD_DEADLINE,
    );
    cleanup.images.push(image.clone());
    eprintln!("built {image} in {:.1?}", started.elapsed());
    image
}

/// Start a container on the host network with a 1 s HEALTHCHECK interval.
fn start(env: &Env, cleanup: &mut Cleanup, name: &str, opts: &[&str], image: &str, cmd: &[&str]) {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--health-interval",
        "1s",
        "--health-timeout",
        "3s",
    ];
    args.extend_from_slice(opts);
    args.push(image);
    args.extend_from_slice(cmd);
    // Registered before it starts: a failed `docker run` may still leave a container behind.
    cleanup.containers.push(name.to_string());
    env.docker.ok(&args, Duration::from_secs(60));
}

/// PID 1 is keepwell; every process runs as a non-root uid with no effective capability.
fn assert_pid1_keepwell_and_no_root(docker: &Docker, container: &str) {
    let (status, comm) = docker.exec(container, &["cat", "/proc/1/comm"]);
    assert!(status.success(), "docker exec cat /proc/1/comm: {comm}");
    assert_eq!(comm, "keepwell", "PID 1 of {container} must be keepwell");

    // One line per process: "Name Uid(real effective saved fs) CapEff", read inside.
    let script = r#"for f in /proc/[0-9]*/status; do
        awk '/^Name:/{n=$2} /^Uid:/{u=$2" "$3" "$4" "$5} /^CapEff:/{c=$2} END{print FILENAME, n, u, c}' "$f" 2>/dev/null
    done"#;
    let (status, table) = docker.exec(container, &["sh", "-c", script]);
    assert!(
        status.success(),
        "listing processes in {container}: {table}"
    );
    let mut names = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Processes that ended while the loop ran print a short line: not a finding.
        if fields.len() != 7 {
            continue;
        }
        let (name, uids, cap_eff) = (fields[1], &fields[2..6], fields[6]);
        assert!(
            uids.iter().all(|u| *u != "0"),
            "{name} ({}) runs as root in {container}: uids {uids:?}\n{table}",
            fields[0]
        );
        assert!(
            cap_eff.chars().all(|c| c == '0'),
            "{name} ({}) has capabilities {cap_eff} in {container}\n{table}",
            fields[0]
        );
        names.push(name.to_string());
    }
    assert!(
        names.iter().any(|n| n == "keepwell"),
        "keepwell not listed:\n{table}"
    );
}

/// `keepwell check` inside the container, as HEALTHCHECK runs it.
fn check(docker: &Docker, container: &str) -> (i32, String) {
    let (status, out) = docker.exec(container, &["keepwell", "check"]);
    (status.code().unwrap_or(-1), out)
}

/// `docker stop`, watching /readyz turn 503 during the drain; returns how long it took.
fn stop_and_watch_drain(docker: &Docker, container: &str, listen_port: u16) -> Duration {
    assert_eq!(
        http_status(listen_port, "/readyz"),
        Some(200),
        "/readyz before docker stop"
    );
    let started = Instant::now();
    let mut stop = docker.cmd(&["stop", "-t", "20", container]);
    stop.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut stop = stop.spawn().expect("spawn docker stop");
    // KEEPWELL_DRAIN=2s in the image: /readyz answers 503 while the app still runs. (The
    // deadline counts from spawning the docker CLI, so it allows for the CLI's own start.)
    wait_for(
        Duration::from_secs(5),
        "/readyz to answer 503 during the drain",
        || docker.describe(container),
        || (http_status(listen_port, "/readyz") == Some(503)).then_some(()),
    );
    let status = wait_for(
        Duration::from_secs(25),
        "docker stop to return",
        || docker.describe(container),
        || stop.try_wait().expect("try_wait on docker stop"),
    );
    let took = started.elapsed();
    assert!(status.success(), "docker stop {container} failed: {status}");
    took
}

// ---------------------------------------------------------------------------------------
// The tests

/// The Flask + gunicorn example: healthy, keepwell at PID 1, nobody root, an unhealthy app is
/// restarted in place, a neighbour keeps its own verdict, `docker stop` exits 0 promptly.
#[test]
fn flask_gunicorn_example_is_supervised_restarted_and_stopped_cleanly() {
    let Some(env) = env() else { return };
    let docker = &env.docker;
    let mut cleanup = Cleanup::new(docker);
    let keepwell = build_keepwell_image(env, &mut cleanup, &unique("flask"));
    let image = build_example(env, &mut cleanup, "flask-gunicorn", &keepwell);

    // Two containers of the image on the host network, each on its own free ports. The first
    // runs with a read-only root file system, as in the Kubernetes manifest.
    let (app, listen) = (free_port(), free_port());
    let (app2, listen2) = (free_port(), free_port());
    let (a, b) = (unique("flask-a"), unique("flask-b"));
    for (name, app, listen, extra) in [
        (&a, app, listen, vec!["--read-only"]),
        (&b, app2, listen2, vec![]),
    ] {
        let env_url = format!("KEEPWELL_HEALTH_URL=http://127.0.0.1:{app}/health");
        let env_listen = format!("KEEPWELL_LISTEN=127.0.0.1:{listen}");
        // The image holds :8000 for gunicorn (KEEPWELL_SOCKET); on the host network each
        // container holds a port of its own.
        let env_socket = format!("KEEPWELL_SOCKET=127.0.0.1:{app}");
        let bind = format!("127.0.0.1:{app}");
        let mut opts = extra;
        opts.extend([
            "-e",
            &env_url,
            "-e",
            &env_listen,
            "-e",
            &env_socket,
            // Fast probing, so the restart below happens within seconds.
            "-e",
            "KEEPWELL_HEALTH_INTERVAL=1s",
            "-e",
            "KEEPWELL_HEALTH_RETRIES=2",
        ]);
        // The image's CMD with the port changed.
        let cmd = [
            "gunicorn",
            "--bind",
            &bind,
            "--workers",
            "2",
            "--worker-tmp-dir",
            "/dev/shm",
            "--graceful-timeout",
            "5",
            "manage:app",
        ];
        start(env, &mut cleanup, name, &opts, &image, &cmd);
    }
    docker.wait_healthy(&a);
    docker.wait_healthy(&b);

    assert_pid1_keepwell_and_no_root(docker, &a);
    let (code, verdict) = check(docker, &a);
    assert_eq!(code, 0, "keepwell check in {a}: {verdict}");
    assert!(
        verdict.starts_with("healthy"),
        "keepwell check in {a}: {verdict}"
    );
    assert_eq!(http_status(listen, "/livez"), Some(200), "/livez of {a}");
    assert_eq!(
        http_status(listen, "/startupz"),
        Some(200),
        "/startupz of {a}"
    );
    assert_eq!(http_status(app, "/"), Some(200), "the Flask app itself");

    // Make the app unhealthy through its maintenance switch; keepwell must restart gunicorn.
    let master = docker
        .child_of_pid1(&a)
        .expect("gunicorn runs under keepwell");
    let (status, out) = docker.exec(&a, &["touch", "/dev/shm/unhealthy"]);
    assert!(status.success(), "touch /dev/shm/unhealthy in {a}: {out}");
    // While it is unhealthy, the neighbour on the same network keeps its own verdict.
    wait_for(
        Duration::from_secs(30),
        "keepwell check in the unhealthy container to exit 1",
        || docker.describe(&a),
        || (check(docker, &a).0 == 1).then_some(()),
    );
    let (code, verdict) = check(docker, &b);
    assert_eq!(
        code, 0,
        "the healthy neighbour {b} must not see {a}'s verdict: {verdict}"
    );
    let restarted = wait_for(
        Duration::from_secs(30),
        "keepwell to restart gunicorn (a new master pid)",
        || docker.describe(&a),
        || docker.child_of_pid1(&a).filter(|pid| *pid != master),
    );
    let logs = docker.logs(&a);
    assert!(
        logs.contains("unhealthy"),
        "keepwell's logs name the reason:\n{logs}"
    );
    eprintln!("gunicorn master {master} was replaced by {restarted}");

    // Healthy again once the switch is off.
    let (status, out) = docker.exec(&a, &["rm", "/dev/shm/unhealthy"]);
    assert!(status.success(), "rm /dev/shm/unhealthy in {a}: {out}");
    wait_for(
        HEALTHY_DEADLINE,
        "keepwell check to report healthy again",
        || docker.describe(&a),
        || (check(docker, &a).0 == 0).then_some(()),
    );
    docker.wait_healthy(&a);
    assert_pid1_keepwell_and_no_root(docker, &a);

    // docker stop: drain, TERM to gunicorn, exit 0, well inside docker's 10 s default.
    let took = stop_and_watch_drain(docker, &a, listen);
    assert!(took < Duration::from_secs(9), "docker stop took {took:?}");
    assert_eq!(
        docker.inspect(&a, "{{.State.ExitCode}}"),
        "0",
        "{}",
        docker.describe(&a)
    );
    assert_eq!(docker.inspect(&a, "{{.State.OOMKilled}}"), "false");
    eprintln!("docker stop {a} took {took:.1?}");
}

/// The Flask + gunicorn example under load (tests/support/loadgen.py, loopback): its unhealthy
/// switch makes keepwell restart gunicorn in place, and with the image's KEEPWELL_SOCKET no
/// request is lost — clients wait in the held socket's queue while gunicorn restarts.
#[test]
fn flask_gunicorn_example_restarted_by_its_unhealthy_switch_under_load_loses_no_request() {
    let Some(env) = env() else { return };
    let docker = &env.docker;
    let mut cleanup = Cleanup::new(docker);
    let keepwell = build_keepwell_image(env, &mut cleanup, &unique("flask-load"));
    let image = build_example(env, &mut cleanup, "flask-gunicorn", &keepwell);

    let (app, listen) = (free_port(), free_port());
    let name = unique("flask-load");
    let env_url = format!("KEEPWELL_HEALTH_URL=http://127.0.0.1:{app}/health");
    let env_listen = format!("KEEPWELL_LISTEN=127.0.0.1:{listen}");
    let env_socket = format!("KEEPWELL_SOCKET=127.0.0.1:{app}");
    let opts = [
        "-e",
        &env_url,
        "-e",
        &env_listen,
        "-e",
        &env_socket,
        "-e",
        "KEEPWELL_HEALTH_INTERVAL=500ms",
        "-e",
        "KEEPWELL_HEALTH_RETRIES=2",
    ];
    // The image's own CMD: its --bind is ignored, gunicorn serves the socket keepwell holds.
    start(env, &mut cleanup, &name, &opts, &image, &[]);
    docker.wait_healthy(&name);

    let served_in_turn = |when: &str| {
        let mut served = 0;
        wait_for(
            HEALTHY_DEADLINE,
            &format!("100 requests served {when}"),
            || docker.describe(&name),
            || {
                if http_status(app, "/") == Some(200) {
                    served += 1;
                }
                (served >= 100).then_some(())
            },
        );
    };
    let load = load::start(
        app,
        30,
        200,
        Duration::from_secs(15),
        Duration::from_secs(120),
    );
    served_in_turn("before the restart");
    let master = docker
        .child_of_pid1(&name)
        .expect("gunicorn runs under keepwell");
    let (status, out) = docker.exec(&name, &["touch", "/dev/shm/unhealthy"]);
    assert!(status.success(), "touch /dev/shm/unhealthy: {out}");
    wait_for(
        HEALTHY_DEADLINE,
        "keepwell to stop the unhealthy gunicorn",
        || docker.describe(&name),
        || {
            docker
                .logs(&name)
                .contains("stopping the child")
                .then_some(())
        },
    );
    let (status, out) = docker.exec(&name, &["rm", "/dev/shm/unhealthy"]);
    assert!(status.success(), "rm /dev/shm/unhealthy: {out}");
    wait_for(
        HEALTHY_DEADLINE,
        "a new gunicorn master, healthy",
        || docker.describe(&name),
        || {
            let healthy = docker.logs(&name).matches("starting → healthy").count() >= 2;
            docker
                .child_of_pid1(&name)
                .filter(|pid| *pid != master && healthy)
        },
    );
    served_in_turn("after the restart");
    let report = load.finish();
    eprintln!("under load through the restart: {}", report.summary());
    assert!(report.ok > 100, "the load ran: {}", report.raw);
    assert_eq!(
        report.lost(),
        0,
        "requests lost while keepwell restarted gunicorn: {}\n{}",
        report.raw,
        docker.describe(&name)
    );
}

/// The FastAPI + uvicorn example becomes healthy under keepwell and stops promptly.
#[test]
fn fastapi_uvicorn_example_becomes_healthy_and_stops_promptly() {
    let Some(env) = env() else { return };
    let docker = &env.docker;
    let mut cleanup = Cleanup::new(docker);
    let keepwell = build_keepwell_image(env, &mut cleanup, &unique("fastapi"));
    let image = build_example(env, &mut cleanup, "fastapi-uvicorn", &keepwell);

    let (app, listen) = (free_port(), free_port());
    let name = unique("fastapi");
    let env_url = format!("KEEPWELL_HEALTH_URL=http://127.0.0.1:{app}/health");
    let env_listen = format!("KEEPWELL_LISTEN=127.0.0.1:{listen}");
    // The image's CMD serves the socket keepwell holds (--fd 3); on the host network it holds
    // a port of the test's.
    let env_socket = format!("KEEPWELL_SOCKET=127.0.0.1:{app}");
    let opts = [
        "--read-only",
        "-e",
        &env_url,
        "-e",
        &env_listen,
        "-e",
        &env_socket,
    ];
    let cmd = [
        "uvicorn",
        "main:app",
        "--fd",
        "3",
        "--workers",
        "1",
        "--timeout-graceful-shutdown",
        "5",
        "--no-access-log",
    ];
    start(env, &mut cleanup, &name, &opts, &image, &cmd);
    docker.wait_healthy(&name);

    assert_pid1_keepwell_and_no_root(docker, &name);
    let (code, verdict) = check(docker, &name);
    assert_eq!(code, 0, "keepwell check in {name}: {verdict}");
    assert_eq!(http_status(app, "/"), Some(200), "the FastAPI app itself");

    let took = stop_and_watch_drain(docker, &name, listen);
    assert!(took < Duration::from_secs(9), "docker stop took {took:?}");
    // uvicorn (>= 0.29) re-raises the SIGTERM it handled once its graceful shutdown is done,
    // so it dies of SIGTERM (143); the image's KEEPWELL_REMAP_EXIT=143:0 shows that as 0.
    assert_eq!(
        docker.inspect(&name, "{{.State.ExitCode}}"),
        "0",
        "{}",
        docker.describe(&name)
    );
    let logs = docker.logs(&name);
    assert!(
        logs.contains("exiting with code 0 (143 remapped by --remap-exit)"),
        "{logs}"
    );
    assert!(
        logs.contains("Application shutdown complete"),
        "uvicorn shut down gracefully:\n{logs}"
    );
    eprintln!("docker stop {name} took {took:.1?}");
}

/// Debian's redis-server on the host network, the broker of the Celery example; killed on drop.
struct HostRedis {
    child: std::process::Child,
    port: u16,
}

impl HostRedis {
    fn start() -> HostRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server; tests/run.sh does)");
        let redis = HostRedis { child, port };
        wait_for(
            Duration::from_secs(20),
            "redis-server to accept connections",
            String::new,
            || {
                TcpStream::connect(("127.0.0.1", redis.port))
                    .ok()
                    .map(|_| ())
            },
        );
        redis
    }
}

impl Drop for HostRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Celery example: healthy from its heartbeat file (no HTTP at all), keepwell at PID 1 and
/// nobody root, a stopped worker goes stale and is replaced, `docker stop` is a warm shutdown
/// with exit 0.
#[test]
fn celery_worker_example_is_healthy_from_its_heartbeat_and_a_stopped_worker_is_replaced() {
    let Some(env) = env() else { return };
    let docker = &env.docker;
    let redis = HostRedis::start();
    let mut cleanup = Cleanup::new(docker);
    let keepwell = build_keepwell_image(env, &mut cleanup, &unique("celery"));
    let image = build_example(env, &mut cleanup, "celery-worker", &keepwell);

    let name = unique("celery");
    let listen = free_port();
    let broker = format!("CELERY_BROKER_URL=redis://127.0.0.1:{}/0", redis.port);
    let env_listen = format!("KEEPWELL_LISTEN=127.0.0.1:{listen}");
    // Beats every second and a 4 s max age, so the restart below comes within seconds.
    let opts = [
        "--read-only",
        "-e",
        &broker,
        "-e",
        &env_listen,
        "-e",
        "HEARTBEAT_SECONDS=1",
        "-e",
        "KEEPWELL_HEALTH_MAX_AGE=4s",
        "-e",
        "KEEPWELL_HEALTH_INTERVAL=1s",
    ];
    start(env, &mut cleanup, &name, &opts, &image, &[]);
    docker.wait_healthy(&name);
    assert_pid1_keepwell_and_no_root(docker, &name);
    let (code, verdict) = check(docker, &name);
    assert_eq!(code, 0, "keepwell check in {name}: {verdict}");
    assert!(
        verdict.contains("heartbeat /dev/shm/worker-heartbeat written"),
        "the verdict comes from the heartbeat: {verdict}"
    );
    let (code, direct) = docker.exec(
        &name,
        &["keepwell", "check", "file:/dev/shm/worker-heartbeat"],
    );
    assert_eq!(code.code(), Some(0), "{direct}");

    // A stopped worker writes no heartbeat: keepwell replaces it.
    let worker = docker
        .child_of_pid1(&name)
        .expect("the worker runs under keepwell");
    let (status, out) = docker.exec(&name, &["sh", "-c", &format!("kill -STOP {worker}")]);
    assert!(status.success(), "kill -STOP {worker} in {name}: {out}");
    let replaced = wait_for(
        Duration::from_secs(40),
        "keepwell to replace the stopped worker",
        || docker.describe(&name),
        || docker.child_of_pid1(&name).filter(|pid| *pid != worker),
    );
    let logs = docker.logs(&name);
    assert!(
        logs.contains("was written") && logs.contains("longer than --health-max-age 4s"),
        "keepwell's logs name the stale heartbeat:\n{logs}"
    );
    eprintln!("the stopped worker {worker} was replaced by {replaced}");
    wait_for(
        HEALTHY_DEADLINE,
        "keepwell check to report healthy again",
        || docker.describe(&name),
        || (check(docker, &name).0 == 0).then_some(()),
    );

    // docker stop: TERM is Celery's warm shutdown; keepwell exits with the worker's 0.
    let started = Instant::now();
    docker.ok(&["stop", "-t", "20", &name], Duration::from_secs(30));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "docker stop took {took:?}");
    assert_eq!(
        docker.inspect(&name, "{{.State.ExitCode}}"),
        "0",
        "{}",
        docker.describe(&name)
    );
    let logs = docker.logs(&name);
    assert!(logs.contains("worker: Warm shutdown"), "{logs}");
}
