//! The example agents (Rust WASI commands built as preview 1 modules and preview 2
//! components), embedded as bytes for the demo, tests and benches; with the
//! `attack-fixtures` feature also the WAT attack fixtures and the attack agents, for tests.
//!
//! Every agent reads its input on stdin and writes its output on stdout:
//!
//! - `ECHO` copies stdin to stdout.
//! - `WORDCOUNT` prints `{"words":N,"lines":N,"bytes":N,"top":[["word",N],...]}`.
//! - `SHA256` prints the lowercase hex SHA-256 of stdin and a newline.
//! - `STRICT` prints `hello, NAME` for `{"name": "NAME"}` and exits with code 3 on
//!   anything else (as a component it can only report failure: the host sees 1, since
//!   Rust's `wasm32-wasip2` std imports `wasi:cli/exit.exit`, not `exit-with-code`).
//! - `SLEEP` sleeps for the milliseconds on stdin (1000 when empty), then prints
//!   `slept N ms`.
//! - `PROBE` runs one command per line (`read PATH`, `connect HOST:PORT`, `alloc MIB`,
//!   `spin`, ...) and prints `CMD -> ok: ...` or `CMD -> err: ...` for each; see
//!   `agents/probe/src/main.rs`.
//! - `REPORTER` reads text and, through the `fabric-agent` SDK, reports progress per line
//!   and the KPIs `words` (per line), `lines` and `confidence`, then prints
//!   `lines=N words=W confidence=C refused=R`; `--print-args` prints its arguments and
//!   `--flood N` makes N KPI calls instead; see `agents/reporter/src/main.rs`. `WORDCOUNT`
//!   records the KPI `words` too.
//! - `PLANNER` reads lines of text and submits, through the SDK's `submit`, one child task
//!   running the module `wordcount` per non-empty line and a fan-in child running the
//!   module `planner` with `--join` after all of them (`pass_outputs`), then prints
//!   `{"children":[...],"join":"ID"}`; with `--join` it sums the wordcount reports of a
//!   `pass_outputs` document; `--fail-after-submit`, `--sleep-after-submit MS`, `--raw`
//!   and `--flood N` are for tests; see `agents/planner/src/main.rs`.
//! - `p2::FETCH` sends the HTTP requests on stdin, one per line, through `wasi:http`, and
//!   prints each answer (components only: core modules get no HTTP).
//!
//! The fixtures in `agents/wat/` each try one attack or edge case; the header of each
//! file says what it tries and which outcome the fabric must give. They and `attack`
//! exist only with the `attack-fixtures` feature, which only dev-dependencies enable: the
//! shipped `fabric` binary is built without it, so it cannot embed them.

/// Declares the agents of one target as constants, and `AGENTS` listing them by name.
macro_rules! agents {
    ($target:literal) => {
        agents!(@consts $target;
            ECHO = "echo": "Copies stdin to stdout.",
            WORDCOUNT = "wordcount":
                "Prints word, line and byte counts and the five most frequent words as JSON.",
            SHA256 = "sha256": "Prints the lowercase hex SHA-256 of stdin.",
            STRICT = "strict":
                "Greets the `name` of a JSON object on stdin; exits with code 3 on other input.",
            SLEEP = "sleep": "Sleeps for the milliseconds on stdin (1000 when empty).",
            PROBE = "probe": "Runs probing commands from stdin and reports each result.",
            REPORTER = "reporter":
                "Summarizes its input text, reporting progress per line and KPIs to the host.",
            PLANNER = "planner":
                "Fans its input lines out to wordcount child tasks and joins their counts.",
        );
    };
    (@consts $target:literal; $($konst:ident = $name:literal: $doc:literal,)*) => {
        $(
            #[doc = $doc]
            pub const $konst: &[u8] = include_bytes!(concat!(
                env!("OUT_DIR"),
                "/agents-target/",
                $target,
                "/release/",
                $name,
                ".wasm"
            ));
        )*

        /// Every agent of this target, by name.
        pub const AGENTS: &[(&str, &[u8])] = &[$(($name, $konst)),*];
    };
}

pub mod p1 {
    //! The agents as WASI preview 1 core modules (`wasm32-wasip1`).
    agents!("wasm32-wasip1");
}

pub mod p2 {
    //! The agents as WASI preview 2 components (`wasm32-wasip2`), and `FETCH`, which only
    //! a component can be.
    agents!("wasm32-wasip2");

    /// Sends HTTP requests through `wasi:http`, one per line (`GET URL`, with `h:NAME=VALUE`,
    /// `body:TEXT`, `bytes:N`, `follow` and `show:N` tokens, percent-decoded), and prints
    /// `LINE -> STATUS, N bytes: BODY` or `LINE -> err: WHY` for each; see
    /// `agents/fetch/src/main.rs`.
    pub const FETCH: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/agents-target/wasm32-wasip2/release/fetch.wasm"
    ));
}

#[cfg(any(test, feature = "attack-fixtures"))]
pub mod attack {
    //! Agents that exist only to attack the sandbox, kept apart from the examples in
    //! `AGENTS`.

    /// `NETCHECK` built as a WASI preview 1 module (where `std::net` is unsupported).
    pub const NETCHECK_P1: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/agents-target/wasm32-wasip1/release/netcheck.wasm"
    ));
    /// Tries the network with plain `std::net`, one command per line (`tcp ADDR`,
    /// `listen ADDR`, `udp ADDR`, `lookup HOST`), and prints `CMD -> ok: ...` or
    /// `CMD -> err: ...` for each; a WASI preview 2 component (`wasm32-wasip2`), where
    /// `std::net` reaches `wasi:sockets`. See `agents/netcheck/src/main.rs`.
    pub const NETCHECK_P2: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/agents-target/wasm32-wasip2/release/netcheck.wasm"
    ));
}

/// Declares `FIXTURES` and the embedded source of each fixture.
#[cfg(any(test, feature = "attack-fixtures"))]
macro_rules! fixtures {
    ($($name:literal,)*) => {
        /// The name of every WAT fixture in `agents/wat/`, for [`fixture`].
        pub const FIXTURES: &[&str] = &[$($name),*];

        /// Each fixture's name and WAT text.
        const SOURCES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../agents/wat/", $name, ".wat")))),*
        ];
    };
}

#[cfg(any(test, feature = "attack-fixtures"))]
pub mod bombs;

#[cfg(any(test, feature = "attack-fixtures"))]
pub mod peer;

#[cfg(any(test, feature = "attack-fixtures"))]
fixtures! {
    "busy_host_calls",
    "deep_recursion",
    "divide_by_zero",
    "exit_42",
    "fuel_counter",
    "grant_mutations",
    "hello",
    "huge_data_segment",
    "initial_memory_huge",
    "loop_forever",
    "many_memories",
    "memory_bomb",
    "memory_dump",
    "no_start",
    "open_files_bomb",
    "proc_raise",
    "random_get_loop",
    "read_fds",
    "shared_memory_wait",
    "sleep_poll_oneoff",
    "sock_calls",
    "start_loop",
    "start_trap",
    "state_leak",
    "stderr_flood",
    "stdout_flood",
    "submit_bad_calls",
    "submit_flood",
    "submit_spec_bytes",
    "submit_then_trap",
    "submit_wrong_signature",
    "table_bomb",
    "telemetry_bad_calls",
    "telemetry_flood",
    "telemetry_names",
    "telemetry_then_trap",
    "telemetry_unknown_import",
    "telemetry_wrong_signature",
    "trap_unreachable",
    "unknown_import",
    "write_forever",
    "wrong_signature",
}

/// Returns the fixture `agents/wat/<name>.wat` compiled to a binary Wasm module.
///
/// # Panics
///
/// When `name` is not in [`FIXTURES`]; a fixture that does not parse fails this
/// crate's own tests.
#[cfg(any(test, feature = "attack-fixtures"))]
pub fn fixture(name: &str) -> Vec<u8> {
    let Some((_, source)) = SOURCES.iter().find(|(known, _)| *known == name) else {
        panic!("unknown WAT fixture {name:?}; the fixtures are {FIXTURES:?}");
    };
    wat::parse_str(source).unwrap_or_else(|e| panic!("WAT fixture {name:?} does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Magic and version of a core module.
    const CORE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    /// Magic, version and layer of a component.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_fixture_parses_to_a_core_module() {
        for name in FIXTURES {
            let wasm = fixture(name);
            assert_eq!(wasm.get(..8), Some(&CORE_HEADER[..]), "fixture {name}");
        }
    }

    #[test]
    fn fixtures_list_every_wat_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../agents/wat");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("the wat directory is readable")
            .map(|entry| entry.expect("a readable entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "wat"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        let listed: BTreeSet<String> = FIXTURES.iter().map(|name| name.to_string()).collect();
        assert_eq!(listed.len(), FIXTURES.len(), "FIXTURES has duplicates");
        assert_eq!(listed, on_disk);
    }

    #[test]
    fn every_fixture_says_what_it_tries_and_expects() {
        for (name, source) in SOURCES {
            assert!(
                source.starts_with(&format!(";; {name}: ")),
                "fixture {name}"
            );
            assert!(source.contains(";; Tries: "), "fixture {name}");
            assert!(source.contains(";; Expected: "), "fixture {name}");
        }
    }

    #[test]
    #[should_panic(expected = "unknown WAT fixture \"launch_missiles\"")]
    fn unknown_fixture_panics_with_its_name() {
        fixture("launch_missiles");
    }

    #[test]
    fn p1_agents_are_core_modules() {
        assert_eq!(p1::AGENTS.len(), 8);
        for (name, wasm) in p1::AGENTS {
            assert_eq!(wasm.get(..8), Some(&CORE_HEADER[..]), "agent {name}");
        }
    }

    #[test]
    fn p2_agents_are_components() {
        assert_eq!(p2::AGENTS.len(), 8);
        for (name, wasm) in p2::AGENTS {
            assert_eq!(wasm.get(..8), Some(&COMPONENT_HEADER[..]), "agent {name}");
        }
    }

    #[test]
    fn agents_are_named_alike_on_both_targets() {
        let p1: Vec<&str> = p1::AGENTS.iter().map(|(name, _)| *name).collect();
        let p2: Vec<&str> = p2::AGENTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            p1,
            [
                "echo",
                "wordcount",
                "sha256",
                "strict",
                "sleep",
                "probe",
                "reporter",
                "planner"
            ]
        );
        assert_eq!(p1, p2);
    }
}
