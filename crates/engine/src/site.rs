//! One site's state: its contacts, the identifier index over them, and its catalogue.

use std::collections::{HashMap, VecDeque};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use serde::Serialize;
use spoor_protocol::{ContactLink, EventBody, ProductUpdate, TrackerEvent};
use thin_vec::ThinVec;

use crate::attribution::Attribution;
use crate::catalogue::{Catalogue, Product};
use crate::contact::{Contact, Line, Timed};
use crate::identity::{
    ContactId, Identifier, IdentifierIndex, Identifiers, identifiers_of, identifiers_of_link,
};
use crate::recommend::query::{Answer, Request, recommend};
use crate::recommend::{ItemId, Recommender};
use crate::snapshot::{SiteSnapshot, SlotSnapshot};
use crate::triggers::{Pending, Timers, TriggerKind};

#[derive(Default)]
pub struct SiteState {
    /// Contacts by number; `None` for one merged into another, which holds everything it
    /// had (`merged_into` says which). Eight bytes a contact where an enum of the two
    /// took sixteen.
    slots: Vec<Option<Box<Contact>>>,
    merged_into: FxHashMap<ContactId, ContactId>,
    index: IdentifierIndex,
    catalogue: Catalogue,
    recommender: Recommender,
    attribution: Attribution,
    timers: Timers,
    /// Product -> the contacts who have it in their cart or wishlist now (the latest
    /// [`MAX_INTERESTED`] to put it there). With those who viewed it (the visitors of its
    /// latest [`MAX_INTERESTED`] view sessions, which the recommender keeps), they hear of
    /// its price drops and returns to stock. Views are most of a shop's events: a list of
    /// their own would hold a contact number for nearly every event applied.
    interest: HashMap<String, VecDeque<ContactId>>,
    events: u64,
}

/// Contacts remembered per product for product triggers (and view sessions asked).
pub const MAX_INTERESTED: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteCounts {
    pub events: u64,
    pub contacts: u64,
    pub merged_contacts: u64,
    pub products: u64,
    pub orders: u64,
}

impl SiteState {
    /// The contact an identifier names now.
    pub fn contact(&self, id: &Identifier) -> Option<&Contact> {
        self.index.get(id).and_then(|c| self.contact_by_id(c))
    }

    /// The contact as the API and a data export show it: its viewed products by key.
    pub fn contact_json(&self, contact: &Contact) -> serde_json::Value {
        let mut json = serde_json::to_value(contact).expect("contacts serialise");
        json["viewedProducts"] = self
            .viewed_products(contact)
            .map(|(key, at)| serde_json::json!({"key": key, "at": at}))
            .collect();
        json["wishlist"] = (contact.wishlist.iter())
            .map(|w| (self.product_key(w.item).to_string(), w.at.into()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        if let Some(cart) = &contact.cart {
            let lines = cart.lines.iter();
            let lines = lines.map(|l| l.to_cart_line(self.product_key(l.item)));
            json["cart"]["lines"] =
                serde_json::to_value(lines.collect::<Vec<_>>()).expect("cart lines serialise");
        }
        for order in &contact.orders {
            let lines = order.lines.iter();
            let lines = lines.map(|l| l.to_order_line(self.product_key(l.item)));
            json["orders"][order.order_number()]["lines"] =
                serde_json::to_value(lines.collect::<Vec<_>>()).expect("order lines serialise");
        }
        json
    }

    /// The key of a product number that views, carts and orders hold.
    pub fn product_key(&self, item: ItemId) -> &str {
        self.recommender.key(item)
    }

    /// The contact's viewed products, latest first: (product key, when).
    pub fn viewed_products<'a>(
        &'a self,
        contact: &'a Contact,
    ) -> impl Iterator<Item = (&'a str, i64)> + 'a {
        let items = contact.viewed_products.iter();
        items.map(|v| (self.product_key(v.item), v.at))
    }

    /// The contacts in the product's interest list, oldest first.
    #[cfg(test)]
    pub(crate) fn interested(&self, key: &str) -> Vec<ContactId> {
        self.interest
            .get(key)
            .into_iter()
            .flatten()
            .copied()
            .collect()
    }

    /// A contact by number; a merged one answers with the contact it was merged into.
    pub fn contact_by_id(&self, mut id: ContactId) -> Option<&Contact> {
        loop {
            match self.slots.get(id as usize)? {
                Some(contact) => return Some(contact),
                None => id = *self.merged_into.get(&id)?,
            }
        }
    }

    pub fn product(&self, product_key: &str) -> Option<&Product> {
        self.catalogue.get(product_key)
    }

    /// Impressions, clicks and orders of recommendation blocks.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Trigger timers due at `now` (see [`Timers::take_due`]); they leave the state.
    pub fn take_due(
        &mut self,
        now: i64,
        delay: impl Fn(TriggerKind, u8) -> Option<i64>,
    ) -> Vec<Pending> {
        self.timers.take_due(now, delay)
    }

    /// Queues the next step of a trigger that fired.
    pub fn follow_up(&mut self, fired: &Pending) {
        self.timers.follow_up(fired);
    }

    /// Holds a due trigger until its contact can be reached (see
    /// [`Timers::await_identity`]).
    pub fn await_identity(&mut self, pending: Pending, deadline: i64) {
        self.timers.await_identity(pending, deadline);
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// The recommendation models.
    pub fn recommender(&self) -> &Recommender {
        &self.recommender
    }

    /// The recommendation models, to change their settings.
    pub fn recommender_mut(&mut self) -> &mut Recommender {
        &mut self.recommender
    }

    /// Recommended products for `request`.
    pub fn recommend<'a>(&'a self, request: &Request<'a>) -> Answer<'a> {
        recommend(&self.recommender, &self.catalogue, request)
    }

    pub fn counts(&self) -> SiteCounts {
        let live = self.live().count() as u64;
        SiteCounts {
            events: self.events,
            contacts: live,
            merged_contacts: self.slots.len() as u64 - live,
            products: self.catalogue.len() as u64,
            orders: self.live().map(|c| c.orders.len() as u64).sum(),
        }
    }

    pub fn to_snapshot(&self) -> SiteSnapshot {
        SiteSnapshot {
            events: self.events,
            slots: self
                .slots
                .iter()
                .enumerate()
                .map(|(id, slot)| match slot {
                    Some(contact) => SlotSnapshot::Live(contact.clone()),
                    None => SlotSnapshot::MergedInto(self.merged_into[&(id as ContactId)]),
                })
                .collect(),
            products: self.catalogue.sorted().into_iter().cloned().collect(),
            recommender: Some(self.recommender.clone()),
            attribution: Some(self.attribution.clone()),
            timers: self.timers.to_snapshot(),
            interest: {
                let mut interest: Vec<(String, Vec<ContactId>)> = self
                    .interest
                    .iter()
                    .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
                    .collect();
                interest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                interest
            },
        }
    }

    /// The state saved in `snapshot`; the identifier index is derived from the contacts.
    pub fn from_snapshot(snapshot: SiteSnapshot) -> SiteState {
        let mut site = SiteState {
            events: snapshot.events,
            ..SiteState::default()
        };
        for slot in snapshot.slots {
            let id = site.slots.len() as ContactId;
            site.slots.push(match slot {
                SlotSnapshot::Live(contact) => {
                    for id in contact.identifiers.all() {
                        site.index.insert(&id, contact.id);
                    }
                    Some(contact)
                }
                SlotSnapshot::MergedInto(into) => {
                    site.merged_into.insert(id, into);
                    None
                }
            });
        }
        for product in snapshot.products {
            site.catalogue.insert(product);
        }
        site.recommender = snapshot.recommender.unwrap_or_default();
        site.attribution = snapshot.attribution.unwrap_or_default();
        site.timers = Timers::from_snapshot(snapshot.timers);
        site.interest = snapshot
            .interest
            .into_iter()
            .map(|(key, contacts)| (key, contacts.into()))
            .collect();
        site
    }

    /// SHA-256 over the site's whole state (contacts in number order, products in key
    /// order), as hex: equal digests mean equal state, to compare a rebuild with a
    /// running server.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for contact in self.live() {
            hasher.update(serde_json::to_vec(contact).expect("contacts serialise"));
        }
        for product in self.catalogue.sorted() {
            hasher.update(serde_json::to_vec(product).expect("products serialise"));
        }
        hex::encode(hasher.finalize())
    }

    fn live(&self) -> impl Iterator<Item = &Contact> {
        self.slots.iter().filter_map(|slot| slot.as_deref())
    }

    fn live_mut(&mut self, id: ContactId) -> &mut Contact {
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

    pub fn apply(&mut self, event: &TrackerEvent, at: i64) {
        self.events += 1;
        self.apply_to_catalogue(event, at);
        // An event that names no one (one whose personal data was erased) still tells
        // about products, but about no contact.
        let ids = identifiers_of(&event.visitor);
        if ids.is_empty() || matches!(event.body, EventBody::ProductUpdate { .. }) {
            self.apply_to_models(event, None, at);
            self.attribution.apply(event, None, at);
            return;
        }
        let id = self.resolve(&ids, at);
        self.apply_to_models(event, Some(id), at);
        self.attribution.apply(event, Some(id), at);
        self.timers.apply(event, id, at);
        let contact = self.live_mut(id);
        contact.touch(&event.visitor, at);
        if contact.reachable() && self.timers.awaits(id) {
            self.timers.identified(id);
        }
        // Products by number in the site's dictionary, before the contact is borrowed.
        let product_item = match &event.body {
            EventBody::ProductPage { product } | EventBody::AddToWishlist { product } => {
                Some(self.recommender.intern(&product.product_key))
            }
            _ => None,
        };
        let lines = self.lines_of(&event.body);
        let contact = self.live_mut(id);
        let wanted_before = changes_wants(&event.body).then(|| wanted(contact));
        match &event.body {
            EventBody::ProductPage { .. } => {
                if let Some(item) = product_item {
                    contact.viewed_product(item, at)
                }
            }
            EventBody::AddToWishlist { .. } => {
                if let Some(item) = product_item {
                    contact.add_to_wishlist(item, at)
                }
            }
            EventBody::StatusCart { cart } => contact.set_cart(cart, lines, at),
            EventBody::PurchasedItems { purchase } => contact.add_order(purchase, lines, at),
            EventBody::CategoryPage { category_key } => contact.viewed_category(category_key, at),
            EventBody::SearchRequest { search } => {
                contact.searched(&search.query, search.found, at)
            }
            EventBody::ProductImpressions { .. }
            | EventBody::CustomerData
            | EventBody::ProductUpdate { .. } => {}
        }
        if let Some(before) = wanted_before {
            let after = wanted(self.live_mut(id));
            self.note_interest(id, &before, &after);
        }
    }

    /// A cart's or a purchase's lines as a contact keeps them.
    fn lines_of(&mut self, body: &EventBody) -> ThinVec<Line> {
        let items = &mut self.recommender;
        match body {
            EventBody::StatusCart { cart } => (cart.products.iter())
                .map(|l| Line::of_cart(l, items.intern(&l.product_key)))
                .collect(),
            EventBody::PurchasedItems { purchase } => (purchase.products.iter())
                .map(|l| Line::of_order(l, items.intern(&l.product_key)))
                .collect(),
            _ => ThinVec::new(),
        }
    }

    fn apply_to_models(&mut self, event: &TrackerEvent, visitor: Option<ContactId>, at: i64) {
        match &event.body {
            EventBody::ProductPage { product } => {
                self.recommender.viewed(visitor, &product.product_key, at)
            }
            // Ingest stores an order number once per site: every order here is new.
            EventBody::PurchasedItems { purchase } => self.recommender.purchased(
                purchase
                    .products
                    .iter()
                    .map(|l| (l.product_key.as_str(), l.quantity)),
                at,
            ),
            _ => {}
        }
    }

    /// Items of the site's product feed, as of `at`.
    pub fn apply_feed(&mut self, items: &[ProductUpdate], at: i64) {
        for item in items {
            self.catalogue.feed(item, at);
        }
    }

    /// Applies the event to the catalogue; price drops and returns to stock it causes
    /// become due triggers for the contacts interested in those products.
    fn apply_to_catalogue(&mut self, event: &TrackerEvent, at: i64) {
        let touched = touched_products(event);
        let before: Vec<(Option<Decimal>, Option<bool>)> = touched
            .iter()
            .map(|key| self.price_and_stock(key))
            .collect();
        self.change_catalogue(event, at);
        for (key, (old_price, old_stock)) in touched.iter().zip(before) {
            let (new_price, new_stock) = self.price_and_stock(key);
            if let (Some(old), Some(new)) = (old_price, new_price)
                && new < old
            {
                self.announce(key, TriggerKind::PriceDrop, at);
            }
            if old_stock == Some(false) && new_stock == Some(true) {
                self.announce(key, TriggerKind::BackInStock, at);
            }
        }
    }

    fn price_and_stock(&self, key: &str) -> (Option<Decimal>, Option<bool>) {
        let product = self.catalogue.get(key);
        (
            product
                .and_then(|p| p.price.as_ref())
                .map(|p| p.value.amount),
            product.and_then(|p| p.in_stock.as_ref()).map(|s| s.value),
        )
    }

    /// Makes `kind` due for every interested contact it concerns: for a price drop, those
    /// who saw a higher price; for a return to stock, those who wanted it (wishlist, cart)
    /// or viewed it while it was out of stock.
    fn announce(&mut self, key: &str, kind: TriggerKind, at: i64) {
        let Some(product) = self.catalogue.get(key) else {
            return;
        };
        let item = self.recommender.item(key);
        let wanted = self.interest.get(key).into_iter().flatten().copied();
        let viewers = item.into_iter().flat_map(|item| {
            // Who viewed it: the visitors of its latest view sessions.
            self.recommender.viewers(item, MAX_INTERESTED)
        });
        let mut asked = rustc_hash::FxHashSet::default();
        let mut concerned = Vec::new();
        for id in wanted.chain(viewers) {
            let Some(contact) = self.contact_by_id(id) else {
                continue;
            };
            if !asked.insert(contact.id) {
                continue;
            }
            let tell = match kind {
                TriggerKind::PriceDrop => {
                    let now = product.price.as_ref().map(|p| p.value.amount);
                    seen_price(contact, product, item)
                        .zip(now)
                        .is_some_and(|(seen, now)| now < seen)
                }
                _ => wanted_while_out(contact, product, item),
            };
            if tell {
                concerned.push(contact.id);
            }
        }
        for contact in concerned {
            self.timers.due_now(Pending {
                contact,
                kind,
                step: 0,
                anchor: at,
                waited: false,
                product: Some(key.to_string()),
            });
        }
    }

    /// Keeps the contact in the interest lists of the products it wants now (`after`),
    /// out of those it no longer does: a list then names those a price drop or a return
    /// to stock concerns, not every contact that once had the product in a cart.
    fn note_interest(&mut self, contact: ContactId, before: &[ItemId], after: &[ItemId]) {
        for item in before.iter().filter(|i| !after.contains(i)) {
            let key = self.recommender.key(*item);
            if let Some(interested) = self.interest.get_mut(key) {
                interested.retain(|c| *c != contact);
                if interested.is_empty() {
                    self.interest.remove(key);
                }
            }
        }
        for item in after.iter().filter(|i| !before.contains(i)) {
            let key = self.recommender.key(*item);
            let interested = match self.interest.get_mut(key) {
                Some(interested) => interested,
                None => self.interest.entry(key.to_string()).or_default(),
            };
            if interested.len() >= MAX_INTERESTED {
                interested.pop_front();
            } else if interested.len() == interested.capacity() {
                // Grown by a quarter rather than doubled: these lists, one per product,
                // are most of the index, and doubling would leave up to half of each empty.
                let room = MAX_INTERESTED - interested.len();
                let more = (interested.len() / 4).max(4).min(room);
                interested.reserve_exact(more);
            }
            interested.push_back(contact);
        }
    }

    /// The price the contact saw for the product: in their cart, else when they last
    /// viewed it or added it to their wishlist.
    pub fn seen_price(&self, contact: &Contact, product_key: &str) -> Option<Decimal> {
        let item = self.recommender.item(product_key);
        seen_price(contact, self.catalogue.get(product_key)?, item)
    }

    fn change_catalogue(&mut self, event: &TrackerEvent, at: i64) {
        let catalogue = &mut self.catalogue;
        match &event.body {
            EventBody::ProductUpdate { products } => {
                for update in products {
                    catalogue.update(update, at);
                }
            }
            EventBody::ProductPage { product } | EventBody::AddToWishlist { product } => catalogue
                .observe(
                    &product.product_key,
                    Some(&product.price),
                    product.in_stock,
                    at,
                ),
            EventBody::StatusCart { cart } => {
                for line in &cart.products {
                    catalogue.observe(&line.product_key, Some(&line.price), None, at);
                }
            }
            EventBody::PurchasedItems { purchase } => {
                for line in &purchase.products {
                    catalogue.mention(&line.product_key, at);
                }
            }
            _ => {}
        }
    }

    /// A plugin's contact link joins its identifiers, but only where one of them already
    /// names a contact of this site: a link alone creates no one.
    pub fn link(&mut self, link: &ContactLink, at: i64) {
        let ids = identifiers_of_link(link);
        if ids.iter().any(|id| self.index.contains(id)) {
            self.resolve(&ids, at);
        }
    }

    /// The contact an event with `ids` belongs to, merging and moving identifiers by the
    /// rules in [`crate::identity`].
    fn resolve(&mut self, ids: &[Identifier], at: i64) -> ContactId {
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
            return anchor;
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
        for member in group {
            if member != survivor {
                self.merge(member, survivor, at);
            }
        }
        self.attach(survivor, ids);
        survivor
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
        self.attribution.merge(absorbed, survivor);
        self.timers.merge(absorbed, survivor);
        let let_go = self.live_mut(survivor).absorb(*contact, at);
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

    /// [`SiteState::attach`], given `holders` as read before it: attaching one identifier
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
}

/// The products an event can change the price or stock of.
fn touched_products(event: &TrackerEvent) -> Vec<&str> {
    match &event.body {
        EventBody::ProductUpdate { products } => products
            .iter()
            .filter(|u| u.price.is_some() || u.in_stock.is_some())
            .map(|u| u.product_key.as_str())
            .collect(),
        EventBody::ProductPage { product } | EventBody::AddToWishlist { product } => {
            vec![product.product_key.as_str()]
        }
        EventBody::StatusCart { cart } => cart
            .products
            .iter()
            .map(|l| l.product_key.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

/// The value a history held at `at` (histories are of changes, oldest first).
fn value_at<T: Copy>(history: &[Timed<T>], at: i64) -> Option<T> {
    let index = history.partition_point(|h| h.at <= at);
    index.checked_sub(1).map(|i| history[i].value)
}

/// Whether the event can change what the contact wants (its cart, its wishlist).
fn changes_wants(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::StatusCart { .. }
            | EventBody::AddToWishlist { .. }
            | EventBody::PurchasedItems { .. }
    )
}

/// The products in the contact's cart and wishlist.
fn wanted(contact: &Contact) -> Vec<ItemId> {
    let in_cart = contact.cart.iter().flat_map(|c| &c.lines).map(|l| l.item);
    let mut items: Vec<ItemId> = in_cart
        .chain(contact.wishlist.iter().map(|w| w.item))
        .collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// `item`: the product's number in the site's product dictionary, which views, carts and
/// wishlists hold.
fn seen_price(contact: &Contact, product: &Product, item: Option<ItemId>) -> Option<Decimal> {
    if let Some(line) = contact
        .cart
        .iter()
        .flat_map(|c| &c.lines)
        .find(|l| Some(l.item) == item)
    {
        return Some(line.price());
    }
    let viewed = contact
        .viewed_products
        .iter()
        .filter(|v| Some(v.item) == item);
    let wished = contact.wishlist.iter().filter(|w| Some(w.item) == item);
    let seen = viewed.map(|v| v.at).chain(wished.map(|w| w.at)).max()?;
    value_at(&product.price_history, seen)
}

/// Whether the contact wanted the product (wishlist, cart) or viewed it while out of stock.
fn wanted_while_out(contact: &Contact, product: &Product, item: Option<ItemId>) -> bool {
    let in_cart = contact
        .cart
        .iter()
        .flat_map(|c| &c.lines)
        .any(|l| Some(l.item) == item);
    let wished = contact.wishlist.iter().any(|w| Some(w.item) == item);
    let viewed_out = contact
        .viewed_products
        .iter()
        .filter(|v| Some(v.item) == item)
        .any(|v| value_at(&product.stock_history, v.at) == Some(false));
    in_cart || wished || viewed_out
}
