//! The web console at `/` (SPEC 12, issue 24 item 5): a page the server fills in (the
//! host name, the assets' versioned addresses) and static script, style and icon files
//! embedded in the binary, so it needs no build step and loads nothing from elsewhere (it
//! works offline). The script calls the JSON API and `/metrics` with the operator's token,
//! which it keeps in the tab's sessionStorage; these routes themselves need no token, since
//! they hold no data.
//!
//! Every response carries a Content-Security-Policy of `default-src 'self'` without
//! `'unsafe-inline'`: even if data reached the page as markup, no script of it would run.

use std::sync::{Arc, LazyLock};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::state::AdminState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
const ICON: &str = include_str!("icon.svg");

/// Scripts, styles, images, fetch() only from this origin; no plugins, no framing (the
/// console's buttons must not be clickable through someone else's page), no `<base>`.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its bytes, type, and the version in its address.
struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
    version: String,
}

/// The assets' addresses carry a hash of their content, so a browser may keep them for a
/// year and still never runs an old script against a newer server's page.
static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    let asset = |name, body: &'static str, content_type| {
        let digest = Sha256::digest(body.as_bytes());
        let version = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Asset { name, body, content_type, version }
    };
    [
        asset("console.js", SCRIPT, "text/javascript; charset=utf-8"),
        asset("console.css", STYLE, "text/css; charset=utf-8"),
        asset("icon.svg", ICON, "image/svg+xml"),
    ]
});

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{version}/{name}", get(asset))
        .route("/favicon.ico", get(favicon))
}

/// The shell: the page with the host name and the assets' versioned addresses put in.
async fn index(State(state): State<Arc<AdminState>>) -> Response {
    let mut page = INDEX.replace("{{hostname}}", &escape_html(&state.hostname));
    for asset in ASSETS.iter() {
        page = page.replace(&format!("{{{{{}}}}}", asset.name), &format!("/assets/{}/{}", asset.version, asset.name));
    }
    // The page names the current assets: it must be asked for again each time.
    respond("text/html; charset=utf-8", "no-cache", page)
}

async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return super::state::error(StatusCode::NOT_FOUND, "no such page");
    };
    // An address with an older version (a page loaded before an upgrade) still gets the
    // file, but not for keeps: the next page load names the new one.
    let cache = if version == asset.version { "public, max-age=31536000, immutable" } else { "no-cache" };
    respond(asset.content_type, cache, asset.body.to_string())
}

/// Browsers ask for /favicon.ico whatever the page says.
async fn favicon() -> Response {
    match ASSETS.iter().find(|a| a.name == "icon.svg") {
        Some(icon) => respond(icon.content_type, "public, max-age=86400", icon.body.to_string()),
        None => super::state::error(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn respond(content_type: &'static str, cache: &'static str, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // Served types are the only types: no sniffing a script out of something else.
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Browsers without frame-ancestors still refuse framing.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The console's addresses are nobody else's business.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    (StatusCode::OK, headers, body).into_response()
}

/// Text made safe to put in HTML, in an element or in a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_escaped_into_the_page() {
        assert_eq!(escape_html("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_page_names_each_asset_by_its_version_and_has_no_inline_script_or_style() {
        let mut page = INDEX.to_string();
        for asset in ASSETS.iter() {
            let placeholder = format!("{{{{{}}}}}", asset.name);
            assert!(page.contains(&placeholder), "{placeholder}");
            page = page.replace(&placeholder, &format!("/assets/{}/{}", asset.version, asset.name));
        }
        assert!(!page.contains("{{") || page.contains("{{hostname}}"));
        // CSP refuses inline script and style: the page must not need them.
        for inline in ["<script>", "<style", " style=", " onclick=", " onload=", " onsubmit=", "javascript:"] {
            assert!(!page.contains(inline), "inline {inline} in the page");
        }
        // Nothing from elsewhere.
        assert!(!page.contains("http://") && !page.contains("https://"), "an outside address in the page");
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!SCRIPT.contains(sink), "the console script uses {sink}");
        }
    }
}
