//! A full disk under the embedded store: the server says so (-32006, `/readyz` 503), keeps
//! answering, loses nothing it acknowledged, and takes writes again once space is freed.
//! The server runs in a mount namespace of its own on a small tmpfs (`unshare -m`, which
//! needs root, as the test machines and CI have).

use serde_json::json;

use crate::server::Fabric;

/// The tmpfs the data directory is, and the filler file that takes part of it; with the
/// database and the compiled echo agent, a handful of 256 KiB inputs fill the rest.
const MOUNT: &str = r#"mount -t tmpfs -o size=6m fabric-disk-test "$0" \
    && head -c 2097152 /dev/zero > "$0/filler" && exec "$@""#;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_reported_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let fabric =
        Fabric::start_wrapped(&["unshare", "-m", "sh", "-c", MOUNT, data], dir.path(), &[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;

    let big =
        json!({"module": "echo", "input": "x".repeat(256 << 10), "run_at": "2099-01-01T00:00:00Z"});
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let answer = client.call_raw("task.submit", big.clone()).await;
        match answer["result"]["id"].as_str() {
            Some(id) => acknowledged.push(id.to_owned()),
            None => break answer,
        }
        assert!(acknowledged.len() < 100, "6 MiB never filled up");
    };
    assert_eq!(refusal["error"]["code"], -32006, "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is full"), "{message}");
    assert!(
        !acknowledged.is_empty(),
        "the disk was full before any task"
    );

    let (status, body) = client.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "store full: the disk holding the store is full\n")
    );
    assert_eq!(client.get("/healthz").await.0, 200, "alive, only not ready");
    for id in &acknowledged {
        let task = client.call("task.get", json!({"id": id})).await;
        assert_eq!(task["state"], "scheduled", "{id}");
    }

    // Free space in the server's namespace, where the tmpfs is mounted.
    let filler = format!("/proc/{}/root{data}/filler", fabric.pid());
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("removing {filler}: {e}"));
    let after = client.submit(big).await;
    acknowledged.push(after);
    assert_eq!(client.get("/readyz").await, (200, "ready\n".to_owned()));
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["scheduled"], json!(acknowledged.len()), "{stats}");
    let id = client
        .submit(json!({"module": "echo", "input": "after"}))
        .await;
    let done = client.wait(&id, std::time::Duration::from_secs(10)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}
