//! Content-addressed module ids: `sha256:<hex>` of a module's bytes.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The id of a module: the SHA-256 of its bytes, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId([u8; 32]);

impl ModuleId {
    /// The id of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix (used for file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a module id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a module id is `sha256:` followed by 64 hex digits, not {0:?}")]
pub struct ParseModuleIdError(String);

impl FromStr for ModuleId {
    type Err = ParseModuleIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseModuleIdError(s.chars().take(80).collect());
        let digits = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits.to_ascii_lowercase(), &mut out).map_err(|_| bad())?;
        Ok(Self(out))
    }
}

impl Serialize for ModuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModuleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text() {
        let id = ModuleId::of(b"hello");
        let text = id.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<ModuleId>().unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "md5:00",
            &format!("sha256:{}", "0".repeat(63)),
        ] {
            assert!(bad.parse::<ModuleId>().is_err(), "{bad:?} parsed");
        }
    }
}

/// Whether a module's bytes are a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// A core WebAssembly module (a WASI preview 1 command).
    Module,
    /// A component (a WASI preview 2 command).
    Component,
}

impl ModuleKind {
    /// Reads the kind from the 8-byte preamble, or `None` when the bytes are not Wasm.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match bytes.get(..8)? {
            [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(ModuleKind::Module),
            [0, b'a', b's', b'm', _, _, 1, 0] => Some(ModuleKind::Component),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Module => "module",
            ModuleKind::Component => "component",
        }
    }
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModuleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "module" => Ok(ModuleKind::Module),
            "component" => Ok(ModuleKind::Component),
            other => Err(format!(
                "unknown module kind {other:?}: expected module or component"
            )),
        }
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn preambles_tell_modules_from_components() {
        assert_eq!(
            ModuleKind::sniff(b"\0asm\x01\0\0\0rest"),
            Some(ModuleKind::Module)
        );
        assert_eq!(
            ModuleKind::sniff(b"\0asm\x0d\0\x01\0"),
            Some(ModuleKind::Component)
        );
        assert_eq!(ModuleKind::sniff(b"\0asm"), None);
        assert_eq!(ModuleKind::sniff(b"(module)"), None);
        assert_eq!(ModuleKind::sniff(b"\x7fELF\x02\x01\x01\0"), None);
    }
}
