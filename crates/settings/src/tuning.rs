//! Recommendation settings chosen per site, on the site's own sessions and orders: shops
//! differ (on one public data set the built-in settings give MRR@20 34.0%, the same model
//! tuned on that shop's own held-out sessions 37.1%), so each site can have the engine
//! tune itself.
//!
//! The choice is kept in `tuning.json` in the data directory (a setting, like blocks: not
//! in the log, and untouched by a state rebuild) and handed to every question for the
//! site; without one, the built-in defaults answer.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spoor_engine::recommend::{BasketSettings, BasketTuning, NextItemParams, Tuning};

use crate::error::{Setting, SettingsError};
use crate::file::SettingsFile;

const FILE_NAME: &str = "tuning.json";

/// A site's tuned settings and how they were chosen (the default: nothing tuned yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteTuning {
    /// The next-item settings (the built-in ones when the site had too few sessions).
    pub next_item: NextItemParams,
    /// When, in milliseconds since the epoch.
    pub tuned_at: i64,
    /// The site's sessions it was tuned on.
    pub sessions: usize,
    /// How the next-item settings were chosen; none when the sessions were too few.
    pub report: Option<Tuning>,
    /// The blends over orders; none (the built-in ones) when too few customers had
    /// ordered twice.
    #[serde(default)]
    pub baskets: Option<BasketSettings>,
    /// The customers with two orders or more it was tuned on.
    #[serde(default)]
    pub repeat_customers: usize,
    #[serde(default)]
    pub basket_report: Option<BasketTuning>,
}

pub struct TuningRegistry {
    file: SettingsFile<Arc<SiteTuning>>,
}

impl TuningRegistry {
    pub fn open(data_dir: &Path) -> Result<TuningRegistry, SettingsError> {
        Ok(TuningRegistry {
            file: SettingsFile::open(data_dir, FILE_NAME, Setting::Tuning)?,
        })
    }

    pub(crate) fn file(&self) -> &dyn crate::file::SharedFile {
        &self.file
    }

    pub fn get(&self, site_id: &str) -> Option<Arc<SiteTuning>> {
        self.file.read(|sites| sites.get(site_id).cloned())
    }

    /// Keeps `tuning` for the site (`None`: back to the built-in settings).
    pub fn set(&self, site_id: &str, tuning: Option<SiteTuning>) -> Result<(), SettingsError> {
        self.file.change(|sites| {
            match tuning {
                Some(tuning) => sites.insert(site_id.to_string(), Arc::new(tuning)),
                None => sites.remove(site_id),
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_survives_reopen_and_can_be_undone() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TuningRegistry::open(dir.path()).unwrap();
        assert!(registry.get("S").is_none());
        let tuning = SiteTuning {
            next_item: NextItemParams {
                neighbours: 400,
                ..NextItemParams::default()
            },
            tuned_at: 1,
            sessions: 10,
            report: Some(Tuning::default()),
            baskets: None,
            repeat_customers: 0,
            basket_report: None,
        };
        registry.set("S", Some(tuning)).unwrap();
        let reopened = TuningRegistry::open(dir.path()).unwrap();
        assert_eq!(reopened.get("S").unwrap().next_item.neighbours, 400);
        reopened.set("S", None).unwrap();
        assert!(TuningRegistry::open(dir.path()).unwrap().get("S").is_none());
    }

    #[test]
    fn a_choice_saved_before_the_basket_tuning_still_reads() {
        let saved = r#"{"nextItem":{"neighbours":50,"seenWeight":1.5},"tunedAt":1,
            "sessions":1200,"report":{"validation_sessions":120,"validation_cases":240,
            "tries":43,"HR@k":0.5,"MRR@k":0.2,"seconds":1.0}}"#;
        let tuning: SiteTuning = serde_json::from_str(saved).unwrap();
        assert_eq!(tuning.next_item.neighbours, 50);
        // Settings the older choice did not know keep their built-in values.
        assert_eq!(tuning.next_item.repeat_weight, 0.0);
        assert_eq!(tuning.next_item.neighbour_weight, 1.0);
        let next = &tuning.next_item;
        assert_eq!(
            (
                next.trend_power,
                next.stale_half_life_ms,
                next.successor_depth
            ),
            (0.0, 0.0, 0.0),
            "weights added later are off for a choice made without them"
        );
        assert_eq!((next.shared_idf_power, next.embedding_weight), (0.0, 0.0));
        assert_eq!(tuning.report.unwrap().tries, 43);
        assert!(tuning.baskets.is_none());
    }
}
