//! The URLs of one server: the base a user names, `POST {base}/rpc` and its WebSocket twin.

use reqwest::Url;

use crate::ClientError;

/// Where a server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The server's base URL as a person would write it: no trailing slash.
    pub base: String,
    /// `http://HOST:PORT[/PREFIX]/rpc`.
    pub rpc: Url,
    /// `ws://HOST:PORT[/PREFIX]/rpc` (`wss://` for an `https` server).
    pub ws: Url,
}

impl Endpoint {
    /// Parses a server URL: `http://HOST:PORT` or `https://HOST:PORT` with an optional
    /// path prefix; a bare `HOST:PORT` is taken as `http://HOST:PORT`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let parsed = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        let ws_scheme = match parsed.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}: expected http or https"
                )));
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("a server URL has no query or fragment"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("put credentials in --token, not in the URL"));
        }
        let prefix = parsed.path().trim_end_matches('/').to_owned();
        let mut base = parsed.clone();
        base.set_path(&prefix);
        let mut rpc = parsed;
        rpc.set_path(&format!("{prefix}/rpc"));
        let mut ws = rpc.clone();
        ws.set_scheme(ws_scheme)
            .map_err(|()| invalid("cannot derive the WebSocket URL"))?;
        Ok(Self {
            base: base.as_str().trim_end_matches('/').to_owned(),
            rpc,
            ws,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_and_websocket_urls_sit_under_the_base() {
        let cases = [
            ("http://127.0.0.1:7070", "http://127.0.0.1:7070"),
            ("http://127.0.0.1:7070/", "http://127.0.0.1:7070"),
            ("127.0.0.1:7070", "http://127.0.0.1:7070"),
            (
                "http://fabric.internal:80/api/",
                "http://fabric.internal/api",
            ),
            ("  http://[::1]:7070  ", "http://[::1]:7070"),
            ("https://fabric.example/x", "https://fabric.example/x"),
        ];
        for (given, base) in cases {
            let endpoint = Endpoint::parse(given).unwrap();
            assert_eq!(endpoint.base, base, "{given}");
            assert_eq!(endpoint.rpc.as_str(), format!("{base}/rpc"), "{given}");
            assert_eq!(
                endpoint.ws.as_str(),
                format!(
                    "{}/rpc",
                    base.replacen("https://", "wss://", 1)
                        .replacen("http://", "ws://", 1)
                ),
                "{given}"
            );
        }
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        for (given, reason) in [
            ("", "empty"),
            ("ftp://fabric.example", "unsupported scheme"),
            ("http://", "empty host"),
            ("http://h:7070/?x=1", "no query"),
            ("http://user:pw@h:7070", "--token"),
            ("http://h:notaport", "invalid port"),
        ] {
            let error = Endpoint::parse(given).unwrap_err();
            assert!(
                matches!(&error, ClientError::InvalidUrl { url, .. } if url == given),
                "{given}: {error:?}"
            );
            assert!(error.to_string().contains(reason), "{given}: {error}");
        }
    }
}
