//! JSON-RPC 2.0 framing: parses a request body (one call or a batch), checks each
//! envelope, hands valid calls to the method table and frames results and errors.
//! Notifications (calls without an `id`) run but get no answer.

use fabric_types::wire::{FieldError, code};
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::methods::{self, Transport};
use crate::server::App;

/// A JSON-RPC error: one of the codes of docs/api.md, a message for people and, for invalid
/// params, `data` naming the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// -32602 with `data: {"field": field}`.
    pub fn invalid_params(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            code: code::INVALID_PARAMS,
            message: format!("invalid params: {}: {}", field, message.into()),
            data: Some(json!(FieldError { field })),
        }
    }

    /// -32602 from a params decoding error, naming the field serde stopped at.
    pub fn from_decode(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let field = match unknown_field(&inner) {
            Some(name) if path == "." => name.to_string(),
            Some(name) if path.ends_with(name) => path,
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "params".to_string(),
            None => path,
        };
        Self::invalid_params(field, inner)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, format!("not found: {}", what.into()))
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(code::INTERNAL, format!("internal error: {message}"))
    }

    /// A store failure: -32006 when its disk is full (nothing was written, a retry after
    /// space is freed succeeds), otherwise internal.
    pub fn store(err: fabric_store::StoreError) -> Self {
        match err {
            fabric_store::StoreError::Full { .. } => Self::new(
                code::STORE_FULL,
                format!("{err}; the server's data volume needs free space, then retry"),
            ),
            err => Self::internal(format!("store: {err}")),
        }
    }

    pub fn draining() -> Self {
        Self::new(
            code::DRAINING,
            "the server is shutting down and accepts no new work; retry on another node or later",
        )
    }

    /// Sets `data`: one of the shapes of `fabric_types::wire` (`FieldError`, ...) that
    /// `rpc.discover` documents for the error's code.
    pub fn with_data(mut self, data: impl serde::Serialize) -> Self {
        self.data = Some(serde_json::to_value(data).unwrap_or(Value::Null));
        self
    }

    fn to_json(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// A response object for `id`.
pub fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "error": error.to_json(), "id": id })
}

fn result_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "result": result, "id": id })
}

/// A notification (no `id`), as `task.event` is sent.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// One checked call.
#[derive(Debug)]
pub struct Call {
    pub method: String,
    pub params: Value,
    /// `None` for a notification.
    pub id: Option<Value>,
}

/// Checks one request object against JSON-RPC 2.0. On error, also returns the id to
/// answer with (`null` when it could not be read).
pub fn parse_call(request: Value) -> Result<Call, (Value, RpcError)> {
    let Value::Object(mut object) = request else {
        return Err((
            Value::Null,
            RpcError::new(code::INVALID_REQUEST, "invalid request: expected an object"),
        ));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: id must be a string, a number or null",
                ),
            ));
        }
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    let invalid = |message: &str| {
        (
            answer_id.clone(),
            RpcError::new(code::INVALID_REQUEST, format!("invalid request: {message}")),
        )
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(invalid("method must be a string"));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(params @ Value::Object(_)) => params,
        Some(Value::Array(_)) => {
            return Err((
                answer_id,
                RpcError::invalid_params("params", "must be an object (by-name params)"),
            ));
        }
        Some(_) => return Err(invalid("params must be an object")),
    };
    Ok(Call { method, params, id })
}

/// Answers a whole request body: `None` when nothing is to be sent back (only
/// notifications), else one response object or an array of them.
pub async fn handle_body(
    app: &App,
    who: &Principal,
    body: &[u8],
    transport: Transport<'_>,
) -> Option<Value> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            let error = RpcError::new(code::PARSE_ERROR, format!("parse error: {err}"));
            return Some(error_response(Value::Null, &error));
        }
    };
    handle_value(app, who, request, transport).await
}

/// [`handle_body`] for an already parsed request.
pub async fn handle_value(
    app: &App,
    who: &Principal,
    request: Value,
    transport: Transport<'_>,
) -> Option<Value> {
    match request {
        Value::Array(calls) if calls.is_empty() => Some(error_response(
            Value::Null,
            &RpcError::new(code::INVALID_REQUEST, "invalid request: empty batch"),
        )),
        Value::Array(calls) if calls.len() > app.config.max_batch => Some(error_response(
            Value::Null,
            &RpcError::new(
                code::INVALID_REQUEST,
                format!(
                    "invalid request: a batch of {} calls; the limit is {} (max_batch)",
                    calls.len(),
                    app.config.max_batch
                ),
            ),
        )),
        Value::Array(calls) => {
            app.metrics.rpc_batch(calls.len());
            let answers = join_all(
                calls
                    .into_iter()
                    .map(|call| handle_one(app, who, call, transport)),
            )
            .await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => handle_one(app, who, single, transport).await,
    }
}

async fn handle_one(
    app: &App,
    who: &Principal,
    request: Value,
    transport: Transport<'_>,
) -> Option<Value> {
    let call = match parse_call(request) {
        Ok(call) => call,
        Err((id, error)) => return Some(error_response(id, &error)),
    };
    let method = call.method;
    let outcome = match &app.otel {
        None => methods::dispatch(app, who, &method, call.params, transport).await,
        Some(otel) => {
            let call = methods::dispatch(app, who, &method, call.params, transport);
            otel.traced(&method, &who.tenant, call).await
        }
    };
    app.metrics
        .rpc_call(&method, outcome.as_ref().err().map(|e| e.code));
    if let Err(error) = &outcome {
        if error.code == code::INTERNAL {
            tracing::error!(method = %method, error = %error.message, "internal error");
        } else {
            tracing::debug!(method = %method, code = error.code, error = %error.message, "call refused");
        }
    }
    let id = call.id?;
    Some(match outcome {
        Ok(result) => result_response(id, result),
        Err(error) => error_response(id, &error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_checked() {
        let ok = parse_call(json!({"jsonrpc": "2.0", "method": "m", "id": 7})).unwrap();
        assert_eq!(ok.method, "m");
        assert_eq!(ok.id, Some(json!(7)));
        assert_eq!(ok.params, json!({}));
        let note = parse_call(json!({"jsonrpc": "2.0", "method": "m"})).unwrap();
        assert_eq!(note.id, None);

        let (id, err) =
            parse_call(json!({"jsonrpc": "1.0", "method": "m", "id": "a"})).unwrap_err();
        assert_eq!((id, err.code), (json!("a"), code::INVALID_REQUEST));
        let (_, err) = parse_call(json!({"jsonrpc": "2.0", "method": 5, "id": 1})).unwrap_err();
        assert_eq!(err.code, code::INVALID_REQUEST);
        let (id, err) =
            parse_call(json!({"jsonrpc": "2.0", "method": "m", "id": [1]})).unwrap_err();
        assert_eq!((id, err.code), (Value::Null, code::INVALID_REQUEST));
        let (_, err) = parse_call(json!({"jsonrpc": "2.0", "method": "m", "params": [1], "id": 1}))
            .unwrap_err();
        assert_eq!(err.code, code::INVALID_PARAMS);
        let (_, err) = parse_call(json!(3)).unwrap_err();
        assert_eq!(err.code, code::INVALID_REQUEST);
    }

    #[test]
    fn decode_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            fuel: u64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            limits: Option<Inner>,
        }
        let decode = |value: Value| {
            serde_path_to_error::deserialize::<_, Outer>(value)
                .map_err(RpcError::from_decode)
                .unwrap_err()
        };
        let err = decode(json!({"limits": {"fuel": "lots"}}));
        assert_eq!(err.data, Some(json!({"field": "limits.fuel"})));
        let err = decode(json!({"limits": {"fule": 1}}));
        assert_eq!(err.data, Some(json!({"field": "limits.fule"})));
        let err = decode(json!({"limitz": {}}));
        assert_eq!(err.data, Some(json!({"field": "limitz"})));
    }
}
