//! What can go wrong talking to a server, and how a JSON-RPC error object becomes a
//! [`ClientError`].

use serde_json::Value;

/// Any error source, boxed: what a transport failure carries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL given to [`crate::Client::new`] cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The CA certificate file given to [`crate::Client::with_ca_cert`] cannot be used.
    #[error("CA certificate {path}: {reason}")]
    CaCert {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The token given to [`crate::Client::new`] cannot be sent in an HTTP header.
    #[error("invalid token: it must be printable ASCII without line breaks")]
    InvalidToken,
    /// The server answered with a JSON-RPC error object.
    #[error("RPC error {code}: {message}")]
    Rpc {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The server answered with an HTTP status other than 200 and no JSON-RPC error.
    #[error("HTTP status {status}: {body}")]
    Http { status: u16, body: String },
    /// The server could not be reached, or did not answer in time.
    #[error("cannot reach the server at {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        #[source]
        source: BoxError,
    },
    /// The server answered something that is not what the API promises.
    #[error("cannot decode the answer to {what}: {reason}")]
    Decode { what: String, reason: String },
}

impl ClientError {
    /// The JSON-RPC error code, for [`ClientError::Rpc`].
    pub fn code(&self) -> Option<i64> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A transport error at `url`; its reason is the innermost cause, which is the one a
    /// person can act on ("Connection refused"), not the outermost wrapper.
    pub(crate) fn transport(url: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let mut reason = source.to_string();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = source.source();
        while let Some(inner) = cause {
            reason = inner.to_string();
            cause = inner.source();
        }
        ClientError::Transport {
            url: url.to_owned(),
            reason,
            source,
        }
    }

    pub(crate) fn decode(what: &str, reason: impl std::fmt::Display) -> Self {
        ClientError::Decode {
            what: what.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The error of a JSON-RPC error object `{code, message, data?}`, or `None` when `error`
    /// does not have that shape.
    pub(crate) fn from_error_object(error: &Value) -> Option<Self> {
        let code = error.get("code")?.as_i64()?;
        let message = error.get("message")?.as_str()?.to_owned();
        let data = error.get("data").filter(|d| !d.is_null()).cloned();
        Some(ClientError::Rpc {
            code,
            message,
            data,
        })
    }

    /// A non-200 HTTP answer: the JSON-RPC error it carries, or the status and the start
    /// of its body.
    pub(crate) fn from_http_status(status: u16, body: &[u8]) -> Self {
        let rpc_error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Self::from_error_object));
        rpc_error.unwrap_or_else(|| ClientError::Http {
            status,
            body: body_excerpt(body),
        })
    }
}

/// Most of a body quoted in an error.
const BODY_EXCERPT_CHARS: usize = 200;

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() <= BODY_EXCERPT_CHARS {
        return text.to_owned();
    }
    let mut excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    excerpt.push('…');
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::wire::code;
    use serde_json::json;

    #[test]
    fn an_error_object_becomes_an_rpc_error_with_its_code_and_data() {
        let error = ClientError::from_error_object(&json!({
            "code": -32602,
            "message": "invalid params: limits.fuel must be a number",
            "data": {"field": "limits.fuel"}
        }))
        .unwrap();
        assert_eq!(error.code(), Some(code::INVALID_PARAMS));
        assert_eq!(
            error.to_string(),
            "RPC error -32602: invalid params: limits.fuel must be a number"
        );
        let ClientError::Rpc { data, .. } = error else {
            panic!("not an RPC error")
        };
        assert_eq!(data, Some(json!({"field": "limits.fuel"})));

        let without_data = ClientError::from_error_object(
            &json!({"code": -32002, "message": "no such task", "data": null}),
        )
        .unwrap();
        assert!(matches!(
            without_data,
            ClientError::Rpc {
                data: None,
                code: -32002,
                ..
            }
        ));
    }

    #[test]
    fn malformed_error_objects_are_not_rpc_errors() {
        for bad in [
            json!({"message": "no code"}),
            json!({"code": "-32002", "message": "code is a string"}),
            json!({"code": -32002}),
            json!("just text"),
        ] {
            assert!(ClientError::from_error_object(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_http_error_carrying_a_json_rpc_error_is_an_rpc_error() {
        let body =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"unauthorized"}}"#;
        let error = ClientError::from_http_status(401, body);
        assert_eq!(error.code(), Some(code::UNAUTHORIZED));

        let error = ClientError::from_http_status(502, b"<html>bad gateway</html>\n");
        assert!(
            matches!(&error, ClientError::Http { status: 502, body } if body == "<html>bad gateway</html>"),
            "{error:?}"
        );
        assert_eq!(error.code(), None);

        let long = "x".repeat(1000);
        let ClientError::Http { body, .. } = ClientError::from_http_status(500, long.as_bytes())
        else {
            panic!("not an HTTP error")
        };
        assert_eq!(body.chars().count(), BODY_EXCERPT_CHARS + 1);
    }

    #[test]
    fn a_transport_error_names_the_url_and_the_innermost_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = ClientError::transport("http://127.0.0.1:9/rpc", Outer(io));
        assert_eq!(
            error.to_string(),
            "cannot reach the server at http://127.0.0.1:9/rpc: Connection refused"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
