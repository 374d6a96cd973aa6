//! Schedules on a cluster: two `fabric serve` processes on one PostgreSQL schema both run
//! the firing loop, yet each tick of a per-second schedule makes exactly one task; with one
//! node killed, the other keeps firing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{Schema, node};
use crate::schedules::{check_one_task_per_tick, fired};

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_fire_each_tick_of_a_schedule_once() {
    let schema = Schema::fresh();
    let mut a = node(&schema, "sched-a");
    let b = node(&schema, "sched-b");
    let (on_a, on_b) = (a.client(), b.client());
    on_a.put_module(fabric_agents::p1::ECHO, "echo").await;
    on_a.call(
        "schedule.put",
        json!({"name": "pulse", "cron": "* * * * * *", "task": {"module": "echo", "input": "p"}}),
    )
    .await;

    let wait_for = |n: usize| {
        let on_b = on_b.clone();
        async move {
            let started = Instant::now();
            loop {
                let tasks = fired(&on_b, "pulse").await;
                if tasks.len() >= n {
                    return tasks;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{} tasks",
                    tasks.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let both = wait_for(6).await;

    // A dies; B fires on alone.
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).expect("A died");
    wait_for(both.len() + 4).await;
    on_b.call("schedule.delete", json!({"name": "pulse"})).await;
    let tasks = fired(&on_b, "pulse").await;
    let ticks = check_one_task_per_tick(&on_b, "pulse", &tasks).await;
    // One task a second (a loop that ran late may leave a tick out: then only the latest
    // fires, never two).
    for pair in ticks.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= time::Duration::seconds(1) && gap <= time::Duration::seconds(2),
            "ticks {ticks:?}"
        );
    }
    drop(schema);
}
