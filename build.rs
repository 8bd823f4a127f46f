//! Records the version of rustls that this build links, for `stogie --version`.
//!
//! Read from Cargo.lock, which cargo writes before it runs build scripts, so the figure is
//! always the one compiled in. A lock file without exactly one rustls package fails the build
//! rather than printing a stale or guessed version.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lock = dir.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lock.display()));
    let versions = locked_versions(&text, "rustls");
    match versions.as_slice() {
        [version] => println!("cargo:rustc-env=STOGIE_RUSTLS_VERSION={version}"),
        _ => panic!(
            "{} lists rustls {versions:?}; expected exactly one version",
            lock.display()
        ),
    }
}

/// Every `version` of the `[[package]]` entries named `name` in a Cargo.lock.
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let wanted = format!("name = \"{name}\"");
    let mut out = Vec::new();
    let mut in_package = false;
    for line in lock.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = false;
        } else if line == wanted {
            in_package = true;
        } else if in_package {
            if let Some(v) = line.strip_prefix("version = \"") {
                out.push(v.trim_end_matches('"').to_string());
                in_package = false;
            }
        }
    }
    out
}
