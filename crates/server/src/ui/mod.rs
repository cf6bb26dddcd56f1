//! The dashboard at `/ui/`: pages for a shop's team, drawn on the server from the same
//! handlers the JSON API answers with (so a figure on a page is the API's figure), signed
//! in with a key exchanged for a session cookie (`session`). Its stylesheet and script
//! are compiled into the binary; charts are SVG drawn here (`chart`).

pub mod blocks;
pub mod catalogue;
pub mod chart;
pub mod compare;
pub mod contacts;
pub mod overview;
pub mod pages;
pub mod session;
pub mod triggers;

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};

use crate::app::{AppState, Shared};
use crate::error::ApiError;
use crate::extract::ApiPath;
use session::{Session, Signed, Who};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// FNV-1a over the assets' bytes: their address changes with them, so that a new
/// binary's assets are fetched anew while the same ones are cached for a year.
const fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    hash
}

pub const ASSETS_VERSION: u64 = fingerprint(&[CSS, JS]);

/// The sections of a site's dashboard, in the navigation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Blocks,
    Triggers,
    Contacts,
    Catalogue,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Overview,
        Section::Blocks,
        Section::Triggers,
        Section::Contacts,
        Section::Catalogue,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Section::Overview => "overview",
            Section::Blocks => "blocks",
            Section::Triggers => "triggers",
            Section::Contacts => "contacts",
            Section::Catalogue => "catalogue",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Section::Overview => "Overview",
            Section::Blocks => "Blocks",
            Section::Triggers => "Triggers",
            Section::Contacts => "Contacts",
            Section::Catalogue => "Catalogue & searches",
        }
    }
}

/// The dashboard's routes.
pub fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/ui", get(|| async { Redirect::permanent("/ui/") })),
        ("/ui/", get(index)),
        ("/ui/sign-in", post(session::sign_in)),
        ("/ui/sign-out", post(session::sign_out)),
        ("/ui/assets/{file}", get(asset)),
        ("/ui/sites/{site_id}/overview", get(overview::page)),
        (session::REFRESH_ROUTE, get(overview::live)),
        ("/ui/sites/{site_id}/blocks", get(blocks::list)),
        (
            "/ui/sites/{site_id}/blocks/{block_id}",
            get(blocks::page).post(blocks::save),
        ),
        (
            "/ui/sites/{site_id}/blocks/{block_id}/preview",
            post(blocks::preview_page),
        ),
        (
            "/ui/sites/{site_id}/triggers",
            get(triggers::page).post(triggers::save_settings),
        ),
        (
            "/ui/sites/{site_id}/triggers/replay",
            post(triggers::replay),
        ),
        (
            "/ui/sites/{site_id}/triggers/test",
            post(triggers::test_delivery),
        ),
        (
            "/ui/sites/{site_id}/contacts",
            get(contacts::page).post(contacts::find),
        ),
        (
            "/ui/sites/{site_id}/contacts/export",
            post(contacts::export),
        ),
        ("/ui/sites/{site_id}/contacts/erase", post(contacts::erase)),
        ("/ui/sites/{site_id}/catalogue", get(catalogue::page)),
    ]
}

/// `GET /ui/`: the sign-in page, or the sites this session may see (a site's key goes
/// straight to its site).
async fn index(State(state): State<Shared>, signed: Result<Signed, Response>) -> Response {
    let Ok(Signed(session)) = signed else {
        return pages::sign_in_page(None).into_response();
    };
    if let Who::Site(site) = &session.who {
        return Redirect::to(&format!("/ui/sites/{site}/overview")).into_response();
    }
    let engine = state.live.read();
    let mut sites: Vec<(String, String, u64)> = (state.settings.sites.list().into_iter())
        .map(|site| {
            let events = engine.site(&site.site_id).map_or(0, |s| s.events());
            (site.site_id, site.name, events)
        })
        .collect();
    drop(engine);
    sites.sort();
    pages::sites_page(&session, &sites).into_response()
}

/// Says how long the page took on the server (`Server-Timing`), for the browser's
/// developer tools and `bench/dashboard.sh`.
pub async fn timed(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("page;dur={ms:.2}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// Refuses a change sent from another site's page, by what browsers say of where a
/// request comes from (`Sec-Fetch-Site`, else `Origin`): with each form's CSRF token,
/// this also covers signing in, which has no session (and so no token) yet.
pub async fn same_origin(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !from_here(request.headers(), state.trust_forwarded_for)
    {
        tracing::info!("a dashboard form sent from another site refused");
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site's page.",
        );
    }
    next.run(request).await
}

/// Whether a POST came from one of the dashboard's own pages. Browsers that do not send
/// `Sec-Fetch-Site` are judged by `Origin` against the host the browser asked for: the
/// proxy's `X-Forwarded-Host` when spoor trusts its proxy (which may send spoor its own
/// address as `Host`), else `Host`.
fn from_here(headers: &HeaderMap, behind_proxy: bool) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let forwarded = (text("x-forwarded-host").filter(|_| behind_proxy))
        .map(|hosts| hosts.split(',').next().unwrap_or("").trim());
    match (text("origin"), forwarded.or(text("host"))) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, at)| at.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        // Not a browser's form: a script with the key could call the API anyway.
        (None, _) => true,
    }
}

/// `GET /ui/assets/{file}`: the stylesheet and the script, cached for long (their
/// address carries the version).
async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The page to answer when the session may not see the registered site `site_id`: that
/// there is no such site (a site's key learns nothing of other sites).
pub(crate) fn unseen_site(state: &AppState, session: &Session, site_id: &str) -> Option<Response> {
    let seen = session.may_see(site_id) && state.settings.sites.contains(site_id);
    (!seen).then(pages::no_site)
}

/// The page to answer when the session may not change site `site_id` with this form:
/// [`unseen_site`]'s, or that the form's CSRF token is not the session's.
pub(crate) fn refused_change(
    state: &AppState,
    session: &Session,
    site_id: &str,
    csrf: &str,
) -> Option<Response> {
    unseen_site(state, session, site_id)
        .or_else(|| (!session.csrf_matches(csrf)).then(pages::forbidden))
}

/// An API error as a dashboard page.
pub(crate) fn error_page(error: ApiError) -> Response {
    pages::message(error.status, "Not available", &error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn forms_from_other_sites_are_told_apart() {
        let judged = |pairs: &[(&'static str, &'static str)]| from_here(&headers(pairs), false);
        assert!(judged(&[("sec-fetch-site", "same-origin")]));
        assert!(!judged(&[("sec-fetch-site", "cross-site")]));
        assert!(!judged(&[("sec-fetch-site", "same-site")]));
        assert!(judged(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(judged(&[
            ("origin", "https://Shop.Example"),
            ("host", "shop.example")
        ]));
        assert!(!judged(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(!judged(&[("origin", "null"), ("host", "a")]));
        assert!(judged(&[("host", "a")]), "no browser");
        let proxied = [
            ("origin", "https://shop.example"),
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "shop.example"),
        ];
        assert!(
            from_here(&headers(&proxied), true),
            "behind a trusted proxy"
        );
        assert!(!from_here(&headers(&proxied), false), "a proxy not trusted");
    }
}
