//! One contact's state. Every part is keyed by the events' `datetime`, not by arrival, so
//! events that arrive out of order end in the same state as in order: the latest cart
//! wins, profile fields keep their latest value, bounded lists keep their latest entries.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spoor_protocol::{Cart as WireCart, Purchase, Text, Visitor};
use thin_vec::ThinVec;

use crate::compact::recent::{Packed, Recent};
use crate::compact::thin::{ThinBytes, ThinStr};
use crate::compact::varint::{read_text, read_varint, write_text, write_varint};
use crate::contacts::identity::{ContactId, Identifier, Identifiers};
use crate::items::ItemId;
use crate::limits::{
    self, Dropped, MAX_FIELD_NAME_BYTES, MAX_FIELD_VALUE_BYTES, MAX_ORDERS, MAX_PROFILE_FIELDS,
    MAX_WISHLIST,
};
use crate::timed::Timed;

/// How many recent product views, category views and searches a contact keeps.
pub use crate::compact::recent::RECENT_LIMIT;
pub use crate::contacts::line::Line;

/// What a contact told about themselves. Name and email are held in place; a phone and
/// further fields, which fewer contacts have, in a box the others do without. The email
/// as sent is nearly always the contact's email identifier as well: it is then not held
/// a second time (an empty value, which no email sent can be, stands for the
/// identifier's text, and takes no allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: Option<Timed<ThinStr>>,
    email: Option<Timed<ThinStr>>,
    rare: Option<Box<RareProfile>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RareProfile {
    phone: Option<Timed<ThinStr>>,
    /// Further CustomerData fields (`user_city`, `user_card_id`...).
    fields: BTreeMap<String, Timed<String>>,
}

/// [`Profile`] as snapshots and the API show it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileShown<Text, Fields> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<Timed<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Timed<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<Timed<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<Fields>,
}

type Fields = BTreeMap<String, Timed<String>>;

impl Profile {
    /// The profile as shown, with `email_id` (the contact's email identifier) where the
    /// email sent was the same.
    fn shown<'a>(&'a self, email_id: Option<&'a str>) -> ProfileShown<&'a str, &'a Fields> {
        fn shown(text: Option<&Timed<ThinStr>>) -> Option<Timed<&str>> {
            text.map(|t| Timed {
                value: &*t.value,
                at: t.at,
            })
        }
        ProfileShown {
            name: shown(self.name.as_ref()),
            email: self.email(email_id),
            phone: shown(self.phone()),
            fields: Some(self.fields()).filter(|f| !f.is_empty()),
        }
    }

    /// The email as last sent; `email_id`: the contact's email identifier.
    pub fn email<'a>(&'a self, email_id: Option<&'a str>) -> Option<Timed<&'a str>> {
        let email = self.email.as_ref()?;
        let value = match &*email.value {
            "" => email_id?,
            sent => sent,
        };
        Some(Timed {
            value,
            at: email.at,
        })
    }

    /// Drops the email's own copy where it is the same as `email_id`.
    fn share_email(&mut self, email_id: Option<&str>) {
        if let Some(email) = &mut self.email
            && Some(&*email.value) == email_id
        {
            email.value = ThinStr::default();
        }
    }
}

impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let held = ProfileShown::<ThinStr, Fields>::deserialize(deserializer)?;
        let rare = RareProfile {
            phone: held.phone,
            fields: held.fields.unwrap_or_default(),
        };
        Ok(Profile {
            name: held.name,
            email: held.email,
            rare: (rare != RareProfile::default()).then(|| Box::new(rare)),
        })
    }
}

fn set_latest(slot: &mut Option<Timed<ThinStr>>, value: &Option<Text>, at: i64) {
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

/// Like [`set_latest`], for the profile's email: `email_id` is the contact's email
/// identifier, which a value equal to it is not copied beside.
fn set_latest_email(
    slot: &mut Option<Timed<ThinStr>>,
    value: &Option<Text>,
    at: i64,
    email_id: Option<&str>,
) {
    let Some(value) = value else { return };
    let same_as_id = email_id == Some(value.as_str());
    match slot {
        Some(old) if old.at > at => {}
        Some(old) if (old.value.is_empty() && same_as_id) || *old.value == **value => old.at = at,
        _ => {
            *slot = Some(Timed {
                value: if same_as_id {
                    ThinStr::default()
                } else {
                    value.as_str().into()
                },
                at,
            })
        }
    }
}

impl Profile {
    pub fn phone(&self) -> Option<&Timed<ThinStr>> {
        self.rare.as_ref()?.phone.as_ref()
    }

    /// Further CustomerData fields (`user_city`, `user_card_id`...).
    pub fn fields(&self) -> &BTreeMap<String, Timed<String>> {
        static NONE: BTreeMap<String, Timed<String>> = BTreeMap::new();
        self.rare.as_ref().map_or(&NONE, |r| &r.fields)
    }

    /// `email_id`: the contact's email identifier.
    fn update(&mut self, visitor: &Visitor, at: i64, email_id: Option<&str>) {
        set_latest(&mut self.name, &visitor.name, at);
        set_latest_email(&mut self.email, &visitor.email, at, email_id);
        if visitor.phone.is_none() && visitor.extra.is_empty() {
            return;
        }
        let rare = self.rare.get_or_insert_default();
        set_latest(&mut rare.phone, &visitor.phone, at);
        for (key, value) in &visitor.extra {
            let full = rare.fields.len() >= MAX_PROFILE_FIELDS;
            match rare.fields.get_mut(key) {
                Some(field) if field.at > at => {}
                Some(_) if value.len() > MAX_FIELD_VALUE_BYTES => {
                    limits::drop_one(Dropped::ProfileField)
                }
                Some(field) => {
                    if field.value != *value {
                        field.value.clone_from(value);
                    }
                    field.at = at;
                }
                None if full
                    || key.len() > MAX_FIELD_NAME_BYTES
                    || value.len() > MAX_FIELD_VALUE_BYTES =>
                {
                    limits::drop_one(Dropped::ProfileField)
                }
                None => {
                    let value = value.clone();
                    rare.fields.insert(key.clone(), Timed { value, at });
                }
            }
        }
    }

    /// Two contacts merge only when their email identifiers are the same or one has
    /// none, so an email held as "the identifier's" stays right in the survivor.
    fn absorb(&mut self, other: Profile) {
        fn keep_latest<T>(mine: &mut Option<Timed<T>>, theirs: Option<Timed<T>>) {
            if let Some(theirs) = theirs
                && mine.as_ref().is_none_or(|m| m.at < theirs.at)
            {
                *mine = Some(theirs);
            }
        }
        keep_latest(&mut self.name, other.name);
        keep_latest(&mut self.email, other.email);
        let Some(theirs) = other.rare else {
            return;
        };
        let rare = self.rare.get_or_insert_default();
        keep_latest(&mut rare.phone, theirs.phone);
        for (key, theirs) in theirs.fields {
            let full = rare.fields.len() >= MAX_PROFILE_FIELDS;
            match rare.fields.get_mut(&key) {
                Some(mine) if mine.at < theirs.at => *mine = theirs,
                Some(_) => {}
                None if full => limits::drop_one(Dropped::ProfileField),
                None => {
                    rare.fields.insert(key, theirs);
                }
            }
        }
    }
}

/// The contact's cart as of its latest StatusCart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<ThinStr>,
    pub lines: ThinVec<Line>,
    pub at: i64,
}

impl Cart {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// An order as the state keeps it, in 24 bytes: a million contacts' orders. Its total and
/// currency follow from its lines, so they are worked out when asked for rather than
/// held; its number, cart GUID and tracked order id share one allocation. The API and
/// snapshots still show its total and currency; a total read from a snapshot is ignored
/// (it follows from the lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    names: OrderNames,
    pub lines: ThinVec<Line>,
    pub at: i64,
}

const _: () = assert!(std::mem::size_of::<Order>() == 24);

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
struct OrderNames(ThinBytes);

impl OrderNames {
    fn new(first: &str, second: Option<&str>, third: Option<&str>) -> OrderNames {
        let mut bytes = Vec::with_capacity(first.len() + 3);
        for part in [Some(first), second, third] {
            write_varint(&mut bytes, part.map_or(0, |p| p.len() as u64 + 1));
            bytes.extend_from_slice(part.unwrap_or_default().as_bytes());
        }
        OrderNames(ThinBytes::new(&bytes))
    }

    /// The `index`th string (0-based).
    fn get(&self, index: usize) -> Option<&str> {
        let mut rest: &[u8] = &self.0;
        for part in 0..=index {
            let marker = read_varint(&mut rest)?;
            let len = usize::try_from(marker.saturating_sub(1)).ok()?;
            let text = rest.get(..len)?;
            rest = &rest[len..];
            if part == index {
                // Each part was a whole string: this cannot fail.
                return (marker > 0)
                    .then(|| std::str::from_utf8(text).ok())
                    .flatten();
            }
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

/// A product view (or a wishlist add): the product by its number in the site's product
/// dictionary ([`crate::items::Items`]), as a million contacts' views would otherwise
/// hold a million copies of the same keys. The API shows the key (`SiteState::contact_json`).
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

impl Packed for Viewed {
    fn at(&self) -> i64 {
        self.at
    }

    fn write_parts(&self, out: &mut Vec<u8>) {
        write_varint(out, u64::from(self.item));
    }

    fn read_parts(at: i64, bytes: &mut &[u8]) -> Option<Self> {
        let item = ItemId::try_from(read_varint(bytes)?).ok()?;
        Some(Viewed { item, at })
    }
}

impl Packed for SearchSeen {
    fn at(&self) -> i64 {
        self.at
    }

    fn write_parts(&self, out: &mut Vec<u8>) {
        out.push(match self.found {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        write_text(out, &self.query);
    }

    fn read_parts(at: i64, bytes: &mut &[u8]) -> Option<Self> {
        let (&found, rest) = bytes.split_first()?;
        *bytes = rest;
        let found = match found {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        };
        let query = read_text(bytes)?.into();
        Some(SearchSeen { query, found, at })
    }

    fn skip_parts(bytes: &mut &[u8]) -> Option<()> {
        *bytes = bytes.get(1..)?;
        read_text(bytes).map(drop)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Merge {
    /// The contact that was merged into this one.
    pub absorbed: ContactId,
    /// Time of the event that joined them.
    pub at: i64,
}

/// A contact: 160 bytes in place, an allocator size class that the 256 it would take with
/// its rarer parts (category views, merges, the rarer identifiers and profile fields) held
/// in place, and two-word boxed strings, would miss by far. The API and snapshots show
/// every part, boxed or not, at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: ContactId,
    pub identifiers: Identifiers,
    pub profile: Profile,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The latest cart state; `None` before any StatusCart.
    pub cart: Option<Cart>,
    /// Products by number, with when each was added, in number order; a map in JSON
    /// (by product key in the API: `SiteState::contact_json`).
    pub wishlist: ThinVec<Viewed>,
    /// One per order number, oldest first; a map by order number in JSON.
    pub orders: ThinVec<Order>,
    /// Latest first, at most [`RECENT_LIMIT`].
    pub viewed_products: Recent<Viewed>,
    pub searches: Recent<SearchSeen>,
    rare: Option<Box<RareParts>>,
}

const _: () = assert!(std::mem::size_of::<Contact>() == 160);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RareParts {
    viewed_categories: ThinVec<Seen>,
    merges: ThinVec<Merge>,
}

/// [`Contact`] as snapshots and the API show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContactShown<'a> {
    id: ContactId,
    identifiers: &'a Identifiers,
    profile: ProfileShown<&'a str, &'a Fields>,
    first_seen: i64,
    last_seen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart: Option<&'a Cart>,
    #[serde(serialize_with = "wishlist_as_map")]
    wishlist: &'a [Viewed],
    #[serde(serialize_with = "orders_as_map")]
    orders: &'a [Order],
    viewed_products: &'a Recent<Viewed>,
    viewed_categories: &'a [Seen],
    searches: &'a Recent<SearchSeen>,
    merges: &'a [Merge],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactHeld {
    id: ContactId,
    identifiers: Identifiers,
    profile: Profile,
    first_seen: i64,
    last_seen: i64,
    #[serde(default)]
    cart: Option<Cart>,
    #[serde(deserialize_with = "wishlist_from_map")]
    wishlist: ThinVec<Viewed>,
    #[serde(deserialize_with = "orders_from_map")]
    orders: ThinVec<Order>,
    viewed_products: Recent<Viewed>,
    viewed_categories: ThinVec<Seen>,
    searches: Recent<SearchSeen>,
    merges: ThinVec<Merge>,
}

impl Serialize for Contact {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ContactShown {
            id: self.id,
            identifiers: &self.identifiers,
            profile: self.profile.shown(self.identifiers.email.as_deref()),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            cart: self.cart.as_ref(),
            wishlist: &self.wishlist,
            orders: &self.orders,
            viewed_products: &self.viewed_products,
            viewed_categories: self.viewed_categories(),
            searches: &self.searches,
            merges: self.merges(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Contact {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let held = ContactHeld::deserialize(deserializer)?;
        let rare = RareParts {
            viewed_categories: held.viewed_categories,
            merges: held.merges,
        };
        let mut profile = held.profile;
        profile.share_email(held.identifiers.email.as_deref());
        Ok(Contact {
            id: held.id,
            identifiers: held.identifiers,
            profile,
            first_seen: held.first_seen,
            last_seen: held.last_seen,
            cart: held.cart,
            wishlist: held.wishlist,
            orders: held.orders,
            viewed_products: held.viewed_products,
            searches: held.searches,
            rare: (rare != RareParts::default()).then(|| Box::new(rare)),
        })
    }
}

// A contact holds few orders and wishlist items: vectors cost a fraction of the memory
// of one-entry tree maps, which allocate a whole node each. The API shows them as maps.
fn orders_as_map<S: serde::Serializer>(orders: &&[Order], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(orders.iter().map(|o| (o.order_number(), o)))
}

fn wishlist_as_map<S: serde::Serializer>(wishlist: &&[Viewed], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(wishlist.iter().map(|w| (w.item, w.at)))
}

fn orders_from_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThinVec<Order>, D::Error> {
    let orders = BTreeMap::<String, Order>::deserialize(d)?.into_values();
    let mut orders: ThinVec<Order> = orders.collect();
    orders.sort_by_key(|o| o.at);
    Ok(orders)
}

fn wishlist_from_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThinVec<Viewed>, D::Error> {
    let items = BTreeMap::<ItemId, i64>::deserialize(d)?;
    Ok(items
        .into_iter()
        .map(|(item, at)| Viewed { item, at })
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
            viewed_products: Recent::default(),
            searches: Recent::default(),
            rare: None,
        }
    }

    /// Latest first, at most [`RECENT_LIMIT`].
    pub fn viewed_categories(&self) -> &[Seen] {
        self.rare.as_ref().map_or(&[], |r| &r.viewed_categories)
    }

    /// The contacts merged into this one, in the order they were.
    pub fn merges(&self) -> &[Merge] {
        self.rare.as_ref().map_or(&[], |r| &r.merges)
    }

    /// Whether a message can reach the contact: it has an email or a phone.
    pub fn reachable(&self) -> bool {
        self.identifiers.email.is_some() || !self.identifiers.phones.is_empty()
    }

    pub fn touch(&mut self, visitor: &Visitor, at: i64) {
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
        let email_id = self.identifiers.email.as_deref();
        self.profile.update(visitor, at, email_id);
    }

    /// `lines`: the cart's lines, in its order.
    pub fn set_cart(&mut self, cart: &WireCart, lines: ThinVec<Line>, at: i64) {
        if self.cart.as_ref().is_some_and(|c| c.at > at) {
            return;
        }
        self.cart = Some(Cart {
            guid: cart.guid.as_deref().map(ThinStr::from),
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
            if self.orders.len() > MAX_ORDERS {
                // The oldest by event time leaves; orders arrive nearly in time order.
                let oldest = (self.orders.iter().enumerate())
                    .min_by_key(|(_, o)| o.at)
                    .map_or(0, |(i, _)| i);
                self.orders.remove(oldest);
                limits::drop_one(Dropped::Order);
            }
        }
    }

    /// `item`: the product's number in the site's product dictionary.
    pub fn add_to_wishlist(&mut self, item: ItemId, at: i64) {
        // In number order, so that a restored contact lists them as the live one did.
        let position = self.wishlist.partition_point(|w| w.item < item);
        match self.wishlist.get_mut(position) {
            Some(added) if added.item == item => added.at = added.at.min(at),
            _ => {
                self.wishlist.reserve_exact(1);
                self.wishlist.insert(position, Viewed { item, at });
                if self.wishlist.len() > MAX_WISHLIST {
                    // The product added longest ago leaves.
                    let oldest = (self.wishlist.iter().enumerate())
                        .min_by_key(|(_, w)| w.at)
                        .map_or(0, |(i, _)| i);
                    self.wishlist.remove(oldest);
                    limits::drop_one(Dropped::WishlistItem);
                }
            }
        }
    }

    /// The order with this number.
    pub fn order(&self, order_number: &str) -> Option<&Order> {
        self.orders
            .iter()
            .find(|o| o.order_number() == order_number)
    }

    pub fn viewed_product(&mut self, item: ItemId, at: i64) {
        self.viewed_products.remember(Viewed { item, at });
    }

    pub fn viewed_category(&mut self, key: &str, at: i64) {
        remember(
            &mut self.rare.get_or_insert_default().viewed_categories,
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
        self.searches.remember(search);
    }

    /// Takes over everything of `other`, which is merged into this contact; returns the
    /// identifiers let go to stay within [`crate::contacts::identity::MAX_SHARED_IDS`].
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
            self.add_to_wishlist(added.item, added.at);
        }
        for order in other.orders {
            if self.order(order.order_number()).is_none() {
                push_exact(&mut self.orders, order);
            }
        }
        self.orders.sort_by_key(|o| o.at);
        // Two contacts' orders together may pass the cap: the oldest leave, as they
        // would have one by one.
        let over = self.orders.len().saturating_sub(MAX_ORDERS);
        if over > 0 {
            self.orders.drain(..over);
            (0..over).for_each(|_| limits::drop_one(Dropped::Order));
        }
        for seen in other.viewed_products.iter() {
            self.viewed_products.remember(seen);
        }
        let theirs = other.rare.unwrap_or_default();
        let rare = self.rare.get_or_insert_default();
        for seen in theirs.viewed_categories {
            remember(&mut rare.viewed_categories, seen, |s| s.at);
        }
        for search in other.searches.iter() {
            self.searches.remember(search);
        }
        rare.merges.extend(theirs.merges);
        push_exact(
            &mut rare.merges,
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
    fn views_and_searches_show_as_lists_latest_first_and_read_back() {
        let mut contact = Contact::new(3, 10);
        contact.viewed_product(7, 1_700_000_000_500);
        contact.viewed_product(70_000, 1_700_000_000_900);
        contact.viewed_product(7, 1_600_000_000_000);
        contact.searched("lamp", Some(false), 1_700_000_001_000);
        contact.searched("лампа", None, 1_700_000_000_000);
        let json = serde_json::to_value(&contact).unwrap();
        assert_eq!(
            json["viewedProducts"],
            serde_json::json!([
                {"item": 70_000, "at": 1_700_000_000_900i64},
                {"item": 7, "at": 1_700_000_000_500i64},
                {"item": 7, "at": 1_600_000_000_000i64},
            ])
        );
        assert_eq!(
            json["searches"],
            serde_json::json!([
                {"query": "lamp", "found": false, "at": 1_700_000_001_000i64},
                {"query": "лампа", "at": 1_700_000_000_000i64},
            ])
        );
        assert_eq!(serde_json::from_value::<Contact>(json).unwrap(), contact);
    }

    #[test]
    fn a_contact_shows_its_rare_parts_where_they_always_were() {
        let plain = Contact::new(1, 10);
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json["viewedCategories"], serde_json::json!([]));
        assert_eq!(json["merges"], serde_json::json!([]));
        assert_eq!(serde_json::from_value::<Contact>(json).unwrap(), plain);
        assert!(plain.rare.is_none());

        let mut contact = Contact::new(2, 10);
        let visitor = Visitor {
            phone: Some("+380 50 111 22 33".into()),
            name: Some("Ann".into()),
            extra: [("user_city".to_string(), "Lviv".to_string())].into(),
            ..Visitor::default()
        };
        contact.touch(&visitor, 20);
        for id in [
            Identifier::ExternalCustomerId("x-1".into()),
            Identifier::EsContactId("es-1".into()),
            Identifier::Phone("380501112233".into()),
            Identifier::Sc("c-1".into()),
        ] {
            assert!(contact.identifiers.insert(id).is_none());
        }
        contact.viewed_category("lamps", 30);
        let let_go = contact.absorb(Contact::new(3, 5), 40);
        assert!(let_go.is_empty());
        let json = serde_json::to_value(&contact).unwrap();
        assert_eq!(json["identifiers"]["externalCustomerId"], "x-1");
        assert_eq!(
            json["identifiers"]["esContactIds"],
            serde_json::json!(["es-1"])
        );
        assert_eq!(
            json["identifiers"]["phones"],
            serde_json::json!(["380501112233"])
        );
        assert_eq!(json["profile"]["phone"]["value"], "+380 50 111 22 33");
        assert_eq!(json["profile"]["fields"]["user_city"]["value"], "Lviv");
        assert_eq!(json["viewedCategories"][0]["key"], "lamps");
        assert_eq!(json["merges"][0]["absorbed"], 3);
        assert_eq!(serde_json::from_value::<Contact>(json).unwrap(), contact);
    }

    #[test]
    fn an_email_sent_as_the_identifier_is_shown_though_held_once() {
        let mut contact = Contact::new(1, 10);
        assert!(
            contact
                .identifiers
                .insert(Identifier::Email("ann@x.com".into()))
                .is_none()
        );
        let sent = |email: &str| Visitor {
            email: Some(email.into()),
            ..Visitor::default()
        };
        contact.touch(&sent("ann@x.com"), 20);
        assert!(
            contact.profile.email.as_ref().unwrap().value.is_empty(),
            "not copied"
        );
        let json = serde_json::to_value(&contact).unwrap();
        assert_eq!(
            json["profile"]["email"],
            serde_json::json!({"value": "ann@x.com", "at": 20})
        );
        assert_eq!(serde_json::from_value::<Contact>(json).unwrap(), contact);
        // Sent otherwise (case, spaces), it is kept as sent; an older event changes nothing.
        contact.touch(&sent(" Ann@X.com"), 30);
        contact.touch(&sent("ann@x.com"), 25);
        let json = serde_json::to_value(&contact).unwrap();
        assert_eq!(json["profile"]["email"]["value"], " Ann@X.com");
        assert_eq!(serde_json::from_value::<Contact>(json).unwrap(), contact);
        contact.touch(&sent("ann@x.com"), 40);
        let shown = contact
            .profile
            .email(contact.identifiers.email.as_deref())
            .unwrap();
        assert_eq!((shown.value, shown.at), ("ann@x.com", 40));
    }

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
    fn an_order_shows_the_total_and_currency_of_its_lines_and_ignores_a_kept_total() {
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
