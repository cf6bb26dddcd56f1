//! Product interest: who is to hear of a product's price drop or return to stock. The
//! lists here hold who has the product in their cart or wishlist now; with those who
//! viewed it (the visitors of its latest view sessions, which the recommender keeps) they
//! are the contacts a product trigger may concern. Views are most of a shop's events: a
//! list of their own would hold a contact number for nearly every event applied.

use std::collections::{HashMap, VecDeque};

use rust_decimal::Decimal;
use spoor_protocol::EventBody;

use crate::catalogue::Product;
use crate::contacts::Contacts;
use crate::contacts::contact::Contact;
use crate::contacts::identity::ContactId;
use crate::items::{ItemId, Items};
use crate::limits::{self, Dropped};
use crate::timed::Timed;
use crate::timers::TriggerKind;

/// Contacts remembered per product for product triggers (and view sessions asked).
pub const MAX_INTERESTED: usize = 1_000;

/// Product key -> the contacts who have it in their cart or wishlist now (the latest
/// [`MAX_INTERESTED`] to put it there), oldest first.
#[derive(Default)]
pub struct Interest {
    lists: HashMap<String, VecDeque<ContactId>>,
}

impl Interest {
    /// The contacts in the product's list, oldest first.
    pub fn of(&self, key: &str) -> impl Iterator<Item = ContactId> + '_ {
        self.lists.get(key).into_iter().flatten().copied()
    }

    /// Keeps the contact in the lists of the products it wants now (`after`), out of
    /// those it no longer does: a list then names those a price drop or a return to stock
    /// concerns, not every contact that once had the product in a cart.
    pub fn note(&mut self, contact: ContactId, before: &[ItemId], after: &[ItemId], items: &Items) {
        for item in before.iter().filter(|i| !after.contains(i)) {
            let key = items.key(*item);
            if let Some(interested) = self.lists.get_mut(key) {
                interested.retain(|c| *c != contact);
                if interested.is_empty() {
                    self.lists.remove(key);
                }
            }
        }
        for item in after.iter().filter(|i| !before.contains(i)) {
            let key = items.key(*item);
            let interested = match self.lists.get_mut(key) {
                Some(interested) => interested,
                None => self.lists.entry(key.to_string()).or_default(),
            };
            if interested.len() >= MAX_INTERESTED {
                interested.pop_front();
                limits::drop_one(Dropped::InterestedContact);
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

    /// The contacts a price drop or a return to stock of `product` concerns (see
    /// [`concerns`]): of those in its list and its latest `viewers`, each asked once.
    pub fn concerned(
        &self,
        kind: TriggerKind,
        key: &str,
        product: &Product,
        item: Option<ItemId>,
        viewers: impl Iterator<Item = ContactId>,
        contacts: &Contacts,
    ) -> Vec<ContactId> {
        let mut asked = rustc_hash::FxHashSet::default();
        let mut concerned = Vec::new();
        for id in self.of(key).chain(viewers) {
            let Some(contact) = contacts.by_id(id) else {
                continue;
            };
            if asked.insert(contact.id) && concerns(kind, contact, product, item) {
                concerned.push(contact.id);
            }
        }
        concerned
    }

    /// Every list, in product key order, as a snapshot keeps them.
    pub(crate) fn to_snapshot(&self) -> Vec<(String, Vec<ContactId>)> {
        let mut lists: Vec<(String, Vec<ContactId>)> = (self.lists.iter())
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect();
        lists.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        lists
    }

    pub(crate) fn from_snapshot(lists: Vec<(String, Vec<ContactId>)>) -> Interest {
        Interest {
            lists: (lists.into_iter())
                .map(|(key, contacts)| (key, contacts.into()))
                .collect(),
        }
    }
}

/// Whether the event can change what the contact wants (its cart, its wishlist).
pub fn changes_wants(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::StatusCart { .. }
            | EventBody::AddToWishlist { .. }
            | EventBody::PurchasedItems { .. }
    )
}

/// The products in the contact's cart and wishlist.
pub fn wanted(contact: &Contact) -> Vec<ItemId> {
    let in_cart = contact.cart.iter().flat_map(|c| &c.lines).map(|l| l.item);
    let mut items: Vec<ItemId> = in_cart
        .chain(contact.wishlist.iter().map(|w| w.item))
        .collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// Whether a price drop or a return to stock of `product` concerns the contact: for a
/// price drop, one who saw a higher price; for a return to stock, one who wanted it
/// (wishlist, cart) or viewed it while it was out of stock. `item`: the product's number
/// in the site's product dictionary, which views, carts and wishlists hold.
pub fn concerns(
    kind: TriggerKind,
    contact: &Contact,
    product: &Product,
    item: Option<ItemId>,
) -> bool {
    match kind {
        TriggerKind::PriceDrop => {
            let now = product.price.as_ref().map(|p| p.value.amount);
            seen_price(contact, product, item)
                .zip(now)
                .is_some_and(|(seen, now)| now < seen)
        }
        _ => wanted_while_out(contact, product, item),
    }
}

/// The price the contact saw for the product: in their cart, else when they last viewed
/// it or added it to their wishlist.
pub fn seen_price(contact: &Contact, product: &Product, item: Option<ItemId>) -> Option<Decimal> {
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

/// The value a history held at `at` (histories are of changes, oldest first).
fn value_at<T: Copy>(history: &[Timed<T>], at: i64) -> Option<T> {
    let index = history.partition_point(|h| h.at <= at);
    index.checked_sub(1).map(|i| history[i].value)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use spoor_protocol::{Incoming, parse_value};

    use crate::contacts::identity::ContactId;
    use crate::site::SiteState;
    use crate::timers::TriggerKind;

    const T0: i64 = 1_700_000_000_000;
    const MINUTE: i64 = 60_000;

    fn apply(site: &mut SiteState, body: Value, at: i64) {
        match parse_value(&body, T0).expect("a valid event") {
            Incoming::Event(event) => site.apply(&event, T0 + at),
            _ => panic!("not an event"),
        }
    }

    fn general(name: &str, sc: Option<&str>) -> Value {
        let mut info = json!({"eventName": name, "siteId": "S"});
        if let Some(sc) = sc {
            info["cookies"] = json!({"sc": sc});
        }
        info
    }

    fn page(site: &mut SiteState, sc: &str, key: &str, price: &str, in_stock: u8, at: i64) {
        apply(
            site,
            json!({"GeneralInfo": general("ProductPage", Some(sc)),
                   "ProductPage": {"Product": {"productKey": key, "price": price, "isInStock": in_stock}}}),
            at,
        );
    }

    fn update(site: &mut SiteState, key: &str, fields: Value, at: i64) {
        let mut product = json!({"product_id": key});
        for (k, v) in fields.as_object().unwrap() {
            product[k] = v.clone();
        }
        apply(
            site,
            json!({"GeneralInfo": general("ProductUpdate", None), "ProductUpdate": [product]}),
            at,
        );
    }

    fn due(site: &mut SiteState) -> Vec<(ContactId, TriggerKind, String)> {
        let mut due: Vec<_> = site
            .take_due(T0 + 1_000 * MINUTE, |_, _| None)
            .into_iter()
            .map(|p| (p.contact, p.kind, p.product.unwrap_or_default()))
            .collect();
        due.sort();
        due
    }

    #[test]
    fn a_price_drop_reaches_carts_and_views_once_each_also_after_a_snapshot() {
        let mut site = SiteState::default();
        // Contact 0 put the lamp in a cart at 40 without viewing it; contact 1 viewed it
        // at 40 in two sessions, a day apart.
        apply(
            &mut site,
            json!({"GeneralInfo": general("StatusCart", Some("carter")),
                   "StatusCart": {"Products": [{"productKey": "lamp", "price": "40", "quantity": 1}]}}),
            0,
        );
        page(&mut site, "viewer", "lamp", "40", 1, MINUTE);
        page(&mut site, "viewer", "lamp", "40", 1, 24 * 60 * MINUTE);
        let mut site = SiteState::from_snapshot(site.to_snapshot());
        update(
            &mut site,
            "lamp",
            json!({"unit_price": "38"}),
            25 * 60 * MINUTE,
        );
        assert_eq!(
            due(&mut site),
            vec![
                (0, TriggerKind::PriceDrop, "lamp".into()),
                (1, TriggerKind::PriceDrop, "lamp".into())
            ]
        );
    }

    #[test]
    fn price_drops_and_returns_to_stock_reach_the_interested() {
        let mut site = SiteState::default();
        page(&mut site, "viewer", "lamp", "40", 1, 0); // contact 0 saw 40
        page(&mut site, "late", "lamp", "35", 1, MINUTE); // contact 1 saw 35
        // The lamp goes down to 38: only the one who saw 40 hears of it.
        update(&mut site, "lamp", json!({"unit_price": "38"}), 2 * MINUTE);
        assert_eq!(
            due(&mut site),
            vec![(0, TriggerKind::PriceDrop, "lamp".into())]
        );
        // A rise tells no one; a further drop below 35 tells both.
        update(&mut site, "lamp", json!({"unit_price": "50"}), 3 * MINUTE);
        assert!(due(&mut site).is_empty());
        update(&mut site, "lamp", json!({"unit_price": "30"}), 4 * MINUTE);
        assert_eq!(due(&mut site).len(), 2);

        // The vase is out of stock when viewed; the mug is in stock when viewed.
        page(&mut site, "wanter", "vase", "10", 0, 0);
        page(&mut site, "browser", "mug", "5", 1, 0);
        update(&mut site, "mug", json!({"isInStock": 0}), MINUTE);
        update(&mut site, "vase", json!({"isInStock": 1}), 2 * MINUTE);
        update(&mut site, "mug", json!({"isInStock": 1}), 3 * MINUTE);
        assert_eq!(
            due(&mut site),
            vec![(2, TriggerKind::BackInStock, "vase".into())]
        );
    }
}
