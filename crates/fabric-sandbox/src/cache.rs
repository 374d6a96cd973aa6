//! The module cache: bytes → validated → compiled → linked, keyed by `sha256:<hex>`.
//! Compiled artifacts are kept in memory (bounded by bytes, least recently used first out)
//! and on disk under a directory keyed by the engine's compatibility hash, so a restart
//! deserializes instead of compiling. Only artifacts this cache wrote, and whose checksum
//! still matches, are ever deserialized.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_types::ModuleId;
pub use fabric_types::ModuleKind;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{ExternType, InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::SandboxError;
use crate::engine::{CompilePool, FabricEngine, MemorySlot};
use crate::run::{P1Guest, P2Guest};

/// First bytes of every artifact file this cache writes.
const ARTIFACT_MAGIC: &[u8; 16] = b"fabric-cwasm-v1\n";

/// Why bytes could not become an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("module is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("not a WebAssembly module or component: {0}")]
    NotWasm(String),
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    /// Every compile thread stayed taken for as long as the caller would wait.
    #[error(
        "busy: every compile thread was taken for {waited_ms} ms (compilations in progress: {running}); nothing was compiled, try again"
    )]
    Busy { waited_ms: u64, running: usize },
}

/// A compiled, linked module or component, ready to instantiate in microseconds.
pub struct Agent {
    id: ModuleId,
    kind: ModuleKind,
    size: u64,
    pub(crate) linked: Result<Linked, String>,
}

pub(crate) enum Linked {
    P1(InstancePre<P1Guest>),
    P2(CommandPre<P2Guest>),
    /// Defines memories of these initial sizes, one larger than the engine's memories may
    /// be ([`crate::engine::MemorySlot`]): not compiled, and every attempt ends
    /// `memory_limit` as the limiter would end it, without instantiating anything.
    TooMuchMemory {
        memories: Vec<u64>,
    },
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("link_error", &self.linked.as_ref().err())
            .finish()
    }
}

impl Agent {
    pub fn id(&self) -> ModuleId {
        self.id
    }

    pub fn kind(&self) -> ModuleKind {
        self.kind
    }

    /// The size of the module's bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Why the agent cannot be instantiated (every attempt will end `invalid`), if it cannot.
    pub fn link_error(&self) -> Option<&str> {
        self.linked.as_ref().err().map(String::as_str)
    }
}

/// Counters of the module cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads answered from memory.
    pub hits: u64,
    /// Loads that had to deserialize or compile.
    pub misses: u64,
    /// Misses answered by deserializing an artifact from disk.
    pub disk_loads: u64,
    /// Misses that compiled the bytes.
    pub compiles: u64,
    /// Compilations in progress now (at most `compile_threads`).
    pub compiling: u64,
    /// Approximate bytes of compiled code held in memory.
    pub bytes: u64,
    /// Agents held in memory.
    pub entries: u64,
}

struct Entry {
    agent: Arc<Agent>,
    cost: u64,
    last_used: u64,
}

#[derive(Default)]
struct Resident {
    entries: HashMap<ModuleId, Entry>,
    bytes: u64,
    clock: u64,
}

pub(crate) struct ModuleCache {
    dir: Option<PathBuf>,
    budget: u64,
    max_module_bytes: u64,
    resident: Mutex<Resident>,
    hits: AtomicU64,
    misses: AtomicU64,
    disk_loads: AtomicU64,
    compiles: AtomicU64,
    compiler: CompilePool,
}

impl ModuleCache {
    pub fn new(engine: &FabricEngine, config: &crate::SandboxConfig) -> Result<Self, SandboxError> {
        let dir = match &config.cache_dir {
            Some(root) => {
                let dir = root.join(compatibility_key(&engine.engine));
                std::fs::create_dir_all(&dir).map_err(|source| SandboxError::CacheDir {
                    path: dir.clone(),
                    source,
                })?;
                Some(dir)
            }
            None => None,
        };
        Ok(Self {
            dir,
            budget: config.cache_memory_bytes,
            max_module_bytes: config.max_module_bytes,
            resident: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            disk_loads: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            compiler: CompilePool::new(config.compile_threads)?,
        })
    }

    pub fn load(
        &self,
        engine: &FabricEngine,
        bytes: &[u8],
        wait: Option<Duration>,
    ) -> Result<Arc<Agent>, LoadError> {
        let size = bytes.len() as u64;
        if size > self.max_module_bytes {
            return Err(LoadError::TooLarge {
                size,
                max: self.max_module_bytes,
            });
        }
        let kind =
            ModuleKind::sniff(bytes).ok_or_else(|| LoadError::NotWasm(describe_preamble(bytes)))?;
        let id = ModuleId::of(bytes);
        if let Some(agent) = self.resident(&id) {
            return Ok(agent);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let compiled = match self.read_artifact(engine, &id, kind) {
            Some(compiled) => compiled,
            None => {
                crate::complexity::check(bytes).map_err(LoadError::Invalid)?;
                let compiled = self
                    .compiler
                    .run(wait, || Compiled::compile(engine, kind, bytes))
                    .map_err(|running| LoadError::Busy {
                        waited_ms: wait.unwrap_or_default().as_millis() as u64,
                        running,
                    })??;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                self.write_artifact(&id, &compiled);
                compiled
            }
        };
        Ok(self.insert(engine, id, size, compiled))
    }

    pub fn cached(&self, engine: &FabricEngine, id: &ModuleId) -> Option<Arc<Agent>> {
        if let Some(agent) = self.resident(id) {
            return Some(agent);
        }
        let compiled = [ModuleKind::Module, ModuleKind::Component]
            .into_iter()
            .find_map(|kind| self.read_artifact(engine, id, kind))?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        Some(self.insert(engine, *id, 0, compiled))
    }

    /// Drops the module's compiled code from memory and its precompiled artifacts from
    /// disk; attempts already holding it keep their copy. A later load compiles it again.
    pub fn forget(&self, id: &ModuleId) {
        {
            let mut resident = self.resident.lock().expect("cache lock poisoned");
            if let Some(entry) = resident.entries.remove(id) {
                resident.bytes = resident.bytes.saturating_sub(entry.cost);
            }
        }
        for kind in [ModuleKind::Module, ModuleKind::Component] {
            if let Some(path) = self.artifact_path(id, kind)
                && let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a precompiled artifact");
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let resident = self.resident.lock().expect("cache lock poisoned");
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            disk_loads: self.disk_loads.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            compiling: self.compiler.running() as u64,
            bytes: resident.bytes,
            entries: resident.entries.len() as u64,
        }
    }

    fn resident(&self, id: &ModuleId) -> Option<Arc<Agent>> {
        let mut resident = self.resident.lock().expect("cache lock poisoned");
        resident.clock += 1;
        let now = resident.clock;
        let entry = resident.entries.get_mut(id)?;
        entry.last_used = now;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.agent.clone())
    }

    fn insert(
        &self,
        engine: &FabricEngine,
        id: ModuleId,
        size: u64,
        compiled: Compiled,
    ) -> Arc<Agent> {
        let cost = compiled.cost();
        let agent = Arc::new(Agent {
            id,
            kind: compiled.kind(),
            size: if size > 0 { size } else { cost },
            linked: compiled.link(engine),
        });
        let mut resident = self.resident.lock().expect("cache lock poisoned");
        resident.clock += 1;
        let last_used = resident.clock;
        if let Some(old) = resident.entries.insert(
            id,
            Entry {
                agent: agent.clone(),
                cost,
                last_used,
            },
        ) {
            resident.bytes -= old.cost;
        }
        resident.bytes += cost;
        while resident.bytes > self.budget && resident.entries.len() > 1 {
            let Some(oldest) = resident
                .entries
                .iter()
                .filter(|(key, _)| **key != id)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(key, _)| *key)
            else {
                break;
            };
            if let Some(evicted) = resident.entries.remove(&oldest) {
                resident.bytes -= evicted.cost;
            }
        }
        agent
    }

    fn artifact_path(&self, id: &ModuleId, kind: ModuleKind) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}.{}.cwasm", id.hex(), kind.as_str())))
    }

    fn read_artifact(
        &self,
        engine: &FabricEngine,
        id: &ModuleId,
        kind: ModuleKind,
    ) -> Option<Compiled> {
        let path = self.artifact_path(id, kind)?;
        let file = std::fs::read(&path).ok()?;
        let Some(payload) = verified_payload(&file) else {
            tracing::warn!(path = %path.display(), "ignoring a precompiled artifact that fails its checksum");
            let _ = std::fs::remove_file(&path);
            return None;
        };
        match Compiled::deserialize(engine, kind, payload) {
            Ok(compiled) => {
                self.disk_loads.fetch_add(1, Ordering::Relaxed);
                Some(compiled)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "ignoring an unusable precompiled artifact");
                None
            }
        }
    }

    fn write_artifact(&self, id: &ModuleId, compiled: &Compiled) {
        let Some(path) = self.artifact_path(id, compiled.kind()) else {
            return;
        };
        let Some(serialized) = compiled.serialize() else {
            return;
        };
        if let Err(e) = serialized.and_then(|payload| write_atomically(&path, &payload)) {
            tracing::warn!(path = %path.display(), error = %e, "could not keep a precompiled artifact");
        }
    }
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A compiled module or component, not yet linked.
enum Compiled {
    Module(Module),
    Component(Component),
    /// Valid, but defines a memory larger than a pool slot (see [`Linked::TooMuchMemory`]).
    TooMuchMemory {
        kind: ModuleKind,
        memories: Vec<u64>,
    },
}

impl Compiled {
    fn compile(engine: &FabricEngine, kind: ModuleKind, bytes: &[u8]) -> Result<Self, LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid(format!("{e:#}"));
        // The pool refuses to load a module whose initial memory is larger than a slot,
        // where the limiter would end each of its attempts `memory_limit`: keep it so.
        if engine.pooling
            && let Some(memories) = MemorySlot::of(&engine.config).exceeded_by(bytes)
        {
            validate(engine, kind, bytes)?;
            return Ok(Compiled::TooMuchMemory { kind, memories });
        }
        Ok(match kind {
            ModuleKind::Module => {
                Compiled::Module(Module::from_binary(&engine.engine, bytes).map_err(invalid)?)
            }
            ModuleKind::Component => {
                Compiled::Component(Component::from_binary(&engine.engine, bytes).map_err(invalid)?)
            }
        })
    }

    #[allow(unsafe_code)]
    fn deserialize(
        engine: &FabricEngine,
        kind: ModuleKind,
        payload: &[u8],
    ) -> wasmtime::Result<Self> {
        // SAFETY: `payload` was produced by `serialize` below, by an engine with the same
        // compatibility hash (the directory is keyed by it), written by this cache with a
        // SHA-256 that `verified_payload` has just checked. Nothing else is deserialized.
        unsafe {
            Ok(match kind {
                ModuleKind::Module => {
                    Compiled::Module(Module::deserialize(&engine.engine, payload)?)
                }
                ModuleKind::Component => {
                    Compiled::Component(Component::deserialize(&engine.engine, payload)?)
                }
            })
        }
    }

    /// The artifact to keep on disk, if there is compiled code.
    fn serialize(&self) -> Option<std::io::Result<Vec<u8>>> {
        let serialized = match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
            Compiled::TooMuchMemory { .. } => return None,
        };
        Some(serialized.map_err(|e| std::io::Error::other(format!("{e:#}"))))
    }

    fn kind(&self) -> ModuleKind {
        match self {
            Compiled::Module(_) => ModuleKind::Module,
            Compiled::Component(_) => ModuleKind::Component,
            Compiled::TooMuchMemory { kind, .. } => *kind,
        }
    }

    /// Bytes of compiled code and data the engine holds for it.
    fn cost(&self) -> u64 {
        let range = match self {
            Compiled::Module(m) => m.image_range(),
            Compiled::Component(c) => c.image_range(),
            Compiled::TooMuchMemory { .. } => return 0,
        };
        (range.end as usize).saturating_sub(range.start as usize) as u64
    }

    fn link(self, engine: &FabricEngine) -> Result<Linked, String> {
        match self {
            Compiled::TooMuchMemory { memories, .. } => Ok(Linked::TooMuchMemory { memories }),
            Compiled::Module(module) => {
                match module.get_export("_start") {
                    Some(ExternType::Func(f))
                        if f.params().len() == 0 && f.results().len() == 0 => {}
                    Some(_) => {
                        return Err(
                            "the export `_start` is not a function of no arguments and no results"
                                .into(),
                        );
                    }
                    None => {
                        return Err(
                            "the module exports no `_start` function: a WASI command is required"
                                .into(),
                        );
                    }
                }
                engine
                    .p1_linker
                    .instantiate_pre(&module)
                    .map(Linked::P1)
                    .map_err(|e| format!("{e:#}"))
            }
            Compiled::Component(component) => engine
                .p2_linker
                .instantiate_pre(&component)
                .and_then(CommandPre::new)
                .map(Linked::P2)
                .map_err(|e| format!("{e:#}")),
        }
    }
}

/// Validates `bytes` without compiling them: a module as the engine would, a component
/// with every feature Wasmtime knows of (Wasmtime validates components only by compiling).
fn validate(engine: &FabricEngine, kind: ModuleKind, bytes: &[u8]) -> Result<(), LoadError> {
    match kind {
        ModuleKind::Module => Module::validate(&engine.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}"))),
        ModuleKind::Component => {
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                .validate_all(bytes)
                .map(drop)
                .map_err(|e| LoadError::Invalid(e.to_string()))
        }
    }
}

/// The version of the checks made before compiling ([`crate::complexity::check`]). Bump it
/// when they refuse more, so that artifacts compiled before are not loaded unchecked.
/// 2: types open to subtyping are refused (GHSA-rc4p-x33f-vpr2).
const CHECKS_VERSION: u32 = 2;

/// A directory name that changes whenever precompiled artifacts stop being compatible, or
/// the checks before compiling change.
fn compatibility_key(engine: &wasmtime::Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    CHECKS_VERSION.hash(&mut hasher);
    format!("engine-{:016x}", hasher.finish())
}

/// Says what the first bytes look like, for an error about bytes that are not Wasm.
fn describe_preamble(bytes: &[u8]) -> String {
    match bytes {
        [] => "the file is empty".into(),
        b if b.len() < 8 && b"\0asm".starts_with(&b[..b.len().min(4)]) => {
            format!(
                "truncated: only {} bytes, a module starts with an 8-byte preamble",
                b.len()
            )
        }
        [0, b'a', b's', b'm', ..] => format!("unknown WebAssembly version {:02x?}", &bytes[4..8]),
        b if b.starts_with(b"\x7fELF") => {
            "this is an ELF file (a native or precompiled binary)".into()
        }
        b if b.trim_ascii_start().starts_with(b"(") => {
            "this looks like WebAssembly text; compile it to binary first (or name it *.wat)".into()
        }
        b => format!(
            "bad magic number {:02x?} (expected 00 61 73 6d)",
            &b[..b.len().min(4)]
        ),
    }
}

fn verified_payload(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(ARTIFACT_MAGIC)?;
    let (digest, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

fn write_atomically(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(ARTIFACT_MAGIC)?;
    file.write_all(&Sha256::digest(payload))?;
    file.write_all(payload)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_errors_name_what_the_bytes_are() {
        assert!(describe_preamble(b"").contains("empty"));
        assert!(describe_preamble(b"\0as").contains("truncated"));
        assert!(describe_preamble(b"\x7fELF\x02\x01\x01\0").contains("ELF"));
        assert!(describe_preamble(b"  (module)").contains("text"));
        assert!(describe_preamble(b"\0asm\x02\0\0\0").contains("version"));
        assert!(describe_preamble(b"hello world").contains("magic"));
    }

    #[test]
    fn artifacts_verify_their_checksum() {
        let payload = b"compiled code";
        let mut file = ARTIFACT_MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(payload));
        file.extend_from_slice(payload);
        assert_eq!(verified_payload(&file), Some(&payload[..]));
        let last = file.len() - 1;
        file[last] ^= 1;
        assert_eq!(verified_payload(&file), None);
        assert_eq!(verified_payload(b"short"), None);
    }
}
