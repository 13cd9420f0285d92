//! Build script: the shipped static builds put the code an HTTP probe runs first in the
//! binary, in the order it runs (hot-text.ld, written by tests/bench/hot_text.py).
//!
//! Only where the linker is known to be lld (the musl targets, linked by rust-lld as
//! .cargo/config.toml sets): the script's `INSERT BEFORE .text` leaves the rest of the default
//! layout alone there. Any other build links as it always did.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let musl = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl");
    let lld = env::var("RUSTC_LINKER").is_ok_and(|linker| {
        Path::new(&linker)
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name == "rust-lld" || name == "ld.lld")
    });
    if musl && lld {
        let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = Path::new(&manifest_dir).join("hot-text.ld");
        println!("cargo:rustc-link-arg-bin=keepwell=-T{}", script.display());
    }
}
