//! What bounds checks cost a guest that computes: one attempt of the sha256 agent hashing
//! 1 MiB, on memories that reserve 4 GiB (the default `max_memory_bytes`: no bounds checks
//! in the code) and 256 MiB (the server's default `--max-task-memory`: a compare on every
//! load and store).
//!
//! `cargo bench -p fabric-sandbox --bench compute`

use criterion::{Criterion, criterion_group, criterion_main};
use fabric_sandbox::{CancelToken, RunRequest, Sandbox, SandboxConfig};
use fabric_types::Outcome;

fn sha256_1mib(c: &mut Criterion) {
    let input: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancelToken::new();
    for (name, max_memory_bytes) in [
        ("compute/sha256_1mib_4gib_slots", 4u64 << 30),
        ("compute/sha256_1mib_256mib_slots", 256 << 20),
    ] {
        let sandbox = Sandbox::new(SandboxConfig {
            slots: 4,
            max_memory_bytes,
            ..SandboxConfig::default()
        })
        .unwrap();
        let agent = sandbox.load(fabric_agents::p1::SHA256).unwrap();
        let request = RunRequest {
            input: input.clone(),
            ..RunRequest::default()
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                let attempt = runtime.block_on(sandbox.run(&agent, request.clone(), &cancel));
                assert_eq!(attempt.outcome, Outcome::Ok);
                attempt.output
            })
        });
    }
}

criterion_group!(compute, sha256_1mib);
criterion_main!(compute);
