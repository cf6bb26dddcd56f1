//! `GET /js/{siteId}.js`: the browser script shops load with the vendor's loader snippet,
//! its host changed to spoor's. The same source for every site, followed by the call that
//! starts it with the site's id and the settings it needs (consent). Cached by browsers
//! for a few minutes and revalidated by its ETag, so that a change of settings or a new
//! spoor reaches pages soon without every page view fetching it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::Digest;
use spoor_settings::{Block, ConsentMode, Placement, ProductUpdates, SiteSettings};

use crate::access;
use crate::app::Shared;
use crate::error::ApiError;

/// The script's source: a function expression that takes the site's settings.
pub const SOURCE: &str = include_str!("../browser/spoor.js");
/// The source as served: without its comment lines, blank lines and indentation, which
/// are for its readers (a quarter of its gzipped size); every statement keeps its line.
static SERVED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| compact(SOURCE));
/// Placed blocks a site's script carries, the first by id: each may bring a template.
pub const MAX_PLACED_BLOCKS: usize = 20;
/// The bytes of placements (selectors, titles, templates) a site's script carries: the
/// blocks past it are left out, so that every page of the shop loads a script of tens
/// of kilobytes at most.
pub const MAX_PLACED_BYTES: usize = 64 * 1024;
/// Long enough that a visitor's clicks through a shop reuse it, short enough that a
/// change of settings reaches pages within minutes.
const CACHE_CONTROL: &str = "public, max-age=300";

/// What the script learns from spoor about its site.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScriptConfig<'a> {
    site_id: &'a str,
    consent: ConsentMode,
    honour_global_privacy_control: bool,
    /// Whether the site takes catalogue updates with its key only (none from pages).
    product_updates: ProductUpdates,
    /// The blocks the script renders by itself.
    blocks: Vec<PlacedBlock<'a>>,
}

#[derive(Serialize)]
struct PlacedBlock<'a> {
    id: &'a str,
    #[serde(flatten)]
    placement: &'a Placement,
}

/// The script for `site_id`, as served, with its placed blocks from `blocks`.
pub fn script_for(
    site_id: &str,
    settings: &SiteSettings,
    blocks: &[(String, std::sync::Arc<Block>)],
) -> String {
    let config = ScriptConfig {
        site_id,
        consent: settings.consent,
        honour_global_privacy_control: settings.honour_global_privacy_control,
        product_updates: settings.product_updates,
        blocks: placed_blocks(blocks),
    };
    // Serialising a struct of texts and flags cannot fail; `null` would still start it.
    let config = serde_json::to_string(&config).unwrap_or_else(|_| "null".into());
    format!("{}({config});\n", SERVED.as_str())
}

/// The placed blocks among `blocks`, within [`MAX_PLACED_BLOCKS`] and [`MAX_PLACED_BYTES`].
fn placed_blocks(blocks: &[(String, std::sync::Arc<Block>)]) -> Vec<PlacedBlock<'_>> {
    let mut bytes = 0;
    blocks
        .iter()
        .filter_map(|(id, block)| {
            let placement = block.placement.as_ref()?;
            Some(PlacedBlock { id, placement })
        })
        .take(MAX_PLACED_BLOCKS)
        .take_while(|placed| {
            let placement = placed.placement;
            bytes += placement.selector.len()
                + placement.title.as_ref().map_or(0, String::len)
                + placement.template.as_ref().map_or(0, String::len);
            bytes <= MAX_PLACED_BYTES
        })
        .collect()
}

/// `source` without the lines that are only comments, without blank lines and without
/// indentation. Only whole comment lines go: the script's own are written so.
fn compact(source: &str) -> String {
    let mut served = String::with_capacity(source.len());
    let mut in_comment = false;
    for line in source.lines().map(str::trim) {
        if in_comment || line.starts_with("/*") {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        served.push_str(line);
        served.push('\n');
    }
    served
}

/// `GET /js/{file}`, where `file` is `<siteId>.js`.
pub async fn script(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(site_id) = file.strip_suffix(".js") else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{file:?}: the browser script is at /js/<siteId>.js"),
        )
        .into_response();
    };
    let Some(settings) = state.settings.sites.settings(site_id) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_site",
            format!("site {site_id:?} is not registered; the loader names the site's id"),
        )
        .into_response();
    };
    // Counted with the site's recommendations: a browser fetches the script once in
    // its cache's lifetime, and each answer builds and hashes the script's text.
    let client = access::client_address(&state, &headers, peer);
    if let Some(refusal) = access::rate_limit_refusal(&state, site_id, &settings, client) {
        return refusal;
    }
    let body = script_for(site_id, &settings, &state.settings.blocks.list(site_id));
    let digest = sha2::Sha256::digest(body.as_bytes());
    // Weak: the same script is sent gzipped or not, as the browser asks.
    let etag = format!("W/\"{}\"", hex::encode(&digest[..12]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| matches!(tag.trim(), "*") || tag.trim() == etag)
        });
    let gzipped = (!fresh && accepts_gzip(&headers))
        .then(|| gzipped(site_id, &etag, &body))
        .flatten();
    let mut response = match (fresh, gzipped) {
        (true, _) => StatusCode::NOT_MODIFIED.into_response(),
        (false, Some(bytes)) => {
            let mut response = bytes.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        (false, None) => body.into_response(),
    };
    let answer = response.headers_mut();
    answer.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    answer.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    answer.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    answer.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Loaded by the shop's pages, another site: allowed where they isolate themselves,
    // and by `<script crossorigin>` (integrity checks, error reporting).
    answer.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        answer.insert(header::ETAG, etag);
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let named = parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("gzip"));
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            named && !refused
        })
}

/// The last script compressed for each site, with its ETag: compressing is most of the
/// cost of a full answer, and a site's script changes only with its settings. As many
/// entries as registered sites, a few kilobytes each.
static GZIPPED: std::sync::LazyLock<Mutex<HashMap<String, (String, Bytes)>>> =
    std::sync::LazyLock::new(Mutex::default);

/// `body`, the script of `site_id` whose ETag is `etag`, gzipped: compressed once per
/// change of the site's script.
fn gzipped(site_id: &str, etag: &str, body: &str) -> Option<Bytes> {
    let cache = || {
        GZIPPED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((tag, bytes)) = cache().get(site_id)
        && tag == etag
    {
        return Some(bytes.clone());
    }
    let bytes = Bytes::from(gzip(body.as_bytes())?);
    cache().insert(site_id.to_string(), (etag.to_string(), bytes.clone()));
    Some(bytes)
}

/// `bytes` gzipped; `None` should compression fail, to send them as they are.
fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sites_script_carries_a_bounded_number_of_placements() {
        let placed = |template_bytes: usize| {
            let template = format!(
                "{{{{#products}}}}{}{{{{/products}}}}",
                "x".repeat(template_bytes)
            );
            let json = serde_json::json!({"algorithm": "popular", "placement": {
                "pageTypes": ["any"], "selector": "#recs", "template": template}});
            std::sync::Arc::new(Block::from_json(json.to_string().as_bytes()).unwrap())
        };
        let small: Vec<_> = (0..25).map(|n| (format!("b{n:02}"), placed(10))).collect();
        assert_eq!(placed_blocks(&small).len(), MAX_PLACED_BLOCKS);
        let large: Vec<_> = (0..10)
            .map(|n| (format!("b{n:02}"), placed(15_000)))
            .collect();
        let kept = placed_blocks(&large);
        assert_eq!(kept.len(), 4, "64 KiB holds four templates of 15,000 bytes");
        assert_eq!(kept[0].id, "b00", "the first by id");
    }

    #[test]
    fn the_script_is_started_with_the_sites_settings() {
        let settings = SiteSettings {
            consent: ConsentMode::Required,
            ..SiteSettings::default()
        };
        let placed = Block::from_json(
            br##"{"algorithm": "popular", "placement": {"pageTypes": ["main"],
                  "selector": "#recs", "position": "after"}}"##,
        )
        .unwrap();
        let unplaced = Block::from_json(br#"{"algorithm": "popular"}"#).unwrap();
        let blocks = [
            ("home".to_string(), std::sync::Arc::new(placed)),
            ("api".to_string(), std::sync::Arc::new(unplaced)),
        ];
        let script = script_for("SHOP-1", &settings, &blocks);
        assert!(script.starts_with("(function (config) {\n'use strict';\n"));
        assert!(
            !script
                .lines()
                .any(|line| line.starts_with("/*") || line.starts_with("//") || line.is_empty()),
            "no comment lines, no blank ones"
        );
        assert!(
            !script.lines().any(|line| line.starts_with(' ')),
            "no indentation"
        );
        assert!(
            script.ends_with(
                "({\"siteId\":\"SHOP-1\",\"consent\":\"required\",\
                 \"honourGlobalPrivacyControl\":false,\"productUpdates\":\"anyone\",\"blocks\":[{\"id\":\"home\",\
                 \"pageTypes\":[\"main\"],\"selector\":\"#recs\",\"position\":\"after\"}]});\n"
            ),
            "{}",
            &script[script.len() - 200..]
        );
    }
}
