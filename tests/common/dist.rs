//! The release's outputs, as `scripts/release.sh` writes them: both static binaries, both
//! wheels, the sdist, the .crate and SHA256SUMS.
//!
//! With `KW_DIST=DIR` the tests read an existing release (CI sets it to the `dist/` its own
//! release step wrote, so the tests check exactly what it made). Otherwise each test process
//! runs the release command into a temp dir of its own: the script's build directory is shared
//! and cached, so after the first build that takes seconds. A release that cannot be made
//! fails the test with the script's output; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A cold release builds both targets with LTO; on a busy 2-core machine that takes minutes.
const RELEASE_DEADLINE: Duration = Duration::from_secs(1500);

pub const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Dist {
    pub dir: PathBuf,
    pub version: &'static str,
    _temp: Option<tempfile::TempDir>,
}

impl Dist {
    /// `$KW_DIST`, or a fresh release made by `scripts/release.sh --allow-dirty`.
    pub fn get() -> Dist {
        let version = env!("CARGO_PKG_VERSION");
        if let Some(dir) = std::env::var_os("KW_DIST").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("SHA256SUMS").is_file(),
                "KW_DIST={} holds no release (no SHA256SUMS): run scripts/release.sh",
                dir.display()
            );
            return Dist {
                dir,
                version,
                _temp: None,
            };
        }
        let temp = tempfile::Builder::new()
            .prefix("keepwell-dist")
            .tempdir()
            .expect("temp dir for the release");
        let out = super::run_with_deadline(
            Command::new(root().join("scripts/release.sh"))
                .args(["--allow-dirty", "--out"])
                .arg(temp.path()),
            RELEASE_DEADLINE,
        );
        assert!(
            out.status.success(),
            "scripts/release.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Dist {
            dir: temp.path().to_path_buf(),
            version,
            _temp: Some(temp),
        }
    }

    /// The static binary for a target triple.
    pub fn binary(&self, target: &str) -> PathBuf {
        self.existing(&format!("keepwell-{}-{target}", self.version))
    }

    /// The wheel for an architecture (`x86_64`, `aarch64`).
    pub fn wheel(&self, arch: &str) -> PathBuf {
        self.existing(&format!(
            "keepwell-{}-py3-none-manylinux2014_{arch}.manylinux_2_17_{arch}.musllinux_1_1_{arch}.whl",
            self.version
        ))
    }

    pub fn sdist(&self) -> PathBuf {
        self.existing(&format!("keepwell-{}.tar.gz", self.version))
    }

    pub fn crate_file(&self) -> PathBuf {
        self.existing(&format!("keepwell-{}.crate", self.version))
    }

    fn existing(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        assert!(
            path.is_file(),
            "the release has no {name}; it holds: {:?}",
            std::fs::read_dir(&self.dir)
                .map(|d| d
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        );
        path
    }
}

/// Where the release's own tools are (`cargo-auditable`, `rust-audit-info`, `maturin`),
/// installed by `scripts/release.sh tools` if missing.
pub fn tool(name: &str) -> PathBuf {
    let out = super::run_with_deadline(
        Command::new(root().join("scripts/release.sh")).arg("tools"),
        Duration::from_secs(900),
    );
    assert!(
        out.status.success(),
        "scripts/release.sh tools failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("scripts/release.sh tools lists no {name}:\n{listing}"))
}

/// The sha256 of a file, as `sha256sum` prints it.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_string()
}
