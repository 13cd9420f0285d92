//! Container tests: keepwell as PID 1 of real images, in a real Docker engine.
//!
//! What they pin down (SPEC.md "Install", "Build and ship"; seed article practices 1, 4–5):
//! - the examples build from their Dockerfiles with keepwell coming from their
//!   requirements.txt by hash (the release's wheels served from a local wheelhouse through
//!   `PIP_FIND_LINKS`), and PID 1 is the venv's keepwell, byte-identical to the release binary;
//! - Docker's own HEALTHCHECK (`keepwell check`) reports healthy, with no curl in the image;
//! - no process in the container runs as root or holds a capability;
//! - a failing /health makes keepwell restart gunicorn inside the container, and a neighbour
//!   container on the same host network keeps its own verdict;
//! - `docker stop` drains (/readyz 503), stops the app and ends well inside its 10 s timeout;
//! - under load, the gunicorn example restarted by its unhealthy switch loses no request: the
//!   image's KEEPWELL_SOCKET keeps the port's queue open while gunicorn restarts;
//! - the Celery example is healthy from its heartbeat file and a stopped worker is replaced;
//! - README's Docker snippet builds as pasted (only its base image pointed at the stand-in)
//!   and runs healthy;
//! - the top-level Dockerfile's scratch image, for amd64 and arm64, pushed with
//!   `scripts/release.sh image` to a loopback registry, is one multi-arch index whose images
//!   hold the release binaries, and `COPY --from=` that index by digest works.
//!
//! Setup is `.ci/docker.sh up` (installs docker.io and debootstrap, starts a private dockerd,
//! imports the stand-in python image, since no image registry is reachable). Without a Docker
//! engine these tests fail: they never pass or skip silently. The engine is shared by every
//! checkout on the machine: run them under `flock /tmp/keepwell-container-tests.lock` (as
//! tests/run.sh does). Everything a test creates is removed by a guard, even when it fails, and
//! every wait polls against a deadline.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::dist::{self, Dist};
use common::load;
use common::{free_port, run_with_deadline, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PYTHON_IMAGE: &str = "keepwell-test/python:bookworm";

const BUILD_DEADLINE: Duration = Duration::from_secs(900);
const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);
const EXEC_DEADLINE: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The status of a GET to 127.0.0.1:port (0 when nothing answered).
fn http_status(port: u16, path: &str) -> u16 {
    common::http::status(SocketAddr::from(([127, 0, 0, 1], port)), path)
}

// ---------------------------------------------------------------------------------------
// The engine and the release

struct Env {
    docker: Docker,
    dist: Dist,
}

fn env() -> Env {
    let script = Path::new(ROOT).join(".ci/docker.sh");
    // First run: apt-get install and debootstrap; afterwards well under a second.
    let out = run_with_deadline(Command::new(&script).arg("up"), Duration::from_secs(1200));
    assert!(
        out.status.success(),
        "container tests need a Docker engine, and {} up could not start one ({}):\n{}",
        script.display(),
        out.status,
        tail(&text(&out.stderr), 30)
    );
    let stdout = text(&out.stdout);
    let host = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .unwrap_or_else(|| panic!("docker.sh printed no DOCKER_HOST line: {stdout:?}"))
        .to_string();
    // The client that matches Debian's daemon; a newer one in /usr/local/bin also works.
    let cli = if Path::new("/usr/bin/docker").exists() {
        PathBuf::from("/usr/bin/docker")
    } else {
        PathBuf::from("docker")
    };
    Env {
        docker: Docker { cli, host },
        dist: Dist::get(),
    }
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

    /// Run docker; panic with its output unless it succeeds.
    fn ok(&self, args: &[&str], deadline: Duration) -> String {
        let out = run_with_deadline(&mut self.cmd(args), deadline);
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

    /// Run docker and return its status and output (stdout, then stderr), whatever they are.
    fn status(&self, args: &[&str], deadline: Duration) -> (ExitStatus, String) {
        let out = run_with_deadline(&mut self.cmd(args), deadline);
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
            || {
                let health = self.inspect(container, "{{.State.Health.Status}}");
                // A container that died will never be healthy: say why at once.
                let state = self.inspect(container, "{{.State.Status}}");
                assert!(
                    state == "running",
                    "{container} is {state}:\n{}",
                    self.describe(container)
                );
                (health == "healthy").then_some(())
            },
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

/// Removes what a test created, even when it panicked; shows the containers' state first when
/// it did.
struct Cleanup<'a> {
    docker: &'a Docker,
    containers: Vec<String>,
    images: Vec<String>,
    processes: Vec<Child>,
}

impl<'a> Cleanup<'a> {
    fn new(docker: &'a Docker) -> Self {
        Cleanup {
            docker,
            containers: Vec::new(),
            images: Vec::new(),
            processes: Vec::new(),
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                let (_, state) = self
                    .docker
                    .status(&["inspect", "-f", "{{json .State}}", c], EXEC_DEADLINE);
                eprintln!(
                    "---- {c} ----\nstate: {state}\nlogs:\n{}",
                    tail(&self.docker.logs(c), 60)
                );
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
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// A name unique to this test process and this test.
fn unique(what: &str) -> String {
    format!("kwtest-{what}-{}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// keepwell's wheels, served as pip's --find-links

/// The release's wheels in a directory served over HTTP on loopback, as a private index or a
/// wheelhouse would serve them: the URL for `PIP_FIND_LINKS` / `--find-links`.
fn wheelhouse(env: &Env, cleanup: &mut Cleanup, dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("create the wheelhouse");
    for arch in ["x86_64", "aarch64"] {
        let wheel = env.dist.wheel(arch);
        std::fs::copy(&wheel, dir.join(wheel.file_name().expect("a file name")))
            .expect("copy a wheel into the wheelhouse");
    }
    let port = free_port();
    let server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    cleanup.processes.push(server);
    wait_for(Duration::from_secs(20), "the wheelhouse to answer", || {
        (http_status(port, "/") == 200).then_some(())
    });
    format!("http://127.0.0.1:{port}/")
}

/// keepwell's lines in a requirements file: `keepwell==VERSION` and its `--hash` lines.
fn keepwell_block(requirements: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = requirements.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("keepwell=="))?;
    let mut end = start + 1;
    while end < lines.len() && lines[end].starts_with("    --hash=sha256:") {
        end += 1;
    }
    Some((start, end))
}

/// The requirements with keepwell pinned to the release under test (the committed hashes are
/// those of the published wheels; this build's wheels are new files).
fn pin_keepwell(requirements: &str, dist: &Dist) -> String {
    let (start, end) = keepwell_block(requirements).expect("requirements.txt pins keepwell");
    let mut lines: Vec<String> = requirements.lines().map(str::to_string).collect();
    let mut block = vec![format!("keepwell=={} \\", dist.version)];
    for arch in ["x86_64", "aarch64"] {
        block.push(format!(
            "    --hash=sha256:{} \\",
            dist::sha256(&dist.wheel(arch))
        ));
    }
    let last = block.pop().expect("two hash lines");
    block.push(last.trim_end_matches(" \\").to_string());
    lines.splice(start..end, block);
    lines.join("\n") + "\n"
}

/// A copy of an example's directory as the build context, keepwell pinned to this release.
fn example_context(env: &Env, example: &str, ctx: &Path) {
    let dir = Path::new(ROOT).join("examples").join(example);
    let copied = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", dir.display()))
        .arg(ctx)
        .status()
        .expect("cp -r the example");
    assert!(copied.success(), "copying {}", dir.display());
    let path = ctx.join("requirements.txt");
    let committed = std::fs::read_to_string(&path).expect("the example's requirements.txt");
    // What the example ships: keepwell at this crate's version, one hash per architecture,
    // and every other package hash-pinned too (pip's hash-checking mode needs them all).
    let (start, end) = keepwell_block(&committed)
        .unwrap_or_else(|| panic!("examples/{example}/requirements.txt does not pin keepwell"));
    let block: Vec<&str> = committed.lines().skip(start).take(end - start).collect();
    assert_eq!(
        block[0],
        format!("keepwell=={} \\", env.dist.version),
        "examples/{example}/requirements.txt pins keepwell at Cargo.toml's version"
    );
    assert_eq!(block.len(), 3, "a hash per architecture's wheel: {block:?}");
    for line in committed
        .lines()
        .filter(|l| l.contains("==") && !l.starts_with('#'))
    {
        assert!(
            line.ends_with(" \\"),
            "examples/{example}/requirements.txt: {line:?} has no --hash lines"
        );
    }
    std::fs::write(&path, pin_keepwell(&committed, &env.dist)).expect("write requirements.txt");
}

fn build(env: &Env, cleanup: &mut Cleanup, image: &str, ctx: &Path, build_args: &[String]) {
    let mut args = vec!["build", "-q", "--network", "host"];
    for arg in build_args {
        args.extend(["--build-arg", arg]);
    }
    let ctx = ctx.to_string_lossy();
    args.extend(["-t", image, &ctx]);
    let started = Instant::now();
    // Registered first: a failed build can still leave the tag of an earlier run.
    cleanup.images.push(image.to_string());
    env.docker.ok(&args, BUILD_DEADLINE);
    eprintln!("built {image} in {:.1?}", started.elapsed());
}

/// Build an example: the base image pointed at the local stand-in, keepwell's wheels served
/// to pip from a wheelhouse, everything else from PyPI, all by hash.
fn build_example(env: &Env, cleanup: &mut Cleanup, example: &str, work: &Path) -> String {
    let ctx = work.join("context");
    std::fs::create_dir_all(&ctx).expect("create the build context");
    example_context(env, example, &ctx);
    let find_links = wheelhouse(env, cleanup, &work.join("wheelhouse"));
    let image = format!("keepwell-test/{example}:{}", std::process::id());
    build(
        env,
        cleanup,
        &image,
        &ctx,
        &[
            format!("PYTHON_IMAGE={PYTHON_IMAGE}"),
            format!("PIP_FIND_LINKS={find_links}"),
        ],
    );
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

/// PID 1 is the venv's keepwell, the very release binary the wheel carried.
fn assert_pid1_is_the_venvs_keepwell(env: &Env, container: &str, venv_keepwell: &str) {
    let (status, exe) = env.docker.exec(container, &["readlink", "/proc/1/exe"]);
    assert!(
        status.success(),
        "readlink /proc/1/exe in {container}: {exe}"
    );
    assert_eq!(exe, venv_keepwell, "PID 1 of {container}");
    let (status, sum) = env.docker.exec(container, &["sha256sum", venv_keepwell]);
    assert!(status.success(), "sha256sum in {container}: {sum}");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(dist::sha256(&env.dist.binary("x86_64-unknown-linux-musl")).as_str()),
        "{venv_keepwell} in {container} is the release binary"
    );
}

/// Every process runs as a non-root uid with no effective capability, keepwell among them.
fn assert_nobody_is_root(docker: &Docker, container: &str) {
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
        200,
        "/readyz before docker stop"
    );
    let started = Instant::now();
    let mut stop = docker.cmd(&["stop", "-t", "20", container]);
    stop.stdout(Stdio::null()).stderr(Stdio::null());
    let mut stop = stop.spawn().expect("spawn docker stop");
    // KEEPWELL_DRAIN=2s in the image: /readyz answers 503 while the app still runs. (The
    // deadline counts from spawning the docker CLI, so it allows for the CLI's own start.)
    wait_for(
        Duration::from_secs(5),
        "/readyz to answer 503 during the drain",
        || (http_status(listen_port, "/readyz") == 503).then_some(()),
    );
    let status = common::wait_or_kill(&mut stop, Duration::from_secs(25), "docker stop");
    let took = started.elapsed();
    assert!(status.success(), "docker stop {container} failed: {status}");
    took
}

// ---------------------------------------------------------------------------------------
// The examples

/// The Flask + gunicorn example: keepwell from requirements.txt by hash is PID 1, healthy,
/// nobody root, an unhealthy app is restarted in place, a neighbour keeps its own verdict,
/// `docker stop` exits 0 promptly.
#[test]
fn flask_gunicorn_example_is_supervised_restarted_and_stopped_cleanly() {
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let image = build_example(&env, &mut cleanup, "flask-gunicorn", work.path());

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
        start(&env, &mut cleanup, name, &opts, &image, &cmd);
    }
    docker.wait_healthy(&a);
    docker.wait_healthy(&b);

    assert_pid1_is_the_venvs_keepwell(&env, &a, "/usr/app/venv/bin/keepwell");
    assert_nobody_is_root(docker, &a);
    let (code, verdict) = check(docker, &a);
    assert_eq!(code, 0, "keepwell check in {a}: {verdict}");
    assert!(
        verdict.starts_with("healthy"),
        "keepwell check in {a}: {verdict}"
    );
    assert_eq!(http_status(listen, "/livez"), 200, "/livez of {a}");
    assert_eq!(http_status(listen, "/startupz"), 200, "/startupz of {a}");
    assert_eq!(http_status(app, "/"), 200, "the Flask app itself");

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
        || (check(docker, &a).0 == 0).then_some(()),
    );
    docker.wait_healthy(&a);
    assert_nobody_is_root(docker, &a);

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
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let image = build_example(&env, &mut cleanup, "flask-gunicorn", work.path());

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
    start(&env, &mut cleanup, &name, &opts, &image, &[]);
    docker.wait_healthy(&name);

    let served_in_turn = |when: &str| {
        let mut served = 0;
        wait_for(
            HEALTHY_DEADLINE,
            &format!("100 requests served {when}"),
            || {
                if http_status(app, "/") == 200 {
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
        || {
            docker
                .logs(&name)
                .contains("stopping the child")
                .then_some(())
        },
    );
    let (status, out) = docker.exec(&name, &["rm", "/dev/shm/unhealthy"]);
    assert!(status.success(), "rm /dev/shm/unhealthy: {out}");
    wait_for(HEALTHY_DEADLINE, "a new gunicorn master, healthy", || {
        let healthy = docker.logs(&name).matches("starting → healthy").count() >= 2;
        docker
            .child_of_pid1(&name)
            .filter(|pid| *pid != master && healthy)
    });
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

/// The FastAPI + uvicorn example: keepwell from requirements.txt by hash is PID 1, healthy,
/// and stops promptly.
#[test]
fn fastapi_uvicorn_example_becomes_healthy_and_stops_promptly() {
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let image = build_example(&env, &mut cleanup, "fastapi-uvicorn", work.path());

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
    start(&env, &mut cleanup, &name, &opts, &image, &cmd);
    docker.wait_healthy(&name);

    assert_pid1_is_the_venvs_keepwell(&env, &name, "/usr/app/venv/bin/keepwell");
    assert_nobody_is_root(docker, &name);
    let (code, verdict) = check(docker, &name);
    assert_eq!(code, 0, "keepwell check in {name}: {verdict}");
    assert_eq!(http_status(app, "/"), 200, "the FastAPI app itself");

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

/// A GET to 127.0.0.1:port with a Host header: the status code (0 when nothing answered).
fn http_status_for_host(port: u16, path: &str, host: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return 0;
    }
    let mut head = String::new();
    let _ = stream.read_to_string(&mut head);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The Django + gunicorn example: keepwell from requirements.txt by hash is PID 1; the
/// migrations run before gunicorn, which replaces the shell (`exec`); the probe's Host passes
/// ALLOWED_HOSTS; healthy by its HEALTHCHECK on a read-only root; the unhealthy switch gets
/// gunicorn restarted; `docker stop` exits 0 promptly.
#[test]
fn django_gunicorn_example_migrates_is_supervised_restarted_and_stopped_cleanly() {
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let image = build_example(&env, &mut cleanup, "django-gunicorn", work.path());

    let (app, listen) = (free_port(), free_port());
    let name = unique("django");
    let env_url = format!("KEEPWELL_HEALTH_URL=http://127.0.0.1:{app}/health/");
    let env_listen = format!("KEEPWELL_LISTEN=127.0.0.1:{listen}");
    let env_socket = format!("KEEPWELL_SOCKET=127.0.0.1:{app}");
    // The image's CMD with the port changed (gunicorn serves the socket keepwell holds).
    let cmd = format!(
        "python manage.py migrate --noinput && exec gunicorn --bind 127.0.0.1:{app} --workers 2 \
         --worker-tmp-dir /dev/shm --graceful-timeout 5 --no-control-socket mysite.wsgi"
    );
    let opts = [
        "--read-only",
        "--tmpfs",
        "/usr/app/data:uid=999,gid=999",
        "-e",
        &env_url,
        "-e",
        &env_listen,
        "-e",
        &env_socket,
        "-e",
        "KEEPWELL_HEALTH_INTERVAL=1s",
        "-e",
        "KEEPWELL_HEALTH_RETRIES=2",
    ];
    start(
        &env,
        &mut cleanup,
        &name,
        &opts,
        &image,
        &["sh", "-c", &cmd],
    );
    docker.wait_healthy(&name);

    assert_pid1_is_the_venvs_keepwell(&env, &name, "/usr/app/venv/bin/keepwell");
    assert_nobody_is_root(docker, &name);
    let (status, migrations) =
        docker.exec(&name, &["python", "manage.py", "showmigrations", "auth"]);
    assert!(status.success(), "showmigrations in {name}: {migrations}");
    assert!(
        migrations.contains("[X] 0001_initial"),
        "the migrations ran before gunicorn:\n{migrations}"
    );
    // `exec` made gunicorn keepwell's child: no shell between them.
    let master = docker
        .child_of_pid1(&name)
        .expect("gunicorn runs under keepwell");
    let (_, cmdline) = docker.exec(&name, &["cat", &format!("/proc/{master}/cmdline")]);
    assert!(
        cmdline.contains("gunicorn") && !cmdline.starts_with("sh"),
        "keepwell's child is gunicorn itself: {cmdline:?}"
    );
    // ALLOWED_HOSTS is in force: only the probe's Host gets an answer.
    assert_eq!(http_status_for_host(app, "/", "app.example.com"), 200);
    assert_eq!(http_status_for_host(app, "/", "127.0.0.1"), 400);

    let (status, out) = docker.exec(&name, &["touch", "/dev/shm/unhealthy"]);
    assert!(
        status.success(),
        "touch /dev/shm/unhealthy in {name}: {out}"
    );
    let restarted = wait_for(
        Duration::from_secs(40),
        "keepwell to restart gunicorn (a new master pid)",
        || docker.child_of_pid1(&name).filter(|pid| *pid != master),
    );
    eprintln!("gunicorn master {master} was replaced by {restarted}");
    let (status, out) = docker.exec(&name, &["rm", "/dev/shm/unhealthy"]);
    assert!(status.success(), "rm /dev/shm/unhealthy in {name}: {out}");
    wait_for(
        HEALTHY_DEADLINE,
        "keepwell check to report healthy again",
        || (check(docker, &name).0 == 0).then_some(()),
    );

    let took = stop_and_watch_drain(docker, &name, listen);
    assert!(took < Duration::from_secs(9), "docker stop took {took:?}");
    assert_eq!(
        docker.inspect(&name, "{{.State.ExitCode}}"),
        "0",
        "{}",
        docker.describe(&name)
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
            || {
                std::net::TcpStream::connect(("127.0.0.1", redis.port))
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
    let env = env();
    let docker = &env.docker;
    let redis = HostRedis::start();
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let image = build_example(&env, &mut cleanup, "celery-worker", work.path());

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
    start(&env, &mut cleanup, &name, &opts, &image, &[]);
    docker.wait_healthy(&name);
    assert_pid1_is_the_venvs_keepwell(&env, &name, "/usr/app/venv/bin/keepwell");
    assert_nobody_is_root(docker, &name);
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

// ---------------------------------------------------------------------------------------
// README

/// The first ```dockerfile block after a README heading.
fn readme_dockerfile(heading: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    let block = section
        .split_once("```dockerfile\n")
        .unwrap_or_else(|| panic!("no ```dockerfile block under {heading:?}"))
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

/// One package's lines (`name==version` and its hashes) from a pip-compile'd file.
fn requirement(requirements: &str, name: &str) -> String {
    let lines: Vec<&str> = requirements.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("{name}==")))
        .unwrap_or_else(|| panic!("no {name} in the requirements"));
    let mut block = vec![lines[start]];
    block.extend(
        lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with("    --hash=")),
    );
    block.join("\n") + "\n"
}

/// The README's Docker snippet, pasted into a project with a WSGI module and a
/// requirements.txt (gunicorn and keepwell, by hash): it builds, keepwell is PID 1 from the
/// venv, the HEALTHCHECK says healthy, and `docker stop` ends it with 0.
#[test]
fn readme_docker_snippet_builds_as_pasted_and_runs_healthy() {
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let ctx = work.path().join("project");
    std::fs::create_dir_all(ctx.join("yourproject")).expect("create the project");

    let snippet = readme_dockerfile("## Docker");
    std::fs::write(ctx.join("Dockerfile"), &snippet).expect("write the Dockerfile");
    let cmd_line = snippet
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("the snippet has a CMD");
    assert!(
        cmd_line.contains("yourproject.wsgi"),
        "the snippet's CMD names the user's module: {cmd_line}"
    );
    std::fs::write(ctx.join("yourproject/__init__.py"), "").expect("write __init__.py");
    std::fs::write(
        ctx.join("yourproject/wsgi.py"),
        "def application(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [b'ok']\n",
    )
    .expect("write wsgi.py");

    let find_links = wheelhouse(&env, &mut cleanup, &work.path().join("wheelhouse"));
    let pins =
        std::fs::read_to_string(Path::new(ROOT).join("examples/flask-gunicorn/requirements.txt"))
            .expect("the flask example's requirements");
    let requirements = format!(
        "--find-links {find_links}\n{}{}{}",
        requirement(&pins, "gunicorn"),
        requirement(&pins, "packaging"),
        pin_keepwell(&requirement(&pins, "keepwell"), &env.dist),
    );
    std::fs::write(ctx.join("requirements.txt"), requirements).expect("write requirements.txt");

    let image = format!("keepwell-test/readme:{}", std::process::id());
    build(
        &env,
        &mut cleanup,
        &image,
        &ctx,
        &[format!("PYTHON_IMAGE={PYTHON_IMAGE}")],
    );

    // The snippet's CMD and health URL with the port changed (containers share the host's).
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let env_url = format!("KEEPWELL_HEALTH_URL=http://127.0.0.1:{port}/health");
    let name = unique("readme");
    start(
        &env,
        &mut cleanup,
        &name,
        &["-e", &env_url],
        &image,
        &[
            "gunicorn",
            "--bind",
            &bind,
            "--worker-tmp-dir",
            "/dev/shm",
            "yourproject.wsgi",
        ],
    );
    docker.wait_healthy(&name);
    assert_pid1_is_the_venvs_keepwell(&env, &name, "/app/venv/bin/keepwell");
    assert_nobody_is_root(docker, &name);
    assert_eq!(http_status(port, "/"), 200, "the app itself");
    docker.ok(&["stop", "-t", "20", &name], Duration::from_secs(30));
    assert_eq!(
        docker.inspect(&name, "{{.State.ExitCode}}"),
        "0",
        "{}",
        docker.describe(&name)
    );
}

// ---------------------------------------------------------------------------------------
// The scratch image for both architectures

/// Debian's docker-registry on a loopback port, storing into a temp dir.
fn registry(cleanup: &mut Cleanup, dir: &Path) -> String {
    let bin = "/usr/bin/docker-registry";
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: apt-get install docker-registry (tests/run.sh does)"
    );
    let port = free_port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .expect("write the registry's config");
    let process = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    cleanup.processes.push(process);
    wait_for(Duration::from_secs(20), "the registry to answer", || {
        (http_status(port, "/v2/") == 200).then_some(())
    });
    format!("127.0.0.1:{port}")
}

/// `scripts/release.sh image` pushes the top-level Dockerfile's image for amd64 and arm64 and
/// one index over both; each platform's image holds exactly the release binary for it, and the
/// README's `COPY --from=` of the index by digest gives a working keepwell.
#[test]
fn the_scratch_image_is_one_index_for_amd64_and_arm64_usable_with_copy_from() {
    let env = env();
    let docker = &env.docker;
    let work = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup::new(docker);
    let registry = registry(&mut cleanup, work.path());
    let repository = format!("{registry}/keepwell");
    let version = env.dist.version;

    let mut release = Command::new(Path::new(ROOT).join("scripts/release.sh"));
    release
        .args(["image", &repository, "--out"])
        .arg(&env.dist.dir)
        .env("DOCKER_HOST", &docker.host);
    let out = run_with_deadline(&mut release, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "scripts/release.sh image failed:\n{}",
        text(&out.stderr)
    );
    let pinned = text(&out.stdout);
    let digest = pinned
        .strip_prefix(&format!("{repository}:{version}@"))
        .unwrap_or_else(|| panic!("release.sh image printed {pinned:?}"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{pinned}"
    );
    for arch in ["amd64", "arm64"] {
        cleanup
            .images
            .push(format!("{repository}:{version}-{arch}"));
    }

    let index: serde_json::Value = serde_json::from_str(&docker.ok(
        &["manifest", "inspect", "--insecure", &pinned],
        EXEC_DEADLINE,
    ))
    .expect("the index is JSON");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index lists manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");

    // Pull each platform through the index (the per-arch tags gone from the engine first, so
    // the bytes come from the registry) and take the binary out without running it.
    for (arch, target) in [
        ("amd64", "x86_64-unknown-linux-musl"),
        ("arm64", "aarch64-unknown-linux-musl"),
    ] {
        let _ = docker.status(
            &["rmi", &format!("{repository}:{version}-{arch}")],
            EXEC_DEADLINE,
        );
        let platform = format!("linux/{arch}");
        docker.ok(
            &["pull", "-q", "--platform", &platform, &pinned],
            Duration::from_secs(120),
        );
        let seen = docker.ok(
            &[
                "image",
                "inspect",
                "-f",
                "{{.Os}}/{{.Architecture}}",
                &pinned,
            ],
            EXEC_DEADLINE,
        );
        assert_eq!(seen, platform, "the image pulled for {platform}");
        let name = unique(&format!("scratch-{arch}"));
        cleanup.containers.push(name.clone());
        docker.ok(&["create", "--name", &name, &pinned], EXEC_DEADLINE);
        let copied = work.path().join(format!("keepwell-{arch}"));
        docker.ok(
            &[
                "cp",
                &format!("{name}:/keepwell"),
                &copied.to_string_lossy(),
            ],
            EXEC_DEADLINE,
        );
        assert_eq!(
            dist::sha256(&copied),
            dist::sha256(&env.dist.binary(target)),
            "/keepwell of the {platform} image is the release's {target} binary"
        );
        docker.ok(&["rm", &name], EXEC_DEADLINE);
        docker.ok(&["rmi", &pinned], EXEC_DEADLINE);
    }

    // README "Install": COPY --from= the index pinned by digest, in an application image.
    let snippet = readme_dockerfile("### COPY --from the scratch image");
    let placeholder = format!("REGISTRY/keepwell:{version}@sha256:<index digest>");
    assert!(
        snippet.contains(&placeholder),
        "the README's COPY --from snippet uses the placeholder {placeholder}:\n{snippet}"
    );
    let ctx = work.path().join("copy-from");
    std::fs::create_dir_all(&ctx).expect("create a context");
    std::fs::write(
        ctx.join("Dockerfile"),
        snippet.replace(&placeholder, &pinned),
    )
    .expect("write the Dockerfile");
    let image = format!("keepwell-test/copy-from:{}", std::process::id());
    build(
        &env,
        &mut cleanup,
        &image,
        &ctx,
        &[format!("PYTHON_IMAGE={PYTHON_IMAGE}")],
    );
    let name = unique("copy-from");
    cleanup.containers.push(name.clone());
    // The snippet's ENTRYPOINT: keepwell is PID 1 of whatever runs in the image.
    let out = docker.ok(
        &[
            "run",
            "--name",
            &name,
            "--network",
            "host",
            &image,
            "cat",
            "/proc/1/comm",
        ],
        EXEC_DEADLINE,
    );
    assert_eq!(out, "keepwell");
}
