//! The virtualenv with real gunicorn and Flask from PyPI that the end-to-end tests run.
//!
//! `health_venv()` is a second one, made the same way from tests/support/health-requirements.txt
//! (`health-venv` beside `e2e-venv`): Celery with Redis and grpcio for the health-kind tests.
//!
//! Created once at `$TMPDIR/keepwell-e2e/<hash>/e2e-venv` and shared by every test process
//! (nextest runs each test in a process of its own): an exclusive `flock` on `e2e-venv.lock`
//! beside it makes one process build it while the others wait. The hash is of the pinned
//! requirements and of the interpreter: a later run with the same ones reuses the venv, a
//! change to either makes a new one beside it, and two checkouts with different pins never
//! rebuild each other's venv while the other's tests run in it. A marker file, written last,
//! says the venv is complete.
//!
//! The venv cannot be built elsewhere and renamed into place: pip writes its absolute path
//! into the shebang of `bin/gunicorn`.
//!
//! When pip cannot install (PyPI unreachable, a pin that does not exist) this panics with pip's
//! output: the end-to-end tests fail loudly, they never skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// The pinned requirements, relative to the crate root.
const REQUIREMENTS: &str = "tests/support/e2e-requirements.txt";
/// The second venv's: Celery with Redis, grpcio with its health service (tests/celery.rs,
/// tests/grpc.rs).
const HEALTH_REQUIREMENTS: &str = "tests/support/health-requirements.txt";

/// The interpreter the venv is built from. A system Python is preferred: a venv links back to
/// its interpreter and standard library, and one under /root (pyenv) cannot be read by the
/// unprivileged user that the `--user` test runs gunicorn as.
fn base_python() -> String {
    if let Ok(python) = std::env::var("KEEPWELL_E2E_PYTHON") {
        return python;
    }
    for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "python3".into()
}

/// FNV-1a: a hash that stays the same across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// pip on a slow mirror, on a loaded machine, may take minutes; never forever.
const PIP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);

fn run(command: &mut Command, what: &str) {
    let output = super::run_with_deadline(command, PIP_DEADLINE);
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {command:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The path of a venv with the pinned gunicorn and Flask installed; builds it when needed.
pub fn venv() -> PathBuf {
    venv_from(REQUIREMENTS, "e2e-venv")
}

/// The venv of tests/support/sockets-requirements.txt: gunicorn 27 and uvicorn, for the
/// `--socket` tests (held sockets, restarts under load).
pub fn sockets_venv() -> PathBuf {
    venv_from("tests/support/sockets-requirements.txt", "sockets-venv")
}

/// The path of a venv with the pinned Celery (Redis) and grpcio installed; builds it when needed.
pub fn health_venv() -> PathBuf {
    venv_from(HEALTH_REQUIREMENTS, "health-venv")
}

/// A venv named `name` with `requirements` (relative to the crate root) installed.
fn venv_from(requirements: &str, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Under the temp dir, not target/: the --user test runs gunicorn as nobody, which must be
    // able to reach the venv wherever the repository was cloned (a clone under /root is not).
    let shown = requirements;
    let requirements = root.join(requirements);
    let pins = fs::read(&requirements).unwrap_or_else(|e| panic!("read {shown}: {e}"));
    let python = base_python();
    let version =
        super::run_with_deadline(Command::new(&python).arg("--version"), super::RUN_DEADLINE);
    let mut identity = pins.clone();
    identity.extend_from_slice(python.as_bytes());
    identity.extend_from_slice(&version.stdout);
    let hash = format!("{:016x}\n", fnv1a(&identity));

    let parent = std::env::temp_dir().join("keepwell-e2e");
    let target = parent.join(hash.trim());
    fs::create_dir_all(&target).expect("create the e2e venv's folder");
    for dir in [&parent, &target] {
        let _ = fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let venv = target.join(name);
    let marker = venv.join(".keepwell-requirements-hash");

    let lock_file =
        fs::File::create(target.join(format!("{name}.lock"))).expect("create the lock file");
    // Held until this function returns: the venv is complete (or absent) for everyone else.
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the e2e venv");

    if fs::read_to_string(&marker).ok().as_deref() == Some(hash.as_str()) {
        return venv;
    }

    let started = std::time::Instant::now();
    if venv.exists() {
        fs::remove_dir_all(&venv).expect("remove the stale e2e venv");
    }
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        "creating the e2e venv",
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--no-input", "--retries", "2", "-r"])
            .arg(&requirements),
        &format!("pip install -r {shown} (is PyPI reachable?)"),
    );
    fs::write(&marker, &hash).expect("write the e2e venv marker");
    eprintln!(
        "built the e2e venv at {} in {:.1?}",
        venv.display(),
        started.elapsed()
    );
    venv
}
