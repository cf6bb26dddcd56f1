//! Behavioural trigger timers, kept from the events like the rest of the state:
//! - abandoned cart: a non-empty cart starts (or restarts) its timer; an emptied cart or a
//!   purchase since stops it; follow-ups are later steps of the same timer;
//! - abandoned browse: each product view restarts it; a cart or a purchase stops it;
//! - search without results: a search that found nothing starts it; a product view or a
//!   cart since stops it.
//!
//! A timer is its contact, kind, step and *anchor* (the event time it counts from). Its
//! delay is a site setting read when timers are due, so a changed setting applies to the
//! timers already waiting. Timers wait in one queue per kind and step, ordered by anchor:
//! finding the due ones costs in proportion to how many are due, not to how many wait.
//!
//! A shop has a timer or two waiting for most of its contacts, so both tables are kept in
//! words: a queue entry is the anchor's second and the contact in 8 bytes (the exact
//! anchor is in the contact's entry), and a contact's entry is its number and kind in one
//! word and its anchor and step in another.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use spoor_protocol::{EventBody, TrackerEvent};

use crate::contacts::identity::ContactId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    AbandonedCart,
    AbandonedBrowse,
    SearchWithoutResults,
    WishlistReminder,
    PriceDrop,
    BackInStock,
}

impl TriggerKind {
    pub const ALL: [TriggerKind; 6] = [
        TriggerKind::AbandonedCart,
        TriggerKind::AbandonedBrowse,
        TriggerKind::SearchWithoutResults,
        TriggerKind::WishlistReminder,
        TriggerKind::PriceDrop,
        TriggerKind::BackInStock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::AbandonedCart => "abandoned-cart",
            TriggerKind::AbandonedBrowse => "abandoned-browse",
            TriggerKind::SearchWithoutResults => "search-without-results",
            TriggerKind::WishlistReminder => "wishlist-reminder",
            TriggerKind::PriceDrop => "price-drop",
            TriggerKind::BackInStock => "back-in-stock",
        }
    }
}

/// A timer that came due: what fires, for whom, counted from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub contact: ContactId,
    pub kind: TriggerKind,
    /// 0 for the first message, 1 for the first follow-up...
    pub step: u8,
    /// The time of the event the delay counts from (the cart's, the last view's).
    pub anchor: i64,
    /// Whether it came due while its contact could not be reached, and waited for them to
    /// be identified (so it is late by design, not stale).
    #[serde(default)]
    pub waited: bool,
    /// The product a price drop or a return to stock concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl Pending {
    /// A timer of `contact`'s: no product, not waited for identification.
    pub fn timer(contact: ContactId, kind: TriggerKind, step: u8, anchor: i64) -> Pending {
        Pending {
            contact,
            kind,
            step,
            anchor,
            waited: false,
            product: None,
        }
    }
}

/// A timer in its queue: the second of its anchor (high half), then its contact.
type QueueEntry = u64;

fn queue_entry(anchor: i64, contact: ContactId) -> QueueEntry {
    let second = anchor.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u64;
    (second << 32) | u64::from(contact)
}

fn second_of(entry: QueueEntry) -> u32 {
    (entry >> 32) as u32
}

fn contact_of(entry: QueueEntry) -> ContactId {
    entry as u32
}

/// The waiting timer of each contact and kind: (contact, kind) -> (step, anchor), each
/// pair packed in a word (16-byte entries, where tuples would take 24).
#[derive(Debug, Clone, Default)]
struct Current(FxHashMap<u64, i64>);

impl Current {
    fn key(contact: ContactId, kind: TriggerKind) -> u64 {
        (u64::from(contact) << 8) | kind as u64
    }

    fn get(&self, contact: ContactId, kind: TriggerKind) -> Option<(u8, i64)> {
        self.0.get(&Current::key(contact, kind)).map(|v| unpack(*v))
    }

    fn insert(&mut self, contact: ContactId, kind: TriggerKind, step: u8, anchor: i64) {
        // Anchors are event times in milliseconds: 56 bits reach far past any of them.
        self.0
            .insert(Current::key(contact, kind), (anchor << 8) | i64::from(step));
    }

    fn remove(&mut self, contact: ContactId, kind: TriggerKind) -> Option<(u8, i64)> {
        let removed = self.0.remove(&Current::key(contact, kind)).map(unpack);
        // Timers come and go in waves (a sale's carts, then their purchases): a table
        // sized for the crest is given back once three quarters of it are empty.
        if self.0.capacity() > 4096 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
        removed
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// (contact, kind, step, anchor) of every waiting timer.
    fn iter(&self) -> impl Iterator<Item = (ContactId, TriggerKind, u8, i64)> + '_ {
        self.0.iter().map(|(key, value)| {
            let (step, anchor) = unpack(*value);
            let kind = TriggerKind::ALL[(key & 0xff) as usize];
            ((key >> 8) as ContactId, kind, step, anchor)
        })
    }
}

fn unpack(value: i64) -> (u8, i64) {
    ((value & 0xff) as u8, value >> 8)
}

/// [`Timers`] as a snapshot keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimersSnapshot {
    pub pending: Vec<Pending>,
    #[serde(default)]
    pub awaiting: Vec<(i64, Pending)>,
    #[serde(default)]
    pub ready: Vec<Pending>,
}

/// The pending timers of one site.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    queues: BTreeMap<(TriggerKind, u8), BTreeSet<QueueEntry>>,
    current: Current,
    /// Due triggers of contacts with no email or phone yet, until a deadline.
    awaiting: FxHashMap<ContactId, Vec<(i64, Pending)>>,
    /// Deadlines of `awaiting`, to drop the expired without a scan.
    deadlines: BTreeSet<(i64, ContactId)>,
    /// Awaiting triggers whose contact was identified: due at the next take.
    ready: Vec<Pending>,
}

impl Timers {
    /// Starts the contact's timer of `kind` at `anchor`, replacing an older one (a later
    /// event restarts it; an earlier one arriving late changes nothing).
    pub fn start(&mut self, contact: ContactId, kind: TriggerKind, anchor: i64) {
        if let Some((_, current)) = self.current.get(contact, kind)
            && current > anchor
        {
            return;
        }
        self.remove(contact, kind);
        self.insert(Pending::timer(contact, kind, 0, anchor));
    }

    /// Stops the contact's timer of `kind` if it started at or before `at`.
    pub fn stop(&mut self, contact: ContactId, kind: TriggerKind, at: i64) {
        if let Some((_, anchor)) = self.current.get(contact, kind)
            && anchor <= at
        {
            self.remove(contact, kind);
        }
    }

    /// Queues the next step of a timer that fired, from the same anchor.
    pub fn follow_up(&mut self, fired: &Pending) {
        if self.current.get(fired.contact, fired.kind).is_some() {
            return; // restarted since: the new timer wins
        }
        self.insert(Pending::timer(
            fired.contact,
            fired.kind,
            fired.step + 1,
            fired.anchor,
        ));
    }

    /// Holds a due trigger whose contact cannot be reached yet (no email or phone) until
    /// `deadline`: it comes due again once the contact is identified.
    pub fn await_identity(&mut self, pending: Pending, deadline: i64) {
        self.deadlines.insert((deadline, pending.contact));
        self.awaiting
            .entry(pending.contact)
            .or_default()
            .push((deadline, pending));
    }

    /// The contact can be reached now: what waited for it comes due, unless a newer timer
    /// of the same kind started since or a purchase stopped it (`stopped`).
    pub fn identified(&mut self, contact: ContactId) {
        let Some(waiting) = self.awaiting.remove(&contact) else {
            return;
        };
        for (deadline, pending) in waiting {
            self.deadlines.remove(&(deadline, contact));
            if self.current.get(contact, pending.kind).is_none() {
                self.ready.push(Pending {
                    waited: true,
                    product: None,
                    ..pending
                });
            }
        }
    }

    /// A trigger due at once (a price drop, a return to stock): fired at the next take.
    pub fn due_now(&mut self, pending: Pending) {
        self.ready.push(pending);
    }

    /// Whether anything waits for `contact` to be identified.
    pub fn awaits(&self, contact: ContactId) -> bool {
        self.awaiting.contains_key(&contact)
    }

    /// Whether [`Timers::take_due`] at `now` would find anything: read from the heads of
    /// the queues only, so the common case (nothing due) needs no write access.
    pub fn any_due(&self, now: i64, delay: impl Fn(TriggerKind, u8) -> Option<i64>) -> bool {
        if !self.ready.is_empty() || self.deadlines.first().is_some_and(|(d, _)| *d <= now) {
            return true;
        }
        self.queues.iter().any(|(&(kind, step), queue)| {
            queue.first().is_some_and(|entry| {
                // From the second alone: at worst a take that finds nothing yet.
                let earliest = i64::from(second_of(*entry)) * 1000;
                delay(kind, step).is_none_or(|wait| earliest.saturating_add(wait) <= now)
            })
        })
    }

    /// A due trigger taken but not fired (its record could not be stored, or this node
    /// does not send): back where it was taken from, still due. A timer goes back into
    /// its queue, where a purchase or a newer event still reaches it, unless a newer
    /// timer of its kind started meanwhile; one due at once goes back with those.
    pub fn put_back(&mut self, pending: Pending) {
        if pending.waited || pending.product.is_some() {
            self.ready.push(pending);
        } else if self.current.get(pending.contact, pending.kind).is_none() {
            self.insert(pending);
        }
    }

    /// Takes every timer due at `now`. `delay(kind, step)` is the wait after the anchor,
    /// in milliseconds, or `None` when that step is off (its timers are dropped).
    pub fn take_due(
        &mut self,
        now: i64,
        delay: impl Fn(TriggerKind, u8) -> Option<i64>,
    ) -> Vec<Pending> {
        while let Some(&(deadline, contact)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(waiting) = self.awaiting.get_mut(&contact) {
                waiting.retain(|(d, _)| *d > now);
                if waiting.is_empty() {
                    self.awaiting.remove(&contact);
                }
            }
        }
        let mut due = std::mem::take(&mut self.ready);
        for (&(kind, step), queue) in self.queues.iter_mut() {
            let wait = delay(kind, step);
            let mut taken = Vec::new();
            for &entry in queue.iter() {
                if wait.is_some_and(|wait| i64::from(second_of(entry)) * 1000 + wait > now) {
                    break; // this second and all later ones are not due yet
                }
                let contact = contact_of(entry);
                let Some((_, anchor)) = self.current.get(contact, kind) else {
                    taken.push(entry); // not expected: an entry that outlived its timer
                    continue;
                };
                // Within the second, anchors are not in order: each is looked at.
                if wait.is_none_or(|wait| anchor.saturating_add(wait) <= now) {
                    taken.push(entry);
                    if wait.is_some() {
                        due.push(Pending::timer(contact, kind, step, anchor));
                    }
                }
            }
            for entry in taken {
                queue.remove(&entry);
                self.current.remove(contact_of(entry), kind);
            }
        }
        due
    }

    /// A merged contact's timers go to the survivor, where it has none of that kind.
    pub fn merge(&mut self, absorbed: ContactId, survivor: ContactId) {
        for kind in TriggerKind::ALL {
            if let Some((step, anchor)) = self.current.get(absorbed, kind) {
                self.remove(absorbed, kind);
                let theirs = self.current.get(survivor, kind).map(|(_, a)| a);
                if theirs.is_none_or(|a| a < anchor) {
                    self.remove(survivor, kind);
                    self.insert(Pending::timer(survivor, kind, step, anchor));
                }
            }
        }
    }

    /// The timer of `kind` waiting for `contact`, if any.
    pub fn pending(&self, contact: ContactId, kind: TriggerKind) -> Option<Pending> {
        let (step, anchor) = self.current.get(contact, kind)?;
        Some(Pending::timer(contact, kind, step, anchor))
    }

    /// Timers waiting, triggers waiting for their contact to be identified, and those
    /// whose contact was.
    pub fn len(&self) -> usize {
        self.current.len() + self.awaiting.values().map(Vec::len).sum::<usize>() + self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything waiting, for the snapshot.
    pub fn to_snapshot(&self) -> TimersSnapshot {
        let mut awaiting: Vec<(i64, Pending)> = self.awaiting.values().flatten().cloned().collect();
        awaiting.sort_by_key(|(deadline, p)| (*deadline, p.contact));
        TimersSnapshot {
            pending: self.all(),
            awaiting,
            ready: self.ready.clone(),
        }
    }

    pub fn from_snapshot(snapshot: TimersSnapshot) -> Timers {
        let mut timers = Timers::from_all(snapshot.pending);
        for (deadline, pending) in snapshot.awaiting {
            timers.await_identity(pending, deadline);
        }
        timers.ready = snapshot.ready;
        timers
    }

    /// Every waiting timer.
    pub fn all(&self) -> Vec<Pending> {
        let mut all: Vec<Pending> = self
            .current
            .iter()
            .map(|(contact, kind, step, anchor)| Pending::timer(contact, kind, step, anchor))
            .collect();
        all.sort_by_key(|p| (p.anchor, p.contact, p.kind));
        all
    }

    pub fn from_all(all: Vec<Pending>) -> Timers {
        let mut timers = Timers::default();
        for pending in all {
            timers.insert(pending);
        }
        timers
    }

    fn insert(&mut self, pending: Pending) {
        let Pending {
            contact,
            kind,
            step,
            anchor,
            ..
        } = pending;
        let queue = self.queues.entry((kind, step)).or_default();
        queue.insert(queue_entry(anchor, contact));
        self.current.insert(contact, kind, step, anchor);
    }

    fn remove(&mut self, contact: ContactId, kind: TriggerKind) {
        if let Some((step, anchor)) = self.current.remove(contact, kind)
            && let Some(queue) = self.queues.get_mut(&(kind, step))
        {
            queue.remove(&queue_entry(anchor, contact));
        }
    }

    /// What `event` by `contact` at `at` starts and stops.
    pub fn apply(&mut self, event: &TrackerEvent, contact: ContactId, at: i64) {
        use TriggerKind::*;
        match &event.body {
            EventBody::StatusCart { cart } if cart.products.is_empty() => {
                self.stop(contact, AbandonedCart, at);
            }
            EventBody::StatusCart { .. } => {
                self.start(contact, AbandonedCart, at);
                self.stop(contact, AbandonedBrowse, at);
                self.stop(contact, SearchWithoutResults, at);
            }
            EventBody::PurchasedItems { .. } => {
                for kind in TriggerKind::ALL {
                    self.stop(contact, kind, at);
                }
                // What waited for this buyer to be identified is moot now.
                if let Some(waiting) = self.awaiting.remove(&contact) {
                    for (deadline, _) in waiting {
                        self.deadlines.remove(&(deadline, contact));
                    }
                }
            }
            EventBody::ProductPage { .. } => {
                self.start(contact, AbandonedBrowse, at);
                self.stop(contact, SearchWithoutResults, at);
            }
            EventBody::SearchRequest { search } if search.found == Some(false) => {
                self.start(contact, SearchWithoutResults, at);
            }
            EventBody::AddToWishlist { .. } => {
                self.start(contact, WishlistReminder, at);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::test_events::{MINUTE, T0, event, general};

    fn cart(keys: &[&str]) -> TrackerEvent {
        let products: Vec<Value> = keys
            .iter()
            .map(|k| json!({"productKey": k, "price": 1, "quantity": 1}))
            .collect();
        event(json!({"GeneralInfo": general("StatusCart"), "StatusCart": {"Products": products}}))
    }

    fn view() -> TrackerEvent {
        event(json!({"GeneralInfo": general("ProductPage"),
                     "ProductPage": {"Product": {"productKey": "p", "price": "1"}}}))
    }

    fn purchase() -> TrackerEvent {
        event(json!({"GeneralInfo": general("PurchasedItems"),
                     "PurchasedItems": {"OrderNumber": "1", "Products": [
                         {"product_id": "p", "unit_price": "1", "quantity": 1}]}}))
    }

    fn search(found: bool) -> TrackerEvent {
        event(json!({"GeneralInfo": general("SearchRequest"),
                     "SearchRequest": {"search": "boots", "isFound": u8::from(found)}}))
    }

    #[test]
    fn timers_in_the_same_second_come_due_each_at_its_own_millisecond() {
        let mut timers = Timers::default();
        let second = T0 - T0 % 1000;
        timers.start(1, TriggerKind::AbandonedBrowse, second + 700);
        timers.start(2, TriggerKind::AbandonedBrowse, second + 200);
        timers.start(3, TriggerKind::AbandonedBrowse, second + 1_000);
        let wait = |_, _| Some(30 * MINUTE);
        let at = |ms| second + 30 * MINUTE + ms;
        assert!(!timers.any_due(at(-1), wait));
        assert!(timers.take_due(at(199), wait).is_empty());
        let due = timers.take_due(at(200), wait);
        assert_eq!(
            due,
            vec![Pending::timer(
                2,
                TriggerKind::AbandonedBrowse,
                0,
                second + 200
            )]
        );
        assert!(
            timers.any_due(at(200), wait),
            "the second has one more to come"
        );
        assert!(timers.take_due(at(699), wait).is_empty());
        let due = timers.take_due(at(1_000), wait);
        let contacts: Vec<ContactId> = due.iter().map(|p| p.contact).collect();
        assert_eq!(contacts, vec![1, 3]);
        assert!(timers.is_empty());
    }

    #[test]
    fn a_timer_put_back_is_due_again_where_a_purchase_or_a_newer_cart_still_reaches_it() {
        let wait = |_, _| Some(30 * MINUTE);
        let mut timers = Timers::default();
        timers.start(1, TriggerKind::AbandonedCart, T0);
        let taken = timers.take_due(T0 + 30 * MINUTE, wait);
        timers.put_back(taken[0].clone());
        assert_eq!(timers.take_due(T0 + 30 * MINUTE, wait), taken, "due again");
        timers.put_back(taken[0].clone());
        timers.stop(1, TriggerKind::AbandonedCart, T0 + 31 * MINUTE);
        assert!(timers.is_empty(), "a purchase still stops it");
        // A newer cart since it was taken wins over the one put back.
        timers.start(1, TriggerKind::AbandonedCart, T0 + 40 * MINUTE);
        timers.put_back(taken[0].clone());
        assert_eq!(timers.all().len(), 1);
        assert_eq!(timers.all()[0].anchor, T0 + 40 * MINUTE);
        // One due at once goes back with those.
        let drop = Pending {
            product: Some("p".into()),
            ..Pending::timer(2, TriggerKind::PriceDrop, 0, T0)
        };
        timers.put_back(drop.clone());
        assert_eq!(timers.take_due(T0, wait), vec![drop]);
    }

    #[test]
    fn every_kind_is_at_its_own_place_in_the_list_of_all() {
        for (index, kind) in TriggerKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
        }
    }

    /// Cart after 60 minutes, follow-up after a day; browse and search after 30 minutes.
    fn delays(kind: TriggerKind, step: u8) -> Option<i64> {
        match (kind, step) {
            (TriggerKind::AbandonedCart, 0) => Some(60 * MINUTE),
            (TriggerKind::AbandonedCart, 1) => Some(24 * 60 * MINUTE),
            (_, 0) => Some(30 * MINUTE),
            _ => None,
        }
    }

    fn kinds(due: &[Pending]) -> Vec<(TriggerKind, u8)> {
        due.iter().map(|p| (p.kind, p.step)).collect()
    }

    #[test]
    fn an_abandoned_cart_fires_after_its_delay_then_its_follow_up() {
        let mut timers = Timers::default();
        timers.apply(&cart(&["a"]), 1, T0);
        assert!(!timers.any_due(T0 + 59 * MINUTE, delays));
        assert!(timers.take_due(T0 + 59 * MINUTE, delays).is_empty());
        assert!(timers.any_due(T0 + 60 * MINUTE, delays));
        let due = timers.take_due(T0 + 60 * MINUTE, delays);
        assert_eq!(kinds(&due), vec![(TriggerKind::AbandonedCart, 0)]);
        timers.follow_up(&due[0]);
        assert!(timers.take_due(T0 + 23 * 60 * MINUTE, delays).is_empty());
        let due = timers.take_due(T0 + 24 * 60 * MINUTE, delays);
        assert_eq!(kinds(&due), vec![(TriggerKind::AbandonedCart, 1)]);
        // No third step is set: the follow-up of the follow-up is dropped.
        timers.follow_up(&due[0]);
        assert!(
            timers
                .take_due(T0 + 365 * 24 * 60 * MINUTE, delays)
                .is_empty()
        );
        assert!(timers.is_empty());
    }

    #[test]
    fn a_purchase_stops_it_and_a_cart_change_restarts_it() {
        let mut timers = Timers::default();
        timers.apply(&cart(&["a"]), 1, T0);
        timers.apply(&cart(&["a", "b"]), 1, T0 + 40 * MINUTE);
        assert!(
            timers.take_due(T0 + 60 * MINUTE, delays).is_empty(),
            "restarted at 40 min"
        );
        assert_eq!(timers.take_due(T0 + 100 * MINUTE, delays).len(), 1);

        timers.apply(&cart(&["a"]), 2, T0);
        timers.apply(&purchase(), 2, T0 + 10 * MINUTE);
        timers.apply(&cart(&["c"]), 3, T0);
        timers.apply(&cart(&[]), 3, T0 + 5 * MINUTE);
        assert!(timers.take_due(T0 + 1000 * MINUTE, delays).is_empty());
        // A purchase that happened before the cart (arriving late) does not stop it.
        timers.apply(&cart(&["d"]), 4, T0 + 10 * MINUTE);
        timers.apply(&purchase(), 4, T0);
        assert_eq!(timers.take_due(T0 + 1000 * MINUTE, delays).len(), 1);
    }

    #[test]
    fn browse_and_search_wait_for_inactivity_and_stop_on_intent() {
        let mut timers = Timers::default();
        timers.apply(&view(), 1, T0);
        timers.apply(&view(), 1, T0 + 20 * MINUTE);
        assert!(timers.take_due(T0 + 45 * MINUTE, delays).is_empty());
        let due = timers.take_due(T0 + 50 * MINUTE, delays);
        assert_eq!(kinds(&due), vec![(TriggerKind::AbandonedBrowse, 0)]);
        // A cart after the views stops the browse timer (and starts the cart's).
        timers.apply(&view(), 2, T0);
        timers.apply(&cart(&["a"]), 2, T0 + MINUTE);
        let due = timers.take_due(T0 + 1000 * MINUTE, delays);
        assert_eq!(kinds(&due), vec![(TriggerKind::AbandonedCart, 0)]);
        // A search that found nothing, then a product view: nothing to say.
        timers.apply(&search(false), 3, T0);
        timers.apply(&search(true), 4, T0);
        timers.apply(&search(false), 5, T0);
        timers.apply(&view(), 3, T0 + MINUTE);
        let due = timers.take_due(T0 + 1000 * MINUTE, delays);
        let who: Vec<(ContactId, TriggerKind)> = due.iter().map(|p| (p.contact, p.kind)).collect();
        assert_eq!(
            who,
            vec![
                (3, TriggerKind::AbandonedBrowse),
                (5, TriggerKind::SearchWithoutResults)
            ]
        );
    }

    #[test]
    fn an_anonymous_visitor_waits_to_be_identified_until_a_deadline() {
        let mut timers = Timers::default();
        timers.apply(&cart(&["a"]), 1, T0);
        timers.apply(&cart(&["b"]), 2, T0);
        let due = timers.take_due(T0 + 60 * MINUTE, delays);
        assert_eq!(due.len(), 2);
        let deadline = T0 + 24 * 60 * MINUTE;
        for pending in due {
            timers.await_identity(pending, deadline);
        }
        assert!(timers.take_due(T0 + 120 * MINUTE, delays).is_empty());
        // Contact 1 leaves an email: its cart comes due at once.
        timers.identified(1);
        let due = timers.take_due(T0 + 121 * MINUTE, delays);
        assert_eq!(due.iter().map(|p| p.contact).collect::<Vec<_>>(), vec![1]);
        // Contact 2 is identified after the deadline: too late.
        assert!(timers.take_due(deadline, delays).is_empty());
        timers.identified(2);
        assert!(timers.take_due(deadline + MINUTE, delays).is_empty());
        assert!(timers.is_empty());
    }

    #[test]
    fn a_disabled_kind_drops_its_timers_and_merges_keep_the_latest() {
        let mut timers = Timers::default();
        timers.apply(&view(), 1, T0);
        let off = |kind, step| {
            (kind == TriggerKind::AbandonedCart)
                .then_some(0)
                .and(delays(kind, step))
        };
        assert!(timers.take_due(T0, off).is_empty());
        assert!(timers.is_empty(), "browse is off: its timer is gone");

        timers.apply(&cart(&["a"]), 1, T0);
        timers.apply(&cart(&["b"]), 2, T0 + MINUTE);
        timers.merge(2, 1);
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers
                .pending(1, TriggerKind::AbandonedCart)
                .map(|p| p.anchor),
            Some(T0 + MINUTE)
        );
        let restored = Timers::from_all(timers.all());
        assert_eq!(restored.all(), timers.all());
    }
}
