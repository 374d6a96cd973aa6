//! Egress policies as the operator defines them: `[[egress]]` tables in the config file
//! and `--egress NAME=URL[,URL...]`, resolved once at start (secrets read from the
//! environment) into the sandbox's policies; and the check that a task names only
//! policies its tenant may use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fabric_sandbox::EgressPolicy;
use serde::Deserialize;

use crate::config::{ConfigError, is_volume_name};
use crate::rpc::RpcError;

/// The most policies one task may name (in fabric-types: the `TaskSpec` schema states it).
pub use fabric_types::wire::MAX_TASK_EGRESS;

/// One `[[egress]]` table: what `fabric serve` turns into an [`EgressPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTable {
    /// What a task names: 1-64 of `a-z 0-9 _ -`.
    pub name: String,
    /// `scheme://host[:port]` rules, `*.` for one or more labels.
    pub allow: Vec<String>,
    /// Whether names may resolve to loopback, private and link-local addresses.
    #[serde(default)]
    pub private: bool,
    /// Set on every request the policy allows; `${VAR}` reads the server's environment.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests per attempt. [default: 64]
    pub max_requests: Option<u32>,
    /// Largest response body. [default: 8MiB]
    #[serde(default, deserialize_with = "crate::config::size")]
    pub max_response_bytes: Option<u64>,
    /// Largest request body. [default: 8MiB]
    #[serde(default, deserialize_with = "crate::config::size")]
    pub max_request_bytes: Option<u64>,
    /// PEM file of CA certificates trusted for this policy's `https` hosts, besides the
    /// public web's roots.
    pub ca_cert: Option<PathBuf>,
}

impl EgressTable {
    /// `NAME=URL[,URL...]`, the `--egress` flag: a policy with the default bounds.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let (name, rules) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAME=URL[,URL...]"))?;
        Ok(Self {
            name: name.to_string(),
            allow: rules.split(',').map(str::to_string).collect(),
            ..Self::default()
        })
    }
}

/// Every table as a policy, by name: names valid and distinct, rules valid, `${VAR}`
/// replaced from `env` (a variable that is not set refuses the configuration, naming it).
pub fn policies(
    tables: &[EgressTable],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Arc<EgressPolicy>>, ConfigError> {
    let mut out = BTreeMap::new();
    for table in tables {
        let name = &table.name;
        let invalid = |reason: String| ConfigError::Invalid {
            option: "egress",
            reason: format!("policy {name:?}: {reason}"),
        };
        if !is_volume_name(name) {
            return Err(invalid("the name must be 1 to 64 of a-z 0-9 _ -".into()));
        }
        let mut policy = EgressPolicy::new(name.clone(), &table.allow).map_err(invalid)?;
        policy.private = table.private;
        if let Some(max) = table.max_requests {
            policy.max_requests = max;
        }
        if let Some(max) = table.max_response_bytes {
            policy.max_response_bytes = max;
        }
        if let Some(max) = table.max_request_bytes {
            policy.max_request_bytes = max;
        }
        if let Some(ca) = &table.ca_cert {
            policy = policy.trust(std::slice::from_ref(ca)).map_err(invalid)?;
        }
        for (header, value) in &table.headers {
            let value = expand(value, &env).map_err(|var| {
                invalid(format!(
                    "header {header}: the environment variable {var} is not set"
                ))
            })?;
            policy = policy.header(header, &value).map_err(invalid)?;
        }
        if out.insert(name.clone(), Arc::new(policy)).is_some() {
            return Err(invalid("defined twice".into()));
        }
    }
    Ok(out)
}

/// `text` with each `${VAR}` replaced by the variable's value; `Err(VAR)` for the first
/// one not set. A `$` not followed by `{` is itself.
fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let var = &after[..end];
        out.push_str(&env(var).ok_or_else(|| var.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Which policies a tenant may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressScope {
    /// Any the server defines: the admin, and the one tenant when authentication is off.
    Any,
    /// Only these (a `[[token]]` table's `egress` list; none when it has none).
    Only(Vec<String>),
}

impl EgressScope {
    fn allows(&self, name: &str) -> bool {
        match self {
            EgressScope::Any => true,
            EgressScope::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Checks a task's `egress`: at most [`MAX_TASK_EGRESS`] distinct names, each a policy
/// this server defines and the tenant may name. An unknown policy and one the tenant may
/// not use are refused alike, so a tenant cannot learn which others exist.
pub fn check_task(
    names: &[String],
    policies: &BTreeMap<String, Arc<EgressPolicy>>,
    scope: &EgressScope,
    field: &str,
) -> Result<(), RpcError> {
    if names.len() > MAX_TASK_EGRESS {
        return Err(RpcError::invalid_params(
            field,
            format!("{} policies; the limit is {MAX_TASK_EGRESS}", names.len()),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(RpcError::invalid_params(
                field,
                format!("the policy {name:?} is named twice"),
            ));
        }
        if !policies.contains_key(name) || !scope.allows(name) {
            return Err(RpcError::invalid_params(
                field,
                format!("{name:?} is not an egress policy this tenant may name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "TOKEN").then(|| "s3cret".to_string())
    }

    fn table(name: &str) -> EgressTable {
        EgressTable {
            name: name.into(),
            allow: vec!["https://api.example".into()],
            ..EgressTable::default()
        }
    }

    #[test]
    fn tables_become_policies_with_secrets_from_the_environment() {
        let mut weather = table("weather");
        weather.headers = BTreeMap::from([("authorization".into(), "Bearer ${TOKEN}".into())]);
        weather.max_requests = Some(3);
        weather.max_response_bytes = Some(1024);
        let policies = policies(&[weather, table("search")], env).unwrap();
        let weather = &policies["weather"];
        assert_eq!(weather.max_requests, 3);
        assert_eq!(weather.max_response_bytes, 1024);
        assert_eq!(weather.headers[0].0.as_str(), "authorization");
        assert_eq!(weather.headers[0].1.to_str().unwrap(), "Bearer s3cret");
        assert!(
            !format!("{weather:?}").contains("s3cret"),
            "Debug hides secrets"
        );
        assert_eq!(
            policies["search"].max_requests,
            fabric_sandbox::DEFAULT_MAX_REQUESTS
        );
    }

    #[test]
    fn bad_tables_are_refused_naming_what_is_wrong() {
        let mut missing = table("weather");
        missing.headers = BTreeMap::from([("x-key".into(), "${NOPE}".into())]);
        let mut crlf = table("crlf");
        crlf.headers = BTreeMap::from([("x-key".into(), "a\r\nb".into())]);
        let mut path = table("path");
        path.allow = vec!["https://api.example/v1".into()];
        for (tables, expected) in [
            (vec![missing], "the environment variable NOPE is not set"),
            (vec![crlf], "not a valid header value"),
            (vec![path], "no path"),
            (vec![table("Bad Name")], "must be 1 to 64 of a-z"),
            (vec![table("twice"), table("twice")], "defined twice"),
            (
                vec![EgressTable {
                    name: "none".into(),
                    ..EgressTable::default()
                }],
                "allows nothing",
            ),
        ] {
            let err = policies(&tables, env).unwrap_err().to_string();
            assert!(err.starts_with("invalid option egress: policy"), "{err}");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn flags_are_name_and_rules() {
        let table =
            EgressTable::parse_flag("local=http://127.0.0.1:9000,https://*.example").unwrap();
        assert_eq!(table.name, "local");
        assert_eq!(table.allow, ["http://127.0.0.1:9000", "https://*.example"]);
        assert!(EgressTable::parse_flag("no-rules").is_err());
    }

    #[test]
    fn expand_replaces_set_variables_and_leaves_other_dollars() {
        assert_eq!(
            expand("a ${TOKEN} b $c ${", &env).unwrap(),
            "a s3cret b $c ${"
        );
        assert_eq!(expand("${MISSING}", &env).unwrap_err(), "MISSING");
    }

    #[test]
    fn tasks_name_only_defined_policies_their_tenant_may_use() {
        let defined = policies(&[table("weather"), table("search")], env).unwrap();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let only = EgressScope::Only(names(&["weather"]));
        assert!(check_task(&names(&["weather"]), &defined, &only, "egress").is_ok());
        assert!(
            check_task(
                &names(&["weather", "search"]),
                &defined,
                &EgressScope::Any,
                "egress"
            )
            .is_ok()
        );
        for (list, scope) in [
            (names(&["search"]), &only),
            (names(&["nope"]), &EgressScope::Any),
            (names(&["weather", "weather"]), &EgressScope::Any),
            (vec!["weather".to_string(); 17], &EgressScope::Any),
        ] {
            let err = check_task(&list, &defined, scope, "tasks[0].egress").unwrap_err();
            assert_eq!(err.code, -32602);
            assert_eq!(
                err.data.as_ref().unwrap()["field"],
                "tasks[0].egress",
                "{err:?}"
            );
        }
    }
}
