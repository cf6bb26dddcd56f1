//! Who may call a site's public recommendations endpoint, and how often: the site's CORS
//! origins and a rate limit per client address, both set with
//! `PUT /admin/v1/sites/{siteId}/settings`.

use std::net::{IpAddr, SocketAddr};

use crate::body::SettingsBody;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use spoor_settings::SiteSettings;

use crate::app::{AppState, Shared, blocking};
use crate::auth;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::known_site;

/// The address a request came from: the peer, or behind a proxy that spoor was told to
/// trust, the last address of `X-Forwarded-For`: the one that proxy added. Earlier
/// entries are whatever the client sent, and anyone can send any.
pub fn client_address(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    if state.trust_forwarded_for
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|last| last.trim().parse().ok())
    {
        return forwarded;
    }
    peer.ip()
}

/// What a client address counts as, for rate limits and refused keys: itself for IPv4,
/// its /64 for IPv6, which one host usually holds whole (and can pick any address in).
pub fn network_of(address: IpAddr) -> IpAddr {
    // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: it is itself,
    // not one /64 with every other IPv4 client.
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

/// The 429 (with `Retry-After`) for a request over the site's rate limit; `None` when the
/// request may go on.
pub fn rate_limit_refusal(
    state: &AppState,
    site_id: &str,
    settings: &SiteSettings,
    client: IpAddr,
) -> Option<Response> {
    let limit = settings.rate_limit?;
    let wait = state.limiters.check(site_id, limit, client).err()?;
    let message = format!(
        "site {site_id} answers a client at most {} requests per second (bursts of {}); \
         retry in {} ms. The site's settings change the limit.",
        limit.per_second,
        limit.burst,
        wait.as_millis().max(1)
    );
    let response = ApiError::too_many_requests("rate_limited", message, wait).into_response();
    Some(response)
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`, when the site
/// lets that origin read answers.
pub fn allowed_origin(settings: &SiteSettings, headers: &HeaderMap) -> Option<HeaderValue> {
    if settings.cors_origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    settings
        .cors_origins
        .iter()
        .any(|allowed| allowed == text)
        .then(|| origin.clone())
}

/// Adds the CORS headers the site's settings allow to an answer.
pub fn with_cors(mut response: Response, allowed: Option<HeaderValue>) -> Response {
    let headers = response.headers_mut();
    if let Some(origin) = allowed {
        let echoed = origin != "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if echoed {
            // The answer differs by Origin: caches must keep them apart.
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
    response
}

/// `GET /admin/v1/sites/{siteId}/settings`
pub async fn get_settings(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<Json<SiteSettings>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let settings = state.settings.sites.settings(&site_id).unwrap_or_default();
    Ok(Json(settings))
}

/// `PUT /admin/v1/sites/{siteId}/settings`: the whole settings object; fields left out
/// take their defaults.
pub async fn put_settings(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    SettingsBody(body): SettingsBody,
) -> Result<Json<SiteSettings>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let settings: SiteSettings = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_settings",
            format!(
                "{e}; expected {{\"corsOrigins\": [\"https://shop.example\"], \"rateLimit\": \
                 {{\"perSecond\": 50, \"burst\": 200}}}} (rateLimit null for none)"
            ),
        )
    })?;
    let (sites, id, stored) = (
        state.settings.sites.clone(),
        site_id.clone(),
        settings.clone(),
    );
    blocking(move || sites.set_settings(&id, stored)).await??;
    tracing::info!(site_id = %site_id, "site settings changed");
    Ok(Json(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_allowed_exactly() {
        let settings = SiteSettings {
            cors_origins: vec!["https://shop.example".into()],
            rate_limit: None,
            ..SiteSettings::default()
        };
        let mut headers = HeaderMap::new();
        assert_eq!(allowed_origin(&settings, &headers), None);
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(allowed_origin(&settings, &headers), None);
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://shop.example"),
        );
        assert_eq!(
            allowed_origin(&settings, &headers),
            Some(HeaderValue::from_static("https://shop.example"))
        );
        assert_eq!(
            allowed_origin(&SiteSettings::default(), &HeaderMap::new()),
            Some(HeaderValue::from_static("*"))
        );
    }
}
