//! The console's files, compiled into the binary: `GET /console` is the page, `GET
//! /console/{file}` its style sheet, script and icon. Plain HTML, CSS and JavaScript with no
//! build step, no CDN and no external font: the proxy serves everything the page needs.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles, images and
//! connections from the proxy itself only, no inline script or style, no plugins, no
//! framing, no form posts. The page builds its tables with DOM calls and `textContent`, so
//! names on the bus (topics, groups, client ids) can never run as markup.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The policy of every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file: its name under `/console/`, its content type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page, served at `/console` (and `/console/index.html`).
const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("static/index.html"),
};

/// Every file of the console.
const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("static/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/console.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("static/icon.svg"),
    },
];

/// `GET /console`: the page.
pub async fn page() -> Response {
    serve(&INDEX)
}

/// `GET /console/{file}`: one of the page's files; 404 for any other name.
pub async fn file(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::not_found(format!("no console file {name:?}")).into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // A new proxy binary brings a new console: never run an old script against it.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_the_proxy_serves() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for link in page
            .split(['"', '\''])
            .filter(|s| s.starts_with("/console/"))
        {
            let name = &link["/console/".len()..];
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html links {link}, which is not served"
            );
        }
        for text in ASSETS
            .iter()
            .filter(|a| a.content_type.starts_with("text/"))
        {
            let body = std::str::from_utf8(text.body).unwrap();
            // No CDN, no external font, no inline script or style the policy would block.
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{}",
                text.name
            );
            if text.name.ends_with(".html") {
                assert!(
                    !body.contains("<script>") && !body.contains("style="),
                    "inline code"
                );
            }
        }
        let script = std::str::from_utf8(ASSETS[2].body).unwrap();
        assert!(
            !script.contains("innerHTML"),
            "markup from data is never parsed"
        );
    }
}
