//! What a site wants from its triggers: which are on, their delays, who may get one and
//! how often, and the webhooks they go to. Kept in `triggers.json` in the data directory
//! (settings, not events), rewritten atomically on each change.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spoor_engine::timers::TriggerKind;

use crate::error::{Setting, SettingsError};
use crate::file::SettingsFile;

const FILE_NAME: &str = "triggers.json";
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// One trigger type: on or off, and its delays (the first message, then follow-ups),
/// in minutes after the event it counts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindSettings {
    pub enabled: bool,
    pub delays_minutes: Vec<u32>,
}

fn kind(delays_minutes: &[u32]) -> KindSettings {
    KindSettings {
        enabled: true,
        delays_minutes: delays_minutes.to_vec(),
    }
}

// Defaults from what shops use: carts at 1 h, then 24 h and 72 h; browse and search
// after 30 minutes of inactivity.
fn default_cart() -> KindSettings {
    kind(&[60, 24 * 60, 72 * 60])
}

fn default_browse() -> KindSettings {
    kind(&[30])
}

fn default_search() -> KindSettings {
    kind(&[30])
}

fn default_wishlist() -> KindSettings {
    kind(&[3 * 24 * 60])
}

/// Price drops and returns to stock are told at once.
fn default_at_once() -> KindSettings {
    kind(&[0])
}

fn default_min_drop() -> u32 {
    5
}

fn default_purchase_pause() -> u32 {
    48
}

fn default_identify_within() -> u32 {
    7 * 24
}

fn default_cap() -> u32 {
    24
}

fn default_stale_after() -> u32 {
    24
}

fn default_retention() -> u32 {
    7
}

/// The longest any of the hour settings may be: a year.
const MAX_HOURS: u32 = 365 * 24;
/// The longest a settled trigger may be kept, in days.
const MAX_RETENTION_DAYS: u32 = 365;

/// A webhook: where fired triggers of the chosen types are POSTed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Signs each delivery (the `Spoor-Signature` header); never shown back by the API, and
    /// kept when a webhook is sent again without it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// The trigger types it takes; all when empty.
    #[serde(default)]
    pub kinds: Vec<TriggerKind>,
    /// Attempts before a delivery goes to the dead letters.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry; each further one waits twice as long (with
    /// jitter), up to an hour.
    #[serde(default = "default_first_retry")]
    pub first_retry_seconds: f64,
}

fn default_attempts() -> u32 {
    8
}

fn default_first_retry() -> f64 {
    10.0
}

impl Webhook {
    pub fn takes(&self, kind: TriggerKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSettings {
    #[serde(default = "default_cart")]
    pub abandoned_cart: KindSettings,
    #[serde(default = "default_browse")]
    pub abandoned_browse: KindSettings,
    #[serde(default = "default_search")]
    pub search_without_results: KindSettings,
    #[serde(default = "default_wishlist")]
    pub wishlist_reminder: KindSettings,
    #[serde(default = "default_at_once")]
    pub price_drop: KindSettings,
    #[serde(default = "default_at_once")]
    pub back_in_stock: KindSettings,
    /// A price drop is told when the price fell by at least this share (percent) of the
    /// price the contact saw.
    #[serde(default = "default_min_drop")]
    pub price_drop_min_percent: u32,
    /// Abandoned browse skips anyone who purchased within this many hours.
    #[serde(default = "default_purchase_pause")]
    pub browse_skip_if_purchased_within_hours: u32,
    /// How long a trigger of a visitor with no email or phone waits for them to be
    /// identified (a CustomerData, a purchase with an email).
    #[serde(default = "default_identify_within")]
    pub identify_within_hours: u32,
    /// At most one first message per contact per trigger type within this many hours.
    #[serde(default = "default_cap")]
    pub frequency_cap_hours: u32,
    /// A trigger due longer ago than this (an imported history, a long stop) is dropped.
    #[serde(default = "default_stale_after")]
    pub stale_after_hours: u32,
    /// Deliveries that would arrive in these hours wait for their end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// A fired trigger whose deliveries are all delivered or dead leaves the outbox (and
    /// the pull API) this many days after its last attempt; kept at least as long as
    /// `staleAfterHours`, `identifyWithinHours` and `frequencyCapHours`, so that it
    /// cannot fire twice nor a restart forget the cap.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// Hours without messages, in the site's local time: `"21:00"` to `"08:00"` at a fixed
/// offset from UTC (in minutes; 120 for UTC+2). A fixed offset, not a zone: a site that
/// observes daylight saving time updates it twice a year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

impl QuietHours {
    /// When a delivery due at `now` may go: `now`, or the end of the quiet hours it falls in.
    pub fn not_before(&self, now: i64) -> i64 {
        let (Some(start), Some(end)) = (minute_of_day(&self.start), minute_of_day(&self.end))
        else {
            return now;
        };
        let offset = i64::from(self.utc_offset_minutes) * MINUTE_MS;
        let local = now + offset;
        let day = local.div_euclid(24 * HOUR_MS) * 24 * HOUR_MS;
        let minute = (local - day) / MINUTE_MS;
        let quiet_until = if start <= end {
            (start..end)
                .contains(&minute)
                .then_some(day + end * MINUTE_MS)
        } else if minute >= start {
            Some(day + 24 * HOUR_MS + end * MINUTE_MS)
        } else if minute < end {
            Some(day + end * MINUTE_MS)
        } else {
            None
        };
        quiet_until.map_or(now, |local_end| local_end - offset)
    }
}

/// `HH:MM` as minutes after midnight.
fn minute_of_day(text: &str) -> Option<i64> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    ((0..24).contains(&hours) && (0..60).contains(&minutes)).then_some(hours * 60 + minutes)
}

impl Default for TriggerSettings {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl TriggerSettings {
    /// The settings as the API shows them: webhook secrets left out.
    pub fn without_secrets(&self) -> TriggerSettings {
        let mut shown = self.clone();
        for hook in &mut shown.webhooks {
            hook.secret.clear();
        }
        shown
    }

    fn kind(&self, kind: TriggerKind) -> &KindSettings {
        match kind {
            TriggerKind::AbandonedCart => &self.abandoned_cart,
            TriggerKind::AbandonedBrowse => &self.abandoned_browse,
            TriggerKind::SearchWithoutResults => &self.search_without_results,
            TriggerKind::WishlistReminder => &self.wishlist_reminder,
            TriggerKind::PriceDrop => &self.price_drop,
            TriggerKind::BackInStock => &self.back_in_stock,
        }
    }

    /// The wait after the anchor for `step` of `kind`, in ms; `None` when off.
    pub fn delay_ms(&self, kind: TriggerKind, step: u8) -> Option<i64> {
        let settings = self.kind(kind);
        if !settings.enabled {
            return None;
        }
        let minutes = settings.delays_minutes.get(usize::from(step))?;
        Some(i64::from(*minutes) * MINUTE_MS)
    }

    pub fn identify_within_ms(&self) -> i64 {
        i64::from(self.identify_within_hours) * HOUR_MS
    }

    pub fn frequency_cap_ms(&self) -> i64 {
        i64::from(self.frequency_cap_hours) * HOUR_MS
    }

    pub fn stale_after_ms(&self) -> i64 {
        i64::from(self.stale_after_hours) * HOUR_MS
    }

    /// How long a settled trigger is kept: the retention, or longer where leaving would
    /// change what fires: a timer is dropped once stale or once its contact had its time
    /// to be identified, and a first message counts against the frequency cap (which a
    /// restart reads back from the triggers kept).
    pub fn keep_settled_ms(&self) -> i64 {
        (i64::from(self.retention_days) * 24 * HOUR_MS)
            .max(self.stale_after_ms())
            .max(self.identify_within_ms())
            .max(self.frequency_cap_ms())
    }

    pub fn purchase_pause_ms(&self) -> i64 {
        i64::from(self.browse_skip_if_purchased_within_hours) * HOUR_MS
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for kind in TriggerKind::ALL {
            let settings = self.kind(kind);
            let path = field_name(kind);
            if settings.delays_minutes.is_empty() || settings.delays_minutes.len() > 10 {
                return Err(format!("{path}.delaysMinutes: expected 1 to 10 delays"));
            }
            if settings.delays_minutes.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "{path}.delaysMinutes: each follow-up must come after the one before, got {:?}",
                    settings.delays_minutes
                ));
            }
        }
        let hours = [
            (
                "browseSkipIfPurchasedWithinHours",
                self.browse_skip_if_purchased_within_hours,
            ),
            ("identifyWithinHours", self.identify_within_hours),
            ("frequencyCapHours", self.frequency_cap_hours),
            ("staleAfterHours", self.stale_after_hours),
        ];
        for (name, value) in hours {
            if value > MAX_HOURS {
                return Err(format!(
                    "{name}: expected at most {MAX_HOURS} (a year), got {value}"
                ));
            }
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(format!(
                "retentionDays: expected 1 to {MAX_RETENTION_DAYS}, got {}",
                self.retention_days
            ));
        }
        if let Some(quiet) = &self.quiet_hours {
            for (name, value) in [("start", &quiet.start), ("end", &quiet.end)] {
                if minute_of_day(value).is_none() {
                    return Err(format!(
                        "quietHours.{name}: expected a time as HH:MM, got {value:?}"
                    ));
                }
            }
            if quiet.utc_offset_minutes.abs() > 14 * 60 {
                return Err("quietHours.utcOffsetMinutes: expected -840 to 840".into());
            }
        }
        let mut ids = Vec::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let path = format!("webhooks[{i}]");
            spoor_protocol::ids::check_id(&hook.id).map_err(|e| format!("{path}.id: {e}"))?;
            if ids.contains(&hook.id.as_str()) {
                return Err(format!("{path}.id: {:?} is used twice", hook.id));
            }
            ids.push(&hook.id);
            if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
                return Err(format!(
                    "{path}.url: expected an http:// or https:// url, got {:?}",
                    hook.url
                ));
            }
            if hook.secret.len() < 16 {
                return Err(format!(
                    "{path}.secret: expected at least 16 characters (it signs every delivery)"
                ));
            }
            if hook.max_attempts == 0 || hook.max_attempts > 50 {
                return Err(format!("{path}.maxAttempts: expected 1 to 50"));
            }
            if !(0.01..=3600.0).contains(&hook.first_retry_seconds) {
                return Err(format!("{path}.firstRetrySeconds: expected 0.01 to 3600"));
            }
        }
        Ok(())
    }
}

fn field_name(kind: TriggerKind) -> &'static str {
    match kind {
        TriggerKind::AbandonedCart => "abandonedCart",
        TriggerKind::AbandonedBrowse => "abandonedBrowse",
        TriggerKind::SearchWithoutResults => "searchWithoutResults",
        TriggerKind::WishlistReminder => "wishlistReminder",
        TriggerKind::PriceDrop => "priceDrop",
        TriggerKind::BackInStock => "backInStock",
    }
}

/// Every site's trigger settings, in `triggers.json` (see `SettingsFile`). The file holds
/// the webhook secrets; the API's answers leave them out.
pub struct TriggerRegistry {
    file: SettingsFile<Arc<TriggerSettings>>,
}

impl TriggerRegistry {
    pub fn open(data_dir: &Path) -> Result<TriggerRegistry, SettingsError> {
        Ok(TriggerRegistry {
            file: SettingsFile::open(data_dir, FILE_NAME, Setting::Triggers)?,
        })
    }

    pub(crate) fn file(&self) -> &dyn crate::file::SharedFile {
        &self.file
    }

    /// The site's settings, or the defaults.
    pub fn get(&self, site_id: &str) -> Arc<TriggerSettings> {
        self.file
            .read(|sites| sites.get(site_id).cloned())
            .unwrap_or_default()
    }

    pub fn set(&self, site_id: &str, mut settings: TriggerSettings) -> Result<(), SettingsError> {
        self.file.change(|sites| {
            if let Some(before) = sites.get(site_id) {
                for hook in settings.webhooks.iter_mut().filter(|h| h.secret.is_empty()) {
                    if let Some(old) = before.webhooks.iter().find(|old| old.id == hook.id) {
                        hook.secret.clone_from(&old.secret);
                    }
                }
            }
            settings
                .validate()
                .map_err(|e| SettingsError::invalid(Setting::Triggers, e))?;
            sites.insert(site_id.to_string(), Arc::new(settings));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_delays() {
        let settings = TriggerSettings::default();
        assert_eq!(
            settings.delay_ms(TriggerKind::AbandonedCart, 0),
            Some(60 * MINUTE_MS)
        );
        assert_eq!(
            settings.delay_ms(TriggerKind::AbandonedCart, 2),
            Some(72 * HOUR_MS)
        );
        assert_eq!(settings.delay_ms(TriggerKind::AbandonedCart, 3), None);
        assert_eq!(
            settings.delay_ms(TriggerKind::AbandonedBrowse, 0),
            Some(30 * MINUTE_MS)
        );
        let off: TriggerSettings = serde_json::from_str(
            r#"{"abandonedBrowse": {"enabled": false, "delaysMinutes": [30]}}"#,
        )
        .unwrap();
        assert_eq!(off.delay_ms(TriggerKind::AbandonedBrowse, 0), None);
    }

    #[test]
    fn quiet_hours_hold_deliveries_until_they_end() {
        let quiet = QuietHours {
            start: "21:00".into(),
            end: "08:00".into(),
            utc_offset_minutes: 120,
        };
        let day = 19_700 * 24 * HOUR_MS; // a UTC midnight
        // 12:00 UTC is 14:00 local: not quiet.
        assert_eq!(quiet.not_before(day + 12 * HOUR_MS), day + 12 * HOUR_MS);
        // 20:00 UTC is 22:00 local: until 08:00 local, 06:00 UTC the next day.
        assert_eq!(quiet.not_before(day + 20 * HOUR_MS), day + 30 * HOUR_MS);
        // 03:00 UTC is 05:00 local: until 06:00 UTC the same day.
        assert_eq!(quiet.not_before(day + 3 * HOUR_MS), day + 6 * HOUR_MS);
        let daytime = QuietHours {
            start: "12:00".into(),
            end: "13:30".into(),
            utc_offset_minutes: 0,
        };
        assert_eq!(
            daytime.not_before(day + 12 * HOUR_MS + 10 * MINUTE_MS),
            day + 13 * HOUR_MS + 30 * MINUTE_MS
        );
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |json: &str| {
            serde_json::from_str::<TriggerSettings>(json)
                .unwrap()
                .validate()
                .unwrap_err()
        };
        assert!(
            bad(r#"{"abandonedCart": {"enabled": true, "delaysMinutes": [60, 30]}}"#)
                .starts_with("abandonedCart.delaysMinutes: each follow-up")
        );
        assert_eq!(
            bad(r#"{"webhooks": [{"id": "crm", "url": "ftp://x", "secret": "0123456789abcdef"}]}"#),
            "webhooks[0].url: expected an http:// or https:// url, got \"ftp://x\""
        );
        assert!(
            bad(r#"{"webhooks": [{"id": "crm", "url": "https://x", "secret": "short"}]}"#)
                .starts_with("webhooks[0].secret")
        );
        assert_eq!(
            bad(r#"{"retentionDays": 0}"#),
            "retentionDays: expected 1 to 365, got 0"
        );
        assert!(
            bad(r#"{"frequencyCapHours": 100000}"#)
                .starts_with("frequencyCapHours: expected at most")
        );
    }

    #[test]
    fn a_settled_trigger_is_kept_until_it_could_no_longer_fire() {
        let defaults = TriggerSettings::default();
        assert_eq!(defaults.retention_days, 7);
        assert_eq!(defaults.keep_settled_ms(), 7 * 24 * HOUR_MS);
        let waits_long: TriggerSettings =
            serde_json::from_str(r#"{"retentionDays": 1, "identifyWithinHours": 72}"#).unwrap();
        assert_eq!(waits_long.keep_settled_ms(), 72 * HOUR_MS);
        let capped_long: TriggerSettings =
            serde_json::from_str(r#"{"retentionDays": 1, "frequencyCapHours": 720}"#).unwrap();
        assert_eq!(capped_long.keep_settled_ms(), 720 * HOUR_MS);
    }

    #[test]
    fn settings_survive_reopen_with_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TriggerRegistry::open(dir.path()).unwrap();
        let settings: TriggerSettings = serde_json::from_str(
            r#"{"webhooks": [{"id": "crm", "url": "https://crm.example/hook", "secret": "0123456789abcdef"}]}"#,
        )
        .unwrap();
        registry.set("S", settings.clone()).unwrap();
        let reopened = TriggerRegistry::open(dir.path()).unwrap();
        assert_eq!(*reopened.get("S"), settings);
        assert_eq!(*reopened.get("other"), TriggerSettings::default());
    }
}
