//! `fabric module rm` against a real server: it deletes a module that only finished tasks
//! used (they stay readable), frees the tenant's module quota, and is refused while a
//! queued or running task uses the module.

use fabric_agents::p1::{ECHO, SLEEP};

use crate::server::Fabric;
use crate::util::*;

#[test]
fn module_rm_frees_the_quota_and_is_refused_while_unfinished_tasks_use_the_module() {
    let dir = Workdir::new();
    // Room for either agent, not for both.
    let quota = (ECHO.len() + SLEEP.len() - 1).to_string();
    let server = Fabric::start(&["--workers", "1", "--tenant-max-module-bytes", &quota]);
    let echo = dir.file("echo.wasm", ECHO);
    let sleep = dir.file("sleep.wasm", SLEEP);
    let put = |path: &std::path::Path, name: &str| {
        server.fabric(&["module", "put", path.to_str().unwrap(), "--name", name])
    };

    let out = put(&echo, "echo");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = server.fabric(&["submit", "echo", "--input", "hi", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let finished = json_of(&out);
    let (task, echo_id) = (finished["id"].as_str().unwrap(), finished["module"].clone());

    let out = put(&sleep, "sleep");
    assert_eq!(out.status.code(), Some(1), "the quota let both in");
    assert!(stderr(&out).contains("module quota"), "{}", stderr(&out));

    let out = server.fabric(&["module", "rm", "echo", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let removed = json_of(&out);
    assert_eq!(removed["module"], echo_id, "{removed}");
    assert_eq!(removed["size"], ECHO.len(), "{removed}");
    let listed = json_of(&server.fabric(&["module", "ls", "--json"]));
    assert_eq!(listed["modules"], serde_json::json!([]), "{listed}");

    // The finished task is still there, naming the module it ran.
    let out = server.fabric(&["task", "get", task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = json_of(&out);
    assert_eq!(
        (got["state"].clone(), got["module"].clone()),
        ("succeeded".into(), echo_id.clone())
    );
    // Gone for new work, by name and by id.
    for module in ["echo", echo_id.as_str().unwrap()] {
        let out = server.fabric(&["submit", module]);
        assert_eq!(out.status.code(), Some(1), "submitted to a deleted module");
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
        let out = server.fabric(&["module", "rm", module]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    }

    // The quota it held is free: the module that did not fit now fits.
    let out = put(&sleep, "sleep");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // One worker: the first sleeper runs, the second waits queued.
    let running = id_of(&server.fabric(&["submit", "sleep", "--input", "60000", "--json"]));
    let queued = id_of(&server.fabric(&["submit", "sleep", "--input", "60000", "--json"]));
    let out = server.fabric(&["module", "rm", "sleep"]);
    assert_eq!(out.status.code(), Some(1), "deleted a module in use");
    let said = stderr(&out);
    assert!(said.contains("-32008"), "{said}");
    assert!(said.contains("used by 2 unfinished task(s)"), "{said}");
    let listed = json_of(&server.fabric(&["module", "ls", "--json"]));
    assert_eq!(listed["modules"].as_array().unwrap().len(), 1, "{listed}");

    for id in [&queued, &running] {
        let out = server.fabric(&["task", "cancel", id]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = server.fabric(&[
        "task",
        "wait",
        &running,
        &queued,
        "--timeout",
        "30s",
        "--json",
    ]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let task: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(task["state"], "cancelled", "{task}");
    }
    let out = server.fabric(&["module", "rm", "sleep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("MODULE") && table.contains("sleep"),
        "{table}"
    );
}

fn id_of(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    json_of(output)["id"].as_str().unwrap().to_owned()
}
