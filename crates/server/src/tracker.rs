//! The tracker endpoints shops already call: `POST /api/v2` and `POST /api/v2/batch`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use serde::Serialize;
use spoor_ingest::{Accepted, IngestError, KeyProblem, Outcome, Refusal};
use spoor_log::LogError;
use spoor_protocol::EventKind;
use spoor_protocol::batch::{Batch, Framing};
use spoor_settings::ProductUpdates;

use crate::app::{AppState, Shared, now_ms};
use crate::error::ApiError;
use crate::{access, auth, body};

/// The largest single event body, before and after decompression.
pub const EVENT_BODY_LIMIT: usize = 1024 * 1024;
/// The largest batch body, before and after decompression.
pub const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Serialize)]
pub struct EventAnswer {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

impl From<&Accepted> for EventAnswer {
    fn from(accepted: &Accepted) -> Self {
        match accepted.outcome {
            Outcome::Stored(position) => EventAnswer {
                status: "ok",
                position: Some(position),
                message: None,
            },
            // "Duplicated request" is the phrase shop plugins look for.
            Outcome::Duplicate => EventAnswer {
                status: "duplicate",
                position: None,
                message: Some(
                    "Duplicated request: an identical request was accepted within the last \
                     24 hours; it is stored once",
                ),
            },
            Outcome::Ignored => EventAnswer {
                status: "ignored",
                position: None,
                message: Some("plugin log record acknowledged; spoor does not store plugin logs"),
            },
        }
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Stored(_) => "stored",
        Outcome::Duplicate => "duplicate",
        Outcome::Ignored => "ignored",
    }
}

/// Counts an item's result and logs a rejection by code and field path: never its message,
/// which may quote a value the client sent (an email, a phone).
fn record(state: &AppState, result: &Result<Accepted, IngestError>) {
    match result {
        Ok(accepted) => state
            .metrics
            .accepted(accepted.event, outcome_label(&accepted.outcome)),
        Err(error) => {
            state.metrics.rejected(error);
            state.refusals.count(error);
            match error {
                IngestError::Rejected { error, event, .. } => tracing::debug!(
                    code = error.code.as_str(),
                    path = error.path.as_deref().unwrap_or(""),
                    event = event.map(|e| e.as_str()),
                    "event rejected"
                ),
                IngestError::KeyRequired {
                    event,
                    site_id,
                    problem,
                } => tracing::info!(
                    event = event.as_str(),
                    site_id = %site_id,
                    problem = ?problem,
                    "event without its site's key rejected (the site's productUpdates setting)"
                ),
                IngestError::UnknownSite { event, .. } => {
                    tracing::debug!(
                        event = event.as_str(),
                        "event for an unregistered site rejected"
                    )
                }
                // The log says once that it stalled or lost its brokers: not once per
                // event (a full disk must not fill the server's log too).
                IngestError::Log(LogError::Stalled(_) | LogError::Unavailable(_)) => {}
                other => tracing::warn!(error = %other, "event not stored"),
            }
        }
    }
}

/// `POST /api/v2`: one event, acknowledged once durable.
pub async fn track(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Json<EventAnswer>, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(&state, &parts.headers, body, false, EVENT_BODY_LIMIT)
        .await?
        .1;
    let client = access::client_address(&state, &parts.headers, peer);
    let key = OfferedKey::of(&state, &parts.headers, client);
    let admit = |site_id: &str, kind: EventKind| admit(&state, site_id, kind, &key, client);
    let result = (state.ingestor)
        .ingest_one_admitted(&bytes, now_ms(), &admit)
        .await;
    record(&state, &result);
    count_refused_key(&state, client, std::slice::from_ref(&result));
    result
        .map(|accepted| Json(EventAnswer::from(&accepted)))
        .map_err(ApiError::from)
}

/// The tracker's answers carry `Access-Control-Allow-Origin: *`: the browser script posts
/// from the shop's pages (as `text/plain`, so with no preflight) and reads whether its
/// events were taken. The requests carry no credentials, and an answer tells the page
/// only about the events it sent.
pub async fn readable_anywhere(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        axum::http::HeaderValue::from_static("*"),
    );
    response
}

/// The longest key a tracker request is heard with: keys and tokens are far shorter, and
/// each event that needs one hashes it.
const MAX_KEY_BYTES: usize = 256;

/// The key a tracker request offers for events that need one, checked once per site
/// and request (a batch may hold hundreds of such events).
struct OfferedKey<'a> {
    key: Option<&'a str>,
    /// Set when the address sent too many refused keys lately: how long it must wait.
    wait: Option<Duration>,
    checked: Mutex<Vec<(String, bool)>>,
}

impl<'a> OfferedKey<'a> {
    fn of(state: &AppState, headers: &'a HeaderMap, client: IpAddr) -> OfferedKey<'a> {
        let key = auth::bearer(headers).filter(|key| !key.is_empty());
        let wait = key.and_then(|_| {
            (state.guesses).wait(access::network_of(client), std::time::Instant::now())
        });
        OfferedKey {
            key,
            wait,
            checked: Mutex::default(),
        }
    }

    /// Whether the key opens `site_id`'s keyed events; what was wrong otherwise. An
    /// address over its budget of refused keys is heard with a good key only, as on the
    /// keyed routes.
    fn opens(&self, state: &AppState, site_id: &str) -> Result<(), KeyProblem> {
        let Some(key) = self.key else {
            return Err(KeyProblem::Missing);
        };
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        let good = match checked.iter().find(|(site, _)| site == site_id) {
            Some((_, good)) => *good,
            None => {
                let good = key.len() <= MAX_KEY_BYTES
                    && (state.settings.sites.verify_api_key(site_id, key)
                        || auth::is_admin_token(key, &state.admin_token));
                checked.push((site_id.to_string(), good));
                good
            }
        };
        match (good, self.wait) {
            (true, _) => Ok(()),
            (false, Some(wait)) => Err(KeyProblem::TooManyRefused(wait)),
            (false, None) => Err(KeyProblem::NotTheSites),
        }
    }
}

/// A key carried and refused counts against its address, as on the keyed routes: the
/// tracker must not be a place to guess site keys at leisure.
fn count_refused_key(state: &AppState, client: IpAddr, results: &[Result<Accepted, IngestError>]) {
    let refused = |r: &Result<Accepted, IngestError>| {
        matches!(
            r,
            Err(IngestError::KeyRequired {
                problem: KeyProblem::NotTheSites,
                ..
            })
        )
    };
    if results.iter().any(refused) {
        (state.guesses).failed(access::network_of(client), std::time::Instant::now());
    }
}

/// Whether `client`, offering `key`, may send `site_id` another event of `kind`: the
/// site's key where the site asks for one (its catalogue updates, by its `productUpdates`
/// setting), and its ingest rate limit, when it has one (most have none: a shop's server
/// posts for every visitor from one address).
fn admit(
    state: &AppState,
    site_id: &str,
    kind: EventKind,
    key: &OfferedKey<'_>,
    client: IpAddr,
) -> Result<(), Refusal> {
    let sites = &state.settings.sites;
    if kind == EventKind::ProductUpdate && sites.product_updates(site_id) == ProductUpdates::WithKey
    {
        key.opens(state, site_id).map_err(Refusal::Key)?;
    }
    match sites.ingest_rate_limit(site_id) {
        Some(limit) => state
            .ingest_limiters
            .check(site_id, limit, client)
            .map_err(Refusal::Wait),
        None => Ok(()),
    }
}

async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    allow_ndjson: bool,
    limit: usize,
) -> Result<(Framing, Bytes), ApiError> {
    let read = async {
        let framing = body::framing(headers, allow_ndjson)?;
        Ok((framing, body::read(headers, body, limit).await?))
    };
    read.await
        .inspect_err(|e: &ApiError| state.metrics.rejected_as("unknown", e.code))
}

#[derive(Serialize)]
pub struct BatchAnswer {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<ItemAnswer>,
}

#[derive(Serialize)]
pub struct ItemAnswer {
    index: usize,
    #[serde(flatten)]
    answer: ItemResult,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ItemResult {
    Accepted(EventAnswer),
    Rejected {
        status: &'static str,
        error: &'static str,
        message: String,
    },
}

/// `POST /api/v2/batch`: a JSON array or NDJSON of up to
/// [`spoor_protocol::batch::MAX_EVENTS`] events.
pub async fn track_batch(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Json<BatchAnswer>, ApiError> {
    let (parts, body) = request.into_parts();
    let (framing, bytes) = read_body(&state, &parts.headers, body, true, BATCH_BODY_LIMIT).await?;
    let batch = Batch::split(&bytes, framing)
        .map_err(ApiError::from)
        .inspect_err(|e| state.metrics.rejected_as("unknown", e.code))?;
    let items = batch.items();
    let client = access::client_address(&state, &parts.headers, peer);
    let key = OfferedKey::of(&state, &parts.headers, client);
    let admit = |site_id: &str, kind: EventKind| admit(&state, site_id, kind, &key, client);
    let results = (state.ingestor)
        .ingest_many_admitted(&items, now_ms(), &admit)
        .await;
    count_refused_key(&state, client, &results);
    let mut answer = BatchAnswer {
        accepted: 0,
        duplicates: 0,
        rejected: 0,
        results: Vec::with_capacity(results.len()),
    };
    for (index, result) in results.iter().enumerate() {
        record(&state, result);
        let item = match result {
            Ok(accepted) => {
                match accepted.outcome {
                    Outcome::Duplicate => answer.duplicates += 1,
                    _ => answer.accepted += 1,
                }
                ItemResult::Accepted(EventAnswer::from(accepted))
            }
            Err(error) => {
                answer.rejected += 1;
                let api = ApiError::from(error);
                ItemResult::Rejected {
                    status: "rejected",
                    error: api.code,
                    message: api.message,
                }
            }
        };
        answer.results.push(ItemAnswer {
            index,
            answer: item,
        });
    }
    // Nothing stored because storage failed (a full disk): the batch is an outage, as a
    // single event is, and to be retried whole.
    let storage_failed = (results.iter()).find_map(|r| r.as_ref().err().filter(|e| is_storage(e)));
    if let Some(error) = storage_failed
        && !results.iter().any(|r| r.is_ok())
    {
        return Err(ApiError::from(error));
    }
    Ok(Json(answer))
}

fn is_storage(error: &IngestError) -> bool {
    match error {
        IngestError::Log(error) => !matches!(error, LogError::RecordTooLarge(_)),
        IngestError::Storage(_) => true,
        _ => false,
    }
}
