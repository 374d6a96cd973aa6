//! The dashboard at `/ui`: a static single-page app embedded in the binary (no data of its
//! own: every page reads the JSON-RPC API with the user's token), served with a strict
//! Content-Security-Policy so that it loads nothing from any other host.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the dashboard is served; any path under it that is not an asset answers the app.
pub const PREFIX: &str = "/ui";

/// Scripts, styles, images and connections from this origin only; no frames, no plugins,
/// no inline script or style.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// One embedded file under `/ui/assets/`.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// The app's page: every path under [`PREFIX`] that is not an asset.
pub const INDEX: &str = include_str!("../ui/index.html");

/// Every asset, by the name it has under `/ui/assets/`.
pub static ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("../ui/assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("../ui/assets/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("../ui/assets/dom.js"),
    },
    Asset {
        name: "overview.js",
        content_type: JS,
        body: include_str!("../ui/assets/overview.js"),
    },
    Asset {
        name: "tasks.js",
        content_type: JS,
        body: include_str!("../ui/assets/tasks.js"),
    },
    Asset {
        name: "task.js",
        content_type: JS,
        body: include_str!("../ui/assets/task.js"),
    },
    Asset {
        name: "modules.js",
        content_type: JS,
        body: include_str!("../ui/assets/modules.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/assets/style.css"),
    },
];

/// The dashboard's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PREFIX, get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/{*path}", get(index))
}

fn secured(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small, and they change with the binary: always revalidated, never stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    secured("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => secured(asset.content_type, asset.body),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no asset {name:?} in this build's dashboard\n"),
        )
            .into_response(),
    }
}

/// The `http://` and `https://` URLs in `text` (what a page could fetch from elsewhere).
#[cfg(test)]
fn absolute_urls(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let end = text[at..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | '>'))
                .map_or(text.len(), |n| at + n);
            found.push(&text[at..end]);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_embedded_file_names_another_host() {
        for (name, body) in ASSETS
            .iter()
            .map(|a| (a.name, a.body))
            .chain([("index.html", INDEX)])
        {
            assert_eq!(absolute_urls(body), Vec::<&str>::new(), "{name}");
            assert!(!body.contains("//cdn"), "{name}");
        }
        assert_eq!(
            absolute_urls("fetch('https://evil.example/x') and http://a.b"),
            ["http://a.b", "https://evil.example/x"]
        );
    }

    #[test]
    fn every_asset_the_app_imports_is_embedded() {
        for body in ASSETS.iter().map(|a| a.body).chain([INDEX]) {
            for (at, _) in body.match_indices("/ui/assets/") {
                let rest = &body[at + "/ui/assets/".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    .collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{name:?} is referenced but not embedded"
                );
            }
            for (at, _) in body.match_indices("from './") {
                let rest = &body[at + "from './".len()..];
                let name: String = rest.chars().take_while(|c| *c != '\'').collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "import {name:?} is not embedded"
                );
            }
        }
    }
}
