//! Builds the example agents in `agents/` for WASI preview 1 and preview 2 with a nested
//! `cargo build`, so that `src/lib.rs` can embed them.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The targets every agent is built for: core modules and components.
const TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-wasip2"];

/// Variables that describe the outer build and must not steer the nested one.
const LEAKY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_INCREMENTAL",
];

/// Prefixes of variables that configure profiles and build settings of the outer build
/// (`CARGO_PROFILE_RELEASE_LTO`, `CARGO_BUILD_TARGET`, ...).
const LEAKY_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_BUILD_"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let agents = manifest_dir.join("../../agents");
    let agents = agents.canonicalize().unwrap_or_else(|e| {
        panic!(
            "cannot find the agents workspace at {}: {e}",
            agents.display()
        )
    });

    watch(&agents);
    ensure_targets();
    build(&agents, &out_dir.join("agents-target"));
}

/// Reruns this script when an agent's sources (the SDK's among them), the agents'
/// manifest or lock file, the WAT fixtures, or the WIT files the SDK's bindings are
/// generated from (`wit/` beside `agents/`) change. Every member is built for both
/// targets; a library member (the SDK) builds no `.wasm` of its own.
fn watch(agents: &Path) {
    for file in ["Cargo.toml", "Cargo.lock", "wat", "../wit"] {
        println!("cargo:rerun-if-changed={}", agents.join(file).display());
    }
    let entries =
        fs::read_dir(agents).unwrap_or_else(|e| panic!("cannot list {}: {e}", agents.display()));
    for entry in entries {
        let member = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", agents.display()))
            .path();
        if member.join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                member.join("Cargo.toml").display()
            );
            println!("cargo:rerun-if-changed={}", member.join("src").display());
        }
    }
}

/// Installs the WASI targets with rustup when the toolchain lacks them.
fn ensure_targets() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", rustc.to_string_lossy()));
    assert!(
        output.status.success(),
        "`{} --print sysroot` failed: {}",
        rustc.to_string_lossy(),
        String::from_utf8_lossy(&output.stderr)
    );
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let missing: Vec<&str> = TARGETS
        .into_iter()
        .filter(|target| !sysroot.join("lib/rustlib").join(target).is_dir())
        .collect();
    if missing.is_empty() {
        return;
    }

    println!(
        "cargo:warning=the Rust targets {} are missing; running `rustup target add {}`",
        missing.join(", "),
        missing.join(" ")
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add"]).args(&missing);
    // Add them to the toolchain that is building us, not to rustup's default one.
    if sysroot.parent().and_then(Path::file_name) == Some(OsStr::new("toolchains"))
        && let Some(toolchain) = sysroot.file_name()
    {
        rustup.arg("--toolchain").arg(toolchain);
    }
    let status = rustup.status().unwrap_or_else(|e| {
        panic!(
            "the targets {} are missing and rustup cannot run: {e}",
            missing.join(", ")
        )
    });
    assert!(
        status.success(),
        "`rustup target add {}` failed ({status}); install the targets and build again",
        missing.join(" ")
    );
}

/// Builds every agent for every target into `target_dir`, or fails the build with the
/// nested cargo's own diagnostics.
fn build(agents: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(agents.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for target in TARGETS {
        command.args(["--target", target]);
    }
    for (name, _) in env::vars_os() {
        let leaky = name.to_str().is_some_and(|name| {
            LEAKY_VARS.contains(&name)
                || LEAKY_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        });
        if leaky {
            command.env_remove(&name);
        }
    }

    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.to_string_lossy()));
    if !output.status.success() {
        panic!(
            "building the example agents failed ({}): {command:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
