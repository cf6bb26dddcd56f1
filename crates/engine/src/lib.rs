//! The state spoor derives from its event log: per site, the contacts (identity across
//! cookie, customer id, email and phone, with their carts, wishlists, orders, views and
//! searches) and the catalogue (products, prices, stock, with history).
//!
//! The engine knows nothing of HTTP, files or of where records come from: it is fed the
//! log's records in log order (by `spoor-live`'s follower), and the same records always
//! give the same state, so it can be rebuilt from the log at any time.

pub mod activity;
pub mod attribution;
pub mod catalogue;
pub mod compact;
pub mod contacts;
pub mod interest;
pub mod items;
pub mod limits;
pub mod recommend;
pub mod site;
pub mod snapshot;
pub mod timed;
pub mod timers;

#[cfg(test)]
mod test_events;

use std::collections::HashMap;

use spoor_protocol::retries::Retries;
use spoor_protocol::stored::{RecordContent, StoredRecord};

pub use catalogue::Product;
pub use contacts::contact::Contact;
pub use contacts::identity::{ContactId, Identifier};
pub use site::{SiteCounts, SiteState};

#[derive(Default)]
pub struct Engine {
    sites: HashMap<String, SiteState>,
    /// Recent events' request hashes, on a log several processes append to: a client's
    /// retry stored twice (through two ingest nodes, say) is counted once.
    retries: Option<Retries>,
}

impl Engine {
    /// Decides retries (see [`Retries`]) or not: on a log with several writers. Taken
    /// from a snapshot or started empty; dropped on a log with one writer, which never
    /// holds a retry (its ingest answers it `duplicate` and stores nothing).
    pub fn decide_retries(&mut self, several_writers: bool) {
        match (several_writers, &self.retries) {
            (true, None) => self.retries = Some(Retries::default()),
            (false, Some(_)) => self.retries = None,
            _ => {}
        }
    }

    /// Whether this engine decides retries (see [`Engine::decide_retries`]).
    pub fn decides_retries(&self) -> bool {
        self.retries.is_some()
    }

    /// Applies one record; records must come in log order. A retry of an event applied
    /// shortly before changes nothing (see [`Engine::decide_retries`]).
    pub fn apply(&mut self, record: &StoredRecord) {
        if let Some(retries) = &mut self.retries
            && retries.is_retry(record)
        {
            return;
        }
        match &record.content {
            RecordContent::Event(event) => {
                let at = event.datetime.unwrap_or(record.received_at);
                // A client may date an event up to a day ahead (clock skew): its word
                // is taken for the visitor's history, not for the catalogue, where the
                // latest-dated price or stock wins and a future date would hold it
                // against the shop's own updates for a day.
                let catalogue_at = at.min(record.received_at);
                self.site_entry(&event.site_id)
                    .apply_dated(event, at, catalogue_at);
            }
            RecordContent::ContactLink(link) => {
                for site in self.sites.values_mut() {
                    site.link(link, record.received_at);
                }
            }
            RecordContent::Feed(feed) => {
                let site = self.sites.entry(feed.site_id.clone()).or_default();
                site.apply_feed(&feed.items, record.received_at);
            }
            // What it asks of a reader (read the log again) is the follower's to do; the
            // state of a log read from its start after the keys were deleted is the
            // state without the person.
            RecordContent::Erasure(_) => {}
        }
    }

    pub fn site(&self, site_id: &str) -> Option<&SiteState> {
        self.sites.get(site_id)
    }

    /// The site's state, made when the site has none yet. Looked up by reference first:
    /// every record names a site, and all but its first find it.
    fn site_entry(&mut self, site_id: &str) -> &mut SiteState {
        if !self.sites.contains_key(site_id) {
            self.sites.insert(site_id.to_string(), SiteState::default());
        }
        self.sites.get_mut(site_id).expect("inserted above")
    }

    pub fn site_mut(&mut self, site_id: &str) -> Option<&mut SiteState> {
        self.sites.get_mut(site_id)
    }

    fn insert_site(&mut self, site_id: String, site: SiteState) {
        self.sites.insert(site_id, site);
    }

    /// Every site with state, in site id order.
    pub fn sites(&self) -> Vec<(&str, &SiteState)> {
        let mut sites: Vec<(&str, &SiteState)> =
            self.sites.iter().map(|(id, s)| (id.as_str(), s)).collect();
        sites.sort_unstable_by_key(|(id, _)| *id);
        sites
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spoor_protocol::{Incoming, parse_value};

    const T0: i64 = 1_700_000_000_000;

    static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// A record as ingest stores it, from a wire body.
    fn record(body: serde_json::Value) -> StoredRecord {
        let content = match parse_value(&body, T0 + 1_000_000).unwrap() {
            Incoming::Event(event) => RecordContent::Event(event),
            Incoming::ContactLink(link) => RecordContent::ContactLink(link),
            Incoming::PluginLog(_) => panic!("not stored"),
        };
        // Received when parsed: after every event time the tests give, as ingest's
        // clock is for a client's.
        StoredRecord {
            sealed: None,
            received_at: T0 + 1_000_000,
            // Each record its own request: a repeated one would be a client's retry.
            request_hash: spoor_protocol::stored::hash_hex(u128::from(
                NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            )),
            content,
        }
    }

    fn info(at: i64, ids: serde_json::Value) -> serde_json::Value {
        let mut info = json!({"eventName": "CustomerData", "siteId": "S", "datetime": T0 + at});
        for (k, v) in ids.as_object().unwrap() {
            info[k] = v.clone();
        }
        info
    }

    fn customer(at: i64, ids: serde_json::Value) -> StoredRecord {
        record(json!({"GeneralInfo": info(at, ids)}))
    }

    fn cart(at: i64, sc: &str, guid: &str, keys: &[&str]) -> StoredRecord {
        let mut general = info(at, json!({"cookies": {"sc": sc}}));
        general["eventName"] = json!("StatusCart");
        let products: Vec<_> = keys
            .iter()
            .map(|k| json!({"productKey": k, "price": 10, "quantity": 1}))
            .collect();
        record(json!({"GeneralInfo": general, "StatusCart": {"GUID": guid, "Products": products}}))
    }

    fn wish(at: i64, sc: &str, key: &str) -> StoredRecord {
        let mut general = info(at, json!({"cookies": {"sc": sc}}));
        general["eventName"] = json!("AddToWishlist");
        record(
            json!({"GeneralInfo": general, "AddToWishlist": {"Product": {"productKey": key, "price": "5"}}}),
        )
    }

    fn view(at: i64, sc: &str, key: &str) -> StoredRecord {
        let mut general = info(at, json!({"cookies": {"sc": sc}}));
        general["eventName"] = json!("ProductPage");
        record(
            json!({"GeneralInfo": general, "ProductPage": {"Product": {"productKey": key, "price": "5 USD", "isInStock": 1}}}),
        )
    }

    fn purchase(at: i64, ids: serde_json::Value, order: &str, guid: Option<&str>) -> StoredRecord {
        let mut general = info(at, ids);
        general["eventName"] = json!("PurchasedItems");
        let mut body = json!({"OrderNumber": order, "Products": [
            {"product_id": "a", "unit_price": "2.50", "quantity": 2},
            {"product_id": "b", "unit_price": "1", "quantity": 1}]});
        if let Some(guid) = guid {
            body["GUID"] = json!(guid);
        }
        record(json!({"GeneralInfo": general, "PurchasedItems": body}))
    }

    fn engine(records: &[StoredRecord]) -> Engine {
        let mut engine = Engine::default();
        for r in records {
            engine.apply(r);
        }
        engine
    }

    fn sc(value: &str) -> Identifier {
        Identifier::Sc(value.into())
    }

    fn email(value: &str) -> Identifier {
        Identifier::Email(value.into())
    }

    #[test]
    fn a_cookie_and_an_email_join_and_views_follow_the_survivor() {
        let engine = engine(&[
            view(1, "c1", "p1"),
            customer(
                2,
                json!({"user_email": "Ann@Mail.com", "cookies": {"sc": "c2"}}),
            ),
            view(3, "c2", "p2"),
            // One event names both: the two contacts merge, the older survives.
            customer(
                4,
                json!({"user_email": "ann@mail.com", "cookies": {"sc": "c1"}}),
            ),
        ]);
        let site = engine.site("S").unwrap();
        let ann = site.contact(&email("ann@mail.com")).unwrap();
        assert_eq!(ann.id, 0);
        assert_eq!(site.contact(&sc("c2")).unwrap().id, 0);
        let viewed: Vec<&str> = site.viewed_products(ann).map(|(key, _)| key).collect();
        assert_eq!(viewed, ["p2", "p1"]);
        assert_eq!(ann.merges().len(), 1);
        assert_eq!(ann.merges()[0].absorbed, 1);
        assert_eq!(
            site.contact_by_id(1).unwrap().id,
            0,
            "a merged id answers with the survivor"
        );
        assert_eq!(site.counts().contacts, 1);
    }

    #[test]
    fn a_retry_stored_twice_counts_once_on_a_log_with_several_writers_only() {
        let first = view(1, "v", "a");
        // The same request through another ingest node: later, with the same hash.
        let again = StoredRecord {
            sealed: None,
            received_at: first.received_at + 5_000,
            ..first.clone()
        };
        let events = |several_writers: bool| {
            let mut engine = Engine::default();
            engine.decide_retries(several_writers);
            engine.apply(&first);
            engine.apply(&again);
            engine.site("S").unwrap().counts().events
        };
        assert_eq!(events(true), 1);
        assert_eq!(events(false), 2);
    }

    #[test]
    fn an_order_sent_twice_counts_once_and_another_buyers_same_number_counts_too() {
        let ann = json!({"user_email": "ann@x.com", "cookies": {"sc": "a"}});
        let once = engine(&[purchase(1, ann.clone(), "77", None)]);
        let twice = engine(&[
            purchase(1, ann.clone(), "77", None),
            // Sent again from the shop's server, with a cart id this time.
            purchase(2, json!({"user_email": "ann@x.com"}), "77", Some("g")),
        ]);
        let sold = |e: &Engine| e.site("S").unwrap().recommender().sold("a");
        assert!(sold(&once) > 0.0);
        assert_eq!(sold(&twice), sold(&once));
        let someone_else = engine(&[
            purchase(1, json!({"cookies": {"sc": "mallory"}}), "77", None),
            purchase(2, ann, "77", None),
        ]);
        assert!(
            sold(&someone_else) > sold(&once),
            "a number sent ahead keeps no order out"
        );
        let site = someone_else.site("S").unwrap();
        assert!(
            site.contact(&email("ann@x.com"))
                .unwrap()
                .order("77")
                .is_some()
        );
    }

    #[test]
    fn merge_chains_end_in_one_contact() {
        let engine = engine(&[
            view(1, "c1", "p1"),
            view(2, "c2", "p2"),
            view(3, "c3", "p3"),
            customer(4, json!({"externalCustomerId": 9, "cookies": {"sc": "c2"}})),
            customer(
                5,
                json!({"externalCustomerId": "9", "user_phone": "+380 50 111 22 33"}),
            ),
            customer(
                6,
                json!({"user_phone": "380501112233", "cookies": {"sc": "c3"}}),
            ),
            customer(
                7,
                json!({"externalCustomerId": "9", "cookies": {"sc": "c1"}}),
            ),
        ]);
        let site = engine.site("S").unwrap();
        let one = site
            .contact(&Identifier::ExternalCustomerId("9".into()))
            .unwrap();
        for cookie in ["c1", "c2", "c3"] {
            assert_eq!(site.contact(&sc(cookie)).unwrap().id, one.id, "{cookie}");
        }
        assert_eq!(one.viewed_products.len(), 3);
        assert_eq!(site.counts().contacts, 1);
        assert_eq!(site.counts().merged_contacts, 2);
    }

    #[test]
    fn different_emails_never_merge_and_the_cookie_moves_to_the_newer() {
        let engine = engine(&[
            customer(
                1,
                json!({"user_email": "a@x.com", "cookies": {"sc": "shared"}}),
            ),
            cart(2, "shared", "g1", &["p1"]),
            // Someone else signs in on the same computer.
            customer(
                3,
                json!({"user_email": "b@x.com", "cookies": {"sc": "shared"}}),
            ),
            view(4, "shared", "p9"),
        ]);
        let site = engine.site("S").unwrap();
        let a = site.contact(&email("a@x.com")).unwrap();
        let b = site.contact(&email("b@x.com")).unwrap();
        assert_ne!(a.id, b.id);
        assert!(!a.identifiers.cookies.contains("shared"));
        assert!(b.identifiers.cookies.contains("shared"));
        assert_eq!(a.cart.as_ref().unwrap().lines.len(), 1, "a keeps its cart");
        assert_eq!(
            site.viewed_products(b).next().unwrap().0,
            "p9",
            "the cookie's new events go to b"
        );
        assert!(a.merges().is_empty() && b.merges().is_empty());
    }

    #[test]
    fn the_cart_with_the_latest_datetime_wins_in_any_arrival_order() {
        let events = [
            cart(1, "c", "g1", &["a"]),
            cart(3, "c", "g3", &["a", "b", "c"]),
            cart(2, "c", "g2", &["a", "b"]),
        ];
        let in_order = engine(&[events[0].clone(), events[2].clone(), events[1].clone()]);
        let shuffled = engine(&events);
        let cart_of = |e: &Engine| e.site("S").unwrap().contact(&sc("c")).unwrap().cart.clone();
        assert_eq!(cart_of(&in_order), cart_of(&shuffled));
        assert_eq!(cart_of(&shuffled).unwrap().guid.as_deref(), Some("g3"));
        // An empty cart clears it; an older non-empty state arriving late does not undo that.
        let cleared = engine(&[
            cart(1, "c", "g1", &["a"]),
            cart(5, "c", "g5", &[]),
            cart(2, "c", "g2", &["a"]),
        ]);
        let cart = cart_of(&cleared).unwrap();
        assert!(cart.is_empty());
        assert_eq!(cart.guid.as_deref(), Some("g5"));
    }

    #[test]
    fn product_interest_follows_what_carts_and_wishlists_hold_now() {
        let mut engine = engine(&[
            cart(1, "a", "g1", &["lamp", "rug"]),
            cart(1, "b", "g2", &["lamp"]),
        ]);
        let interested = |engine: &Engine, key: &str| engine.site("S").unwrap().interested(key);
        assert_eq!(interested(&engine, "lamp"), [0, 1]);
        assert_eq!(interested(&engine, "rug"), [0]);
        // Out of the cart, out of the list; an older cart arriving late changes nothing.
        engine.apply(&cart(3, "a", "g1", &["rug"]));
        engine.apply(&cart(2, "a", "g1", &["lamp", "rug", "mug"]));
        assert_eq!(interested(&engine, "lamp"), [1]);
        assert_eq!(interested(&engine, "mug"), Vec::<ContactId>::new());
        // A wishlist keeps a product wanted after the cart is bought.
        engine.apply(&wish(4, "a", "rug"));
        engine.apply(&purchase(
            5,
            json!({"cookies": {"sc": "a"}}),
            "A-1",
            Some("g1"),
        ));
        engine.apply(&purchase(
            5,
            json!({"cookies": {"sc": "b"}}),
            "B-1",
            Some("g2"),
        ));
        assert_eq!(interested(&engine, "rug"), [0]);
        assert_eq!(interested(&engine, "lamp"), Vec::<ContactId>::new());
    }

    #[test]
    fn a_purchase_linked_by_guid_empties_the_cart_and_is_stored_once() {
        let engine = engine(&[
            cart(1, "c", "g1", &["a", "b"]),
            purchase(2, json!({"cookies": {"sc": "c"}}), "A-1", Some("g1")),
            purchase(3, json!({"cookies": {"sc": "c"}}), "A-1", None),
        ]);
        let site = engine.site("S").unwrap();
        let contact = site.contact(&sc("c")).unwrap();
        assert!(contact.cart.as_ref().unwrap().is_empty());
        assert_eq!(contact.orders.len(), 1);
        let order = contact.order("A-1").unwrap();
        assert_eq!(order.cart_guid(), Some("g1"));
        assert_eq!(order.total().to_string(), "6");
        assert_eq!(site.counts().orders, 1);
        // A purchase of another cart leaves the current one alone.
        let other = engine_with_other_guid();
        assert_eq!(
            other
                .site("S")
                .unwrap()
                .contact(&sc("c"))
                .unwrap()
                .cart
                .as_ref()
                .unwrap()
                .lines
                .len(),
            2
        );
    }

    fn engine_with_other_guid() -> Engine {
        engine(&[
            cart(1, "c", "g1", &["a", "b"]),
            purchase(2, json!({"cookies": {"sc": "c"}}), "A-2", Some("other")),
        ])
    }

    #[test]
    fn product_updates_and_observed_prices_build_the_catalogue() {
        let update = record(json!({
            "GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S", "datetime": T0 + 1},
            "ProductUpdate": [{"product_id": "p1", "name": "Mug", "unit_price": "10", "isInStock": 1,
                               "category": "Home > Kitchen"}]}));
        let engine = engine(&[update, view(5, "c", "p1")]);
        let site = engine.site("S").unwrap();
        let mug = site.product("p1").unwrap();
        assert_eq!(mug.name.as_deref(), Some("Mug"));
        let price = &mug.price.as_ref().unwrap().value;
        assert_eq!(
            (price.amount.to_string(), price.currency.as_deref()),
            ("5".into(), Some("USD"))
        );
        assert_eq!(mug.price_history.len(), 2);
        assert_eq!(mug.first_seen, T0 + 1);
    }

    #[test]
    fn a_price_dated_ahead_of_its_arrival_does_not_outlast_the_shops() {
        let dated = |datetime: i64, received_at: i64, price: &str| {
            let mut update = record(json!({
                "GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S", "datetime": datetime},
                "ProductUpdate": [{"product_id": "p1", "unit_price": price}]}));
            update.received_at = received_at;
            update
        };
        let hour = 3_600_000;
        // Sent at T0 dated 20 hours ahead, then the shop's own update at T0 + 1 minute.
        let engine = engine(&[
            dated(T0 + 20 * hour, T0, "1"),
            dated(T0 + 60_000, T0 + 60_000, "10"),
        ]);
        let mug = engine.site("S").unwrap().product("p1").unwrap();
        let price = &mug.price.as_ref().unwrap().value;
        assert_eq!(price.amount.to_string(), "10");
    }

    #[test]
    fn a_contact_link_joins_only_known_contacts() {
        let link =
            |web: &str, mail: &str| record(json!({"webId": web, "email": mail, "orgId": "1"}));
        let engine = engine(&[
            view(1, "c1", "p1"),
            customer(2, json!({"user_email": "z@x.com"})),
            link("c1", "z@x.com"),
            link("nobody", "nobody@x.com"),
        ]);
        let site = engine.site("S").unwrap();
        assert_eq!(
            site.contact(&sc("c1")).unwrap().id,
            site.contact(&email("z@x.com")).unwrap().id
        );
        assert!(site.contact(&email("nobody@x.com")).is_none());
    }

    /// Contacts as arrival order cannot change them: identifiers, orders, cart, views.
    fn normalised(engine: &Engine) -> Vec<String> {
        let site = engine.site("S").unwrap();
        let mut contacts: Vec<String> = (0..100)
            .filter_map(|id| site.contact_by_id(id))
            .map(|c| {
                let orders: Vec<&str> = c.orders.iter().map(|o| o.order_number()).collect();
                let mut orders = orders;
                orders.sort_unstable();
                // Cookies are kept in arrival order: compare them as a set.
                let mut identifiers = c.identifiers.clone();
                let mut cookies: Vec<&str> = c.identifiers.cookies.iter().collect();
                cookies.sort_unstable();
                identifiers.cookies = cookies.into_iter().collect();
                format!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    identifiers,
                    orders,
                    c.cart.as_ref().map(|cart| &cart.guid),
                    site.viewed_products(c).collect::<Vec<_>>(),
                    c.profile.name.as_ref().map(|n| &n.value)
                )
            })
            .collect();
        contacts.sort_unstable();
        contacts.dedup();
        contacts
    }

    #[test]
    fn arrival_order_does_not_change_the_state_when_no_permanent_ids_clash() {
        // Three people, each seen first anonymously on two cookies, then identified.
        let mut events = Vec::new();
        for person in 0..3 {
            let (c1, c2) = (format!("p{person}-a"), format!("p{person}-b"));
            let mail = format!("p{person}@x.com");
            events.push(view(10 + person, &c1, &format!("v{person}-1")));
            events.push(view(20 + person, &c2, &format!("v{person}-2")));
            events.push(cart(30 + person, &c2, &format!("g{person}"), &["a"]));
            events.push(customer(
                40 + person,
                json!({"user_email": mail, "cookies": {"sc": c1},
                                                      "user_name": format!("P{person}")}),
            ));
            events.push(customer(
                50 + person,
                json!({"user_email": mail, "cookies": {"sc": c2}}),
            ));
            events.push(purchase(
                60 + person,
                json!({"user_email": mail}),
                &format!("o{person}"),
                None,
            ));
        }
        let expected = normalised(&engine(&events));
        assert_eq!(expected.len(), 3, "{expected:#?}");
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20 {
            let mut shuffled = events.clone();
            for i in (1..shuffled.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            assert_eq!(normalised(&engine(&shuffled)), expected);
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_a_working_index() {
        let feed = record(json!({
            "GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S", "datetime": T0},
            "ProductUpdate": [{"product_id": "p1", "unit_price": "10"}]}));
        let mut records = vec![
            view(1, "c1", "p1"),
            customer(2, json!({"user_email": "a@x.com", "cookies": {"sc": "c1"}})),
            view(3, "c2", "p2"),
            customer(4, json!({"user_email": "a@x.com", "cookies": {"sc": "c2"}})),
            cart(5, "c2", "g", &["p1"]),
            purchase(6, json!({"user_email": "a@x.com"}), "o1", Some("g")),
            // Added in the reverse of their order in the product dictionary.
            wish(7, "c1", "p2"),
            wish(8, "c1", "p1"),
        ];
        if let RecordContent::Event(event) = &feed.content
            && let spoor_protocol::EventBody::ProductUpdate { products } = &event.body
        {
            records.push(StoredRecord {
                sealed: None,
                content: RecordContent::Feed(spoor_protocol::stored::FeedItems {
                    site_id: "S".into(),
                    items: products.clone(),
                }),
                ..feed.clone()
            });
        }
        let original = engine(&records);
        let bytes = serde_json::to_vec(&snapshot::Snapshot::of(&original, 7)).unwrap();
        let kept: snapshot::Snapshot = serde_json::from_slice(&bytes).unwrap();
        let (restored, position) = kept.restore().unwrap();
        assert_eq!(position, 7);
        let (a, b) = (original.site("S").unwrap(), restored.site("S").unwrap());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(
            b.contact(&sc("c1")).unwrap().id,
            a.contact(&sc("c1")).unwrap().id
        );
        assert_eq!(b.contact_by_id(1).unwrap().id, 0, "merged ids still answer");
        assert!(b.product("p1").unwrap().feed_said.price.is_some());
        let shown = b.contact_json(b.contact(&sc("c1")).unwrap());
        assert_eq!(shown["wishlist"], json!({"p1": T0 + 8, "p2": T0 + 7}));
        // Applying more after a restore works as on the original.
        let mut restored = restored;
        restored.apply(&view(8, "c1", "p3"));
        let site = restored.site("S").unwrap();
        let a = site.contact(&email("a@x.com")).unwrap();
        assert_eq!(site.viewed_products(a).next().unwrap().0, "p3");
    }

    #[test]
    fn one_person_with_a_new_cookie_every_event_stays_bounded() {
        let records: Vec<StoredRecord> = (0..200)
            .map(|i| {
                customer(
                    i,
                    json!({"user_email": "same@x.com", "cookies": {"sc": format!("c{i}")}}),
                )
            })
            .collect();
        let engine = engine(&records);
        let site = engine.site("S").unwrap();
        let person = site.contact(&email("same@x.com")).unwrap();
        assert_eq!(
            person.identifiers.cookies.len(),
            contacts::identity::MAX_SHARED_IDS
        );
        assert_eq!(site.contact(&sc("c199")).unwrap().id, person.id);
        assert!(
            site.contact(&sc("c0")).is_none(),
            "a cookie let go no longer names anyone"
        );
        assert_eq!(site.counts().contacts, 1);
    }

    #[test]
    fn profile_fields_keep_their_latest_value() {
        let engine = engine(&[
            customer(
                5,
                json!({"cookies": {"sc": "c"}, "user_name": "New", "user_city": "Lviv"}),
            ),
            customer(
                1,
                json!({"cookies": {"sc": "c"}, "user_name": "Old", "user_city": "Kyiv"}),
            ),
        ]);
        let contact = engine.site("S").unwrap().contact(&sc("c")).unwrap().clone();
        assert_eq!(&*contact.profile.name.as_ref().unwrap().value, "New");
        assert_eq!(contact.profile.fields()["user_city"].value, "Lviv");
        assert_eq!((contact.first_seen, contact.last_seen), (T0 + 1, T0 + 5));
    }
}
