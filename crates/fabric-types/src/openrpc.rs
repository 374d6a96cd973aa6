//! The OpenRPC 1.2 document that `rpc.discover` answers, as types: the parts of the
//! specification the fabric uses, and its extensions (`x-params`, `x-notifications`,
//! `x-error-schemas`). The JSON Schemas inside are [`Value`]s the server generates from the
//! wire types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the OpenRPC specification the document follows.
pub const OPENRPC_VERSION: &str = "1.2.6";

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpenRpcDocument {
    /// [`OPENRPC_VERSION`].
    pub openrpc: String,
    pub info: Info,
    /// Every method the server answers.
    pub methods: Vec<MethodObject>,
    pub components: Components,
    /// The notifications the server sends on a WebSocket (after a subscription), shaped
    /// like methods without a result.
    #[serde(rename = "x-notifications")]
    pub notifications: Vec<NotificationObject>,
    /// For each error of `components.errors`, by the same name, the JSON Schema of the whole
    /// error object the server answers with it (its `code`, `message` and `data`).
    #[serde(rename = "x-error-schemas")]
    pub error_schemas: BTreeMap<String, Value>,
}

/// `info`: what the document describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    pub title: String,
    /// The server's version.
    pub version: String,
}

/// One method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MethodObject {
    pub name: String,
    pub summary: String,
    /// Always `by-name`: params are one JSON object.
    #[serde(rename = "paramStructure")]
    pub param_structure: String,
    /// Each member of the params object.
    pub params: Vec<ContentDescriptor>,
    pub result: ContentDescriptor,
    /// The errors this method may answer besides the framing errors of any request
    /// (references into `components.errors`).
    pub errors: Vec<Reference>,
    /// The JSON Schema of the whole params object (unknown members are refused).
    #[serde(rename = "x-params")]
    pub params_schema: Value,
    /// The notifications (of `x-notifications`) a successful call starts sending.
    #[serde(
        rename = "x-notifications",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub notifications: Vec<String>,
}

/// A named value and its JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContentDescriptor {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    pub schema: Value,
}

/// `{"$ref": "#/components/..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reference {
    #[serde(rename = "$ref")]
    pub reference: String,
}

/// `components`: what methods refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Components {
    /// The JSON Schemas of the wire types, by name.
    pub schemas: BTreeMap<String, Value>,
    /// Every error code the server answers, by name.
    pub errors: BTreeMap<String, ErrorObject>,
}

/// One error code and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
}

/// One notification: its method name, its by-name params, and the methods that start it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationObject {
    pub name: String,
    pub summary: String,
    #[serde(rename = "paramStructure")]
    pub param_structure: String,
    pub params: Vec<ContentDescriptor>,
    /// The JSON Schema of the whole params object.
    #[serde(rename = "x-params")]
    pub params_schema: Value,
    /// The subscription methods whose calls start it.
    #[serde(rename = "x-sent-after")]
    pub sent_after: Vec<String>,
}
