//! One site's state and the dispatch of each event to its parts: the contacts
//! ([`crate::contacts`]), the catalogue, the recommendation models, block attribution,
//! trigger timers and product interest. Each part keeps its own rules; this file decides
//! only which parts an event concerns and in what order.

use rust_decimal::Decimal;
use serde::Serialize;
use spoor_protocol::{ContactLink, EventBody, ProductUpdate, TrackerEvent};
use thin_vec::ThinVec;

use crate::activity::{Activity, ProductEvent};
use crate::attribution::Attribution;
use crate::catalogue::{Catalogue, Product, ProductNews};
use crate::contacts::Contacts;
use crate::contacts::contact::{Contact, Line};
use crate::contacts::identity::{ContactId, Identifier, identifiers_of, identifiers_of_link};
use crate::contacts::view::contact_json;
use crate::interest::{self, Interest, MAX_INTERESTED};
use crate::items::ItemId;
use crate::limits::{self, Dropped, MAX_LINES};
use crate::recommend::Recommender;
use crate::recommend::query::{Answer, Request, recommend};
use crate::timers::{Pending, Timers, TriggerKind};

#[derive(Default)]
pub struct SiteState {
    pub(crate) contacts: Contacts,
    pub(crate) catalogue: Catalogue,
    pub(crate) recommender: Recommender,
    pub(crate) attribution: Attribution,
    pub(crate) timers: Timers,
    pub(crate) interest: Interest,
    pub(crate) activity: Activity,
    pub(crate) events: u64,
}

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
        self.contacts.get(id)
    }

    /// The contact as the API and a data export show it: its viewed products by key.
    pub fn contact_json(&self, contact: &Contact) -> serde_json::Value {
        contact_json(contact, self.recommender.items())
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
        self.interest.of(key).collect()
    }

    /// A contact by number; a merged one answers with the contact it was merged into.
    pub fn contact_by_id(&self, id: ContactId) -> Option<&Contact> {
        self.contacts.by_id(id)
    }

    pub fn product(&self, product_key: &str) -> Option<&Product> {
        self.catalogue.get(product_key)
    }

    /// Impressions, clicks and orders of recommendation blocks.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Events by type per minute and per day, and the searches asked.
    pub fn activity(&self) -> &Activity {
        &self.activity
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

    /// A due trigger taken but not fired (see [`Timers::put_back`]), unless what would
    /// have stopped it came while it was out: a purchase since its anchor (which stops
    /// every kind), or an emptied cart (an abandoned cart).
    pub fn put_back(&mut self, pending: Pending) {
        if let Some(contact) = self.contacts.by_id(pending.contact) {
            let bought_since = contact.orders.iter().any(|o| o.at >= pending.anchor);
            let cart_emptied = pending.kind == TriggerKind::AbandonedCart
                && contact.cart.as_ref().is_none_or(|c| c.lines.is_empty());
            if bought_since || cart_emptied {
                return;
            }
        }
        self.timers.put_back(pending);
    }

    /// Holds a due trigger until its contact can be reached (see
    /// [`Timers::await_identity`]).
    pub fn await_identity(&mut self, pending: Pending, deadline: i64) {
        self.timers.await_identity(pending, deadline);
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Every contact not merged into another, in number order.
    pub fn live_contacts(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.live()
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

    /// Events applied: a counter, where [`SiteState::counts`] reads every contact.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// What the site holds, from counters (no contact is read).
    pub fn counts(&self) -> SiteCounts {
        let live = self.contacts.live_count() as u64;
        SiteCounts {
            events: self.events,
            contacts: live,
            merged_contacts: self.contacts.created() as u64 - live,
            products: self.catalogue.len() as u64,
            orders: self.contacts.orders_held(),
        }
    }

    /// SHA-256 over the site's whole state (contacts in number order, products in key
    /// order), as hex: equal digests mean equal state, to compare a rebuild with a
    /// running server.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for contact in self.contacts.live() {
            hasher.update(serde_json::to_vec(contact).expect("contacts serialise"));
        }
        for product in self.catalogue.sorted() {
            hasher.update(serde_json::to_vec(product).expect("products serialise"));
        }
        self.activity.digest_into(&mut hasher);
        hex::encode(hasher.finalize())
    }

    pub fn apply(&mut self, event: &TrackerEvent, at: i64) {
        self.apply_dated(event, at, at);
    }

    /// [`SiteState::apply`], with what the event tells of products, and the site's
    /// activity counts, dated `catalogue_at` (no later than the event's arrival).
    pub fn apply_dated(&mut self, event: &TrackerEvent, at: i64, catalogue_at: i64) {
        self.events += 1;
        self.activity.apply(event, catalogue_at);
        self.apply_to_catalogue(event, catalogue_at);
        // An event that names no one (one whose personal data was erased) still tells
        // about products, but about no contact.
        let ids = identifiers_of(&event.visitor);
        // A page shown to a visitor known by nothing but a new cookie tells nothing about
        // them yet: a robot that runs the browser script would otherwise make a contact
        // of every page it loads.
        let unknown_page_visitor =
            event.kind().page().is_some() && ids.len() == 1 && !self.contacts.knows_any(&ids);
        if ids.is_empty()
            || unknown_page_visitor
            || matches!(event.body, EventBody::ProductUpdate { .. })
        {
            self.apply_to_models(event, None, at);
            self.count_products(&event.body, catalogue_at);
            self.attribution.apply(event, None, at);
            return;
        }
        let id = self.resolve(&ids, at);
        // An order sent again (from the page and from the shop's server, say) is stored
        // each time, but counts once: in the models and block revenue, as in the contact.
        let repeated_order = match &event.body {
            EventBody::PurchasedItems { purchase } => {
                (self.contacts.by_id(id)).is_some_and(|c| c.order(&purchase.order_number).is_some())
            }
            _ => false,
        };
        if !repeated_order {
            self.apply_to_models(event, Some(id), at);
            self.count_products(&event.body, catalogue_at);
            self.attribution.apply(event, Some(id), at);
        }
        self.timers.apply(event, id, at);
        let contact = self.contacts.live_mut(id);
        contact.touch(&event.visitor, at);
        if contact.reachable() && self.timers.awaits(id) {
            self.timers.identified(id);
        }
        // Products by number in the site's dictionary, before the contact is borrowed.
        let product_item = match &event.body {
            EventBody::ProductPage { product } | EventBody::AddToWishlist { product } => {
                self.recommender.intern(&product.product_key)
            }
            _ => None,
        };
        let lines = self.lines_of(&event.body);
        let contact = self.contacts.live_mut(id);
        let wanted_before = interest::changes_wants(&event.body).then(|| interest::wanted(contact));
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
            EventBody::PurchasedItems { purchase } => {
                let before = contact.orders.len();
                contact.add_order(purchase, lines, at);
                let after = contact.orders.len();
                self.contacts.orders_changed(before, after);
            }
            EventBody::CategoryPage { category_key } => contact.viewed_category(category_key, at),
            EventBody::SearchRequest { search } => {
                contact.searched(&search.query, search.found, at)
            }
            EventBody::ProductImpressions { .. }
            | EventBody::CustomerData
            | EventBody::ProductUpdate { .. }
            | EventBody::MainPage
            | EventBody::NotFound
            | EventBody::StatusCartPage
            | EventBody::PageView => {}
        }
        if let Some(before) = wanted_before {
            let after = interest::wanted(self.contacts.live_mut(id));
            (self.interest).note(id, &before, &after, self.recommender.items());
        }
    }

    /// A cart's or a purchase's lines as a contact keeps them.
    /// At most [`MAX_LINES`] of them: the first ones sent.
    fn lines_of(&mut self, body: &EventBody) -> ThinVec<Line> {
        let items = &mut self.recommender;
        let sent = match body {
            EventBody::StatusCart { cart } => cart.products.len(),
            EventBody::PurchasedItems { purchase } => purchase.products.len(),
            _ => 0,
        };
        if sent > MAX_LINES {
            limits::drop_one(Dropped::Line);
        }
        match body {
            EventBody::StatusCart { cart } => (cart.products.iter().take(MAX_LINES))
                .filter_map(|l| Some(Line::of_cart(l, items.intern(&l.product_key)?)))
                .collect(),
            EventBody::PurchasedItems { purchase } => (purchase.products.iter().take(MAX_LINES))
                .filter_map(|l| Some(Line::of_order(l, items.intern(&l.product_key)?)))
                .collect(),
            _ => ThinVec::new(),
        }
    }

    fn apply_to_models(&mut self, event: &TrackerEvent, visitor: Option<ContactId>, at: i64) {
        match &event.body {
            EventBody::ProductPage { product } => {
                self.recommender.viewed(visitor, &product.product_key, at)
            }
            // A contact's order sent again does not come here (see `apply`).
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

    /// A product page's view and an order's lines, per product and week, for the
    /// dashboard (an order sent again does not come here).
    fn count_products(&mut self, body: &EventBody, at: i64) {
        match body {
            EventBody::ProductPage { product } => {
                self.count_product(&product.product_key, ProductEvent::Viewed, at)
            }
            EventBody::PurchasedItems { purchase } => {
                for line in purchase.products.iter().take(MAX_LINES) {
                    self.count_product(&line.product_key, ProductEvent::Bought, at);
                }
            }
            _ => {}
        }
    }

    /// Counted for the catalogue's products only (itself capped): any key a client
    /// makes up would otherwise be a counter.
    fn count_product(&mut self, product_key: &str, what: ProductEvent, at: i64) {
        if self.catalogue.get(product_key).is_none() {
            return;
        }
        if let Some(item) = self.recommender.intern(product_key) {
            self.activity.product(item, what, at);
        }
    }

    /// A product's views and purchases per week, the latest weeks.
    pub fn product_weeks(&self, product_key: &str, now: i64) -> Vec<(i64, u32, u32)> {
        let item = self.recommender.items().get(product_key);
        item.and_then(|item| self.activity.product_weeks(item))
            .map(|weeks| weeks.by_week(now))
            .unwrap_or_default()
    }

    /// Items of the site's product feed, as of `at`.
    pub fn apply_feed(&mut self, items: &[ProductUpdate], at: i64) {
        for item in items {
            self.catalogue.feed(item, at);
        }
    }

    /// Applies the event to the catalogue; price drops and returns to stock it causes
    /// become due triggers for the contacts they concern.
    fn apply_to_catalogue(&mut self, event: &TrackerEvent, at: i64) {
        for (key, news) in self.catalogue.apply(event, at) {
            let kind = match news {
                ProductNews::PriceDrop => TriggerKind::PriceDrop,
                ProductNews::BackInStock => TriggerKind::BackInStock,
            };
            let Some(product) = self.catalogue.get(key) else {
                continue;
            };
            let item = self.recommender.item(key);
            // Who viewed it: the visitors of its latest view sessions.
            let viewers =
                (item.into_iter()).flat_map(|item| self.recommender.viewers(item, MAX_INTERESTED));
            let concerned =
                (self.interest).concerned(kind, key, product, item, viewers, &self.contacts);
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
    }

    /// The price the contact saw for the product: in their cart, else when they last
    /// viewed it or added it to their wishlist.
    pub fn seen_price(&self, contact: &Contact, product_key: &str) -> Option<Decimal> {
        let item = self.recommender.item(product_key);
        interest::seen_price(contact, self.catalogue.get(product_key)?, item)
    }

    /// A plugin's contact link joins its identifiers, but only where one of them already
    /// names a contact of this site: a link alone creates no one.
    pub fn link(&mut self, link: &ContactLink, at: i64) {
        let ids = identifiers_of_link(link);
        if self.contacts.knows_any(&ids) {
            self.resolve(&ids, at);
        }
    }

    /// The contact an event with `ids` belongs to (see [`Contacts::resolve`]); what
    /// attribution and timers keep of a contact merged into another follows it.
    fn resolve(&mut self, ids: &[Identifier], at: i64) -> ContactId {
        let resolved = self.contacts.resolve(ids, at);
        for merge in &resolved.merges {
            self.attribution.merge(merge.absorbed, merge.survivor);
            self.timers.merge(merge.absorbed, merge.survivor);
        }
        resolved.contact
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use spoor_protocol::dates::day_of;
    use spoor_protocol::{Incoming, parse_value};

    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const MINUTE: i64 = 60_000;

    fn apply(site: &mut SiteState, general: Value, body: Option<(&str, Value)>, at: i64) {
        let mut event = json!({"GeneralInfo": general});
        if let Some((name, value)) = body {
            event[name] = value;
        }
        match parse_value(&event, T0).expect("a valid event") {
            Incoming::Event(event) => site.apply(&event, T0 + at),
            _ => panic!("not an event"),
        }
    }

    fn general(name: &str, sc: &str) -> Value {
        json!({"eventName": name, "siteId": "S", "cookies": {"sc": sc}})
    }

    #[test]
    fn a_timer_put_back_after_a_purchase_or_an_emptied_cart_stays_stopped() {
        let cart = |products: Value| json!({"GUID": "g", "Products": products});
        let mug = json!([{"productKey": "mug", "price": "5", "quantity": 1}]);
        let wait = |_, _| Some(60 * MINUTE);
        for stop in ["purchase", "empty cart", "nothing"] {
            let mut site = SiteState::default();
            apply(
                &mut site,
                general("StatusCart", "ann"),
                Some(("StatusCart", cart(mug.clone()))),
                0,
            );
            let taken = site.take_due(T0 + 60 * MINUTE, wait);
            assert_eq!(taken.len(), 1, "{stop}");
            // While it is out (its record being stored), the event that stops it comes.
            match stop {
                "purchase" => apply(
                    &mut site,
                    general("PurchasedItems", "ann"),
                    Some((
                        "PurchasedItems",
                        json!({"OrderNumber": "o1", "Products": mug.clone()}),
                    )),
                    61 * MINUTE,
                ),
                "empty cart" => apply(
                    &mut site,
                    general("StatusCart", "ann"),
                    Some(("StatusCart", cart(json!([])))),
                    61 * MINUTE,
                ),
                _ => {}
            }
            site.put_back(taken[0].clone());
            let again = site.take_due(T0 + 62 * MINUTE, wait).len();
            assert_eq!(again, usize::from(stop == "nothing"), "{stop}");
        }
    }

    /// What `counts` reads from counters, found by reading every contact.
    fn counted_by_reading(site: &SiteState) -> (u64, u64) {
        let live = site.contacts.live().count() as u64;
        let orders = site.contacts.live().map(|c| c.orders.len() as u64).sum();
        (live, orders)
    }

    #[test]
    fn contacts_and_orders_are_counted_as_they_change() {
        let mut site = SiteState::default();
        let order = |number: &str| json!({"OrderNumber": number, "Products": [{"productKey": "mug", "price": 5, "quantity": 1}]});
        // Two devices, an order each (one shared number), then one person signs in on both.
        for (sc, number) in [
            ("home", "o1"),
            ("phone", "o1"),
            ("phone", "o2"),
            ("home", "o3"),
        ] {
            apply(
                &mut site,
                general("PurchasedItems", sc),
                Some(("PurchasedItems", order(number))),
                0,
            );
        }
        apply(
            &mut site,
            general("PurchasedItems", "home"),
            Some(("PurchasedItems", order("o3"))),
            0,
        );
        assert_eq!(
            site.counts().orders,
            4,
            "o1 twice (two contacts), o2, o3 once"
        );
        for sc in ["home", "phone"] {
            let mut signed_in = general("CustomerData", sc);
            signed_in["user_email"] = json!("ann@x.com");
            apply(&mut site, signed_in, None, MINUTE);
        }
        let counts = site.counts();
        assert_eq!((counts.contacts, counts.orders), counted_by_reading(&site));
        assert_eq!(
            (counts.contacts, counts.orders, counts.merged_contacts),
            (1, 3, 1)
        );
        let restored = SiteState::from_snapshot(site.to_snapshot());
        assert_eq!(restored.counts(), counts, "the same from a snapshot");
    }

    #[test]
    fn a_page_view_makes_no_contact_of_a_visitor_known_by_nothing_else() {
        let mut site = SiteState::default();
        apply(&mut site, general("PageView", "robot"), None, 0);
        apply(&mut site, general("MainPage", "robot"), None, 0);
        assert!(site.contact(&Identifier::Sc("robot".into())).is_none());
        assert_eq!(site.counts().events, 2, "counted as events all the same");
        // Known by the page's identity fields, or seen before: the contact is touched.
        let mut identified = general("PageView", "ann");
        identified["user_email"] = json!("ann@x.com");
        apply(&mut site, identified, None, MINUTE);
        assert!(site.contact(&Identifier::Sc("ann".into())).is_some());
        let view = json!({"productKey": "mug", "price": 5});
        apply(
            &mut site,
            general("ProductPage", "bob"),
            Some(("ProductPage", view)),
            0,
        );
        apply(&mut site, general("PageView", "bob"), None, 2 * MINUTE);
        assert!(site.contact(&Identifier::Sc("bob".into())).is_some());
    }

    #[test]
    fn a_merged_contacts_timers_and_block_touches_follow_it_to_the_survivor() {
        let mut site = SiteState::default();
        let mut signed_in = general("CustomerData", "home");
        signed_in["user_email"] = json!("ann@x.com");
        apply(&mut site, signed_in.clone(), None, 0);
        // On another device, not signed in yet: a block shows a lamp, a cart is left.
        let impressions = json!({"Products": [{"product_id": "lamp", "container_type": "home_a"}]});
        apply(
            &mut site,
            general("ProductImpressions", "phone"),
            Some(("ProductImpressions", impressions)),
            MINUTE,
        );
        let cart =
            json!({"GUID": "g", "Products": [{"productKey": "mug", "price": 5, "quantity": 1}]});
        apply(
            &mut site,
            general("StatusCart", "phone"),
            Some(("StatusCart", cart)),
            2 * MINUTE,
        );
        assert!(
            site.timers()
                .pending(1, TriggerKind::AbandonedCart)
                .is_some()
        );

        // Signing in on the phone joins the two: the older contact survives.
        signed_in["cookies"] = json!({"sc": "phone"});
        apply(&mut site, signed_in, None, 3 * MINUTE);
        assert_eq!(site.contact(&Identifier::Sc("phone".into())).unwrap().id, 0);
        assert!(
            site.timers()
                .pending(1, TriggerKind::AbandonedCart)
                .is_none()
        );
        let moved = site.timers().pending(0, TriggerKind::AbandonedCart);
        assert_eq!(moved.map(|p| p.anchor), Some(T0 + 2 * MINUTE));

        // Back home, the survivor opens the lamp the block showed on the phone: a click.
        let lamp = json!({"Product": {"productKey": "lamp", "price": 30}});
        apply(
            &mut site,
            general("ProductPage", "home"),
            Some(("ProductPage", lamp)),
            4 * MINUTE,
        );
        let day = day_of(T0);
        let stats = site.attribution().block("home", day, day);
        let clicks: u64 = stats
            .values()
            .flatten()
            .map(|(_, counts)| counts.clicks)
            .sum();
        assert_eq!(clicks, 1);
    }
}
