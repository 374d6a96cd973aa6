//! Directory grants through the server: `fabric serve --volume data=DIR` and tasks with
//! `"dirs": {"/data": "data"}`, attacked by guests that try to leave the volume, to change
//! it, or to name a host path themselves. After every attack the server still runs an
//! ordinary task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Client, Fabric};

const WAIT: Duration = Duration::from_secs(60);
const HELLO: &str = "hello from the volume";
const SECRET: &str = "TOP SECRET: beside the volume";
const FAR_SECRET: &str = "TOP SECRET: in another directory";

/// A volume directory and what lies around it:
///
/// ```text
/// root/
///   secret              SECRET (what `/data/../secret` would reach on the host)
///   data/               the volume
///     hello.txt         HELLO
///     sub/inner.txt     "inner"
///     inside_link   ->  hello.txt
///     escape_abs    ->  <elsewhere>/secret.txt (absolute, another temporary directory)
///     escape_rel    ->  ../secret
///     escape_dir    ->  ..
/// elsewhere/secret.txt  FAR_SECRET
/// ```
struct Volume {
    root: tempfile::TempDir,
    _elsewhere: tempfile::TempDir,
}

impl Volume {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(root.path().join("secret"), SECRET).unwrap();
        std::fs::write(data.join("hello.txt"), HELLO).unwrap();
        std::fs::write(data.join("sub/inner.txt"), "inner").unwrap();
        let far = elsewhere.path().join("secret.txt");
        std::fs::write(&far, FAR_SECRET).unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, data.join(name)).unwrap();
        };
        link(Path::new("hello.txt"), "inside_link");
        link(&far, "escape_abs");
        link(Path::new("../secret"), "escape_rel");
        link(Path::new(".."), "escape_dir");
        Self {
            root,
            _elsewhere: elsewhere,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// `fabric serve --volume data=<dir>`.
    fn serve(&self) -> Fabric {
        let volume = format!("data={}", self.dir().display());
        Fabric::start(&["--workers", "2", "--volume", &volume])
    }

    /// Every entry under the volume with its kind, contents or link target, length and
    /// modification time; and the secret beside it.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_symlink() {
                    format!("link -> {:?}", std::fs::read_link(&path).unwrap())
                } else if meta.is_dir() {
                    walk(&path, out);
                    "dir".to_owned()
                } else {
                    format!("file {:?}", std::fs::read(&path).unwrap())
                };
                let mtime = meta.modified().unwrap();
                out.insert(path, format!("{what} len={} mtime={mtime:?}", meta.len()));
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root.path(), &mut out);
        out
    }
}

/// Runs `wasm` with `input` and `/data` granted, waits for it, and returns the task.
async fn run_granted(client: &Client, wasm: &[u8], name: &str, input: &str) -> Value {
    let module = client.put_module(wasm, name).await;
    let id = client
        .submit(json!({"module": module, "input": input, "dirs": {"/data": "data"}}))
        .await;
    client.wait(&id, WAIT).await
}

/// The probe agent's result lines, as a p1 module and as a p2 component; both must have
/// succeeded and granted `/data` from the volume `data`.
async fn probe(client: &Client, commands: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ] {
        let task = run_granted(client, wasm, &format!("probe-{kind}"), commands).await;
        assert_eq!(task["state"], "succeeded", "{kind}: {task}");
        assert_eq!(task["dirs"], json!({"/data": "data"}), "{kind}: {task}");
        let lines = output_lines(&task);
        assert_eq!(lines.len(), commands.lines().count(), "{kind}: {lines:?}");
        out.push((kind, lines));
    }
    out
}

fn output_lines(task: &Value) -> Vec<String> {
    task["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no text output: {task}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The server still runs an ordinary task: an echo without grants succeeds, and it is
/// ready.
async fn assert_serves(client: &Client) {
    client.assert_serves().await;
    assert_eq!(client.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_a_granted_file_is_read_exactly_and_the_task_shows_its_grant() {
    let volume = Volume::new();
    let fabric = volume.serve();
    let client = fabric.client();
    for (kind, lines) in probe(
        &client,
        "read /data/hello.txt\nread /data/sub/inner.txt\nread /data/inside_link\nlist /data\n",
    )
    .await
    {
        assert_eq!(
            lines,
            [
                format!("read /data/hello.txt -> ok: 21 bytes: {HELLO:?}"),
                "read /data/sub/inner.txt -> ok: 5 bytes: \"inner\"".to_owned(),
                format!("read /data/inside_link -> ok: 21 bytes: {HELLO:?}"),
                "list /data -> ok: 6 entries".to_owned(),
            ],
            "{kind}"
        );
    }
    // Raw preview 1: fd 3 is the grant, and nothing else is preopened.
    let task = run_granted(&client, &fabric_agents::fixture("read_fds"), "read_fds", "").await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let lines = output_lines(&task);
    assert!(lines.contains(&"prestat 3 errno=0".to_owned()), "{lines:?}");
    assert!(lines.contains(&"prestat 4 errno=8".to_owned()), "{lines:?}");
    // The same task without a grant sees no directory at all.
    let module = client
        .put_module(&fabric_agents::fixture("read_fds"), "read_fds")
        .await;
    let id = client.submit(json!({"module": module})).await;
    let bare = client.wait(&id, WAIT).await;
    assert!(bare.get("dirs").is_none(), "{bare}");
    assert!(
        output_lines(&bare).contains(&"prestat 3 errno=8".to_owned()),
        "{bare}"
    );
    assert_serves(&client).await;
}

/// What wasmtime-wasi 48 answers a path that leaves a grant: `EPERM` (63), which Rust's
/// std calls `PermissionDenied`, on both preview 1 and preview 2.
const LEAVES: &str = "err: PermissionDenied (Operation not permitted (os error 63))";
/// A path under no grant at all: no preopen matches it, `ENOENT` (44).
const UNGRANTED: &str = "err: NotFound (No such file or directory (os error 44))";

/// `CMD -> ANSWER` for each command.
fn answers(commands: &[&str], answer: &str) -> Vec<String> {
    commands
        .iter()
        .map(|c| format!("{c} -> {answer}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_symlinks_out_of_the_volume_are_not_followed() {
    let volume = Volume::new();
    let fabric = volume.serve();
    let client = fabric.client();
    let commands = [
        "read /data/escape_abs",
        "read /data/escape_rel",
        "read /data/escape_dir/secret",
        "list /data/escape_dir",
    ];
    for (kind, lines) in probe(&client, &(commands.join("\n") + "\n")).await {
        assert_eq!(lines, answers(&commands, LEAVES), "{kind}");
    }
    assert_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_dotdot_and_host_paths_cannot_reach_beside_the_volume() {
    let volume = Volume::new();
    let fabric = volume.serve();
    let client = fabric.client();
    let leaving = [
        "read /data/../secret",
        "read /data/sub/../../secret",
        "list /data/..",
    ];
    let beside = volume.root.path().join("secret");
    let host_paths = [
        "read /secret".to_owned(),
        format!("read {}", beside.display()),
        "read /etc/passwd".to_owned(),
    ];
    let host_paths: Vec<&str> = host_paths.iter().map(String::as_str).collect();
    let commands = [&leaving[..], &host_paths[..]].concat();
    for (kind, lines) in probe(&client, &(commands.join("\n") + "\n")).await {
        let expected = [answers(&leaving, LEAVES), answers(&host_paths, UNGRANTED)].concat();
        assert_eq!(lines, expected, "{kind}");
    }
    // Raw preview 1 `path_open` on the grant's fd (3), the only preopen.
    let task = run_granted(&client, &fabric_agents::fixture("read_fds"), "read_fds", "").await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let lines = output_lines(&task);
    let mut expected = vec!["prestat 3 errno=0".to_owned()];
    expected.extend((4..=10).map(|fd| format!("prestat {fd} errno=8")));
    expected.push("read 0 errno=0".to_owned());
    expected.extend((1..=10).map(|fd| format!("read {fd} errno=8")));
    expected.push("open ../../etc/passwd errno=63".to_owned());
    expected.push("open /etc/passwd errno=63".to_owned());
    assert_eq!(lines, expected);
    assert_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_writes_creates_deletes_and_renames_fail_and_the_host_is_unchanged() {
    let volume = Volume::new();
    let before = volume.snapshot();
    let fabric = volume.serve();
    let client = fabric.client();
    let task = run_granted(
        &client,
        &fabric_agents::fixture("grant_mutations"),
        "grant_mutations",
        "",
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    // EPERM (63) for every change by path and for size and times on a read-only fd;
    // EBADF (8) for writes to it, as wasmtime-wasi 48 answers them.
    assert_eq!(
        output_lines(&task),
        [
            "create_file errno=63",
            "truncate errno=63",
            "open_write errno=63",
            "create_directory errno=63",
            "unlink_file errno=63",
            "remove_directory errno=63",
            "rename errno=63",
            "symlink errno=63",
            "link errno=63",
            "set_times errno=63",
            "open_read errno=0",
            "fd_write errno=8",
            "fd_pwrite errno=8",
            "fd_set_size errno=63",
            "fd_set_times errno=63",
        ]
    );
    let commands = [
        "write /data/new.txt",
        "write /data/hello.txt",
        "write /data/sub/inner.txt",
    ];
    for (kind, lines) in probe(&client, &(commands.join("\n") + "\n")).await {
        assert_eq!(lines, answers(&commands, LEAVES), "{kind}");
    }
    assert_eq!(
        volume.snapshot(),
        before,
        "the volume or what is beside it changed"
    );
    assert_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_a_task_naming_a_host_path_or_an_unknown_volume_is_refused() {
    let volume = Volume::new();
    let fabric = volume.serve();
    let client = fabric.client();
    let probe = client.put_module(fabric_agents::p1::PROBE, "probe").await;
    let host = volume.dir().display().to_string();
    let refused = |dirs: Value, field: &str| (dirs, field.to_owned());
    for (dirs, field) in [
        refused(json!({"/data": "nope"}), "dirs./data"),
        refused(json!({"/data": host}), "dirs./data"),
        refused(json!({"/data": "/etc"}), "dirs./data"),
        refused(json!({"/data": "../data"}), "dirs./data"),
        refused(json!({"/data": "DATA"}), "dirs./data"),
        refused(json!({"data": "data"}), "dirs.data"),
        refused(json!({"/data/../etc": "data"}), "dirs./data/../etc"),
        refused(json!({"/": "data"}), "dirs./"),
        refused(
            json!({"/1": "data", "/2": "data", "/3": "data", "/4": "data", "/5": "data",
                   "/6": "data", "/7": "data", "/8": "data", "/9": "data"}),
            "dirs",
        ),
    ] {
        let error = client
            .error(
                "task.submit",
                json!({"module": probe, "input": "list /data\n", "dirs": dirs}),
            )
            .await;
        assert_eq!(error["code"], -32602, "{dirs}: {error}");
        assert_eq!(error["data"]["field"], field.as_str(), "{dirs}: {error}");
        // Inside a batch the field carries the task's index; the valid task before it is
        // not stored either.
        let error = client
            .error(
                "task.submit_batch",
                json!({"tasks": [
                    {"module": probe, "dirs": {"/data": "data"}},
                    {"module": probe, "dirs": dirs},
                ]}),
            )
            .await;
        assert_eq!(error["code"], -32602, "{dirs}: {error}");
        assert_eq!(
            error["data"]["field"],
            format!("tasks[1].{field}"),
            "{dirs}: {error}"
        );
    }
    let message = client
        .error(
            "task.submit",
            json!({"module": probe, "dirs": {"/data": "/etc"}}),
        )
        .await["message"]
        .clone();
    assert_eq!(
        message,
        "invalid params: dirs./data: \"/etc\" is not a volume of this server; a task names a \
         volume the operator defined with --volume, never a host path"
    );
    let listed = client.call("task.list", json!({})).await;
    assert_eq!(listed["tasks"], json!([]), "nothing was stored");

    // The same through `fabric submit --dir`.
    let out = fabric.fabric(&["submit", "probe", "--dir", "/data=/etc"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = crate::util::stderr(&out);
    assert!(stderr.contains("RPC error -32602"), "{stderr}");
    assert!(stderr.contains("\"/etc\" is not a volume"), "{stderr}");
    let out = fabric.fabric(&[
        "submit",
        "probe",
        "--input",
        "read /data/hello.txt\n",
        "--dir",
        "/data=data",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let task = crate::util::attempt_json(&out);
    assert_eq!(task["dirs"], json!({"/data": "data"}));
    assert_eq!(
        task["output"],
        format!("read /data/hello.txt -> ok: 21 bytes: {HELLO:?}\n")
    );
    assert_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_removed_before_the_task_runs_ends_it_invalid_naming_the_volume() {
    let volume = Volume::new();
    let data_dir = tempfile::tempdir().unwrap();
    let with_volume = format!("data={}", volume.dir().display());
    let mut fabric = Fabric::start_in(data_dir.path(), &["--volume", &with_volume]);
    let client = fabric.client();
    let probe = client.put_module(fabric_agents::p1::PROBE, "probe").await;
    let run_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let run_at = run_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = client
        .submit(json!({"module": probe, "input": "read /data/hello.txt\n",
            "dirs": {"/data": "data"}, "run_at": run_at}))
        .await;
    // The operator restarts the node without the volume before the task is due.
    fabric.signal("TERM");
    fabric.wait_exit(Duration::from_secs(30)).expect("stopped");
    let fabric = Fabric::start_in(data_dir.path(), &[]);
    let client = fabric.client();
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "failed", "{task}");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "not retried: {task}");
    assert_eq!(attempts[0]["outcome"], "invalid");
    assert_eq!(
        attempts[0]["error"],
        "volume \"data\" (granted at /data) is not defined on this node"
    );
    assert_eq!(
        task["error"],
        "attempt 1 ended with invalid: volume \"data\" (granted at /data) is not defined on this node"
    );
    assert_eq!(task["dirs"], json!({"/data": "data"}));
    assert_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_volume_whose_directory_vanished_ends_invalid_without_naming_the_host_path() {
    let volume = Volume::new();
    let fabric = volume.serve();
    let client = fabric.client();
    std::fs::remove_dir_all(volume.dir()).unwrap();
    let task = run_granted(&client, fabric_agents::p1::PROBE, "probe", "list /data\n").await;
    assert_eq!(task["state"], "failed", "{task}");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "not retried: {task}");
    assert_eq!(attempts[0]["outcome"], "invalid");
    assert_eq!(
        attempts[0]["error"],
        "volume \"data\" (granted at /data) is not available: No such file or directory (os error 2)"
    );
    assert!(
        !task
            .to_string()
            .contains(volume.root.path().to_str().unwrap()),
        "the host path reached the tenant: {task}"
    );
    assert_serves(&client).await;
}

#[test]
fn attack_volume_options_are_checked_at_start() {
    let volume = Volume::new();
    let file = volume.dir().join("hello.txt");
    let missing = volume.root.path().join("missing");
    for (value, expected) in [
        (
            format!("Data={}", volume.dir().display()),
            "invalid option volume: \"Data=",
        ),
        (format!("data={}", file.display()), "is not a directory"),
        (
            format!("data={}", missing.display()),
            "No such file or directory",
        ),
        ("data".to_owned(), "expected NAME=DIR"),
    ] {
        let data_dir = tempfile::tempdir().unwrap();
        let out = crate::util::fabric(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--volume",
            &value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{value}: {out:?}");
        let stderr = crate::util::stderr(&out);
        assert!(
            stderr.contains("invalid option volume: "),
            "{value}: {stderr}"
        );
        assert!(stderr.contains(expected), "{value}: {stderr}");
    }
}

/// A FIFO in a volume would park a blocking-pool thread of the server for good: opening it
/// for reading waits for a writer, beyond the attempt's deadline. `serve --volume` and
/// `run --dir` refuse such a directory at start, naming the file; nothing else starts.
#[test]
fn a_volume_holding_a_fifo_is_refused_at_start_naming_it() {
    let volume = Volume::new();
    let fifo = volume.dir().join("nested").join("pipe");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let data_dir = tempfile::tempdir().unwrap();
    let out = crate::util::fabric(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.path().to_str().unwrap(),
        "--volume",
        &format!("data={}", volume.dir().display()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = crate::util::stderr(&out);
    assert!(stderr.contains("invalid option volume: "), "{stderr}");
    assert!(stderr.contains("nested/pipe is a FIFO"), "{stderr}");

    let module = data_dir.path().join("echo.wasm");
    std::fs::write(&module, fabric_agents::p1::ECHO).unwrap();
    let out = crate::util::fabric(&[
        "run",
        module.to_str().unwrap(),
        "--dir",
        &format!("{}:/data", volume.dir().display()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = crate::util::stderr(&out);
    assert!(stderr.contains("cannot grant --dir"), "{stderr}");
    assert!(stderr.contains("nested/pipe is a FIFO"), "{stderr}");
}
