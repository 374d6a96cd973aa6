//! What the `fabric` executable carries: the example agents the demo loads, none of the
//! attack fixtures or attack agents, and under 64 MiB.
//!
//! The executable checked is `FABRIC_CHECK_BIN` when set, else the one Cargo built for
//! these tests. The test build turns on `fabric-agents/attack-fixtures` (a dev-dependency
//! feature), the shipped build (`cargo build --release -p fabric-cli`) does not; to check
//! the shipped file itself, build it, copy it out of `target/` (the test build overwrites
//! it) and name the copy in `FABRIC_CHECK_BIN`, as `.ci/run` does.

use std::path::PathBuf;

/// The largest executable accepted.
const MAX_BYTES: u64 = 64 << 20;

fn executable() -> (PathBuf, Vec<u8>) {
    let path = std::env::var_os("FABRIC_CHECK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fabric")));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read the executable {}: {e}", path.display()));
    (path, bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[test]
fn the_executable_embeds_the_example_agents_and_no_attack_fixture() {
    let (path, bytes) = executable();
    let path = path.display();
    // The search finds what is there: every agent `fabric demo` loads.
    for (name, wasm) in fabric_agents::p1::AGENTS {
        assert!(contains(&bytes, wasm), "{path} lacks the {name} agent");
    }
    for (name, wasm) in [
        ("netcheck (p1)", fabric_agents::attack::NETCHECK_P1),
        ("netcheck (p2)", fabric_agents::attack::NETCHECK_P2),
    ] {
        assert!(
            !contains(&bytes, wasm),
            "{path} embeds the attack agent {name}"
        );
    }
    for name in fabric_agents::FIXTURES {
        // Each fixture's source opens with this line (the fixtures' own tests check it).
        let header = format!(";; {name}: ");
        assert!(
            !contains(&bytes, header.as_bytes()),
            "{path} embeds the WAT fixture {name}"
        );
        let compiled = fabric_agents::fixture(name);
        assert!(
            !contains(&bytes, &compiled),
            "{path} embeds the compiled WAT fixture {name}"
        );
    }
}

#[test]
fn the_executable_is_under_64_mib() {
    let (path, bytes) = executable();
    let size = bytes.len() as u64;
    assert!(
        size < MAX_BYTES,
        "{} is {size} bytes ({:.1} MiB), more than 64 MiB",
        path.display(),
        size as f64 / f64::from(1 << 20)
    );
}
