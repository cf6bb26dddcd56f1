//! Contacts: one looked up by an identifier, shown with its identifiers, merges and
//! profile, and what it did as one timeline; its data downloaded; erased after the
//! identifier is typed again.
//!
//! A contact is asked for by POST, never in the address: an email in a URL would stay
//! in the browser's history and in proxies' logs.

use axum::Form;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use spoor_protocol::dates::format_datetime;

use super::pages::{self, csrf_field};
use super::session::{Session, Signed};
use super::{Section, refused_change, unseen_site};
use crate::app::Shared;
use crate::extract::{ApiPath, ApiQuery};
use crate::state as api;

/// Timeline entries shown, newest first.
const TIMELINE_SHOWN: usize = 200;
const KINDS: [(&str, &str); 5] = [
    ("email", "Email"),
    ("phone", "Phone"),
    ("sc", "Cookie (sc)"),
    ("externalCustomerId", "External id"),
    ("contactId", "Contact number"),
];

#[derive(Deserialize, Default)]
pub struct LookupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    value: String,
    /// The identifier typed again, to erase.
    #[serde(default)]
    confirm: String,
}

impl LookupForm {
    fn query(&self) -> Vec<(String, String)> {
        vec![(self.by.clone(), self.value.trim().to_string())]
    }
}

fn lookup_form(session: &Session, site_id: &str, form: &LookupForm) -> Markup {
    html! {
        form.lookup method="post" action={ "/ui/sites/" (site_id) "/contacts" } {
            (csrf_field(session))
            label for="lookup-by" { "Find by" }
            select #lookup-by name="by" {
                @for (value, label) in KINDS {
                    option value=(value) selected[form.by == value] { (label) }
                }
            }
            label for="lookup-value" { "Identifier" }
            input #lookup-value name="value" value=(form.value) required autocomplete="off";
            button type="submit" { "Find" }
        }
    }
}

/// `GET /ui/sites/{siteId}/contacts`: the lookup form.
pub async fn page(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let body = lookup_form(&session, &site_id, &LookupForm::default());
    pages::site_page(&session, &site_id, Section::Contacts, "Contacts", body).into_response()
}

/// `POST /ui/sites/{siteId}/contacts`: the contact the form names.
pub async fn find(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<LookupForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let found = api::contact(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
        ApiQuery(form.query()),
    )
    .await;
    let (status, shown) = match found {
        Ok(contact) => (
            StatusCode::OK,
            contact_view(&session, &site_id, &form, &contact.0),
        ),
        // Nobody by that identifier is an answer, not a failure of the page.
        Err(error) if error.status == StatusCode::NOT_FOUND => (
            StatusCode::OK,
            html! { p #not-found role="status" { "No contact is known by this identifier." } },
        ),
        Err(error) => (
            error.status,
            html! { p.field-error role="alert" { (error.message) } },
        ),
    };
    let body = html! { (lookup_form(&session, &site_id, &form)) (shown) };
    pages::site_page(&session, &site_id, Section::Contacts, "Contacts", body).with_status(status)
}

fn when(at: &Value) -> String {
    at.as_i64().map_or_else(String::new, format_datetime)
}

/// Everything the contact did that has a time, newest first.
fn timeline(contact: &Value) -> Vec<(i64, &'static str, String)> {
    let mut entries = Vec::new();
    let at_of = |v: &Value| v["at"].as_i64();
    for seen in contact["viewedProducts"].as_array().into_iter().flatten() {
        if let Some(at) = at_of(seen) {
            entries.push((
                at,
                "Viewed product",
                seen["key"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for seen in contact["viewedCategories"].as_array().into_iter().flatten() {
        if let Some(at) = at_of(seen) {
            let what = seen["key"]
                .as_str()
                .or(seen["category"].as_str())
                .unwrap_or("");
            entries.push((at, "Viewed category", what.to_string()));
        }
    }
    for search in contact["searches"].as_array().into_iter().flatten() {
        if let Some(at) = at_of(search) {
            let query = search["query"].as_str().unwrap_or("");
            entries.push((at, "Searched", query.to_string()));
        }
    }
    for (key, at) in contact["wishlist"].as_object().into_iter().flatten() {
        if let Some(at) = at.as_i64() {
            entries.push((at, "Added to wishlist", key.clone()));
        }
    }
    for (number, order) in contact["orders"].as_object().into_iter().flatten() {
        let at = order["at"]
            .as_i64()
            .or(order["datetime"].as_i64())
            .unwrap_or(0);
        let lines = order["lines"].as_array().map_or(0, Vec::len);
        entries.push((at, "Ordered", format!("order {number}, {lines} lines")));
    }
    if let Some(at) = contact["cart"]["at"].as_i64() {
        let lines = contact["cart"]["lines"].as_array().map_or(0, Vec::len);
        entries.push((at, "Cart", format!("{lines} lines")));
    }
    for merge in contact["merges"].as_array().into_iter().flatten() {
        if let Some(at) = at_of(merge) {
            entries.push((at, "Merged", "another contact became this one".to_string()));
        }
    }
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    entries.truncate(TIMELINE_SHOWN);
    entries
}

fn contact_view(session: &Session, site_id: &str, form: &LookupForm, contact: &Value) -> Markup {
    let identifiers = contact["identifiers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let profile = contact["profile"].as_object().cloned().unwrap_or_default();
    html! {
        section #contact aria-labelledby="contact-h" {
            h2 #contact-h { "Contact " (contact["id"]) }
            p { "First seen " (when(&contact["firstSeen"])) ", last seen " (when(&contact["lastSeen"])) " (UTC)." }
            h3 { "Identifiers" }
            dl.pairs {
                @for (kind, values) in &identifiers {
                    dt { (kind) }
                    dd { (plain(values)) }
                }
            }
            h3 { "Profile" }
            @if profile.is_empty() { p { "Nothing but identifiers." } }
            dl.pairs {
                @for (field, value) in &profile {
                    dt { (field) }
                    dd { (plain(value)) }
                }
            }
            @if let Some(lines) = contact["cart"]["lines"].as_array() {
                h3 { "Cart" }
                ul { @for line in lines { li { (plain(&line["productKey"])) " × " (plain(&line["quantity"])) } } }
            }
            h3 { "Timeline" }
            @let entries = timeline(contact);
            @if entries.is_empty() { p { "Nothing yet." } }
            ol.timeline {
                @for (at, what, detail) in &entries {
                    li { time { (format_datetime(*at)) } " " strong { (what) } " " (detail) }
                }
            }
            h3 { "This person's data" }
            form.inline method="post" action={ "/ui/sites/" (site_id) "/contacts/export" } {
                (csrf_field(session))
                input type="hidden" name="by" value=(form.by);
                input type="hidden" name="value" value=(form.value);
                button type="submit" { "Download everything held (JSON)" }
            }
            form.erase method="post" action={ "/ui/sites/" (site_id) "/contacts/erase" } {
                (csrf_field(session))
                input type="hidden" name="by" value=(form.by);
                input type="hidden" name="value" value=(form.value);
                label for="erase-confirm" { "To erase this contact from the log and the state, type " strong { (form.value.trim()) } " again" }
                input #erase-confirm name="confirm" required autocomplete="off";
                button.danger type="submit" { "Erase" }
            }
        }
    }
}

/// A JSON value as plain text: strings bare, lists joined, a dated value as its value.
fn plain(value: &Value) -> String {
    match value {
        Value::Object(map) if map.contains_key("value") => plain(&map["value"]),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `POST /ui/sites/{siteId}/contacts/export`: everything held about the contact, as a
/// download.
pub async fn export(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<LookupForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let exported = api::export_contact(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
        ApiQuery(form.query()),
    )
    .await;
    match exported {
        Ok(export) => {
            let mut response = export.into_response();
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"contact-export.json\""),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => pages::message(error.status, "Not exported", &error.message),
    }
}

/// `POST /ui/sites/{siteId}/contacts/erase`: erases the contact once its identifier was
/// typed again.
pub async fn erase(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<LookupForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    if form.confirm.trim() != form.value.trim() || form.value.trim().is_empty() {
        let body = html! {
            (lookup_form(&session, &site_id, &form))
            p #erase-refused .field-error role="alert" {
                "Not erased: the identifier typed to confirm does not match. Look the contact up again to erase it."
            }
        };
        return pages::site_page(&session, &site_id, Section::Contacts, "Contacts", body)
            .with_status(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let erased = api::erase_contact(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
        ApiQuery(form.query()),
    )
    .await;
    let (status, said) = match erased {
        Ok(_) => {
            tracing::info!(site_id = %site_id, "contact erased from the dashboard");
            (
                StatusCode::OK,
                html! { p #erased .notice role="status" { "Erased: the contact's personal data is gone from the log, the state and the trigger outbox." } },
            )
        }
        Err(error) => (
            error.status,
            html! { p.field-error role="alert" { (error.message) } },
        ),
    };
    let empty = LookupForm {
        by: form.by.clone(),
        ..LookupForm::default()
    };
    let body = html! { (said) (lookup_form(&session, &site_id, &empty)) };
    pages::site_page(&session, &site_id, Section::Contacts, "Contacts", body).with_status(status)
}
