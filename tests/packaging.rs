//! Packaging: what `scripts/release.sh` ships installs and runs the way users install it
//! (README "Install"; SPEC.md "Install", "Build and ship").
//!
//! - the wheels: pip installs the x86_64 one into a fresh venv as `bin/keepwell`, byte-identical
//!   to the release binary; pip's tag matching takes each wheel for glibc (manylinux2014,
//!   manylinux_2_36) and musl (musllinux_1_1, musllinux_1_2) platforms of its architecture only;
//!   each wheel carries maturin's CycloneDX SBOM;
//! - the sdist builds a working keepwell with pip and cargo (PEP 517);
//! - the .crate holds what a crate user needs, `cargo package` does not warn, and
//!   `cargo install --path` of the unpacked crate builds;
//! - every binary carries its dependency list (cargo auditable), read back and checked against
//!   Cargo.lock and cargo's own resolution for that target;
//! - SHA256SUMS covers every file and verifies.
//!
//! The releases come from `common::dist` (CI: the `dist/` of its own release step).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::dist::{self, Dist, TARGETS};
use common::run_with_deadline;

const STEP: Duration = Duration::from_secs(120);
/// A release build of keepwell from source (LTO), on a busy 2-core machine.
const SOURCE_BUILD: Duration = Duration::from_secs(1200);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A fresh venv from the system Python, and its pip with the machine's pip settings (a
/// PIP_FIND_LINKS of the host, say) kept out.
struct Venv {
    dir: tempfile::TempDir,
}

impl Venv {
    fn new() -> Venv {
        let dir = tempfile::Builder::new()
            .prefix("keepwell-venv")
            .tempdir()
            .expect("temp dir");
        ok(
            run_with_deadline(
                Command::new(python()).args(["-m", "venv"]).arg(dir.path()),
                STEP,
            ),
            "python3 -m venv",
        );
        Venv { dir }
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin").join(name)
    }

    fn pip(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin("pip"));
        cmd.args(args)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env_remove("PIP_FIND_LINKS")
            .env_remove("PIP_INDEX_URL")
            .env_remove("PIP_NO_INDEX");
        cmd
    }
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn arch_of(target: &str) -> &str {
    target
        .split('-')
        .next()
        .expect("a target triple has an arch")
}

/// The files of a zip archive (a wheel), read with Python's zipfile: name → bytes.
fn wheel_file(wheel: &Path, suffix: &str) -> Vec<u8> {
    let script = "import sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        names = [n for n in z.namelist() if n.endswith(sys.argv[2])]\n\
        assert len(names) == 1, names\n\
        sys.stdout.buffer.write(z.read(names[0]))\n";
    let out = run_with_deadline(
        Command::new(python())
            .args(["-c", script])
            .arg(wheel)
            .arg(suffix),
        STEP,
    );
    assert!(
        out.status.success(),
        "{} holds no single file ending in {suffix}: {}",
        wheel.display(),
        text(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------

#[test]
fn sha256sums_cover_every_file_of_the_release_and_verify() {
    let dist = Dist::get();
    let v = dist.version;
    let listed: BTreeSet<String> = std::fs::read_to_string(dist.dir.join("SHA256SUMS"))
        .expect("read SHA256SUMS")
        .lines()
        .map(|l| {
            let (hash, name) = l.split_once("  ").expect("sha256sum's `HASH  NAME` lines");
            assert_eq!(hash.len(), 64, "{l}");
            name.to_string()
        })
        .collect();
    let expected: BTreeSet<String> = [
        format!("keepwell-{v}-x86_64-unknown-linux-musl"),
        format!("keepwell-{v}-aarch64-unknown-linux-musl"),
        format!("keepwell-{v}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.musllinux_1_1_x86_64.whl"),
        format!("keepwell-{v}-py3-none-manylinux2014_aarch64.manylinux_2_17_aarch64.musllinux_1_1_aarch64.whl"),
        format!("keepwell-{v}.tar.gz"),
        format!("keepwell-{v}.crate"),
    ]
    .into_iter()
    .collect();
    assert_eq!(listed, expected, "SHA256SUMS must list exactly the release");
    let present: BTreeSet<String> = std::fs::read_dir(&dist.dir)
        .expect("read the release dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    assert_eq!(
        present, expected,
        "the release dir holds exactly these files"
    );
    let check = run_with_deadline(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dist.dir),
        STEP,
    );
    let said = ok(check, "sha256sum --check SHA256SUMS");
    assert_eq!(said.matches(": OK").count(), expected.len(), "{said}");
}

#[test]
fn the_x86_64_wheel_installs_keepwell_into_a_venv_byte_identical_and_it_runs() {
    let dist = Dist::get();
    let wheel = dist.wheel("x86_64");
    let venv = Venv::new();
    // Hash-checked as a requirements file would pin it, and by pip's real tag matching on this
    // glibc machine (not --platform): the wheel must be taken as it is.
    let req = venv.dir.path().join("requirements.txt");
    std::fs::write(
        &req,
        format!(
            "keepwell=={} --hash=sha256:{}\n",
            dist.version,
            dist::sha256(&wheel)
        ),
    )
    .expect("write requirements.txt");
    let find_links = format!("--find-links={}", dist.dir.display());
    let req_arg = req.to_string_lossy().into_owned();
    ok(
        run_with_deadline(
            &mut venv.pip(&[
                "install",
                "--no-index",
                &find_links,
                "--only-binary=:all:",
                "--require-hashes",
                "-r",
                &req_arg,
            ]),
            STEP,
        ),
        "pip install -r requirements.txt (keepwell with --hash)",
    );

    let installed = venv.bin("keepwell");
    let bytes = std::fs::read(&installed).expect("venv/bin/keepwell exists");
    let release = std::fs::read(dist.binary("x86_64-unknown-linux-musl")).expect("release binary");
    assert!(
        bytes == release,
        "venv/bin/keepwell ({} bytes) differs from the release binary ({} bytes)",
        bytes.len(),
        release.len()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&installed)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "venv/bin/keepwell is executable: {mode:o}"
    );

    let version = ok(
        run_with_deadline(Command::new(&installed).arg("--version"), STEP),
        "venv/bin/keepwell --version",
    );
    assert_eq!(version, format!("keepwell {}\n", dist.version));
    // It supervises: as PID 1 of a fresh namespace, the child's exit code comes back.
    let out = run_with_deadline(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(&installed)
            .args(["--", "sh", "-c", "exit 3"]),
        STEP,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // pip knows the file as part of the distribution (so `pip uninstall` removes it).
    let files = ok(
        run_with_deadline(&mut venv.pip(&["show", "--files", "keepwell"]), STEP),
        "pip show --files keepwell",
    );
    assert!(files.contains("bin/keepwell"), "{files}");
    assert!(files.contains("sboms/keepwell.cyclonedx.json"), "{files}");
}

/// The tags an interpreter on that platform accepts, newest first, as `packaging.tags` makes
/// them: a glibc 2.N system takes manylinux_2_N down to manylinux_2_17 (alias manylinux2014),
/// a musl 1.N system takes musllinux_1_N down to musllinux_1_0.
fn platform_tags(platform: &str, arch: &str) -> Vec<String> {
    let mut tags = Vec::new();
    if platform == "manylinux2014" {
        tags.push(format!("manylinux2014_{arch}"));
        tags.push(format!("manylinux_2_17_{arch}"));
    } else if let Some(minor) = platform.strip_prefix("manylinux_2_") {
        let minor: u32 = minor.parse().expect("manylinux_2_N");
        for m in (17..=minor).rev() {
            tags.push(format!("manylinux_2_{m}_{arch}"));
        }
        tags.push(format!("manylinux2014_{arch}"));
    } else if let Some(minor) = platform.strip_prefix("musllinux_1_") {
        let minor: u32 = minor.parse().expect("musllinux_1_N");
        for m in (0..=minor).rev() {
            tags.push(format!("musllinux_1_{m}_{arch}"));
        }
    } else {
        tags.push(platform.to_string());
    }
    tags
}

/// `pip download --only-binary=:all: --platform …` from the release: the file pip picks.
fn pip_picks(venv: &Venv, dist: &Dist, platforms: &[String]) -> Result<String, String> {
    let dest = tempfile::tempdir().expect("temp dir");
    let mut args = vec![
        "download".to_string(),
        "--no-index".into(),
        format!("--find-links={}", dist.dir.display()),
        "--only-binary=:all:".into(),
        "--no-deps".into(),
        "--python-version".into(),
        "3.12".into(),
        "-d".into(),
        dest.path().to_string_lossy().into_owned(),
    ];
    for p in platforms {
        args.push("--platform".into());
        args.push(p.clone());
    }
    args.push(format!("keepwell=={}", dist.version));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with_deadline(&mut venv.pip(&args), STEP);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let picked: Vec<String> = std::fs::read_dir(dest.path())
        .expect("read the download dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(picked.len(), 1, "pip downloaded {picked:?}");
    Ok(picked[0].clone())
}

#[test]
fn pip_takes_each_wheel_for_glibc_and_musl_platforms_of_its_architecture_only() {
    let dist = Dist::get();
    let venv = Venv::new();
    for target in TARGETS {
        let arch = arch_of(target);
        let wheel = dist
            .wheel(arch)
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        for platform in [
            "manylinux2014",
            "manylinux_2_36",
            "musllinux_1_1",
            "musllinux_1_2",
        ] {
            let picked = pip_picks(&venv, &dist, &platform_tags(platform, arch))
                .unwrap_or_else(|e| panic!("pip refused {wheel} for {platform}_{arch}:\n{e}"));
            assert_eq!(picked, wheel, "pip's pick for {platform}_{arch}");
        }
    }
    // Nothing for platforms the release does not cover: pip must say no rather than pick a
    // Linux wheel (the sdist is the way there).
    for platform in ["macosx_11_0_arm64", "win_amd64", "manylinux_2_36_armv7l"] {
        let picked = pip_picks(&venv, &dist, &[platform.to_string()]);
        assert!(
            picked.is_err(),
            "pip must find no wheel for {platform}, picked {picked:?}"
        );
    }
}

#[test]
fn each_wheel_carries_the_release_binary_and_a_cyclonedx_sbom_of_its_crates() {
    let dist = Dist::get();
    for target in TARGETS {
        let wheel = dist.wheel(arch_of(target));
        let inside = wheel_file(&wheel, ".data/scripts/keepwell");
        let release = std::fs::read(dist.binary(target)).expect("release binary");
        assert!(
            inside == release,
            "{} does not carry the release binary",
            wheel.display()
        );
        let sbom: serde_json::Value =
            serde_json::from_slice(&wheel_file(&wheel, "sboms/keepwell.cyclonedx.json"))
                .expect("the SBOM is JSON");
        assert_eq!(sbom["bomFormat"], "CycloneDX", "{}", wheel.display());
        let in_sbom: BTreeSet<String> = sbom["components"]
            .as_array()
            .expect("SBOM components")
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["version"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let mut embedded = embedded_crates(&dist.binary(target));
        embedded.remove(&format!("keepwell {}", dist.version));
        assert_eq!(
            in_sbom,
            embedded,
            "the SBOM of {} names the crates linked into its binary",
            wheel.display()
        );
    }
}

/// `pip wheel SOURCE` in a fresh venv (PEP 517 through maturin, which pip fetches from PyPI
/// into its isolated build env), then `pip install` of that wheel: keepwell must run.
fn pip_builds_a_working_keepwell_from(source: &Path, version: &str) {
    let venv = Venv::new();
    let wheels = tempfile::tempdir().expect("temp dir");
    let wheels_arg = wheels.path().to_string_lossy().into_owned();
    let source_arg = source.to_string_lossy().into_owned();
    let mut build = venv.pip(&[
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "-w",
        &wheels_arg,
        &source_arg,
    ]);
    // The build directory is cached (the dependencies compile once).
    build.env("CARGO_TARGET_DIR", source_build_dir());
    ok(
        run_with_deadline(&mut build, SOURCE_BUILD),
        &format!("pip wheel {source_arg}"),
    );
    let built: Vec<PathBuf> = std::fs::read_dir(wheels.path())
        .expect("read wheels")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    let built_arg = built[0].to_string_lossy().into_owned();
    ok(
        run_with_deadline(&mut venv.pip(&["install", "--no-index", &built_arg]), STEP),
        "pip install of the wheel built from source",
    );
    let said = ok(
        run_with_deadline(Command::new(venv.bin("keepwell")).arg("--version"), STEP),
        "keepwell built from source",
    );
    assert_eq!(said, format!("keepwell {version}\n"));
}

#[test]
fn the_sdist_builds_a_working_keepwell_with_pip_and_cargo() {
    let dist = Dist::get();
    pip_builds_a_working_keepwell_from(&dist.sdist(), dist.version);
}

#[test]
fn pip_wheel_of_the_checkout_builds_a_working_keepwell() {
    pip_builds_a_working_keepwell_from(dist::root(), env!("CARGO_PKG_VERSION"));
}

/// Shared by the sdist and crate builds (both build for the host with the release profile,
/// so the dependencies compile once), kept between runs.
fn source_build_dir() -> PathBuf {
    let cache = std::env::var_os("KW_CACHE").unwrap_or_else(|| "/tmp/keepwell-cache".into());
    PathBuf::from(cache).join("source-build-target")
}

#[test]
fn the_crate_holds_what_a_user_needs_and_installs_with_cargo_install() {
    let dist = Dist::get();
    let unpacked = tempfile::tempdir().expect("temp dir");
    ok(
        run_with_deadline(
            Command::new("tar")
                .arg("-xzf")
                .arg(dist.crate_file())
                .arg("-C")
                .arg(unpacked.path()),
            STEP,
        ),
        "unpacking the .crate",
    );
    let krate = unpacked.path().join(format!("keepwell-{}", dist.version));
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE",
        "src/main.rs",
        "build.rs",
        "hot-text.ld",
    ] {
        assert!(krate.join(needed).is_file(), "the crate lacks {needed}");
    }
    for left_out in [
        ".ci",
        "examples",
        "scripts",
        "tests/bench",
        "Dockerfile",
        "pyproject.toml",
    ] {
        assert!(
            !krate.join(left_out).exists(),
            "the crate ships {left_out}, which a crate user does not need"
        );
    }
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("Cargo.toml");
    for field in [
        "repository",
        "documentation",
        "readme",
        "keywords",
        "categories",
        "license",
    ] {
        assert!(
            manifest
                .lines()
                .any(|l| l.starts_with(&format!("{field} ="))),
            "the crate's Cargo.toml has no {field}"
        );
    }

    let root = tempfile::tempdir().expect("temp dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ok(
        run_with_deadline(
            Command::new(&cargo)
                .args(["install", "--locked", "--path"])
                .arg(&krate)
                .arg("--root")
                .arg(root.path())
                .arg("--target-dir")
                .arg(source_build_dir())
                .current_dir(unpacked.path()),
            SOURCE_BUILD,
        ),
        "cargo install --path",
    );
    let version = ok(
        run_with_deadline(
            Command::new(root.path().join("bin/keepwell")).arg("--version"),
            STEP,
        ),
        "the cargo-installed keepwell",
    );
    assert_eq!(version, format!("keepwell {}\n", dist.version));
}

#[test]
fn cargo_package_does_not_warn() {
    let target = tempfile::tempdir().expect("temp dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run_with_deadline(
        Command::new(&cargo)
            .args([
                "package",
                "--locked",
                "--no-verify",
                "--allow-dirty",
                "--target-dir",
            ])
            .arg(target.path())
            .current_dir(dist::root()),
        Duration::from_secs(300),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "cargo package failed:\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert!(warnings.is_empty(), "cargo package warned:\n{stderr}");
}

// ---------------------------------------------------------------------------------------
// The dependency list inside each binary

/// `name version` of every crate in a binary's embedded dependency list (rust-audit-info).
fn embedded_crates(binary: &Path) -> BTreeSet<String> {
    let out = run_with_deadline(
        Command::new(dist::tool("rust-audit-info")).arg(binary),
        STEP,
    );
    let json = ok(out, &format!("rust-audit-info {}", binary.display()));
    let list: serde_json::Value = serde_json::from_str(&json).expect("rust-audit-info prints JSON");
    list["packages"]
        .as_array()
        .expect("a packages array")
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().expect("a name"),
                p["version"].as_str().expect("a version")
            )
        })
        .collect()
}

/// `name version` → source of every package in Cargo.lock ("" for the local crate).
fn lock_packages() -> std::collections::BTreeMap<String, String> {
    let lock = std::fs::read_to_string(dist::root().join("Cargo.lock")).expect("read Cargo.lock");
    let mut found = std::collections::BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_string)
            })
        };
        let name = field("name").expect("a package has a name");
        let version = field("version").expect("a package has a version");
        found.insert(
            format!("{name} {version}"),
            field("source").unwrap_or_default(),
        );
    }
    found
}

/// What cargo resolves into the binary for a target: normal and build dependencies.
fn resolved_crates(target: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run_with_deadline(
        Command::new(&cargo)
            .args(["tree", "--locked", "--target", target, "-e", "normal,build"])
            .args(["--prefix", "none", "--format", "{p}"])
            .current_dir(dist::root()),
        STEP,
    );
    ok(out, "cargo tree")
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some(format!("{name} {version}"))
        })
        .collect()
}

#[test]
fn every_release_binary_carries_its_dependency_list_matching_cargo_lock() {
    let dist = Dist::get();
    let lock = lock_packages();
    for target in TARGETS {
        let binary = dist.binary(target);
        // The section is where scanners look for it (syft, trivy, cargo audit bin), read here
        // straight from the ELF file and inflated by Python's zlib: the same list as
        // rust-audit-info's.
        let section = elf_section(&binary, ".dep-v0")
            .unwrap_or_else(|| panic!("{target}: the binary has no .dep-v0 section"));
        assert!(
            (200..4096).contains(&section.len()),
            "{target}: .dep-v0 is {} bytes (a compressed list of ~50 crates is ~900)",
            section.len()
        );
        let inflated = inflate(&section);
        let list: serde_json::Value =
            serde_json::from_slice(&inflated).expect(".dep-v0 inflates to JSON");
        let from_section: BTreeSet<String> = list["packages"]
            .as_array()
            .expect("a packages array")
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            })
            .collect();

        let embedded = embedded_crates(&binary);
        assert_eq!(
            from_section, embedded,
            "{target}: two readers of .dep-v0 disagree"
        );
        assert!(
            embedded.contains(&format!("keepwell {}", dist.version)),
            "{target}: {embedded:?}"
        );
        for krate in &embedded {
            assert!(
                lock.contains_key(krate),
                "{target}: the binary embeds {krate}, which Cargo.lock does not pin"
            );
        }
        assert_eq!(
            embedded,
            resolved_crates(target),
            "{target}: the embedded list is exactly what cargo resolves into the binary"
        );
    }
}

/// A section of an ELF file: its name, where it is loaded and where it is in the file.
struct Section {
    name: String,
    address: usize,
    offset: usize,
    size: usize,
}

/// The section headers of a 64-bit little-endian ELF file (both release targets).
fn elf_sections(elf: &[u8], path: &Path) -> Vec<Section> {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at =
        |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) as usize;
    let u64_at =
        |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes")) as usize;
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "{}: a 64-bit LE ELF",
        path.display()
    );
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let h = header(i);
            let at = names + u32_at(h);
            let end = at + elf[at..].iter().position(|&b| b == 0).unwrap_or(0);
            Section {
                name: String::from_utf8_lossy(&elf[at..end]).into_owned(),
                address: u64_at(h + 0x10),
                offset: u64_at(h + 0x18),
                size: u64_at(h + 0x20),
            }
        })
        .collect()
}

/// The bytes of a named section of a release binary.
fn elf_section(path: &Path, name: &str) -> Option<Vec<u8>> {
    let elf = std::fs::read(path).expect("read the binary");
    elf_sections(&elf, path)
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| elf[s.offset..s.offset + s.size].to_vec())
}

#[test]
fn every_release_binary_starts_its_code_with_what_a_probe_runs() {
    // hot-text.ld names ~150 functions by hash-free patterns; were they all renamed away (or
    // the linker script left out), the section would be gone or hold a handful of bytes, and
    // each probe would again touch ~73 pages of code instead of ~26 (tests/bench/hot_text.py).
    let dist = Dist::get();
    for target in TARGETS {
        let binary = dist.binary(target);
        let elf = std::fs::read(&binary).expect("read the binary");
        let sections = elf_sections(&elf, &binary);
        let find = |name: &str| {
            sections
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{target}: no {name} section (build.rs, hot-text.ld)"))
        };
        let (hot, text) = (find(".text.hot"), find(".text"));
        assert!(
            hot.address < text.address,
            "{target}: .text.hot at {:#x} comes after .text at {:#x}",
            hot.address,
            text.address
        );
        assert!(
            (64 * 1024..512 * 1024).contains(&hot.size),
            "{target}: .text.hot holds {} bytes; the probe's ~150 functions are ~100 KiB (run \
             tests/bench/hot_text.py again if they were renamed)",
            hot.size
        );
    }
}

/// zlib-inflate bytes with Python's zlib (no compression crate among the dev-dependencies).
fn inflate(bytes: &[u8]) -> Vec<u8> {
    let packed = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(packed.path(), bytes).expect("write the section");
    let out = run_with_deadline(Command::new(python())
            .args(["-c", "import sys, zlib; sys.stdout.buffer.write(zlib.decompress(open(sys.argv[1], 'rb').read()))"])
            .arg(packed.path()), STEP);
    assert!(out.status.success(), "zlib inflate: {}", text(&out.stderr));
    out.stdout
}
