//! The operator web console: a few static files embedded in the binary and
//! served at `/console`. The page itself holds no secret; it asks for a
//! bearer token and talks to `/api/*` like any other client, so it needs no
//! auth of its own and every check stays in the api.
//!
//! Its `Content-Security-Policy` allows scripts, styles and requests to this
//! origin only: no inline code, no third-party content, no framing.

use poem::endpoint::make_sync;
use poem::http::header;
use poem::{get, Endpoint, Response, Route};

/// What the page may load: only its own files and the api beside it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The console: `/` is the page, `/app.js` and `/style.css` its assets
/// (nest it at `/console`; the page names its assets by absolute path, so it
/// works at both `/console` and `/console/`).
pub fn endpoint() -> impl Endpoint {
    Route::new()
        .at("/", get(asset(INDEX_HTML, "text/html; charset=utf-8")))
        .at(
            "/app.js",
            get(asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .at(
            "/style.css",
            get(asset(STYLE_CSS, "text/css; charset=utf-8")),
        )
}

/// One embedded file. `no-cache` makes browsers revalidate, so a new binary's
/// page and script are never mixed with an old one's.
fn asset(body: &'static str, content_type: &'static str) -> impl Endpoint<Output = Response> {
    make_sync(move |_| {
        Response::builder()
            .content_type(content_type)
            .header(header::CONTENT_SECURITY_POLICY, CSP)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "no-referrer")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body)
    })
}
