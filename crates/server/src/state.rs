//! `/api/v1/sites/{siteId}/...`: the state derived from the log, read-only.
//!
//! The state follows the log a moment behind the 200 of an event. A client that wants to
//! read its own write passes `after=<position>` (the `position` of its POST's answer): the
//! answer then waits, up to [`READ_YOUR_WRITE_WAIT`], for the state to include it.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spoor_engine::{Identifier, SiteCounts, SiteState};
use spoor_live::LiveState;
use spoor_live::erasure::{self, ContactExport, Erasure, PrivacyError};
use spoor_log::{EventLog, LogError};

use crate::app::{AppState, Shared, blocking};
use crate::auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};

pub const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(2);

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}

/// Waits until the state includes the record at `after`, if one was named.
pub(crate) async fn wait_for(state: &AppState, after: Option<u64>) -> Result<(), ApiError> {
    let Some(after) = after else { return Ok(()) };
    let end = state.log.end();
    if after >= end {
        // No such record: waiting could not help.
        return Err(ApiError::bad_request(
            "invalid_value",
            format!(
                "after: no record at position {after} (the log holds {end}); pass the position \
                 an event's 200 answered"
            ),
        ));
    }
    let deadline = Instant::now() + READ_YOUR_WRITE_WAIT;
    while state.live.applied() <= after {
        if Instant::now() >= deadline {
            return Err(ApiError::unavailable(format!(
                "the state has not reached position {after} yet (it is at {}); retry",
                state.live.applied()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What every route here does first: the site's key or the admin token, a registered
/// site, and the state at `after` when one was named.
pub(crate) async fn enter(
    state: &AppState,
    headers: &HeaderMap,
    site_id: &str,
    after: Option<u64>,
) -> Result<(), ApiError> {
    auth::require_site(headers, state, site_id)?;
    known_site(state, site_id)?;
    state_usable(state)?;
    wait_for(state, after).await
}

/// 503 while the state is failed (a panic left it possibly part-changed): nothing is
/// answered from it while the process stops to restart.
pub(crate) fn state_usable(state: &AppState) -> Result<(), ApiError> {
    if state.live.failed() {
        return Err(ApiError::unavailable(
            "spoor is restarting its state after an internal failure; retry in a moment",
        ));
    }
    Ok(())
}

pub(crate) fn known_site(state: &AppState, site_id: &str) -> Result<(), ApiError> {
    if state.settings.sites.contains(site_id) {
        Ok(())
    } else {
        Err(not_found(format!("site {site_id:?} is not registered")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    pub(crate) after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteQuery {
    pub(crate) after: Option<u64>,
    /// `1` (or `true`) to include the state's digest: compares with `spoor state rebuild`.
    pub(crate) digest: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteAnswer {
    site_id: String,
    #[serde(flatten)]
    pub(crate) counts: SiteCounts,
    /// Log records the state reflects, of all sites.
    pub(crate) state_position: u64,
    pub(crate) log_end: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_digest: Option<String>,
}

/// `GET /api/v1/sites/{siteId}`: counts of what the site's state holds.
pub async fn site(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<SiteQuery>,
) -> Result<Json<SiteAnswer>, ApiError> {
    enter(&state, &headers, &site_id, query.after).await?;
    let with_digest = matches!(query.digest.as_deref(), Some("1" | "true"));
    let engine = state.live.read();
    let site = engine.site(&site_id);
    let empty = SiteState::default();
    let site = site.unwrap_or(&empty);
    let counts = site.counts();
    let state_digest = with_digest.then(|| site.digest());
    drop(engine);
    Ok(Json(SiteAnswer {
        site_id,
        counts,
        state_position: state.live.applied(),
        log_end: state.log.end(),
        state_digest,
    }))
}

/// How a query names a contact: one identifier, or its number; and `after`.
enum Who {
    Identifier(Identifier),
    Number(u32),
}

const NAMING: &str = "sc, externalCustomerId, email, phone, esContactId or contactId";

fn who_and_after(query: &[(String, String)]) -> Result<(Who, Option<u64>), ApiError> {
    let mut after = None;
    let mut who = None;
    for (key, value) in query {
        if key == "after" {
            let position = value.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_value", "after: expected a log position")
            })?;
            after = Some(position);
            continue;
        }
        if who.is_some() {
            return Err(ApiError::bad_request(
                "invalid_value",
                "name the contact by one identifier only",
            ));
        }
        who = Some(match key.as_str() {
            "contactId" => Who::Number(value.parse().map_err(|_| {
                ApiError::bad_request("invalid_value", "contactId: expected a number")
            })?),
            kind => Who::Identifier(Identifier::from_query(kind, value).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_value",
                    format!("{kind}: expected one of {NAMING}, with a value"),
                )
            })?),
        });
    }
    let who = who.ok_or_else(|| {
        ApiError::bad_request("missing_field", format!("name the contact: {NAMING}"))
    })?;
    Ok((who, after))
}

/// The identifier to act on: a number is turned into one of the contact's identifiers.
fn identifier_of(state: &AppState, site_id: &str, who: Who) -> Result<Identifier, ApiError> {
    match who {
        Who::Identifier(id) => Ok(id),
        Who::Number(number) => {
            let engine = state.live.read();
            engine
                .site(site_id)
                .and_then(|s| s.contact_by_id(number))
                .filter(|c| !state.live.hides(site_id, c.id))
                .and_then(|c| c.identifiers.all().into_iter().next())
                .ok_or_else(|| not_found("no contact with this contactId".into()))
        }
    }
}

/// `GET /api/v1/sites/{siteId}/contacts?sc=|externalCustomerId=|email=|phone=|esContactId=|contactId=`
pub async fn contact(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (who, after) = who_and_after(&query)?;
    enter(&state, &headers, &site_id, after).await?;
    let engine = state.live.read();
    let site = engine.site(&site_id);
    let contact = match &who {
        Who::Number(number) => site.and_then(|s| s.contact_by_id(*number)),
        Who::Identifier(id) => site.and_then(|s| s.contact(id)),
    };
    let contact = contact
        .filter(|c| !state.live.hides(&site_id, c.id))
        .ok_or_else(|| not_found("no such contact".into()))?;
    let site = site.expect("a contact was found in it");
    Ok(Json(site.contact_json(contact)))
}

/// An export or an erasure, as `spoor_live::erasure` offers them.
type PrivacyRequest<T> =
    fn(&dyn EventLog, &LiveState, &str, &Identifier) -> Result<Option<T>, PrivacyError>;

/// Runs a privacy request (export or erasure) for the contact the query names, on a
/// blocking thread: both read the whole log.
async fn on_contact<T: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    site_id: String,
    query: &[(String, String)],
    request: PrivacyRequest<T>,
) -> Result<Json<T>, ApiError> {
    let (who, after) = who_and_after(query)?;
    enter(state, headers, &site_id, after).await?;
    let id = identifier_of(state, &site_id, who)?;
    run_privacy_request(state, site_id, id, request).await
}

/// Runs `request` for the contact `id` names, once the caller has been let in.
async fn run_privacy_request<T: Send + 'static>(
    state: &AppState,
    site_id: String,
    id: Identifier,
    request: PrivacyRequest<T>,
) -> Result<Json<T>, ApiError> {
    let (log, live) = (state.log.clone(), state.live.clone());
    let answer = tokio::task::spawn_blocking(move || request(&*log, &live, &site_id, &id))
        .await
        .map_err(|_| ApiError::unavailable("the request stopped inside spoor; retry"))?
        .map_err(privacy_error)?;
    answer
        .map(Json)
        .ok_or_else(|| not_found("no such contact".into()))
}

/// `GET /api/v1/sites/{siteId}/contacts/export?<identifier>=`: everything held about a
/// contact: its state and every log record naming it.
pub async fn export_contact(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<ContactExport>, ApiError> {
    on_contact(&state, &headers, site_id, &query, erasure::export).await
}

/// `DELETE /api/v1/sites/{siteId}/contacts?<identifier>=`: erases the contact's personal
/// data from the log, the state, and the trigger outbox.
pub async fn erase_contact(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Erasure>, ApiError> {
    // The outbox knows the contact by a digest of its email or a phone: read after the
    // state holds what `after` names, before the contact is gone from it, and overwritten
    // first, so that a failure here leaves the contact to erase again.
    let (who, after) = who_and_after(&query)?;
    enter(&state, &headers, &site_id, after).await?;
    let id = identifier_of(&state, &site_id, who)?;
    let mut checks = {
        let engine = state.live.read();
        (engine.site(&site_id))
            .and_then(|site| site.contact(&id))
            .map(spoor_triggers::payload::contact_checks)
            .unwrap_or_default()
    };
    if let Identifier::Email(reach) | Identifier::Phone(reach) = &id {
        checks.push(spoor_triggers::payload::check_of(reach));
    }
    checks.sort_unstable();
    checks.dedup();
    let triggers = state.triggers.clone();
    let forgotten = blocking(move || {
        (checks.iter()).try_fold(0, |n, check| {
            Ok::<_, spoor_triggers::TriggerError>(n + triggers.outbox().forget(check)?)
        })
    })
    .await??;
    if forgotten > 0 {
        tracing::info!(
            records = forgotten,
            "trigger outbox records of the contact erased"
        );
    }
    run_privacy_request(&state, site_id, id, erasure::erase).await
}

fn privacy_error(error: PrivacyError) -> ApiError {
    if let PrivacyError::Log(LogError::Unsupported(_)) = error {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            error.to_string(),
        );
    }
    tracing::error!(%error, "privacy request failed");
    ApiError::unavailable(format!("{error}; retry"))
}

/// `GET /api/v1/sites/{siteId}/products/{productKey}`
pub async fn product(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath((site_id, product_key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<AfterQuery>,
) -> Result<Json<Value>, ApiError> {
    enter(&state, &headers, &site_id, query.after).await?;
    let engine = state.live.read();
    let product = engine
        .site(&site_id)
        .and_then(|s| s.product(&product_key))
        .ok_or_else(|| not_found(format!("no product {product_key:?}")))?;
    Ok(Json(
        serde_json::to_value(product).expect("products serialise"),
    ))
}
