//! `/admin/v1/sites/{siteId}/blocks/...`: recommendation blocks, defined by the shop (its
//! API key) or an admin, asked for by `GET /api/v2/recommendations?block=`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use spoor_engine::recommend::blocks::{Block, BlockError, container_type};

use crate::error::ApiError;
use crate::{AppState, auth};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAnswer {
    block_id: String,
    /// What answers, impressions and clicks carry: one per variant.
    container_types: Vec<String>,
    #[serde(flatten)]
    block: Arc<Block>,
}

impl BlockAnswer {
    fn new(block_id: String, block: Arc<Block>) -> BlockAnswer {
        let container_types = block
            .variant_ids()
            .into_iter()
            .map(|variant| container_type(&block_id, variant))
            .collect();
        BlockAnswer {
            block_id,
            container_types,
            block,
        }
    }
}

#[derive(Serialize)]
pub struct BlockList {
    blocks: Vec<BlockAnswer>,
}

impl From<BlockError> for ApiError {
    fn from(error: BlockError) -> ApiError {
        match error {
            BlockError::Invalid(message) => ApiError::bad_request("invalid_value", message),
            BlockError::Storage(message) => {
                tracing::error!(%message, "blocks not saved");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_failed",
                    "the block could not be saved; nothing changed",
                )
            }
        }
    }
}

fn known_site(state: &AppState, site_id: &str) -> Result<(), ApiError> {
    if state.ingestor.sites().contains(site_id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_site",
            format!("site {site_id:?} is not registered"),
        ))
    }
}

pub fn unknown_block(site_id: &str, block_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_block",
        format!(
            "no block {block_id:?} is defined for site {site_id}; define it with PUT \
             /admin/v1/sites/{site_id}/blocks/{block_id}, or ask by algorithm=NAME"
        ),
    )
}

/// `PUT /admin/v1/sites/{siteId}/blocks/{blockId}`: 201 when new, 200 when replaced.
pub async fn put_block(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((site_id, block_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let block = Block::from_json(&body).map_err(|message| {
        ApiError::bad_request(
            "invalid_block",
            format!("{message} (a block is {{\"algorithm\": \"similar,popular\", \"size\": 8, \"filters\": {{...}}, \"variants\": [...]}})"),
        )
    })?;
    let created = state.blocks.put(&site_id, &block_id, block)?;
    tracing::info!(site_id = %site_id, block_id = %block_id, created, "block defined");
    let block = state
        .blocks
        .get(&site_id, &block_id)
        .ok_or_else(|| unknown_block(&site_id, &block_id))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(BlockAnswer::new(block_id, block))).into_response())
}

/// `GET /admin/v1/sites/{siteId}/blocks/{blockId}`
pub async fn get_block(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((site_id, block_id)): Path<(String, String)>,
) -> Result<Json<BlockAnswer>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    let block = state
        .blocks
        .get(&site_id, &block_id)
        .ok_or_else(|| unknown_block(&site_id, &block_id))?;
    Ok(Json(BlockAnswer::new(block_id, block)))
}

/// `DELETE /admin/v1/sites/{siteId}/blocks/{blockId}`: 204; 404 when there is none.
pub async fn delete_block(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((site_id, block_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    if state.blocks.delete(&site_id, &block_id)? {
        tracing::info!(site_id = %site_id, block_id = %block_id, "block deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown_block(&site_id, &block_id))
    }
}

/// `GET /admin/v1/sites/{siteId}/blocks`
pub async fn list_blocks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(site_id): Path<String>,
) -> Result<Json<BlockList>, ApiError> {
    auth::require_site(&headers, &state, &site_id)?;
    known_site(&state, &site_id)?;
    let blocks = state
        .blocks
        .list(&site_id)
        .into_iter()
        .map(|(id, block)| BlockAnswer::new(id, block))
        .collect();
    Ok(Json(BlockList { blocks }))
}
