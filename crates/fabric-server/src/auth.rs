//! Tenants and tokens: who a request is, from its bearer token and the `--auth` file
//! (which stores only each token's SHA-256).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::egress::EgressScope;

/// The tenant of every request when authentication is off.
pub const DEFAULT_TENANT: &str = "default";
/// The tenant an admin's own modules and tasks belong to.
pub const ADMIN_TENANT: &str = "admin";

/// Who is asking: the tenant whose modules and tasks a request reads and writes, and
/// whether it may read every tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub admin: bool,
    /// The egress policies its tasks may name.
    pub egress: EgressScope,
}

impl Principal {
    /// A tenant that may name any egress policy (the one tenant when authentication is
    /// off).
    pub fn tenant(name: impl Into<String>) -> Self {
        Self {
            tenant: name.into(),
            admin: false,
            egress: EgressScope::Any,
        }
    }

    /// The tenant filter for reads: `None` (every tenant) for the admin.
    pub fn scope(&self) -> Option<String> {
        (!self.admin).then(|| self.tenant.clone())
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No `--auth`: every request is the tenant `default`.
    Off,
    /// Token digests (lowercase hex SHA-256) to principals.
    Tokens(HashMap<String, Principal>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    tenant: Option<String>,
    role: Option<String>,
    sha256: String,
    /// The egress policies the tenant's tasks may name (none when absent).
    egress: Option<Vec<String>>,
}

/// Why the `--auth` file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("auth file {path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
}

impl Auth {
    /// Reads and checks an `--auth` file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| AuthFileError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: AuthFile = toml::from_str(text).map_err(|err| err.to_string())?;
        if file.token.is_empty() {
            return Err("no [[token]] tables: nobody could use the server".into());
        }
        let mut tokens = HashMap::new();
        for (index, entry) in file.token.into_iter().enumerate() {
            let at = format!("token #{}", index + 1);
            let digest = entry.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{at}: sha256 must be 64 hex digits"));
            }
            let principal = match (entry.tenant, entry.role.as_deref()) {
                (None, Some("admin")) if entry.egress.is_some() => {
                    return Err(format!(
                        "{at}: the admin may name any egress policy; drop its egress list"
                    ));
                }
                (None, Some("admin")) => Principal {
                    tenant: ADMIN_TENANT.into(),
                    admin: true,
                    egress: EgressScope::Any,
                },
                (Some(tenant), None) if valid_tenant(&tenant) => Principal {
                    tenant,
                    admin: false,
                    egress: EgressScope::Only(entry.egress.unwrap_or_default()),
                },
                (Some(tenant), None) => {
                    return Err(format!(
                        "{at}: tenant {tenant:?} must be 1-64 characters of [A-Za-z0-9_.-]"
                    ));
                }
                (None, Some(role)) => {
                    return Err(format!(
                        "{at}: unknown role {role:?} (the only role is \"admin\")"
                    ));
                }
                (None, None) => {
                    return Err(format!("{at}: needs tenant = \"NAME\" or role = \"admin\""));
                }
                (Some(_), Some(_)) => return Err(format!("{at}: give tenant or role, not both")),
            };
            if tokens.insert(digest, principal).is_some() {
                return Err(format!("{at}: the same token appears twice"));
            }
        }
        Ok(Self::Tokens(tokens))
    }

    /// The egress policy names the tokens list, each with the token that lists it.
    pub fn egress_names(&self) -> Vec<(String, String)> {
        let Auth::Tokens(tokens) = self else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for principal in tokens.values() {
            if let EgressScope::Only(list) = &principal.egress {
                names.extend(list.iter().map(|n| (principal.tenant.clone(), n.clone())));
            }
        }
        names
    }

    /// What `tenant`'s tasks may name in `egress` when no request carries a token (a
    /// schedule firing): what its tokens allow together; any policy with authentication off
    /// or for the admin's tenant.
    pub fn egress_of(&self, tenant: &str) -> EgressScope {
        let Auth::Tokens(tokens) = self else {
            return EgressScope::Any;
        };
        let mut names: Vec<String> = Vec::new();
        for principal in tokens.values().filter(|p| p.tenant == tenant) {
            match &principal.egress {
                EgressScope::Any => return EgressScope::Any,
                EgressScope::Only(list) => names.extend(list.iter().cloned()),
            }
        }
        names.sort();
        names.dedup();
        EgressScope::Only(names)
    }

    /// The principal of a request with this `Authorization` header value, or `None` when
    /// authentication is on and the header is missing or the token unknown.
    pub fn principal(&self, authorization: Option<&str>) -> Option<Principal> {
        match self {
            Auth::Off => Some(Principal::tenant(DEFAULT_TENANT)),
            Auth::Tokens(tokens) => {
                let token = authorization?.strip_prefix("Bearer ")?.trim();
                tokens.get(&token_digest(token)).cloned()
            }
        }
    }
}

/// Lowercase hex SHA-256 of a token, as the auth file stores it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn valid_tenant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_tenants_and_the_admin_by_their_digest() {
        let text = format!(
            "[[token]]\ntenant = \"acme\"\nsha256 = \"{}\"\n[[token]]\nrole = \"admin\"\nsha256 = \"{}\"\n",
            token_digest("acme-secret"),
            token_digest("root-secret").to_uppercase()
        );
        let auth = Auth::parse(&text).unwrap();
        assert_eq!(
            auth.principal(Some("Bearer acme-secret")),
            Some(Principal {
                egress: EgressScope::Only(Vec::new()),
                ..Principal::tenant("acme")
            }),
            "a token without an egress list may name no policy"
        );
        let admin = auth.principal(Some("Bearer root-secret")).unwrap();
        assert!(admin.admin);
        assert_eq!(admin.scope(), None);
        assert_eq!(auth.principal(Some("Bearer wrong")), None);
        assert_eq!(auth.principal(Some("acme-secret")), None);
        assert_eq!(auth.principal(None), None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("", "no [[token]]"),
            (
                "[[token]]\ntenant = \"a\"\nsha256 = \"xyz\"",
                "64 hex digits",
            ),
            ("[[token]]\nsha256 = \"{d}\"", "needs tenant"),
            (
                "[[token]]\nrole = \"root\"\nsha256 = \"{d}\"",
                "unknown role",
            ),
            (
                "[[token]]\ntenant = \"a b\"\nsha256 = \"{d}\"",
                "must be 1-64",
            ),
            (
                "[[token]]\ntenant = \"a\"\nsha256 = \"{d}\"\nextra = 1",
                "unknown field",
            ),
            (
                "[[token]]\ntenant = \"a\"\nsha256 = \"{d}\"\n[[token]]\ntenant = \"b\"\nsha256 = \"{d}\"",
                "twice",
            ),
        ];
        for (text, expected) in cases {
            let text = text.replace("{d}", &token_digest("t"));
            let err = Auth::parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn without_auth_everyone_is_the_default_tenant() {
        assert_eq!(
            Auth::Off.principal(None),
            Some(Principal::tenant(DEFAULT_TENANT))
        );
    }
}
