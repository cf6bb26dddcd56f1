//! Contacts and identity: who each event is about. A contact is known by the identifiers
//! events carry (the `sc` cookie, customer id, email, phone, the vendor's contact id);
//! [`identity`] holds the rules for when two contacts are one person, [`index`] finds a
//! contact by identifier, [`contact`] is what a contact holds.

pub mod contact;
pub mod identity;
pub mod index;
pub mod line;
pub mod view;

use rustc_hash::FxHashMap;

use contact::Contact;
use identity::{ContactId, Identifier, Identifiers};
use index::IdentifierIndex;

use serde::{Deserialize, Serialize};

/// A contact number as a snapshot keeps it: the contact, or the one it was merged into.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SlotSnapshot {
    Live(Box<Contact>),
    MergedInto(ContactId),
}

/// A site's contacts by number, and the identifier index over them.
#[derive(Default)]
pub struct Contacts {
    /// Contacts by number; `None` for one merged into another, which holds everything it
    /// had (`merged_into` says which). Eight bytes a contact, where an enum of the two
    /// would take sixteen.
    slots: Vec<Option<Box<Contact>>>,
    merged_into: FxHashMap<ContactId, ContactId>,
    index: IdentifierIndex,
    /// Orders the live contacts hold, kept as they change: counted without reading a
    /// million contacts.
    orders_held: u64,
}

/// A contact joined into another by an event. What other parts of the state keep per
/// contact (block attribution, trigger timers) follows it to the survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub absorbed: ContactId,
    pub survivor: ContactId,
}

/// The contact an event belongs to, and the merges it caused (rarely any), which the
/// caller hands on to the parts that keep something per contact.
#[derive(Debug)]
#[must_use = "merges must reach attribution and timers"]
pub struct Resolved {
    pub contact: ContactId,
    pub merges: Vec<Merge>,
}

impl Contacts {
    /// The contact an identifier names now.
    pub fn get(&self, id: &Identifier) -> Option<&Contact> {
        self.index.get(id).and_then(|c| self.by_id(c))
    }

    /// A contact by number; a merged one answers with the contact it was merged into.
    pub fn by_id(&self, mut id: ContactId) -> Option<&Contact> {
        loop {
            match self.slots.get(id as usize)? {
                Some(contact) => return Some(contact),
                None => id = *self.merged_into.get(&id)?,
            }
        }
    }

    /// Whether any of `ids` names a contact.
    pub fn knows_any(&self, ids: &[Identifier]) -> bool {
        ids.iter().any(|id| self.index.contains(id))
    }

    /// The contacts not merged into another, in number order.
    pub fn live(&self) -> impl Iterator<Item = &Contact> {
        self.slots.iter().filter_map(|slot| slot.as_deref())
    }

    /// Contacts ever created, merged ones included.
    pub fn created(&self) -> usize {
        self.slots.len()
    }

    /// Contacts not merged into another: a count, not a scan.
    pub fn live_count(&self) -> usize {
        self.slots.len() - self.merged_into.len()
    }

    /// Orders the live contacts hold.
    pub fn orders_held(&self) -> u64 {
        self.orders_held
    }

    /// A contact went from `before` orders to `after`.
    pub(crate) fn orders_changed(&mut self, before: usize, after: usize) {
        self.orders_held = (self.orders_held + after as u64).saturating_sub(before as u64);
    }

    /// A live contact, by a number the index or [`Contacts::resolve`] gave.
    pub(crate) fn live_mut(&mut self, id: ContactId) -> &mut Contact {
        match &mut self.slots[id as usize] {
            Some(contact) => contact,
            None => unreachable!("the index names only live contacts"),
        }
    }

    fn identifiers(&self, id: ContactId) -> &Identifiers {
        match &self.slots[id as usize] {
            Some(contact) => &contact.identifiers,
            None => unreachable!("the index names only live contacts"),
        }
    }

    /// The contact an event with `ids` belongs to, merging and moving identifiers by the
    /// rules in [`identity`].
    pub(crate) fn resolve(&mut self, ids: &[Identifier], at: i64) -> Resolved {
        let holders = self.holders(ids);
        // Candidates: matched by a permanent identifier first, then the oldest first.
        let mut candidates: Vec<(bool, ContactId)> = ids
            .iter()
            .zip(&holders)
            .filter_map(|(id, holder)| holder.map(|c| (!id.is_permanent(), c)))
            .collect();
        candidates.sort_unstable();
        let mut seen = Vec::new();
        candidates.retain(|(_, c)| {
            let new = !seen.contains(c);
            seen.push(*c);
            new
        });
        let anchor = candidates
            .iter()
            .map(|(_, c)| *c)
            .find(|c| self.identifiers(*c).accepts(ids))
            .unwrap_or_else(|| self.create(at));

        if candidates.iter().all(|(_, c)| *c == anchor) {
            // The usual event: it names its contact, or a new one; nobody else to join.
            // Nothing has changed the index since `holders` was read.
            self.attach_held(anchor, ids, &holders);
            return Resolved {
                contact: anchor,
                merges: Vec::new(),
            };
        }
        // Who joins the anchor: checked one by one against everything joined so far.
        let mut joined = self.identifiers(anchor).clone();
        for id in ids.iter().filter(|id| id.is_permanent()) {
            if joined.accepts(std::slice::from_ref(id)) && !self.index.contains(id) {
                // A scratch copy for the compatibility checks: what it lets go is moot.
                let _ = joined.insert(id.clone());
            }
        }
        let mut group = vec![anchor];
        for (_, candidate) in candidates {
            if candidate == anchor {
                continue;
            }
            let theirs = self.identifiers(candidate);
            if theirs.compatible(&joined) && theirs.accepts(ids) {
                let _ = joined.absorb(theirs.clone());
                group.push(candidate);
            } else {
                // Never merged: the shared identifiers that led here move to the anchor.
                let moving: Vec<Identifier> = ids
                    .iter()
                    .filter(|id| !id.is_permanent() && self.index.get(id) == Some(candidate))
                    .cloned()
                    .collect();
                let contact = self.live_mut(candidate);
                for id in &moving {
                    contact.identifiers.remove(id);
                }
            }
        }
        let survivor = *group.iter().min().expect("the anchor is in the group");
        let mut merges = Vec::new();
        for absorbed in group {
            if absorbed != survivor {
                self.merge(absorbed, survivor, at);
                merges.push(Merge { absorbed, survivor });
            }
        }
        self.attach(survivor, ids);
        Resolved {
            contact: survivor,
            merges,
        }
    }

    fn create(&mut self, at: i64) -> ContactId {
        let id = self.slots.len() as ContactId;
        self.slots.push(Some(Box::new(Contact::new(id, at))));
        id
    }

    fn merge(&mut self, absorbed: ContactId, survivor: ContactId, at: i64) {
        let Some(contact) = self.slots[absorbed as usize].take() else {
            unreachable!("only live contacts merge");
        };
        self.merged_into.insert(absorbed, survivor);
        for id in contact.identifiers.all() {
            self.index.insert(&id, survivor);
        }
        let before = contact.orders.len() + self.live_mut(survivor).orders.len();
        let let_go = self.live_mut(survivor).absorb(*contact, at);
        let after = self.live_mut(survivor).orders.len();
        self.orders_changed(before, after);
        self.unindex(&let_go, survivor);
    }

    /// Gives the contact every identifier of the event that it can hold: a shared one
    /// leaves its previous holder; a permanent one held by another contact stays there.
    fn attach(&mut self, contact: ContactId, ids: &[Identifier]) {
        let holders = self.holders(ids);
        self.attach_held(contact, ids, &holders);
    }

    /// Who holds each of `ids` in the index, looked up once for both the candidates and
    /// the attach (each lookup hashes the identifier and probes a table of millions).
    fn holders(&self, ids: &[Identifier]) -> Vec<Option<ContactId>> {
        ids.iter().map(|id| self.index.get(id)).collect()
    }

    /// [`Contacts::attach`], given `holders` as read before it: attaching one identifier
    /// changes the index entries of that identifier and of those its contact lets go,
    /// which are of its own kind, and an event has one identifier of each kind; so no
    /// step changes what a later one would have read.
    fn attach_held(
        &mut self,
        contact: ContactId,
        ids: &[Identifier],
        holders: &[Option<ContactId>],
    ) {
        for (id, holder) in ids.iter().zip(holders) {
            // The reasoning above, checked wherever the tests attach identifiers.
            debug_assert_eq!(
                *holder,
                self.index.get(id),
                "an identifier's holder went stale"
            );
            match *holder {
                Some(holder) if holder == contact => continue,
                Some(_) if id.is_permanent() => continue,
                Some(holder) => self.live_mut(holder).identifiers.remove(id),
                None => {}
            }
            if id.is_permanent() && !self.identifiers(contact).accepts(std::slice::from_ref(id)) {
                continue;
            }
            self.index.insert(id, contact);
            let let_go = self.live_mut(contact).identifiers.insert(id.clone());
            self.unindex(let_go.as_slice(), contact);
        }
    }

    /// Identifiers `contact` let go no longer name it.
    fn unindex(&mut self, let_go: &[Identifier], contact: ContactId) {
        for id in let_go {
            if self.index.get(id) == Some(contact) {
                self.index.remove(id);
            }
        }
    }

    /// Every contact number's slot, as a snapshot keeps it.
    pub(crate) fn to_slots(&self) -> Vec<SlotSnapshot> {
        (self.slots.iter().enumerate())
            .map(|(id, slot)| match slot {
                Some(contact) => SlotSnapshot::Live(contact.clone()),
                None => SlotSnapshot::MergedInto(self.merged_into[&(id as ContactId)]),
            })
            .collect()
    }

    /// The contacts a snapshot kept; the identifier index is derived from them.
    pub(crate) fn from_slots(slots: Vec<SlotSnapshot>) -> Contacts {
        let mut contacts = Contacts::default();
        for slot in slots {
            let id = contacts.slots.len() as ContactId;
            contacts.slots.push(match slot {
                SlotSnapshot::Live(contact) => {
                    for id in contact.identifiers.all() {
                        contacts.index.insert(&id, contact.id);
                    }
                    contacts.orders_held += contact.orders.len() as u64;
                    Some(contact)
                }
                SlotSnapshot::MergedInto(into) => {
                    contacts.merged_into.insert(id, into);
                    None
                }
            });
        }
        contacts
    }
}
