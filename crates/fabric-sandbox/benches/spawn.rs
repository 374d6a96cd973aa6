//! Per-attempt cost of running the echo agent through the fabric (instantiate + WASI
//! context + run + collect output, with fuel, epochs, limits and the deadline race), beside
//! the raw Wasmtime floor: `InstancePre::instantiate` + `_start` of the same module with a
//! minimal WASI context and in-memory pipes, and no fabric code at all. The fabric runs it
//! twice: on memories that reserve 4 GiB (the default `max_memory_bytes`), and 256 MiB (the
//! server's default `--max-task-memory`: smaller pool slots, bounds checked in the code).
//!
//! `cargo bench -p fabric-sandbox --bench spawn`

use criterion::{Criterion, criterion_group, criterion_main};
use fabric_sandbox::{CancelToken, RunRequest, Sandbox, SandboxConfig};
use fabric_types::{Limits, Outcome};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    Store,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

const INPUT: &[u8] = b"hello, fabric";

fn fabric_echo(c: &mut Criterion) {
    fabric_echo_with(c, "spawn/fabric_echo_p1", 4 << 30);
    fabric_echo_with(c, "spawn/fabric_echo_p1_256mib_slots", 256 << 20);
}

fn fabric_echo_with(c: &mut Criterion, name: &str, max_memory_bytes: u64) {
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 16,
        max_memory_bytes,
        ..SandboxConfig::default()
    })
    .unwrap();
    let agent = sandbox.load(fabric_agents::p1::ECHO).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancelToken::new();
    let request = RunRequest {
        input: INPUT.to_vec(),
        limits: Limits::default(),
        env: Vec::new(),
        ..Default::default()
    };
    c.bench_function(name, |b| {
        b.iter(|| {
            let attempt = runtime.block_on(sandbox.run(&agent, request.clone(), &cancel));
            assert_eq!(attempt.outcome, Outcome::Ok);
            attempt.output
        })
    });
}

fn wasmtime_floor_echo(c: &mut Criterion) {
    // The same allocation settings the fabric's engine uses (a warm pool whose dirty pages
    // are found with PAGEMAP_SCAN and reset in place), so the ratio is the fabric's own cost.
    let mut pool = PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let module = Module::from_binary(&engine, fabric_agents::p1::ECHO).unwrap();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    c.bench_function("spawn/wasmtime_floor_echo_p1", |b| {
        b.iter(|| {
            let stdout = MemoryOutputPipe::new(1 << 20);
            let wasi = WasiCtxBuilder::new()
                .stdin(MemoryInputPipe::new(INPUT))
                .stdout(stdout.clone())
                .build_p1();
            let mut store = Store::new(&engine, wasi);
            let instance = pre.instantiate(&mut store).unwrap();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .unwrap();
            start.call(&mut store, ()).unwrap();
            drop(store);
            stdout.contents()
        })
    });
}

criterion_group!(spawn, fabric_echo, wasmtime_floor_echo);
criterion_main!(spawn);
