//! The module cache: ids, rejection of what is not Wasm, and precompiled artifacts on disk.

use fabric_sandbox::{LoadError, ModuleKind, Pooling, Sandbox, SandboxConfig};
use fabric_types::{ModuleId, Outcome};

use crate::util::*;

#[test]
fn an_agent_is_named_by_the_sha256_of_its_bytes() {
    let agent = load(fabric_agents::p1::ECHO);
    assert_eq!(agent.id(), ModuleId::of(fabric_agents::p1::ECHO));
    assert_eq!(agent.kind(), ModuleKind::Module);
    assert_eq!(load(fabric_agents::p2::ECHO).kind(), ModuleKind::Component);
    assert!(agent.link_error().is_none());
}

#[test]
fn bytes_that_are_not_wasm_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "empty"),
        (b"hello world", "magic"),
        (b"\x7fELF\x02\x01\x01\0\0\0\0\0", "ELF"),
        (b"(module)", "text"),
    ];
    for (bytes, reason) in cases {
        match sandbox().load(bytes) {
            Err(LoadError::NotWasm(why)) => assert!(why.contains(reason), "{why}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn a_truncated_module_is_invalid() {
    let wasm = fabric_agents::p1::ECHO;
    match sandbox().load(&wasm[..wasm.len() / 2]) {
        Err(LoadError::Invalid(why)) => assert!(!why.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_module_over_the_size_limit_is_refused() {
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 1,
        max_module_bytes: 1000,
        ..SandboxConfig::default()
    })
    .unwrap();
    match sandbox.load(fabric_agents::p1::ECHO) {
        Err(LoadError::TooLarge { size, max: 1000 }) => {
            assert_eq!(size, fabric_agents::p1::ECHO.len() as u64)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_same_bytes_load_once() {
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let first = sandbox.load(fabric_agents::p1::SHA256).unwrap();
    let second = sandbox.load(fabric_agents::p1::SHA256).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    let stats = sandbox.cache_stats();
    assert_eq!((stats.compiles, stats.hits, stats.entries), (1, 1, 1));
}

#[test]
fn the_memory_cache_is_bounded_by_bytes() {
    let config = SandboxConfig {
        slots: 1,
        cache_memory_bytes: 1,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).unwrap();
    sandbox.load(fabric_agents::p1::ECHO).unwrap();
    sandbox.load(fabric_agents::p1::SHA256).unwrap();
    assert_eq!(
        sandbox.cache_stats().entries,
        1,
        "the older agent was evicted"
    );
}

#[tokio::test]
async fn a_restart_deserializes_instead_of_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SandboxConfig {
        slots: 2,
        cache_dir: Some(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    };

    let first = Sandbox::new(config()).unwrap();
    first.load(fabric_agents::p1::ECHO).unwrap();
    first.load(fabric_agents::p2::ECHO).unwrap();
    assert_eq!(first.cache_stats().compiles, 2);
    drop(first);

    let restarted = Sandbox::new(config()).unwrap();
    let agent = restarted.load(fabric_agents::p1::ECHO).unwrap();
    restarted.load(fabric_agents::p2::ECHO).unwrap();
    let stats = restarted.cache_stats();
    assert_eq!((stats.compiles, stats.disk_loads), (0, 2));
    let attempt = restarted
        .run(
            &agent,
            fabric_sandbox::RunRequest {
                input: b"warm".to_vec(),
                ..Default::default()
            },
            &Default::default(),
        )
        .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, b"warm");

    let by_id = restarted
        .cached(&ModuleId::of(fabric_agents::p1::ECHO))
        .unwrap();
    assert_eq!(by_id.id(), agent.id());
}

#[test]
fn a_tampered_artifact_is_never_deserialized() {
    let dir = tempfile::tempdir().unwrap();
    let config = || SandboxConfig {
        slots: 1,
        cache_dir: Some(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    Sandbox::new(config())
        .unwrap()
        .load(fabric_agents::p1::ECHO)
        .unwrap();

    let artifact = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();

    let restarted = Sandbox::new(config()).unwrap();
    restarted.load(fabric_agents::p1::ECHO).unwrap();
    let stats = restarted.cache_stats();
    assert_eq!(
        (stats.compiles, stats.disk_loads),
        (1, 0),
        "compiled again instead of trusting the file"
    );
}

#[test]
fn pooling_is_used_when_it_fits_and_can_be_turned_off() {
    assert!(sandbox().is_pooling());
    let off = Sandbox::new(SandboxConfig {
        slots: 1,
        pooling: Pooling::Off,
        ..SandboxConfig::default()
    })
    .unwrap();
    assert!(!off.is_pooling());
    let too_big = SandboxConfig {
        slots: 1_000_000,
        pooling: Pooling::Required,
        ..SandboxConfig::default()
    };
    assert!(
        Sandbox::new(too_big).is_err(),
        "a pool larger than the address space is refused"
    );
}

#[tokio::test]
async fn on_demand_allocation_runs_agents_too() {
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 1,
        pooling: Pooling::Off,
        ..SandboxConfig::default()
    })
    .unwrap();
    let agent = sandbox.load(fabric_agents::p1::ECHO).unwrap();
    let request = fabric_sandbox::RunRequest {
        input: b"on demand".to_vec(),
        ..Default::default()
    };
    let attempt = sandbox.run(&agent, request, &Default::default()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, b"on demand");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_forgotten_module_leaves_memory_and_disk_and_compiles_again() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 2,
        cache_dir: Some(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let echo = ModuleId::of(fabric_agents::p1::ECHO);
    sandbox.load(fabric_agents::p1::ECHO).unwrap();
    sandbox.load(fabric_agents::p2::ECHO).unwrap();
    assert!(sandbox.cached(&echo).is_some());
    let held = sandbox.cache_stats().entries;

    sandbox.forget(&echo);
    assert!(
        sandbox.cached(&echo).is_none(),
        "still in memory or on disk"
    );
    assert_eq!(sandbox.cache_stats().entries, held - 1);
    assert!(
        sandbox
            .cached(&ModuleId::of(fabric_agents::p2::ECHO))
            .is_some(),
        "forgot another module"
    );
    sandbox.load(fabric_agents::p1::ECHO).unwrap();
    assert_eq!(sandbox.cache_stats().compiles, 3, "not compiled again");
}
