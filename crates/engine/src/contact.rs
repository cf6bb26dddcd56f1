//! One contact's state. Every part is keyed by the events' `datetime`, not by arrival, so
//! events that arrive out of order end in the same state as in order: the latest cart
//! wins, profile fields keep their latest value, bounded lists keep their latest entries.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spoor_protocol::{Cart as WireCart, Purchase, Visitor};
use thin_vec::ThinVec;

use crate::identity::{ContactId, Identifier, Identifiers};
use crate::recommend::ItemId;

pub use crate::line::Line;

/// How many recent product views, category views and searches a contact keeps.
pub const RECENT_LIMIT: usize = 50;

/// A value and the event time that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed<T> {
    pub value: T,
    pub at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Timed<Box<str>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Timed<Box<str>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Timed<Box<str>>>,
    /// Further CustomerData fields (`user_city`, `user_card_id`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Timed<String>>,
}

fn set_latest(slot: &mut Option<Timed<Box<str>>>, value: &Option<String>, at: i64) {
    let Some(value) = value else { return };
    match slot {
        Some(old) if old.at > at => {}
        // Most events repeat what the contact already holds: no new copy for those.
        Some(old) if *old.value == **value => old.at = at,
        _ => {
            *slot = Some(Timed {
                value: value.as_str().into(),
                at,
            })
        }
    }
}

impl Profile {
    fn update(&mut self, visitor: &Visitor, at: i64) {
        set_latest(&mut self.name, &visitor.name, at);
        set_latest(&mut self.email, &visitor.email, at);
        set_latest(&mut self.phone, &visitor.phone, at);
        for (key, value) in &visitor.extra {
            match self.fields.get_mut(key) {
                Some(field) if field.at > at => {}
                Some(field) => {
                    if field.value != *value {
                        field.value.clone_from(value);
                    }
                    field.at = at;
                }
                None => {
                    let value = value.clone();
                    self.fields.insert(key.clone(), Timed { value, at });
                }
            }
        }
    }

    fn absorb(&mut self, other: Profile) {
        let keep_latest = |mine: &mut Option<Timed<Box<str>>>, theirs: Option<Timed<Box<str>>>| {
            if let Some(theirs) = theirs
                && mine.as_ref().is_none_or(|m| m.at < theirs.at)
            {
                *mine = Some(theirs);
            }
        };
        keep_latest(&mut self.name, other.name);
        keep_latest(&mut self.email, other.email);
        keep_latest(&mut self.phone, other.phone);
        for (key, theirs) in other.fields {
            let mine = self.fields.entry(key).or_insert_with(|| theirs.clone());
            if mine.at < theirs.at {
                *mine = theirs;
            }
        }
    }
}

/// The contact's cart as of its latest StatusCart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<Box<str>>,
    pub lines: ThinVec<Line>,
    pub at: i64,
}

impl Cart {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// An order as the state keeps it, in 32 bytes: a million contacts' orders. Its total and
/// currency follow from its lines, so they are worked out when asked for rather than
/// held; its number, cart GUID and tracked order id share one allocation. The API and
/// snapshots show it as before (and snapshots' totals are ignored when read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    names: OrderNames,
    pub lines: ThinVec<Line>,
    pub at: i64,
}

const _: () = assert!(std::mem::size_of::<Order>() == 32);

impl Order {
    pub fn new(
        order_number: &str,
        cart_guid: Option<&str>,
        tracked_order_id: Option<&str>,
        lines: ThinVec<Line>,
        at: i64,
    ) -> Order {
        Order {
            names: OrderNames::new(order_number, cart_guid, tracked_order_id),
            lines,
            at,
        }
    }

    /// `lines`: the purchase's lines, in its order.
    fn from_purchase(purchase: &Purchase, lines: ThinVec<Line>, at: i64) -> Order {
        let guid = purchase.guid.as_deref();
        let tracked = purchase.tracked_order_id.as_deref();
        Order::new(&purchase.order_number, guid, tracked, lines, at)
    }

    pub fn order_number(&self) -> &str {
        self.names.get(0).unwrap_or_default()
    }

    /// The GUID of the cart the order was bought from, when the purchase named it.
    pub fn cart_guid(&self) -> Option<&str> {
        self.names.get(1)
    }

    pub fn tracked_order_id(&self) -> Option<&str> {
        self.names.get(2)
    }

    /// Sum of unit price times quantity over the lines.
    pub fn total(&self) -> Decimal {
        self.lines
            .iter()
            .map(|line| line.price() * Decimal::from(line.quantity))
            .sum::<Decimal>()
            .normalize()
    }

    /// The currency of the first line that names one.
    pub fn currency(&self) -> Option<&str> {
        self.lines.iter().find_map(|line| line.currency())
    }
}

impl Serialize for Order {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Shown<'a> {
            order_number: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            cart_guid: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tracked_order_id: Option<&'a str>,
            lines: &'a [Line],
            total: Decimal,
            #[serde(skip_serializing_if = "Option::is_none")]
            currency: Option<&'a str>,
            at: i64,
        }
        Shown {
            order_number: self.order_number(),
            cart_guid: self.cart_guid(),
            tracked_order_id: self.tracked_order_id(),
            lines: &self.lines,
            total: self.total(),
            currency: self.currency(),
            at: self.at,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Held {
            order_number: String,
            #[serde(default)]
            cart_guid: Option<String>,
            #[serde(default)]
            tracked_order_id: Option<String>,
            lines: ThinVec<Line>,
            at: i64,
        }
        let held = Held::deserialize(deserializer)?;
        Ok(Order::new(
            &held.order_number,
            held.cart_guid.as_deref(),
            held.tracked_order_id.as_deref(),
            held.lines,
            held.at,
        ))
    }
}

/// Up to three optional strings in one allocation, each after its length plus one as a
/// LEB128 varint (0 for an absent one): one or two bytes of overhead for an order's names
/// where three boxes would take 48 bytes and three allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderNames(Box<[u8]>);

impl OrderNames {
    fn new(first: &str, second: Option<&str>, third: Option<&str>) -> OrderNames {
        let mut bytes = Vec::with_capacity(first.len() + 3);
        for part in [Some(first), second, third] {
            let mut marker = part.map_or(0, |p| p.len() as u64 + 1);
            loop {
                let low = (marker & 0x7f) as u8;
                marker >>= 7;
                bytes.push(if marker == 0 { low } else { low | 0x80 });
                if marker == 0 {
                    break;
                }
            }
            bytes.extend_from_slice(part.unwrap_or_default().as_bytes());
        }
        OrderNames(bytes.into_boxed_slice())
    }

    /// The `index`th string (0-based).
    fn get(&self, index: usize) -> Option<&str> {
        let mut at = 0;
        for part in 0..=index {
            let mut marker = 0u64;
            let mut shift = 0;
            loop {
                let byte = *self.0.get(at)?;
                at += 1;
                marker |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let len = marker.saturating_sub(1) as usize;
            if part == index {
                let text = self.0.get(at..at + len)?;
                // Each part was a whole string: this cannot fail.
                return (marker > 0)
                    .then(|| std::str::from_utf8(text).ok())
                    .flatten();
            }
            at += len;
        }
        None
    }
}

/// Something seen at a time: a product, a category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub key: Box<str>,
    pub at: i64,
}

/// A product view: the product by its number in the site's product dictionary
/// ([`crate::recommend::Items`]), as a million contacts' views would otherwise hold a
/// million copies of the same keys. The API shows the key (`SiteState::contact_json`).
/// Packed to 12 bytes instead of 16: a contact keeps up to [`RECENT_LIMIT`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[repr(C, packed(4))]
pub struct Viewed {
    pub item: ItemId,
    pub at: i64,
}

const _: () = assert!(std::mem::size_of::<Viewed>() == 12);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchSeen {
    pub query: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Merge {
    /// The contact that was merged into this one.
    pub absorbed: ContactId,
    /// Time of the event that joined them.
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: ContactId,
    pub identifiers: Identifiers,
    pub profile: Profile,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The latest cart state; `None` before any StatusCart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart: Option<Cart>,
    /// Product key -> when it was added; a map in JSON.
    #[serde(
        serialize_with = "wishlist_as_map",
        deserialize_with = "wishlist_from_map"
    )]
    pub wishlist: ThinVec<Seen>,
    /// One per order number, oldest first; a map by order number in JSON.
    #[serde(serialize_with = "orders_as_map", deserialize_with = "orders_from_map")]
    pub orders: ThinVec<Order>,
    /// Latest first, at most [`RECENT_LIMIT`].
    pub viewed_products: ThinVec<Viewed>,
    pub viewed_categories: ThinVec<Seen>,
    pub searches: ThinVec<SearchSeen>,
    pub merges: ThinVec<Merge>,
}

// A contact holds few orders and wishlist items: vectors cost a fraction of the memory
// of one-entry tree maps, which allocate a whole node each. The API shows them as maps.
fn orders_as_map<S: serde::Serializer>(orders: &[Order], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(orders.iter().map(|o| (o.order_number(), o)))
}

fn wishlist_as_map<S: serde::Serializer>(wishlist: &[Seen], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(wishlist.iter().map(|w| (&w.key, w.at)))
}

fn orders_from_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThinVec<Order>, D::Error> {
    let orders = BTreeMap::<String, Order>::deserialize(d)?.into_values();
    let mut orders: ThinVec<Order> = orders.collect();
    orders.sort_by_key(|o| o.at);
    Ok(orders)
}

fn wishlist_from_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThinVec<Seen>, D::Error> {
    let items = BTreeMap::<String, i64>::deserialize(d)?;
    Ok(items
        .into_iter()
        .map(|(key, at)| Seen {
            key: key.into(),
            at,
        })
        .collect())
}

/// Inserts keeping the list latest-first and bounded; order-independent for equal input.
fn remember<T: Clone>(list: &mut ThinVec<T>, item: T, at: impl Fn(&T) -> i64) {
    let position = list.partition_point(|x| at(x) >= at(&item));
    if position >= RECENT_LIMIT {
        return;
    }
    list.reserve_exact(1);
    list.insert(position, item);
    list.truncate(RECENT_LIMIT);
}

/// Pushes without the doubling growth of `push`: a contact's lists are short and a
/// million contacts hold them, so spare capacity would be most of their memory (an order
/// pushed the usual way reserves room for four).
pub(crate) fn push_exact<T>(list: &mut ThinVec<T>, item: T) {
    list.reserve_exact(1);
    list.push(item);
}

impl Contact {
    pub fn new(id: ContactId, at: i64) -> Contact {
        Contact {
            id,
            identifiers: Identifiers::default(),
            profile: Profile::default(),
            first_seen: at,
            last_seen: at,
            cart: None,
            wishlist: ThinVec::new(),
            orders: ThinVec::new(),
            viewed_products: ThinVec::new(),
            viewed_categories: ThinVec::new(),
            searches: ThinVec::new(),
            merges: ThinVec::new(),
        }
    }

    /// Whether a message can reach the contact: it has an email or a phone.
    pub fn reachable(&self) -> bool {
        self.identifiers.email.is_some() || !self.identifiers.phones.is_empty()
    }

    pub fn touch(&mut self, visitor: &Visitor, at: i64) {
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
        self.profile.update(visitor, at);
    }

    /// `lines`: the cart's lines, in its order.
    pub fn set_cart(&mut self, cart: &WireCart, lines: ThinVec<Line>, at: i64) {
        if self.cart.as_ref().is_some_and(|c| c.at > at) {
            return;
        }
        self.cart = Some(Cart {
            guid: cart.guid.as_deref().map(Box::from),
            lines,
            at,
        });
    }

    /// Records an order; the cart it was bought from is emptied, as of the purchase.
    /// `lines`: the purchase's lines, in its order.
    pub fn add_order(&mut self, purchase: &Purchase, lines: ThinVec<Line>, at: i64) {
        let order = Order::from_purchase(purchase, lines, at);
        let bought_cart = self.cart.as_ref().is_some_and(|cart| {
            cart.at <= at
                && order.cart_guid().is_some()
                && cart.guid.as_deref() == order.cart_guid()
        });
        if bought_cart {
            self.cart = Some(Cart {
                guid: None,
                lines: ThinVec::new(),
                at,
            });
        }
        if !self
            .orders
            .iter()
            .any(|o| o.order_number() == order.order_number())
        {
            push_exact(&mut self.orders, order);
        }
    }

    pub fn add_to_wishlist(&mut self, product_key: &str, at: i64) {
        match self.wishlist.iter_mut().find(|w| &*w.key == product_key) {
            Some(added) => added.at = added.at.min(at),
            None => push_exact(
                &mut self.wishlist,
                Seen {
                    key: product_key.into(),
                    at,
                },
            ),
        }
    }

    /// The order with this number.
    pub fn order(&self, order_number: &str) -> Option<&Order> {
        self.orders
            .iter()
            .find(|o| o.order_number() == order_number)
    }

    pub fn viewed_product(&mut self, item: ItemId, at: i64) {
        remember(&mut self.viewed_products, Viewed { item, at }, |v| v.at);
    }

    pub fn viewed_category(&mut self, key: &str, at: i64) {
        remember(
            &mut self.viewed_categories,
            Seen {
                key: key.into(),
                at,
            },
            |s| s.at,
        );
    }

    pub fn searched(&mut self, query: &str, found: Option<bool>, at: i64) {
        let search = SearchSeen {
            query: query.into(),
            found,
            at,
        };
        remember(&mut self.searches, search, |s| s.at);
    }

    /// Takes over everything of `other`, which is merged into this contact; returns the
    /// identifiers let go to stay within [`crate::identity::MAX_SHARED_IDS`].
    #[must_use = "identifiers let go must leave the index too"]
    pub fn absorb(&mut self, other: Contact, at: i64) -> Vec<Identifier> {
        let let_go = self.identifiers.absorb(other.identifiers);
        self.profile.absorb(other.profile);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        if let Some(cart) = other.cart
            && self.cart.as_ref().is_none_or(|mine| mine.at < cart.at)
        {
            self.cart = Some(cart);
        }
        for added in other.wishlist {
            self.add_to_wishlist(&added.key, added.at);
        }
        for order in other.orders {
            if self.order(order.order_number()).is_none() {
                push_exact(&mut self.orders, order);
            }
        }
        self.orders.sort_by_key(|o| o.at);
        for seen in other.viewed_products {
            remember(&mut self.viewed_products, seen, |s| s.at);
        }
        for seen in other.viewed_categories {
            remember(&mut self.viewed_categories, seen, |s| s.at);
        }
        for search in other.searches {
            remember(&mut self.searches, search, |s| s.at);
        }
        self.merges.extend(other.merges);
        push_exact(
            &mut self.merges,
            Merge {
                absorbed: other.id,
                at,
            },
        );
        let_go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_keeps_its_names_of_any_length() {
        let long = "n".repeat(300);
        let cases = [
            ("1001", Some("g-1"), Some("t-9")),
            ("", None, None),
            ("A-1", None, Some("")),
            (long.as_str(), Some(long.as_str()), None),
            ("ü-7", Some("€"), Some(long.as_str())),
        ];
        for (number, guid, tracked) in cases {
            let order = Order::new(number, guid, tracked, ThinVec::new(), 5);
            assert_eq!(order.order_number(), number);
            assert_eq!(order.cart_guid(), guid);
            assert_eq!(order.tracked_order_id(), tracked);
            let json = serde_json::to_string(&order).unwrap();
            assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), order);
        }
    }

    #[test]
    fn an_order_shows_the_total_and_currency_of_its_lines_as_snapshots_held_them() {
        let held = r#"{"orderNumber": "1001", "cartGuid": "g1",
            "lines": [{"item": 0, "quantity": 2, "price": "1.5", "currency": "EUR"},
                      {"item": 1, "quantity": 1, "price": "3"}],
            "total": "6", "currency": "EUR", "at": 5}"#;
        let order: Order = serde_json::from_str(held).unwrap();
        assert_eq!(order.total().to_string(), "6");
        assert_eq!(order.currency(), Some("EUR"));
        let shown = serde_json::to_value(&order).unwrap();
        assert_eq!(
            shown,
            serde_json::from_str::<serde_json::Value>(held).unwrap()
        );
    }
}
