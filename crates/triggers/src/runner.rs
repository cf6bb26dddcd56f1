//! The trigger loop: timers that came due become fired triggers (recorded in the outbox
//! first), and owed deliveries are sent, signed, and retried with backoff until delivered
//! or dead. Time is an argument, so tests drive it; the server's loop passes the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spoor_engine::timers::{Pending, TriggerKind};
use spoor_live::LiveState;

use crate::error::TriggerError;
use crate::outbox::{Attempt, Fired, Outbox, Retention};
use crate::payload::{contact_check, payload, reach};
use crate::signature;
use spoor_outgoing::Targets;
use spoor_settings::{TriggerRegistry, TriggerSettings, TuningRegistry, Webhook};

/// Bytes of a receiver's answer to a test delivery that are shown.
const TEST_ANSWER_BYTES: usize = 2_048;

/// What a receiver answered a test delivery.
#[derive(Debug, Clone)]
pub struct TestAnswer {
    pub status: u16,
    /// Its body's beginning, as text.
    pub body: String,
}

/// How long a receiver has to answer one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries sent at once (their attempts are then recorded in one write).
const IN_FLIGHT: usize = 64;
const MAX_RETRY_WAIT_MS: f64 = 3_600_000.0;
/// How often the loop looks for due timers and owed deliveries.
const TICK: Duration = Duration::from_millis(250);
/// How often settled triggers past their retention are let go (milliseconds of the
/// loop's clock).
const EXPIRE_EVERY_MS: i64 = 60_000;

pub struct Triggers {
    live: Arc<LiveState>,
    settings: Arc<TriggerRegistry>,
    /// Each site's tuned recommendation settings, for the payloads' recommendations.
    tuning: Arc<TuningRegistry>,
    outbox: Arc<Outbox>,
    client: reqwest::Client,
    /// Where webhooks may be: checked again at each delivery.
    targets: Targets,
}

/// A due timer that passed every check, to fire.
struct ToFire {
    pending: Pending,
    check: String,
    reach: Option<crate::outbox::Reach>,
}

impl Triggers {
    pub fn new(
        live: Arc<LiveState>,
        settings: Arc<TriggerRegistry>,
        tuning: Arc<TuningRegistry>,
        outbox: Arc<Outbox>,
        targets: Targets,
    ) -> Result<Triggers, TriggerError> {
        let client = (targets.client_builder())
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| TriggerError::Storage(format!("HTTP client: {e}")))?;
        Ok(Triggers {
            live,
            settings,
            tuning,
            outbox,
            client,
            targets,
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Fires every trigger due at `now`; how many fired.
    pub async fn fire_due(&self, now: i64) -> Result<usize, TriggerError> {
        let mut fired = 0;
        for site_id in self.sites_with_due_timers(now) {
            fired += self.fire_site(&site_id, now).await?;
        }
        Ok(fired)
    }

    async fn fire_site(&self, site_id: &str, now: i64) -> Result<usize, TriggerError> {
        let settings = self.settings.get(site_id);
        let chosen = self
            .change_site(site_id, |site| {
                let due = site.take_due(now, |kind, step| settings.delay_ms(kind, step));
                due.into_iter()
                    .filter_map(|pending| self.decide(site_id, site, &settings, pending, now))
                    .collect::<Vec<ToFire>>()
            })
            .await
            .unwrap_or_default();
        let mut fired = Vec::new();
        let mut records = Vec::new();
        for ToFire {
            pending,
            check,
            reach,
        } in chosen
        {
            let id = trigger_id(site_id, &check, &pending);
            if !self.outbox.contains(&id) {
                let webhooks = settings
                    .webhooks
                    .iter()
                    .filter(|hook| hook.takes(pending.kind))
                    .map(|hook| hook.id.clone())
                    .collect();
                tracing::debug!(
                    site_id,
                    trigger = pending.kind.name(),
                    step = pending.step,
                    contact_id = pending.contact,
                    "trigger fired"
                );
                records.push(Fired {
                    id,
                    site_id: site_id.to_string(),
                    kind: pending.kind,
                    step: pending.step,
                    contact: pending.contact,
                    contact_check: check,
                    reach,
                    anchor: pending.anchor,
                    product: pending.product.clone(),
                    fired_at: now,
                    not_before: settings
                        .quiet_hours
                        .as_ref()
                        .map(|quiet| quiet.not_before(now))
                        .filter(|at| *at > now),
                    webhooks,
                    sealed: None,
                });
            }
            fired.push(pending);
        }
        // One durable write for the tick's triggers, before any is followed up or sent.
        if !records.is_empty() {
            tracing::info!(site_id, fired = records.len(), "triggers fired");
        }
        if let Err(error) = self.outbox.fired(records).await {
            // Not recorded: due again at the next tick, never lost.
            self.change_site(site_id, |site| {
                for pending in fired {
                    site.put_back(pending);
                }
            })
            .await;
            return Err(error);
        }
        let count = fired.len();
        self.change_site(site_id, |site| {
            for pending in &fired {
                site.follow_up(pending);
            }
        })
        .await;
        Ok(count)
    }

    /// Changes a site's state once its lock is free, waiting (without holding a thread)
    /// rather than queueing for it: a writer waiting for the lock holds every new reader,
    /// every request, behind itself. While a snapshot copies the state (up to a second or
    /// so at a million contacts) it waits for as long as that takes; otherwise it takes
    /// its turn in the queue after a few tries, so that a steady stream of readers never
    /// keeps triggers from firing.
    async fn change_site<R>(
        &self,
        site_id: &str,
        change: impl FnOnce(&mut spoor_engine::SiteState) -> R,
    ) -> Option<R> {
        const TRIES_BEFORE_QUEUEING: u32 = 20;
        let mut change = change;
        let mut tries = 0;
        loop {
            match self.live.try_with_site_mut(site_id, change) {
                Ok(changed) => return changed,
                Err(back) => change = back,
            }
            tries += 1;
            if tries >= TRIES_BEFORE_QUEUEING && !self.live.copying_for_snapshot() {
                return self.live.with_site_mut(site_id, change);
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Whether a due timer fires: its contact can be reached (else it waits for them to
    /// be identified), it is not stale, the browse rules and the frequency cap allow it.
    fn decide(
        &self,
        site_id: &str,
        site: &mut spoor_engine::SiteState,
        settings: &TriggerSettings,
        pending: Pending,
        now: i64,
    ) -> Option<ToFire> {
        let due_at = pending.anchor + settings.delay_ms(pending.kind, pending.step)?;
        let contact = site
            .contact_by_id(pending.contact)
            .filter(|c| !self.live.hides(site_id, c.id))?;
        // A merged contact's timer fires for the contact it was merged into.
        let pending = Pending {
            contact: contact.id,
            ..pending
        };
        // Fired already (by the node that sent before this one took over, or before a
        // restart from an older snapshot): only followed up, whatever the rules say now.
        if let Some(check) = self.fired_before(site_id, contact, &pending) {
            return Some(ToFire {
                pending,
                check,
                reach: reach(contact),
            });
        }
        if !pending.waited && now - due_at > settings.stale_after_ms() {
            return None;
        }
        let Some(check) = contact_check(contact) else {
            let deadline = due_at + settings.identify_within_ms();
            if deadline > now {
                site.await_identity(pending, deadline);
            }
            return None;
        };
        if pending.kind == TriggerKind::AbandonedBrowse {
            let pause = settings.purchase_pause_ms();
            let bought_lately = contact.orders.iter().any(|o| now - o.at <= pause);
            let has_cart = contact.cart.as_ref().is_some_and(|c| !c.lines.is_empty());
            if bought_lately || has_cart {
                return None;
            }
        }
        if pending.kind == TriggerKind::PriceDrop {
            let key = pending.product.as_deref()?;
            let seen = site.seen_price(contact, key)?;
            let current = site.product(key)?.price.as_ref()?.value.amount;
            let least = seen
                * rust_decimal::Decimal::from(100 - settings.price_drop_min_percent.min(100))
                / rust_decimal::Decimal::from(100);
            if current > least {
                return None;
            }
        }
        if pending.step == 0
            && let Some(last) = self
                .outbox
                .last_first_message(site_id, &check, pending.kind)
            && now - last < settings.frequency_cap_ms()
        {
            return None;
        }
        let reach = reach(contact);
        // On a shared outbox a contact is named only under the key their records are
        // sealed with: none (erased a moment ago, not yet dropped from this state) fires
        // nothing.
        if !(reach.as_ref()).is_some_and(|reach| self.outbox.can_name(site_id, reach)) {
            tracing::info!(
                site_id,
                trigger = pending.kind.name(),
                "a due trigger not fired: its contact has no key to be named under (erased \
                 a moment ago, or known only from records written before sealing)"
            );
            return None;
        }
        Some(ToFire {
            pending,
            check,
            reach,
        })
    }

    /// The sites with a timer due at `now`, found under the read lock: the write lock (which
    /// holds up every reader) is taken only for a site with something due.
    fn sites_with_due_timers(&self, now: i64) -> Vec<String> {
        (self.live.read().sites().into_iter())
            .filter(|(id, site)| {
                let settings = self.settings.get(id);
                (site.timers()).any_due(now, |kind, step| settings.delay_ms(kind, step))
            })
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// The contact's check when the outbox holds `pending`'s trigger (fired already).
    fn fired_before(
        &self,
        site_id: &str,
        contact: &spoor_engine::Contact,
        pending: &Pending,
    ) -> Option<String> {
        let check = contact_check(contact)?;
        (self.outbox)
            .contains(&trigger_id(site_id, &check, pending))
            .then_some(check)
    }

    /// On a node that does not send, once a minute: the due timers are taken and judged
    /// as the sender judges them ([`Triggers::decide`]), without firing. Those the outbox
    /// says fired are followed up; those the sender lets go of go, and those whose contact
    /// cannot be reached yet wait for them, as on the sender; the rest are put back, due,
    /// for the sender to fire (or this node, should it take over). This node's state then
    /// holds what the sender's does, not every due timer since it started.
    async fn settle_behind(&self, now: i64) {
        for site_id in self.sites_with_due_timers(now) {
            let settings = self.settings.get(&site_id);
            self.change_site(&site_id, |site| {
                let due = site.take_due(now, |kind, step| settings.delay_ms(kind, step));
                for pending in due {
                    let Some(ToFire { pending, check, .. }) =
                        self.decide(&site_id, site, &settings, pending, now)
                    else {
                        continue;
                    };
                    if self
                        .outbox
                        .contains(&trigger_id(&site_id, &check, &pending))
                    {
                        site.follow_up(&pending);
                    } else {
                        site.put_back(pending);
                    }
                }
            })
            .await;
        }
    }

    /// Lets go of the triggers settled longer ago than their site keeps them, on a
    /// blocking thread (it may delete files). Returns how many left.
    pub async fn expire_settled(&self, now: i64) -> Result<usize, TriggerError> {
        let outbox = self.outbox.clone();
        let settings = self.settings.clone();
        let retention = move |site_id: &str| {
            let site = settings.get(site_id);
            Retention {
                keep_ms: site.keep_settled_ms(),
                frequency_cap_ms: site.frequency_cap_ms(),
            }
        };
        tokio::task::spawn_blocking(move || outbox.expire(now, retention))
            .await
            .map_err(|e| TriggerError::Storage(format!("expiring settled triggers: {e}")))?
    }

    /// Sends every delivery owed at `now`, a batch at a time; how many were attempted.
    pub async fn deliver_due(&self, now: i64) -> Result<usize, TriggerError> {
        let mut attempted = 0;
        loop {
            let sent = self.deliver_some(now, IN_FLIGHT).await?;
            attempted += sent;
            if sent < IN_FLIGHT {
                break;
            }
        }
        Ok(attempted)
    }

    /// Sends at most `max` of the deliveries owed at `now`, the longest owed first.
    pub async fn deliver_some(&self, now: i64, max: usize) -> Result<usize, TriggerError> {
        let due = self.outbox.due(now, max);
        let count = due.len();
        for batch in due.chunks(IN_FLIGHT) {
            // On a shared outbox, within the time the lease's timing allows a batch.
            let deadline = (self.outbox.batch_deadline()).map(|within| Instant::now() + within);
            let attempts = (batch.iter())
                .map(|(fired, hook, attempts)| self.deliver(fired, hook, *attempts, now, deadline));
            let attempts = futures_util::future::join_all(attempts).await;
            self.outbox.attempted(attempts).await?;
        }
        Ok(count)
    }

    /// One delivery attempt; its request cut at `deadline` when there is one (a request
    /// cut short counts as timed out).
    async fn deliver(
        &self,
        fired: &Fired,
        hook_id: &str,
        attempts: u32,
        now: i64,
        deadline: Option<Instant>,
    ) -> Attempt {
        let settings = self.settings.get(&fired.site_id);
        let outcome = |delivered: bool, outcome: String, next_at: Option<i64>| Attempt {
            id: fired.id.clone(),
            webhook: hook_id.to_string(),
            at: now,
            delivered,
            outcome,
            next_at,
        };
        let Some(hook) = settings.webhooks.iter().find(|h| h.id == hook_id) else {
            return outcome(false, "the webhook was removed".into(), None);
        };
        let tuned = self.tuning.get(&fired.site_id);
        let body = {
            let engine = self.live.read();
            engine
                .site(&fired.site_id)
                .and_then(|site| payload(site, fired, now, tuned.as_deref()))
        };
        let Some(body) = body else {
            return outcome(false, "the contact is no longer held".into(), None);
        };
        let body = serde_json::to_vec(&body).expect("payloads serialise");
        // A host given as an address is not resolved, so the client's resolver never
        // judges it: it is judged here.
        let refused = (reqwest::Url::parse(&hook.url).map_err(|e| e.to_string()))
            .and_then(|url| self.targets.check_literal(&url));
        if let Err(refusal) = refused {
            return outcome(false, format!("not sent: {refusal}"), None);
        }
        let mut request = self
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header(
                signature::HEADER,
                signature::sign(&hook.secret, now / 1000, &body),
            )
            .header("idempotency-key", &fired.id)
            .header("spoor-trigger", fired.kind.name());
        // On several machines: which engine node sent it (its log names it too).
        if let Some(node) = self.outbox.node_name() {
            request = request.header("spoor-sender", node);
        }
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            request = request.timeout(left.min(DELIVERY_TIMEOUT));
        }
        let sent = request.body(body).send().await;
        let (delivered, retryable, text) = match sent {
            Ok(response) => {
                let status = response.status();
                let retryable =
                    status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
                (
                    status.is_success(),
                    retryable,
                    format!("HTTP {}", status.as_u16()),
                )
            }
            Err(error) if error.is_timeout() => (false, true, "timed out".to_string()),
            Err(error) if error.is_connect() => (
                false,
                true,
                format!("could not connect: {}", root_cause(&error)),
            ),
            Err(error) => (
                false,
                true,
                format!("the request failed: {}", root_cause(&error)),
            ),
        };
        let done = attempts + 1;
        let next_at = (!delivered && retryable && done < hook.max_attempts)
            .then(|| now + retry_wait_ms(hook, done));
        if !delivered {
            tracing::warn!(
                site_id = %fired.site_id,
                webhook = %hook.id,
                attempt = done,
                outcome = %text,
                retry = next_at.is_some(),
                "trigger delivery failed"
            );
        }
        outcome(delivered, text, next_at)
    }

    /// Sends a sample payload, marked as a test, to the site's webhook `hook_id`, signed
    /// as a real delivery is, and says what the receiver answered: for a shop checking
    /// its receiver before a trigger is owed to it. Nothing is recorded in the outbox.
    pub async fn test_delivery(
        &self,
        site_id: &str,
        hook_id: &str,
        now: i64,
    ) -> Result<TestAnswer, String> {
        let settings = self.settings.get(site_id);
        let hook = (settings.webhooks.iter())
            .find(|h| h.id == hook_id)
            .ok_or_else(|| format!("the site has no webhook {hook_id:?}"))?;
        let body = serde_json::json!({
            "test": true,
            "siteId": site_id,
            "trigger": "abandonedCart",
            "note": "a sample sent from spoor's dashboard; no contact is concerned",
            "contact": {"email": "test@example.invalid"},
            "products": [],
        });
        let body = serde_json::to_vec(&body).expect("payloads serialise");
        let url = reqwest::Url::parse(&hook.url).map_err(|e| format!("not sent: {e}"))?;
        (self.targets.check_literal(&url)).map_err(|refusal| format!("not sent: {refusal}"))?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(
                signature::HEADER,
                signature::sign(&hook.secret, now / 1000, &body),
            )
            .header("idempotency-key", format!("test-{now}"))
            .header("spoor-trigger", "test")
            .body(body)
            .send()
            .await
            .map_err(|error| format!("the request failed: {}", root_cause(&error)))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        let mut response = response;
        while answer.len() < TEST_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                _ => break,
            }
        }
        answer.truncate(TEST_ANSWER_BYTES);
        Ok(TestAnswer {
            status,
            body: String::from_utf8_lossy(&answer).into_owned(),
        })
    }

    /// Runs the loop until `stop` is set: fires due triggers and sends owed deliveries
    /// every quarter of a second, while this node sends them (see [`Outbox::take_turn`]).
    pub async fn run(self: Arc<Self>, stop: Arc<AtomicBool>, clock: fn() -> i64) {
        let (mut expired_at, mut settled_at) = (i64::MIN, i64::MIN);
        // A failed state (a panic left it part-changed) fires nothing more: what it would
        // fire could be wrong, and would be recorded as sent.
        while !stop.load(Ordering::Acquire) && !self.live.failed() {
            let now = clock();
            if now.saturating_sub(expired_at) >= EXPIRE_EVERY_MS {
                expired_at = now;
                if let Err(error) = self.expire_settled(now).await {
                    tracing::error!(%error, "expiring settled triggers failed");
                }
            }
            // A state still replaying the log would fire from part of it: no turn (and no
            // claim to send) until it is current. The clock is read again: the lease is
            // acted on from the moment it is read.
            if self.live.is_current() {
                let now = clock();
                if self.sends(now).await {
                    if let Err(error) = self.fire_due(now).await {
                        tracing::error!(%error, "firing triggers failed");
                    }
                    self.deliver_while_sending(&stop, clock).await;
                } else if now.saturating_sub(settled_at) >= EXPIRE_EVERY_MS {
                    // After the turn, which read what the sender recorded.
                    settled_at = now;
                    self.settle_behind(now).await;
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Sends the owed deliveries a batch at a time, each only while this node still sends
    /// (a backlog to a slow receiver can take minutes), until none is owed or `stop`: a
    /// stop waits for the batch in flight only.
    async fn deliver_while_sending(&self, stop: &AtomicBool, clock: fn() -> i64) {
        while !stop.load(Ordering::Acquire) {
            let now = clock();
            if !self.sends(now).await {
                return;
            }
            match self.deliver_some(now, IN_FLIGHT).await {
                Ok(sent) if sent == IN_FLIGHT => continue,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%error, "delivering triggers failed");
                    return;
                }
            }
        }
    }

    /// This node's turn: whether it sends now. An outbox it cannot read or write sends
    /// nothing (the outbox says so).
    async fn sends(&self, now: i64) -> bool {
        self.outbox.take_turn(now).await.unwrap_or(false)
    }
}

/// The same trigger (site, person, type, step, anchor) always has the same id: the
/// idempotency key of its deliveries, and how a restart knows it fired already.
fn trigger_id(site_id: &str, check: &str, pending: &Pending) -> String {
    let digest = Sha256::new()
        .chain_update(site_id.as_bytes())
        .chain_update([0])
        .chain_update(check.as_bytes())
        .chain_update([0])
        .chain_update(pending.kind.name().as_bytes())
        .chain_update([pending.step])
        .chain_update(pending.anchor.to_be_bytes())
        .chain_update(pending.product.as_deref().unwrap_or("").as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// The wait after the `done`-th failed attempt: the first retry wait, doubled each time,
/// at most an hour, with up to a fifth of jitter either way so receivers that come back
/// are not hit by every sender at once.
fn retry_wait_ms(hook: &Webhook, done: u32) -> i64 {
    let base = hook.first_retry_seconds * 1000.0 * 2f64.powi(done.saturating_sub(1) as i32);
    let jitter = 0.8 + 0.4 * fastrand::f64();
    (base.min(MAX_RETRY_WAIT_MS) * jitter) as i64
}
/// The innermost cause of a failed request (a refused connection, an untrusted
/// certificate), which tells the shop what to fix; reqwest's own message above it names
/// the URL, which the delivery's record names already.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
