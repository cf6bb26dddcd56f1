//! The overview of a site: its events by type, live and over a day and a month; the
//! events refused and why; the state's lag, the disk, the webhooks.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use spoor_engine::activity::KindCounts;
use spoor_protocol::EventKind;
use spoor_protocol::dates::{DAY_MS, format_date, format_datetime};

use super::chart;
use super::pages::{self, Page, bytes, number};
use super::session::Signed;
use super::{Section, error_page, unseen_site};
use crate::app::{AppState, Shared, now_ms};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::{self, SiteQuery};

const MINUTE_MS: i64 = 60_000;
/// Minutes in the live chart.
const LIVE_MINUTES: i64 = 60;

fn sum(counts: &[(i64, KindCounts)]) -> KindCounts {
    let mut total = KindCounts::default();
    for (_, each) in counts {
        for (t, c) in total.iter_mut().zip(each) {
            *t += c;
        }
    }
    total
}

fn totals(counts: &[(i64, KindCounts)]) -> Vec<f64> {
    counts
        .iter()
        .map(|(_, c)| c.iter().sum::<u64>() as f64)
        .collect()
}

/// Hour of day `HH:MM` of a minute number, UTC.
fn clock(minute: i64) -> String {
    let in_day = minute.rem_euclid(24 * 60);
    format!("{:02}:{:02}", in_day / 60, in_day % 60)
}

/// The live part: the last hour per minute, and the last minute and hour by type.
fn live_panel(state: &AppState, site_id: &str) -> Markup {
    let now_minute = now_ms().div_euclid(MINUTE_MS);
    let engine = state.live.read();
    let minutes = engine
        .site(site_id)
        .map(|site| site.activity().per_minute(now_minute, LIVE_MINUTES))
        .unwrap_or_default();
    drop(engine);
    let labels: Vec<String> = minutes.iter().map(|(m, _)| clock(*m)).collect();
    let last_minute = minutes.last().map(|(_, c)| *c).unwrap_or_default();
    let last_hour = sum(&minutes);
    html! {
        div #live data-live={ "/ui/sites/" (site_id) "/overview/live" } aria-live="polite" {
            (chart::bars("per-minute", "Events per minute, last hour (UTC)", &labels, &totals(&minutes)))
            table #by-type {
                caption { "By event type" }
                thead { tr {
                    th scope="col" { "Event" }
                    th.num scope="col" { "Last minute" }
                    th.num scope="col" { "Last hour" }
                } }
                tbody {
                    @for (i, kind) in EventKind::ALL.iter().enumerate() {
                        @if last_hour[i] > 0 {
                            tr {
                                th scope="row" { (kind.as_str()) }
                                td.num { (number(last_minute[i])) }
                                td.num { (number(last_hour[i])) }
                            }
                        }
                    }
                    @if last_hour.iter().all(|c| *c == 0) {
                        tr { td colspan="3" { "No events in the last hour." } }
                    }
                }
            }
            p.hint { "Updated " (clock(now_minute)) " UTC; this part refreshes by itself." }
        }
    }
}

/// `GET /ui/sites/{siteId}/overview/live`: the live part alone, for the page to swap in.
pub async fn live(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    Page(live_panel(&state, &site_id)).into_response()
}

/// `GET /ui/sites/{siteId}/overview`
pub async fn page(
    State(state): State<Shared>,
    Signed(session): Signed,
    ApiPath(site_id): ApiPath<String>,
) -> Response {
    if let Some(refused) = unseen_site(&state, &session, &site_id) {
        return refused;
    }
    let query = SiteQuery {
        after: None,
        digest: None,
    };
    let answer = match state::site(
        State(state.clone()),
        session.api_headers(),
        ApiPath(site_id.clone()),
        ApiQuery(query),
    )
    .await
    {
        Ok(answer) => answer.0,
        Err(error) => return error_page(error),
    };
    let body = html! {
        section aria-labelledby="now-h" {
            h2 #now-h { "Now" }
            (live_panel(&state, &site_id))
        }
        (history(&state, &site_id))
        section aria-labelledby="held-h" {
            h2 #held-h { "What the state holds" }
            dl.figures {
                div { dt { "Events" } dd #events { (number(answer.counts.events)) } }
                div { dt { "Contacts" } dd #contacts { (number(answer.counts.contacts)) } }
                div { dt { "Products" } dd #products { (number(answer.counts.products)) } }
                div { dt { "Orders" } dd #orders { (number(answer.counts.orders)) } }
            }
        }
        (refused(&state, &site_id))
        (health(&state, &site_id, answer.log_end.saturating_sub(answer.state_position)))
    };
    pages::site_page(&session, &site_id, Section::Overview, "Overview", body).into_response()
}

/// The last 24 hours by hour and the last 30 days by day.
fn history(state: &AppState, site_id: &str) -> Markup {
    let now = now_ms();
    let now_minute = now.div_euclid(MINUTE_MS);
    let today = now.div_euclid(DAY_MS);
    let engine = state.live.read();
    let (minutes, days) = engine
        .site(site_id)
        .map(|site| {
            let activity = site.activity();
            (
                activity.per_minute(now_minute, 24 * 60),
                activity.per_day(today - 29, today),
            )
        })
        .unwrap_or_default();
    drop(engine);
    let hours: Vec<(i64, KindCounts)> = minutes
        .chunks(60)
        .map(|hour| (hour[0].0, sum(hour)))
        .collect();
    let hour_labels: Vec<String> = hours.iter().map(|(m, _)| clock(*m)).collect();
    let day_labels: Vec<String> = days
        .iter()
        .map(|(d, _)| format_date(*d)[5..].to_string())
        .collect();
    let day_total = sum(&days);
    html! {
        section aria-labelledby="history-h" {
            h2 #history-h { "Last 24 hours and 30 days" }
            (chart::bars("per-hour", "Events per hour, last 24 hours (UTC, by the hour they began)", &hour_labels, &totals(&hours)))
            (chart::bars("per-day", "Events per day, last 30 days", &day_labels, &totals(&days)))
            table #month-by-type {
                caption { "Last 30 days by event type" }
                thead { tr { th scope="col" { "Event" } th.num scope="col" { "Events" } } }
                tbody {
                    @for (i, kind) in EventKind::ALL.iter().enumerate() {
                        @if day_total[i] > 0 {
                            tr { th scope="row" { (kind.as_str()) } td.num { (number(day_total[i])) } }
                        }
                    }
                }
            }
        }
    }
}

fn refused(state: &AppState, site_id: &str) -> Markup {
    let refusals = state.refusals.of(site_id);
    let ranked = refusals.ranked();
    html! {
        section aria-labelledby="refused-h" {
            h2 #refused-h { "Events refused" }
            p.hint { "Since spoor started, by reason and field (indexes left out). Values sent are never kept." }
            @if ranked.is_empty() && refusals.other == 0 {
                p #no-refusals { "None." }
            } @else {
                table #refusals {
                    thead { tr { th scope="col" { "Reason" } th scope="col" { "Field" } th.num scope="col" { "Events" } } }
                    tbody {
                        @for (reason, path, count) in &ranked {
                            tr { td { code { (reason) } } td { code { (path) } } td.num { (number(*count)) } }
                        }
                        @if refusals.other > 0 {
                            tr { td colspan="2" { "Other reasons" } td.num { (number(refusals.other)) } }
                        }
                    }
                }
            }
        }
    }
}

fn health(state: &AppState, site_id: &str, lag: u64) -> Markup {
    let log_size = state.log.size_bytes();
    let free = spoor_log::free_bytes(&state.data_dir);
    let tally = state.triggers.outbox().tally(site_id);
    let mut by_status = [0u64; 3];
    for kind in &tally.deliveries {
        for (total, count) in by_status.iter_mut().zip(kind) {
            *total += count;
        }
    }
    let last_failure = state
        .triggers
        .outbox()
        .dead_letters(site_id, 1)
        .into_iter()
        .flat_map(|entry| entry.deliveries.into_values())
        .filter_map(|d| Some((d.last_attempt_at?, d.last_outcome?)))
        .max();
    html! {
        section aria-labelledby="health-h" {
            h2 #health-h { "Health" }
            dl.figures {
                div { dt { "State behind the log" } dd #lag { (number(lag)) " records" } }
                div { dt { "Log size" } dd { (log_size.map_or_else(|| "–".to_string(), bytes)) } }
                div { dt { "Free disk" } dd { (free.map_or_else(|| "–".to_string(), bytes)) } }
                div { dt { "Webhook deliveries pending" } dd #pending { (number(by_status[0])) } }
                div { dt { "Delivered" } dd #delivered { (number(by_status[1])) } }
                div { dt { "Dead letters" } dd #dead { (number(by_status[2])) } }
            }
            @if let Some((at, outcome)) = last_failure {
                p { "Latest dead letter's last answer: " (outcome) ", " (format_datetime(at)) " UTC." }
            }
        }
    }
}
