//! The state as a snapshot holds it, with the log position it reflects, so that a start
//! replays only the log's tail; and the conversion of each site's state to and from it.
//! Where snapshots are kept, and when, is the live state's business (`spoor-live`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spoor_protocol::retries::{Retries, RetriesSnapshot};

use crate::activity::Activity;
use crate::attribution::Attribution;
use crate::catalogue::Product;
use crate::contacts::identity::ContactId;
use crate::contacts::{Contacts, SlotSnapshot};
use crate::interest::Interest;
use crate::recommend::Recommender;
use crate::timers::{Timers, TimersSnapshot};
use crate::{Engine, SiteState};

/// Bumped when the snapshot's shape changes; an older snapshot is then not used.
pub const VERSION: u32 = 6;

/// The whole engine's state at a log position.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Log records the state reflects: replay resumes here.
    pub position: u64,
    pub sites: BTreeMap<String, SiteSnapshot>,
    /// Recent events' request hashes, so that a retry after the snapshot is still one
    /// (on a log with several writers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesSnapshot>,
}

impl Snapshot {
    /// The engine's state, which reflects the log up to `position`.
    pub fn of(engine: &Engine, position: u64) -> Snapshot {
        Snapshot {
            version: VERSION,
            position,
            sites: (engine.sites().into_iter())
                .map(|(id, site)| (id.to_string(), site.to_snapshot()))
                .collect(),
            retries: engine.retries.as_ref().map(Retries::to_snapshot),
        }
    }

    /// The state and position kept; `Err` with the version found when the snapshot was
    /// written in another shape.
    pub fn restore(self) -> Result<(Engine, u64), u32> {
        if self.version != VERSION {
            return Err(self.version);
        }
        let mut engine = Engine {
            retries: self.retries.map(Retries::from_snapshot),
            ..Engine::default()
        };
        for (id, site) in self.sites {
            engine.insert_site(id, SiteState::from_snapshot(site));
        }
        Ok((engine, self.position))
    }
}

#[derive(Serialize, Deserialize)]
pub struct SiteSnapshot {
    pub events: u64,
    pub slots: Vec<SlotSnapshot>,
    pub products: Vec<Product>,
    /// The recommendation models (sessions, baskets, counts).
    #[serde(default)]
    pub recommender: Option<Recommender>,
    /// Block impressions, clicks and orders.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Events by type per minute and per day, searches asked.
    #[serde(default)]
    pub activity: Activity,
    /// Trigger timers waiting.
    #[serde(default)]
    pub timers: TimersSnapshot,
    /// Product -> contacts who put it in a cart or a wishlist (for price-drop and
    /// back-in-stock triggers; those who viewed it are in the recommender's sessions).
    #[serde(default)]
    pub interest: Vec<(String, Vec<ContactId>)>,
}

impl SiteState {
    pub fn to_snapshot(&self) -> SiteSnapshot {
        SiteSnapshot {
            events: self.events,
            slots: self.contacts.to_slots(),
            products: self.catalogue.sorted().into_iter().cloned().collect(),
            recommender: Some(self.recommender.clone()),
            attribution: Some(self.attribution.clone()),
            activity: self.activity.clone(),
            timers: self.timers.to_snapshot(),
            interest: self.interest.to_snapshot(),
        }
    }

    /// The state saved in `snapshot`; the identifier index is derived from the contacts.
    pub fn from_snapshot(snapshot: SiteSnapshot) -> SiteState {
        let mut site = SiteState {
            events: snapshot.events,
            contacts: Contacts::from_slots(snapshot.slots),
            recommender: snapshot.recommender.unwrap_or_default(),
            attribution: snapshot.attribution.unwrap_or_default(),
            activity: snapshot.activity,
            timers: Timers::from_snapshot(snapshot.timers),
            interest: Interest::from_snapshot(snapshot.interest),
            ..SiteState::default()
        };
        for product in snapshot.products {
            site.catalogue.insert(product);
        }
        site
    }
}
