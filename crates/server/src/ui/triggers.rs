//! Triggers: what fired per type and day and how its deliveries went; the dead letters,
//! each with its last answer and a button to send it again; the settings; a test
//! delivery to a webhook.

use axum::Form;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use spoor_engine::timers::TriggerKind;
use spoor_protocol::dates::{DAY_MS, format_date};
use spoor_triggers::outbox::{DeliveryStatus, Entry, SiteTally};

use super::chart::{self, Series};
use super::pages::{self, csrf_field, number};
use super::session::{Session, Signed, Who};
use super::{Section, error_page, refused_change, unseen_site};
use crate::app::{Shared, now_ms};
use crate::body::SettingsBody;
use crate::extract::{ApiPath, ApiQuery};
use crate::triggers::{self as api, ReplayQuery};

/// Dead letters listed.
const DEAD_SHOWN: usize = 100;
const DAYS: i64 = 30;

#[derive(Deserialize, Default)]
pub struct Notice {
    /// What the last action came to, said once after its redirect: one of [`NOTICES`].
    done: Option<String>,
}

/// What an action came to, by the code its redirect carries (never text from the
/// address: a link could otherwise make the page say anything).
const NOTICES: [(&str, &str); 3] = [
    (
        "replayed",
        "Replayed: the delivery is owed again and goes out with the next round.",
    ),
    (
        "not-replayed",
        "Not replayed: that dead letter is no longer there.",
    ),
    ("saved", "Settings saved."),
];

fn notice(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    NOTICES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, text)| *text)
}

/// `GET /ui/sites/{siteId}/triggers`
pub async fn page(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    ApiQuery(said): ApiQuery<Notice>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let done = notice(said.done.as_deref());
    render(&state, &session, &site_id, done, None, None).await
}

async fn render(
    state: &Shared,
    session: &Session,
    site_id: &str,
    done: Option<&str>,
    settings_problem: Option<(&str, String)>,
    tested: Option<Markup>,
) -> Response {
    let settings = match api::get_settings(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.to_string()),
    )
    .await
    {
        Ok(settings) => settings.0,
        Err(error) => return error_page(error),
    };
    let tally = state.triggers.outbox().tally(site_id);
    let dead = state.triggers.outbox().dead_letters(site_id, DEAD_SHOWN);
    let settings_text = match &settings_problem {
        Some((text, _)) => text.to_string(),
        None => serde_json::to_string_pretty(&settings).unwrap_or_default(),
    };
    let webhooks: Vec<String> = settings.webhooks.iter().map(|h| h.id.clone()).collect();
    let body = html! {
        @if let Some(done) = done { p.notice role="status" { (done) } }
        (fired_section(&tally))
        (dead_section(session, site_id, &dead))
        section aria-labelledby="test-h" {
            h2 #test-h { "Test delivery" }
            @if webhooks.is_empty() {
                p { "No webhook is set: add one in the settings below." }
            } @else {
                form.lookup method="post" action={ "/ui/sites/" (site_id) "/triggers/test" } {
                    (csrf_field(session))
                    label for="test-webhook" { "Webhook" }
                    select #test-webhook name="webhook" {
                        @for id in &webhooks { option value=(id) { (id) } }
                    }
                    button type="submit" { "Send a sample" }
                }
            }
            @if let Some(tested) = tested { (tested) }
        }
        section aria-labelledby="settings-h" {
            h2 #settings-h { "Settings" }
            form method="post" action={ "/ui/sites/" (site_id) "/triggers" } novalidate {
                (csrf_field(session))
                div.field.wide {
                    label for="trigger-settings" { "Trigger settings (JSON)" }
                    textarea #trigger-settings name="settings" rows="18" spellcheck="false"
                        aria-invalid=[settings_problem.as_ref().map(|_| "true")]
                        aria-describedby={ "settings-hint" @if settings_problem.is_some() { " settings-error" } } { (settings_text) }
                    span #settings-hint .hint { "Webhook secrets are not shown; a webhook saved without one keeps its secret." }
                    @if let Some((_, problem)) = &settings_problem {
                        p #settings-error .field-error role="alert" { (problem) }
                    }
                }
                button type="submit" { "Save settings" }
            }
        }
    };
    let status = if settings_problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    pages::site_page(session, site_id, Section::Triggers, "Triggers", body).with_status(status)
}

fn fired_section(tally: &SiteTally) -> Markup {
    let today = now_ms().div_euclid(DAY_MS);
    let first = today - DAYS + 1;
    let per_day: Vec<[u64; TriggerKind::ALL.len()]> = (first..=today)
        .map(|day| tally.fired.get(&day).copied().unwrap_or_default())
        .collect();
    let by_status = &tally.deliveries;
    let nothing = tally.fired.is_empty() && by_status.iter().flatten().all(|n| *n == 0);
    let labels: Vec<String> = (first..=today)
        .map(|d| format_date(d)[5..].to_string())
        .collect();
    let series: Vec<Series> = (TriggerKind::ALL.iter().enumerate())
        .filter(|(k, _)| per_day.iter().any(|day| day[*k] > 0))
        .map(|(k, kind)| Series {
            name: kind.name(),
            values: per_day.iter().map(|day| day[k] as f64).collect(),
        })
        .collect();
    html! {
        section aria-labelledby="fired-h" {
            h2 #fired-h { "Fired" }
            @if nothing {
                p { "No trigger has fired yet (or those that did have left the outbox after their retention)." }
            } @else {
                @if !series.is_empty() {
                    (chart::lines("fired", "Triggers fired per day, last 30 days", &labels, &series))
                }
                table #fired-by-type {
                    caption { "Deliveries by state, of the triggers the outbox holds (settled ones leave after the site's retention)" }
                    thead { tr {
                        th scope="col" { "Trigger" } th.num scope="col" { "Pending" }
                        th.num scope="col" { "Delivered" } th.num scope="col" { "Dead" }
                    } }
                    tbody {
                        @for (k, kind) in TriggerKind::ALL.iter().enumerate() {
                            @if by_status[k].iter().any(|n| *n > 0) {
                                tr {
                                    th scope="row" { (kind.name()) }
                                    td.num { (number(by_status[k][0])) }
                                    td.num { (number(by_status[k][1])) }
                                    td.num { (number(by_status[k][2])) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dead_section(session: &Session, site_id: &str, dead: &[Entry]) -> Markup {
    html! {
        section aria-labelledby="dead-h" {
            h2 #dead-h { "Dead letters" }
            @if dead.is_empty() {
                p #no-dead { "None: every delivery went through or is still being tried." }
            } @else {
                table #dead-letters {
                    thead { tr {
                        th scope="col" { "Fired" } th scope="col" { "Trigger" } th scope="col" { "Webhook" }
                        th.num scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { span.visually-hidden { "Action" } }
                    } }
                    tbody {
                        @for entry in dead {
                            @for (webhook, delivery) in &entry.deliveries {
                                @if delivery.status == DeliveryStatus::Dead {
                                    tr {
                                        td { (format_date(entry.fired.fired_at.div_euclid(DAY_MS))) }
                                        td { (entry.fired.kind.name()) }
                                        td { (webhook) }
                                        td.num { (delivery.attempts) }
                                        td { (delivery.last_outcome.as_deref().unwrap_or("–")) }
                                        td {
                                            form method="post" action={ "/ui/sites/" (site_id) "/triggers/replay" } {
                                                (csrf_field(session))
                                                input type="hidden" name="trigger" value=(entry.fired.id);
                                                input type="hidden" name="webhook" value=(webhook);
                                                button type="submit" aria-label={ "Replay " (entry.fired.kind.name()) " to " (webhook) } { "Replay" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ReplayForm {
    csrf: String,
    trigger: String,
    webhook: String,
}

/// `POST /ui/sites/{siteId}/triggers/replay`: a dead letter is owed again.
pub async fn replay(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let replayed = api::replay(
        State(state.clone()),
        session.api_headers(),
        ApiPath((site_id.clone(), form.trigger)),
        ApiQuery(ReplayQuery {
            webhook: form.webhook,
        }),
    )
    .await;
    let done = if replayed.is_ok() {
        "replayed"
    } else {
        "not-replayed"
    };
    let to = format!("/ui/sites/{site_id}/triggers?done={done}");
    Redirect::to(&to).into_response()
}

#[derive(Deserialize)]
pub struct TestForm {
    csrf: String,
    webhook: String,
}

/// `POST /ui/sites/{siteId}/triggers/test`: a sample to a webhook, and what it answered.
pub async fn test_delivery(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<TestForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let answer = state
        .triggers
        .test_delivery(&site_id, &form.webhook, now_ms())
        .await;
    let shown = html! {
        div #test-answer role="status" {
            @match &answer {
                Ok(answer) => {
                    p { "The webhook " strong { (form.webhook) } " answered " strong { "HTTP " (answer.status) } "." }
                    // What the receiver said, to the admin only: a webhook may point
                    // inside the network spoor runs in, which a site's key holder
                    // should not read through spoor.
                    @if !answer.body.is_empty() && session.who == Who::Admin { pre { (answer.body) } }
                }
                Err(problem) => { p.field-error { (problem) } }
            }
        }
    };
    render(&state, &session, &site_id, None, None, Some(shown)).await
}

#[derive(Deserialize)]
pub struct SettingsForm {
    csrf: String,
    settings: String,
}

/// `POST /ui/sites/{siteId}/triggers`: the settings saved through the API's handler.
pub async fn save_settings(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    if let Some(refused) = refused_change(&state, &session, &site_id, &form.csrf) {
        return refused;
    }
    let saved = api::put_settings(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
        SettingsBody(Bytes::from(form.settings.clone())),
    )
    .await;
    match saved {
        Ok(_) => {
            let to = format!("/ui/sites/{site_id}/triggers?done=saved");
            Redirect::to(&to).into_response()
        }
        Err(error) => {
            render(
                &state,
                &session,
                &site_id,
                None,
                Some((&form.settings, error.message)),
                None,
            )
            .await
        }
    }
}
