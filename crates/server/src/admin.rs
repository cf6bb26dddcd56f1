//! `/admin/v1/...`: sites, and the log read out or loaded in. Every route needs the admin
//! token.

use std::io::Write;

use crate::body::SettingsBody;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spoor_ingest::FeedSummary;
use spoor_ingest::export::{ExportFilter, ImportSummary, export};
use spoor_settings::{Registration, Site};
use tokio::sync::mpsc;

use crate::app::{AppState, Shared, blocking, now_ms};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::{auth, body};

/// The largest import body; `spoor events import --url` sends files in pieces below it.
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if auth::is_admin(headers, &state.admin_token) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

#[derive(Serialize)]
pub struct SiteList {
    sites: Vec<Site>,
}

pub async fn list_sites(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<SiteList>, ApiError> {
    require_admin(&state, &headers)?;
    Ok(Json(SiteList {
        sites: state.settings.sites.list(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSite {
    site_id: Option<String>,
    name: Option<String>,
}

/// `POST /admin/v1/sites`: 201 with the new site; 409 when the id is taken.
pub async fn create_site(
    State(state): State<Shared>,
    headers: HeaderMap,
    SettingsBody(body): SettingsBody,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let request: NewSite = if body.trim_ascii().is_empty() {
        NewSite::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("expected {{\"siteId\": \"...\", \"name\": \"...\"}} (both optional): {e}"),
            )
        })?
    };
    let sites = state.settings.sites.clone();
    let registered = blocking(move || -> Result<_, ApiError> {
        let (site, registration) = sites.register(
            request.site_id.as_deref().map(str::trim),
            request.name.as_deref(),
            now_ms(),
        )?;
        let api_key = match registration {
            Registration::Created => Some(sites.issue_api_key(&site.site_id).map_err(|error| {
                tracing::error!(%error, "a new site's API key was not saved");
                let id = &site.site_id;
                ApiError::unavailable(format!(
                    "site {id:?} was registered, but its API key could not be saved: issue \
                     one with POST /admin/v1/sites/{id}/api-key"
                ))
            })?),
            Registration::Existing => None,
        };
        Ok((site, registration, api_key))
    });
    let (site, registration, api_key) = registered.await??;
    match (registration, api_key) {
        (Registration::Created, Some(api_key)) => {
            tracing::info!(site_id = %site.site_id, "site registered");
            let created = NewSiteAnswer { site, api_key };
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "site_exists",
            format!("site {:?} is registered already", site.site_id),
        )),
    }
}

/// A created site, with its read-API key: shown this once, kept only as a digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSiteAnswer {
    #[serde(flatten)]
    site: Site,
    api_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAnswer {
    site_id: String,
    api_key: String,
}

/// `POST /admin/v1/sites/{siteId}/api-key`: a new read-API key, replacing the old one.
pub async fn issue_api_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
) -> Result<Json<ApiKeyAnswer>, ApiError> {
    require_admin(&state, &headers)?;
    if !state.settings.sites.contains(&site_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_site",
            format!("site {site_id:?} is not registered"),
        ));
    }
    let (sites, id) = (state.settings.sites.clone(), site_id.clone());
    let api_key = blocking(move || sites.issue_api_key(&id)).await??;
    tracing::info!(site_id = %site_id, "site API key issued");
    Ok(Json(ApiKeyAnswer { site_id, api_key }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    site: Option<String>,
    since: Option<i64>,
}

/// `GET /admin/v1/events/export?site=&since=`: the log as NDJSON, streamed.
pub async fn export_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let filter = ExportFilter {
        site_id: query.site,
        since_ms: query.since,
    };
    let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let (log, keys) = (state.log.clone(), state.live.keyring());
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            sender,
            buf: Vec::with_capacity(EXPORT_CHUNK_BYTES),
        };
        // A panic midway must end the response as failed too, never as a short file.
        let exported = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            export(&*log, keys.as_deref(), &filter, &mut writer).map(|_| ())
        }));
        let result = match exported {
            Ok(result) => result.map_err(std::io::Error::other),
            Err(_) => Err(std::io::Error::other("the export stopped inside spoor")),
        };
        let result = result.and_then(|()| writer.flush());
        if let Err(error) = result {
            tracing::error!(%error, "export stopped");
            // Abort the response, so the client sees a failed transfer, not a short file.
            let _ = writer.sender.blocking_send(Err(error));
        }
    });
    let mut response = streamed(receiver).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// A response body of the chunks a blocking thread sends (an error ends it as failed).
fn streamed(receiver: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Body::from_stream(stream)
}

/// Hands the export to the response in chunks, from a blocking thread.
struct ChunkWriter {
    sender: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(EXPORT_CHUNK_BYTES),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// The largest feed body.
pub const FEED_BODY_LIMIT: usize = 128 * 1024 * 1024;

/// `POST /admin/v1/sites/{siteId}/feed`: a Google Merchant RSS 2.0 (or Atom) product
/// feed. The site's API key or the admin token.
pub async fn import_feed(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiPath(site_id): ApiPath<String>,
    request_body: Body,
) -> Result<Json<FeedSummary>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    let xml = body::read(&headers, request_body, FEED_BODY_LIMIT).await?;
    let ingestor = state.ingestor.clone();
    let site = site_id.clone();
    let summary = state
        .in_background(async move { ingestor.import_feed(&site, &xml, now_ms()).await })
        .await??;
    tracing::info!(
        site_id = %site_id,
        items = summary.items,
        imported = summary.imported,
        rejected = summary.rejected.len(),
        "feed imported"
    );
    Ok(Json(summary))
}

/// How long a snapshot asked for over HTTP may take, copy and write.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The header that says which log a sent snapshot was derived from.
pub const LOG_IDENTITY_HEADER: &str = "spoor-log-identity";
/// The header that says how many log records a sent snapshot reflects (at least).
pub const SNAPSHOT_POSITION_HEADER: &str = "spoor-snapshot-position";

fn not_saved(spoor_live::NotSaved(reason): spoor_live::NotSaved) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "snapshot_not_saved",
        format!("the state snapshot was not saved: {reason}"),
    )
}

/// `GET /admin/v1/state/snapshot`: a snapshot saved now, sent whole: how a new engine
/// node starts from a peer's state rather than from the log's beginning (`spoor state
/// fetch`).
pub async fn send_snapshot(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let live = state.live.clone();
    let saved = blocking(move || live.snapshot_now(SNAPSHOT_WAIT))
        .await?
        .map_err(not_saved)?;
    let path = (state.live.snapshot_path())
        .ok_or_else(|| not_saved(spoor_live::NotSaved("this node keeps no snapshots".into())))?
        .to_path_buf();
    // Opened before it is sent: a save meanwhile renames a newer file into place, and this
    // one is still read whole.
    let file = blocking(move || std::fs::File::open(&path))
        .await?
        .map_err(|e| ApiError::unavailable(format!("open the state snapshot: {e}")))?;
    let length = file.metadata().map(|m| m.len()).ok();
    let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            sender,
            buf: Vec::with_capacity(EXPORT_CHUNK_BYTES),
        };
        let mut file = file;
        let sent = std::io::copy(&mut file, &mut writer).and_then(|_| writer.flush());
        if let Err(error) = sent {
            tracing::warn!(%error, "sending the state snapshot stopped");
            let _ = writer.sender.blocking_send(Err(error));
        }
    });
    let mut response = streamed(receiver).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(SNAPSHOT_POSITION_HEADER, HeaderValue::from(saved.position));
    if let Ok(identity) = HeaderValue::from_str(&state.log_identity) {
        headers.insert(LOG_IDENTITY_HEADER, identity);
    }
    Ok(response)
}

/// `POST /admin/v1/state/snapshot`: saves a state snapshot now (before a backup or an
/// upgrade, so that the next start replays little) and answers once it is on disk.
pub async fn save_snapshot(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<spoor_live::SavedSnapshot>, ApiError> {
    require_admin(&state, &headers)?;
    let live = state.live.clone();
    let saved = blocking(move || live.snapshot_now(SNAPSHOT_WAIT)).await?;
    saved.map(Json).map_err(not_saved)
}

/// `POST /admin/v1/events/import`: NDJSON lines of an export, loaded idempotently.
pub async fn import_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Json<ImportSummary>, ApiError> {
    require_admin(&state, &headers)?;
    let bytes = body::read(&headers, request_body, IMPORT_BODY_LIMIT).await?;
    let ingestor = state.ingestor.clone();
    let summary = state
        .in_background(async move {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                ApiError::bad_request("invalid_body", format!("the body is not UTF-8: {e}"))
            })?;
            let lines: Vec<&str> = text.lines().collect();
            Ok::<_, ApiError>(ingestor.import(&lines, now_ms()).await?)
        })
        .await??;
    tracing::info!(
        imported = summary.imported,
        already_present = summary.already_present,
        errors = summary.error_count,
        "import finished"
    );
    Ok(Json(summary))
}
