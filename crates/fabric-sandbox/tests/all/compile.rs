//! Bounded compilation: the whole-module compile budget refuses compile bombs before any
//! compiling, ordinary agents stay far below it, and loads compile on a bounded pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fabric_sandbox::{
    CancelToken, LoadError, MAX_MODULE_COST, Sandbox, SandboxConfig, compile_cost,
};

use fabric_agents::bombs::{nested_diamonds, nested_loops_rewriting_locals};

use crate::util::*;

fn wasm(source: &str) -> Vec<u8> {
    wat::parse_str(source).unwrap()
}

/// A fresh sandbox, so that its compile counter counts only this test's loads.
fn own_sandbox(compile_threads: usize) -> Sandbox {
    Sandbox::new(SandboxConfig {
        slots: 4,
        epoch_tick: TICK,
        compile_threads,
        ..SandboxConfig::default()
    })
    .expect("building a sandbox")
}

/// Loads `wasm` on a fresh sandbox and asserts it is refused by the module budget, quickly
/// and without compiling; returns the refusal.
fn refused_by_the_budget(wasm: &[u8]) -> String {
    let sandbox = own_sandbox(1);
    let start = Instant::now();
    let loaded = sandbox.load(wasm);
    let took = start.elapsed();
    let why = match loaded {
        Err(LoadError::Invalid(why)) => why,
        other => panic!("{other:?}"),
    };
    let cost = compile_cost(wasm).unwrap();
    assert!(
        why.contains("too complex to compile")
            && why.contains(&format!("compile cost is {cost}"))
            && why.contains(&format!("budget of {MAX_MODULE_COST}")),
        "{why}"
    );
    assert_eq!(sandbox.cache_stats().compiles, 0, "nothing was compiled");
    assert!(took < Duration::from_secs(5), "refusing took {took:?}");
    why
}

#[tokio::test]
async fn attack_module_nested_loops_rewriting_5000_locals_is_refused_before_compiling() {
    // 51 KB; compiled, it took Cranelift 23 to 25 s (threat model, finding 5).
    let wasm = wasm(&nested_loops_rewriting_locals(5_000, 500));
    assert!(wasm.len() < 64 << 10, "{} bytes", wasm.len());
    let why = refused_by_the_budget(&wasm);
    eprintln!("{} bytes: {why}", wasm.len());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_branchy_functions_each_under_the_budget_are_refused_together() {
    // 20 functions of 1,000 locals and 1,000 if/else diamonds, each branching out of
    // nested blocks: each function alone is under every per-function limit and under the
    // budget (10 of them took 2.8 s to compile), the module is not.
    let one = wasm(&nested_diamonds(1, 1_000, 10, 1_000));
    let one_cost = compile_cost(&one).unwrap();
    assert!(
        one_cost < MAX_MODULE_COST / 4,
        "one function costs {one_cost}"
    );
    let wasm = wasm(&nested_diamonds(20, 1_000, 10, 1_000));
    let why = refused_by_the_budget(&wasm);
    eprintln!("{} bytes: {why}", wasm.len());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn a_module_under_the_budget_compiles_in_seconds_and_runs() {
    // 1,000 locals rewritten in 500 nested loops: 1.2 to 1.6 s of compiling when measured.
    let wasm = wasm(&nested_loops_rewriting_locals(1_000, 500));
    let cost = compile_cost(&wasm).unwrap();
    assert!(cost < MAX_MODULE_COST, "cost {cost}");
    let sandbox = own_sandbox(1);
    let start = Instant::now();
    let agent = sandbox
        .load(&wasm)
        .expect("under the budget, the module loads");
    let took = start.elapsed();
    eprintln!("cost {cost} of {MAX_MODULE_COST}: compiled in {took:?}");
    assert!(took < Duration::from_secs(30), "compiling took {took:?}");
    assert_eq!(sandbox.cache_stats().compiles, 1);
    let request = fabric_sandbox::RunRequest {
        limits: tight(),
        ..Default::default()
    };
    let attempt = sandbox.run(&agent, request, &CancelToken::new()).await;
    // Each loop body runs once (nothing branches back) and falls through.
    assert_outcome(&attempt, fabric_types::Outcome::Ok);
}

#[test]
fn example_agents_cost_far_below_the_budget() {
    for (kind, agents) in [
        ("p1", fabric_agents::p1::AGENTS),
        ("p2", fabric_agents::p2::AGENTS),
    ] {
        for (name, wasm) in agents {
            let cost = compile_cost(wasm).unwrap();
            eprintln!("{kind} {name}: cost {cost} of {MAX_MODULE_COST}");
            assert!(
                cost < MAX_MODULE_COST / 50,
                "{kind} {name} costs {cost}, within 50 times of the budget"
            );
        }
    }
}

#[test]
fn compilations_wait_for_the_compile_threads() {
    let sandbox = own_sandbox(1);
    let echo = sandbox.load(fabric_agents::p1::ECHO).unwrap();
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..3)
            .map(|i| {
                let sandbox = &sandbox;
                scope.spawn(move || {
                    let wasm = wasm(&nested_loops_rewriting_locals(400 + i, 200));
                    sandbox.load(&wasm).map(|_| ())
                })
            })
            .collect();
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(sandbox.cache_stats().compiling, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // An attempt of an agent already loaded runs while the others compile.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let attempt = runtime.block_on(sandbox.run(
            &echo,
            fabric_sandbox::RunRequest {
                input: b"meanwhile".to_vec(),
                limits: tight(),
                ..Default::default()
            },
            &CancelToken::new(),
        ));
        assert_outcome(&attempt, fabric_types::Outcome::Ok);
        for load in loads {
            load.join().unwrap().expect("each module loads");
        }
        done.store(true, Ordering::Relaxed);
    });
    let stats = sandbox.cache_stats();
    assert_eq!(stats.compiles, 4);
    assert_eq!(stats.compiling, 0);
    assert_eq!(peak.load(Ordering::Relaxed), 1, "one compilation at a time");
}

#[test]
fn a_load_that_may_wait_only_so_long_gives_up_busy_without_compiling() {
    let sandbox = own_sandbox(1);
    let slow = wasm(&nested_loops_rewriting_locals(1_000, 500));
    let quick = wasm(&nested_loops_rewriting_locals(10, 2));
    std::thread::scope(|scope| {
        let compiling = scope.spawn(|| sandbox.load(&slow).map(|_| ()));
        while sandbox.cache_stats().compiling == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        let loaded = sandbox.load_within(&quick, Duration::from_millis(100));
        let took = start.elapsed();
        match loaded {
            Err(LoadError::Busy { waited_ms, running }) => {
                assert_eq!((waited_ms, running), (100, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        compiling.join().unwrap().expect("the slow module loads");
    });
    assert_eq!(
        sandbox.cache_stats().compiles,
        1,
        "the busy load compiled nothing"
    );
    let start = Instant::now();
    sandbox
        .load_within(&quick, Duration::from_millis(100))
        .expect("with a free compile thread the load compiles");
    eprintln!("quick module compiled in {:?}", start.elapsed());
}

#[test]
fn compile_threads_must_be_between_1_and_256() {
    for threads in [0, 257] {
        let refused = Sandbox::new(SandboxConfig {
            compile_threads: threads,
            ..SandboxConfig::default()
        });
        assert!(refused.is_err(), "{threads} compile threads");
    }
}

/// Prints, for shapes of growing size, the compile cost and the time Wasmtime takes to
/// compile them with the sandbox's settings but without the budget. Run with
/// `cargo test --release -p fabric-sandbox --test all compile::calibrate -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: compiles modules far over the budget, for minutes"]
fn calibrate() {
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let mut shapes: Vec<(String, String)> = Vec::new();
    for (locals, depth) in [
        (1000, 500),
        (2000, 500),
        (1000, 1000),
        (3000, 300),
        (5000, 500),
    ] {
        shapes.push((
            format!("loops locals={locals} depth={depth}"),
            nested_loops_rewriting_locals(locals, depth),
        ));
    }
    for (functions, locals, depth, diamonds) in [
        (1, 2000, 1000, 2000),
        (1, 5000, 2000, 4000),
        (10, 1000, 500, 1000),
        (10, 1000, 10, 1000),
    ] {
        shapes.push((
            format!(
                "diamonds functions={functions} locals={locals} depth={depth} diamonds={diamonds}"
            ),
            nested_diamonds(functions, locals, depth, diamonds),
        ));
    }
    for (name, source) in shapes {
        let bytes = wasm(&source);
        let cost = compile_cost(&bytes).unwrap();
        let start = Instant::now();
        wasmtime::Module::from_binary(&engine, &bytes).unwrap();
        eprintln!(
            "{name}: {} bytes, cost {cost}, compiled in {:?}",
            bytes.len(),
            start.elapsed()
        );
    }
    for (kind, agents) in [
        ("p1", fabric_agents::p1::AGENTS),
        ("p2", fabric_agents::p2::AGENTS),
    ] {
        for (name, bytes) in agents {
            let cost = compile_cost(bytes).unwrap();
            let start = Instant::now();
            match kind {
                "p1" => drop(wasmtime::Module::from_binary(&engine, bytes).unwrap()),
                _ => drop(wasmtime::component::Component::from_binary(&engine, bytes).unwrap()),
            }
            eprintln!(
                "{kind} {name}: {} bytes, cost {cost}, compiled in {:?}",
                bytes.len(),
                start.elapsed()
            );
        }
    }
}
