//! The attack suite: each `attack_` test runs a guest that really tries one way out of
//! its quotas or its capabilities, asserts exactly how the attempt ended, and then that
//! the sandbox still serves ordinary work. One file per way out (CPU, memory, output,
//! files, grants, network, environment, modules, state between attempts, telemetry, child
//! tasks); this module holds the kit they share: a WAT builder, the runner and the host
//! tree for grants.

mod bounds;
mod cpu;
mod egress;
mod env;
mod files;
mod grant;
mod hostcalls;
mod memory;
mod modules;
mod network;
mod output;
mod state;
mod tasks;
mod telemetry;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fabric_sandbox::{CancelToken, DirGrant, RunRequest};
use fabric_types::{Attempt, Limits, Outcome};

use crate::util::*;

// WASI preview 1 errno values.
const ESUCCESS: u32 = 0;
const EBADF: u32 = 8;
const ENOTSOCK: u32 = 57;
const ENOTSUP: u32 = 58;
/// What wasmtime-wasi 48 answers for a path that leaves its directory (by `..`, by being
/// absolute, or through a symlink): `EPERM`, where WASI also allows `ENOTCAPABLE`.
const EPERM: u32 = 63;

fn timeout_ms(ms: u64) -> Limits {
    Limits {
        timeout_ms: ms,
        ..tight()
    }
}

/// Runs `wasm` once on the shared sandbox with `input`, `limits` and `dirs` granted.
async fn attempt(wasm: &[u8], input: &[u8], limits: Limits, dirs: Vec<DirGrant>) -> Attempt {
    let agent = load(wasm);
    let request = RunRequest {
        input: input.to_vec(),
        limits,
        dirs,
        ..RunRequest::default()
    };
    sandbox().run(&agent, request, &CancelToken::new()).await
}

/// The timeout fired, no earlier than asked and no more than `late` after it.
#[track_caller]
fn assert_timed_out_within(attempt: &Attempt, timeout_ms: u64, late: Duration) {
    assert_outcome(attempt, Outcome::Timeout);
    assert!(
        attempt.usage.wall_ms >= timeout_ms,
        "ended early: {attempt:?}"
    );
    assert!(
        attempt.usage.wall_ms <= timeout_ms + late.as_millis() as u64,
        "ended more than {late:?} after its timeout: {attempt:?}"
    );
}

/// A WASI preview 1 command written in the test: `_start`'s body, extra functions, extra
/// imports, and text constants placed in memory by [`Wat::text`]. Every module gets a
/// printing kit: `$puts(ptr, len)` writes memory to stdout, `$putu(n)` writes an unsigned
/// decimal, `$nl` a newline. Memory: page 0 holds the kit (0..64) and the texts (from
/// 0x1000); page 1 (0x10000..) is free scratch space.
struct Wat {
    imports: String,
    funcs: String,
    data: String,
    next_text: u32,
    pages: u32,
}

impl Wat {
    fn new() -> Self {
        Self {
            imports: String::new(),
            funcs: String::new(),
            data: String::new(),
            next_text: 0x1000,
            pages: 2,
        }
    }

    /// Imports `wasi_snapshot_preview1.NAME` as `$NAME` with the signature `sig`.
    fn import(mut self, name: &str, sig: &str) -> Self {
        writeln!(
            self.imports,
            r#"(import "wasi_snapshot_preview1" "{name}" (func ${name} {sig}))"#
        )
        .unwrap();
        self
    }

    fn func(mut self, func: &str) -> Self {
        self.funcs.push_str(func);
        self.funcs.push('\n');
        self
    }

    /// Places `text` in memory; returns the two operands `(i32.const PTR) (i32.const LEN)`.
    fn text(&mut self, text: &str) -> String {
        let ptr = self.next_text;
        writeln!(
            self.data,
            "(data (i32.const {ptr}) \"{}\")",
            escape(text.as_bytes())
        )
        .unwrap();
        self.next_text += (text.len() as u32).div_ceil(16) * 16 + 16;
        assert!(self.next_text < 0x10000, "texts overflow page 0");
        format!("(i32.const {ptr}) (i32.const {})", text.len())
    }

    /// The module, with `_start` made of `locals` and `body`.
    fn build(&self, locals: &str, body: &str) -> Vec<u8> {
        let source = format!(
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") {pages})
  (data (i32.const 48) "\n")
  {data}
  (func $puts (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $putu (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 48))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 0x30) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (call $puts (local.get $p) (i32.sub (i32.const 48) (local.get $p))))
  (func $nl (call $puts (i32.const 48) (i32.const 1)))
  {funcs}
  (func (export "_start") {locals}
    {body}))"#,
            imports = self.imports,
            pages = self.pages,
            data = self.data,
            funcs = self.funcs,
        );
        wat::parse_str(&source).unwrap_or_else(|e| panic!("{e}\n{source}"))
    }
}

/// `bytes` as the inside of a WAT string literal.
fn escape(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b" ./_-=:".contains(b) {
            out.push(*b as char);
        } else {
            write!(out, "\\{b:02x}").unwrap();
        }
        out
    })
}

/// Every line of `attempt`'s stdout.
fn lines(attempt: &Attempt) -> Vec<String> {
    text(&attempt.output).lines().map(str::to_owned).collect()
}

/// A module that tries `path_open` of each of `paths` relative to each of `dirfds`
/// (following symlinks, asking only to read) and prints "open FD PATH errno=E"; on
/// success it also reads up to 64 bytes and prints them as "read: TEXT".
fn path_opener(dirfds: &[u32], paths: &[&str]) -> Vec<u8> {
    let mut wat = Wat::new()
        .import("fd_read", "(param i32 i32 i32 i32) (result i32)")
        .import(
            "path_open",
            "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
        )
        .func(
            r#"(func $show (param $fd i32)
    (i32.store (i32.const 0x10000) (i32.const 0x10100))
    (i32.store (i32.const 0x10004) (i32.const 64))
    (if (i32.eqz (call $fd_read (local.get $fd) (i32.const 0x10000) (i32.const 1)
          (i32.const 0x10020)))
      (then (call $puts (i32.const 0x10100) (i32.load (i32.const 0x10020))))))"#,
        );
    let (open, errno, read) = (wat.text("open "), wat.text(" errno="), wat.text("read: "));
    let mut body = String::new();
    for dirfd in dirfds {
        for path in paths {
            let label = wat.text(&format!("{dirfd} {path}"));
            let ptr_len = wat.text(path);
            write!(
                body,
                r#"
    (call $puts {open}) (call $puts {label}) (call $puts {errno})
    (local.set $e (call $path_open (i32.const {dirfd}) (i32.const 1) {ptr_len}
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0x10030)))
    (call $putu (local.get $e)) (call $nl)
    (if (i32.eqz (local.get $e)) (then
      (call $puts {read}) (call $show (i32.load (i32.const 0x10030))) (call $nl)))"#
            )
            .unwrap();
        }
    }
    wat.build("(local $e i32)", &body)
}

/// A host tree for the grant tests: `granted/` (granted as `/data`) beside `outside/`,
/// which holds a secret and which symlinks in `granted/` point to.
struct Tree {
    _root: tempfile::TempDir,
    granted: PathBuf,
    secret: PathBuf,
}

const HELLO: &str = "hello from the host";
const SECRET: &str = "TOP SECRET: outside the grant";

fn tree() -> Tree {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(granted.join("hello.txt"), HELLO).unwrap();
    std::fs::write(granted.join("sub/inner.txt"), "inner").unwrap();
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, SECRET).unwrap();
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, granted.join(name)).unwrap();
    };
    link(&secret, "escape_abs");
    link(Path::new("../outside/secret.txt"), "escape_rel");
    link(Path::new("../outside"), "escape_dir");
    link(Path::new("/etc/passwd"), "escape_etc");
    link(Path::new("hello.txt"), "inside_link");
    Tree {
        _root: root,
        granted,
        secret,
    }
}

impl Tree {
    fn grant(&self) -> Vec<DirGrant> {
        vec![DirGrant::read_only(&self.granted, "/data")]
    }

    /// Every entry under the granted directory with its kind, contents or link target,
    /// length and modification time.
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
        walk(&self.granted, &mut out);
        out
    }
}
