//! Directory grants: a granted tree can be read and listed, and nothing leaves it or
//! changes the host.

use fabric_sandbox::DirGrant;
use fabric_types::Outcome;

use super::{EPERM, HELLO, attempt, lines, path_opener, tree};
use crate::util::*;

/// Runs the probe agent (p1 and p2) with `commands` and `dirs` granted; returns each
/// one's result lines.
async fn probe_granted(commands: &str, dirs: Vec<DirGrant>) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ] {
        let attempt = attempt(wasm, commands.as_bytes(), tight(), dirs.clone()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let lines = lines(&attempt);
        assert_eq!(lines.len(), commands.lines().count(), "{kind}: {lines:?}");
        out.push((kind, lines));
    }
    out
}

#[tokio::test]
async fn attack_grant_a_granted_file_can_be_read_and_listed() {
    let tree = tree();
    for (kind, lines) in probe_granted(
        "read /data/hello.txt\nread /data/sub/inner.txt\nread /data/inside_link\nlist /data\n",
        tree.grant(),
    )
    .await
    {
        assert_eq!(
            lines,
            [
                format!("read /data/hello.txt -> ok: 19 bytes: {HELLO:?}"),
                "read /data/sub/inner.txt -> ok: 5 bytes: \"inner\"".to_owned(),
                format!("read /data/inside_link -> ok: 19 bytes: {HELLO:?}"),
                "list /data -> ok: 7 entries".to_owned(),
            ],
            "{kind}"
        );
    }
    // The same through raw preview 1 calls: fd 3 is the grant.
    let attempt = attempt(
        &path_opener(&[3], &["hello.txt"]),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        lines(&attempt),
        ["open 3 hello.txt errno=0", &format!("read: {HELLO}")]
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_dotdot_cannot_leave_the_grant() {
    let tree = tree();
    let escapes = [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "..",
        "sub/../..",
    ];
    let attempt = attempt(&path_opener(&[3], &escapes), b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    assert_eq!(report.len(), escapes.len(), "{report:?}");
    for line in &report {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    for (kind, lines) in probe_granted(
        "read /data/../outside/secret.txt\nread /data/sub/../../outside/secret.txt\nlist /data/..\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
            assert!(!line.contains("TOP SECRET"), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_absolute_paths_do_not_resolve_against_the_host() {
    let tree = tree();
    let secret = tree.secret.to_str().unwrap().to_owned();
    let absolute = ["/etc/passwd", secret.as_str(), "/data/hello.txt", "/"];
    let attempt = attempt(&path_opener(&[3], &absolute), b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    for line in lines(&attempt) {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    for (kind, lines) in probe_granted(
        &format!("read /etc/passwd\nread {secret}\nlist /\n"),
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_symlinks_out_of_the_grant_cannot_be_followed() {
    let tree = tree();
    let links = [
        "escape_abs",
        "escape_rel",
        "escape_dir/secret.txt",
        "escape_etc",
    ];
    let attempt = attempt(
        &path_opener(&[3], &[&links[..], &["inside_link"]].concat()),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    assert_eq!(
        report.last().map(String::as_str),
        Some(format!("read: {HELLO}").as_str()),
        "control: a link inside the grant is followed: {report:?}"
    );
    for line in &report[..links.len()] {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    assert!(!text(&attempt.output).contains("TOP SECRET"));
    for (kind, lines) in probe_granted(
        "read /data/escape_abs\nread /data/escape_rel\nread /data/escape_dir/secret.txt\nlist /data/escape_dir\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
            assert!(!line.contains("TOP SECRET"), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_writes_creates_unlinks_and_renames_fail_and_the_host_is_unchanged() {
    let tree = tree();
    let before = tree.snapshot();
    let attempt = attempt(
        &fabric_agents::fixture("grant_mutations"),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    let names: Vec<&str> = report
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "create_file",
            "truncate",
            "open_write",
            "create_directory",
            "unlink_file",
            "remove_directory",
            "rename",
            "symlink",
            "link",
            "set_times",
            "open_read",
            "fd_write",
            "fd_pwrite",
            "fd_set_size",
            "fd_set_times",
        ]
    );
    for line in &report {
        if line.starts_with("open_read ") {
            assert_eq!(line, "open_read errno=0", "control: reading is allowed");
        } else {
            assert!(
                !line.ends_with(" errno=0"),
                "succeeded: {line}\n{report:#?}"
            );
        }
    }
    for (kind, lines) in probe_granted(
        "write /data/new.txt\nwrite /data/hello.txt\nwrite /data/sub/inner.txt\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    assert_eq!(tree.snapshot(), before, "the granted directory changed");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_of_a_missing_directory_is_invalid_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-dir");
    let attempt = attempt(
        fabric_agents::p1::ECHO,
        b"x",
        tight(),
        vec![DirGrant::read_only(&missing, "/data")],
    )
    .await;
    assert_outcome(&attempt, Outcome::Invalid);
    let error = attempt.error.unwrap();
    assert!(error.contains(missing.to_str().unwrap()), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");
    assert_eq!(attempt.output, b"", "nothing ran");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_of_a_file_or_twice_the_same_name_is_invalid() {
    let tree = tree();
    let file = tree.granted.join("hello.txt");
    let cases = [
        (
            vec![DirGrant::read_only(&file, "/data")],
            format!("directory grant {}: not a directory", file.display()),
        ),
        (
            vec![
                DirGrant::read_only(&tree.granted, "/data"),
                DirGrant::read_only(tree.granted.join("sub"), "/data"),
            ],
            format!(
                "directory grant {}: the guest path \"/data\" is granted twice",
                tree.granted.join("sub").display()
            ),
        ),
        (
            vec![DirGrant::read_only(&tree.granted, "")],
            format!(
                "directory grant {}: the guest path \"\" must be non-empty and free of NUL",
                tree.granted.display()
            ),
        ),
    ];
    for (dirs, expected) in cases {
        for wasm in [fabric_agents::p1::ECHO, fabric_agents::p2::ECHO] {
            let attempt = attempt(wasm, b"x", tight(), dirs.clone()).await;
            assert_outcome(&attempt, Outcome::Invalid);
            assert_eq!(attempt.error.as_deref(), Some(expected.as_str()));
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_open_file_bomb_is_capped_before_the_host_runs_out_of_descriptors() {
    let tree = tree();
    let attempt = attempt(
        &fabric_agents::fixture("open_files_bomb"),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .starts_with("handle limit"),
        "{attempt:?}"
    );
    // A dot per 64 opens: at most 256 files were open at once, not the host's 20,000.
    let dots = text(&attempt.output);
    assert!(
        dots.len() <= 4 && dots.chars().all(|c| c == '.'),
        "{dots:?}"
    );
    assert!(
        dots.len() >= 3,
        "{dots:?}: fewer opens than a program needs"
    );
    assert_serves(sandbox()).await;
}
