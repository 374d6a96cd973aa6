//! Telemetry and child tasks for components (`wasm32-wasip2`):
//! `fabric:agent/telemetry@0.1.0` and `fabric:agent/tasks@0.1.0`, through bindings
//! wit-bindgen generates from `wit/fabric-agent.wit`.
#![allow(unsafe_code)]

use crate::Refused;

wit_bindgen::generate!({
    path: "../../wit",
    world: "fabric:agent/agent",
});

use fabric::agent::{tasks, telemetry};

pub fn kpi(name: &str, value: f64) -> Result<(), Refused> {
    telemetry::kpi(name, value).map_err(Refused::Message)
}

pub fn progress(done: f64, message: &str) -> Result<(), Refused> {
    telemetry::progress(done, message).map_err(Refused::Message)
}

pub fn submit(spec: &str) -> Result<String, Refused> {
    tasks::submit(spec).map_err(Refused::Message)
}
