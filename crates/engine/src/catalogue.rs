//! A site's products: upserted by ProductUpdate (a partial update changes only the fields
//! sent), with the price and stock state the site shows kept up to date from the events
//! that carry them (product pages, carts, wishlists), and their history kept.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spoor_protocol::{EventBody, Price, ProductUpdate, TagMap, TrackerEvent};

use crate::limits::{
    self, Dropped, MAX_CATEGORIES, MAX_CATEGORY_BYTES, MAX_HISTORY_POINTS, MAX_PRODUCT_FIELD_BYTES,
    MAX_PRODUCT_FIELDS, MAX_PRODUCTS, MAX_TAG_TEXT_BYTES,
};
use crate::timed::Timed;

/// The catalogue field (a `ProductUpdate`'s, a feed's element) that keeps a product out
/// of recommendations when `false`.
pub const RECOMMENDABLE: &str = "recommendable";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// The current price: the latest the site sent, in an update or shown on a page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Timed<Price>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<Timed<bool>>,
    /// Category path segments, `level1 > level2 > level3` split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category_path: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// When the site first mentioned the product (for new arrivals).
    pub first_seen: i64,
    /// Every price change, oldest first.
    pub price_history: Vec<Timed<Decimal>>,
    /// Every stock change, oldest first.
    pub stock_history: Vec<Timed<bool>>,
    /// The price and stock state the product feed last said, to tell a change in the
    /// feed from the same value sent again.
    #[serde(default, skip_serializing_if = "FeedSaid::is_empty")]
    pub feed_said: FeedSaid,
}

impl Product {
    /// Whether recommendations may show it: not when the shop marked it otherwise with a
    /// `recommendable` field of `false` or `0` (postage, fees, gift wrap, samples).
    pub fn recommendable(&self) -> bool {
        match self.extra.get(RECOMMENDABLE) {
            Some(serde_json::Value::Bool(flag)) => *flag,
            Some(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(serde_json::Value::String(text)) => !matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "false" | "0" | "no"
            ),
            _ => true,
        }
    }

    fn new(product_key: &str, at: i64) -> Product {
        Product {
            product_key: product_key.to_string(),
            name: None,
            description: None,
            brand: None,
            url: None,
            image_url: None,
            price: None,
            in_stock: None,
            category_path: Vec::new(),
            category_ids: Vec::new(),
            tags: TagMap::new(),
            extra: BTreeMap::new(),
            first_seen: at,
            price_history: Vec::new(),
            stock_history: Vec::new(),
            feed_said: FeedSaid::default(),
        }
    }

    /// Sets the price as of `at`, unless a later one is known; records a change.
    fn observe_price(&mut self, price: &Price, at: i64) {
        record_change(&mut self.price_history, price.amount, at);
        if self.price.as_ref().is_none_or(|p| p.at <= at) {
            self.price = Some(Timed {
                value: price.clone(),
                at,
            });
        }
    }

    fn observe_stock(&mut self, in_stock: bool, at: i64) {
        record_change(&mut self.stock_history, in_stock, at);
        if self.in_stock.as_ref().is_none_or(|s| s.at <= at) {
            self.in_stock = Some(Timed {
                value: in_stock,
                at,
            });
        }
    }
}

/// Inserts `value` at its time in a history of changes, where it differs from what was
/// in force at that time; later entries equal to it are then no longer changes.
fn record_change<T: PartialEq + Clone>(history: &mut Vec<Timed<T>>, value: T, at: i64) {
    let index = history.partition_point(|h| h.at <= at);
    if index > 0 && history[index - 1].value == value {
        return;
    }
    history.insert(index, Timed { value, at });
    if history
        .get(index + 1)
        .is_some_and(|next| next.value == history[index].value)
    {
        history.remove(index + 1);
    }
    if history.len() > MAX_HISTORY_POINTS {
        // The oldest change leaves: what was in force since then is still told right.
        history.remove(0);
        limits::drop_one(Dropped::HistoryPoint);
    }
}

/// The categories a product is in: its category ids and its path's segments, once each.
fn categories_of(product: &Product) -> Vec<&String> {
    let mut all: Vec<&String> = Vec::new();
    for category in product.category_ids.iter().chain(&product.category_path) {
        if !all.contains(&category) {
            all.push(category);
        }
    }
    all
}

/// What a product feed last said of a product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedSaid {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
}

impl FeedSaid {
    fn is_empty(&self) -> bool {
        self.price.is_none() && self.in_stock.is_none()
    }
}

#[derive(Debug, Default)]
pub struct Catalogue {
    products: HashMap<String, Product>,
    /// Every product by when it was first seen, newest first (ties in key order): new
    /// arrivals without a scan.
    arrivals: BTreeSet<(Reverse<i64>, String)>,
    /// Category id or path segment -> its products: category blocks without a scan.
    categories: HashMap<String, Vec<String>>,
}

impl Catalogue {
    pub fn get(&self, product_key: &str) -> Option<&Product> {
        self.products.get(product_key)
    }

    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// Product keys, the most recently first seen first (ties in key order).
    pub fn newest_first(&self) -> impl Iterator<Item = &str> {
        self.arrivals.iter().map(|(_, key)| key.as_str())
    }

    /// The products of a category (an id, or a segment of a category path).
    pub fn in_category(&self, category: &str) -> &[String] {
        self.categories.get(category).map_or(&[], Vec::as_slice)
    }

    pub fn insert(&mut self, product: Product) {
        self.arrivals
            .insert((Reverse(product.first_seen), product.product_key.clone()));
        for category in categories_of(&product) {
            self.categories
                .entry(category.to_string())
                .or_default()
                .push(product.product_key.clone());
        }
        self.products.insert(product.product_key.clone(), product);
    }

    /// Every product, in product key order.
    pub fn sorted(&self) -> Vec<&Product> {
        let mut products: Vec<&Product> = self.products.values().collect();
        products.sort_unstable_by(|a, b| a.product_key.cmp(&b.product_key));
        products
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// The product, created at its first sight while the catalogue holds fewer than
    /// [`MAX_PRODUCTS`] (events are public: anyone can name new product keys). `None`,
    /// counted as a drop, past it.
    fn entry(&mut self, product_key: &str, at: i64) -> Option<&mut Product> {
        self.entry_within(MAX_PRODUCTS, product_key, at)
    }

    fn entry_within(&mut self, cap: usize, product_key: &str, at: i64) -> Option<&mut Product> {
        if self.products.len() >= cap && !self.products.contains_key(product_key) {
            limits::drop_one(Dropped::Product);
            return None;
        }
        Some(self.entry_beyond_cap(product_key, at))
    }

    /// [`Catalogue::entry`] for the shop's own feed, which is admitted whatever the
    /// catalogue holds: it is imported with the admin token, and products named only in
    /// public events must not keep the shop's real products out.
    fn entry_beyond_cap(&mut self, product_key: &str, at: i64) -> &mut Product {
        let product = match self.products.entry(product_key.to_string()) {
            Entry::Occupied(found) => found.into_mut(),
            Entry::Vacant(slot) => {
                self.arrivals.insert((Reverse(at), product_key.to_string()));
                slot.insert(Product::new(product_key, at))
            }
        };
        if at < product.first_seen {
            // Seen earlier than thought (events out of order): it moves in the arrivals.
            self.arrivals
                .remove(&(Reverse(product.first_seen), product_key.to_string()));
            self.arrivals.insert((Reverse(at), product_key.to_string()));
            product.first_seen = at;
        }
        product
    }

    /// Moves `product_key` from the categories it was in to those it is in now.
    fn recategorise(&mut self, product_key: &str, before: &[String]) {
        let Some(product) = self.products.get(product_key) else {
            return;
        };
        let now = categories_of(product);
        for category in before {
            if !now.contains(&category)
                && let Some(members) = self.categories.get_mut(category)
            {
                members.retain(|k| k != product_key);
                if members.is_empty() {
                    self.categories.remove(category);
                }
            }
        }
        for category in now {
            if !before.contains(category) {
                self.categories
                    .entry(category.clone())
                    .or_default()
                    .push(product_key.to_string());
            }
        }
    }

    /// A feed item: descriptive fields as in an update; its price and stock state only
    /// where the feed changed them since its last import, so that a value the site showed
    /// since (in an update or on a page) wins over a feed that still says the old one.
    pub fn feed(&mut self, item: &ProductUpdate, at: i64) {
        let product = self.entry_beyond_cap(&item.product_key, at);
        let said = &mut product.feed_said;
        let changed_price = item
            .price
            .as_ref()
            .filter(|p| said.price.as_ref() != Some(*p))
            .cloned();
        let changed_stock = item.in_stock.filter(|s| said.in_stock != Some(*s));
        if item.price.is_some() {
            said.price.clone_from(&item.price);
        }
        if item.in_stock.is_some() {
            said.in_stock = item.in_stock;
        }
        let descriptive = ProductUpdate {
            price: changed_price,
            in_stock: changed_stock,
            ..item.clone()
        };
        self.update(&descriptive, at);
    }

    /// A ProductUpdate: only the fields it carries change.
    pub fn update(&mut self, update: &ProductUpdate, at: i64) {
        let Some(product) = self.entry(&update.product_key, at) else {
            return;
        };
        let set = |slot: &mut Option<String>, value: &Option<String>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        set(&mut product.name, &update.name);
        set(&mut product.description, &update.description);
        set(&mut product.brand, &update.brand);
        set(&mut product.url, &update.url);
        set(&mut product.image_url, &update.image_url);
        let recategorised = update.category.is_some() || update.category_ids.is_some();
        let before: Vec<String> = if recategorised {
            categories_of(product).into_iter().cloned().collect()
        } else {
            Vec::new()
        };
        if let Some(path) = &update.category {
            let levels = (path.split('>').map(str::trim)).filter(|s| !s.is_empty());
            product.category_path = capped_categories(levels);
        }
        if let Some(ids) = &update.category_ids {
            product.category_ids = capped_categories(ids.iter().map(|id| id.as_str()));
        }
        limits::put_tags(&mut product.tags, &update.tags);
        for (key, value) in &update.extra {
            let too_big = || {
                key.len() > MAX_TAG_TEXT_BYTES || value.to_string().len() > MAX_PRODUCT_FIELD_BYTES
            };
            let no_room =
                !product.extra.contains_key(key) && product.extra.len() >= MAX_PRODUCT_FIELDS;
            if no_room || too_big() {
                limits::drop_one(Dropped::ProductField);
                continue;
            }
            product.extra.insert(key.clone(), value.clone());
        }
        if let Some(price) = &update.price {
            product.observe_price(price, at);
        }
        if let Some(in_stock) = update.in_stock {
            product.observe_stock(in_stock, at);
        }
        if recategorised {
            self.recategorise(&update.product_key, &before);
        }
    }

    /// A price or stock state the site showed in an event (product page, cart, wishlist).
    pub fn observe(
        &mut self,
        product_key: &str,
        price: Option<&Price>,
        in_stock: Option<bool>,
        at: i64,
    ) {
        let Some(product) = self.entry(product_key, at) else {
            return;
        };
        if let Some(price) = price {
            product.observe_price(price, at);
        }
        if let Some(in_stock) = in_stock {
            product.observe_stock(in_stock, at);
        }
    }

    /// Notes that a product exists (named in an order or an impression), without any state.
    pub fn mention(&mut self, product_key: &str, at: i64) {
        let _ = self.entry(product_key, at);
    }
}

/// At most [`MAX_CATEGORIES`] categories (or path levels) of at most
/// [`MAX_CATEGORY_BYTES`] each: indexing a product under its categories compares them
/// with each other, and the tracker is public.
fn capped_categories<'a>(categories: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut kept = Vec::new();
    for category in categories {
        if kept.len() >= MAX_CATEGORIES || category.len() > MAX_CATEGORY_BYTES {
            limits::drop_one(Dropped::ProductCategory);
            continue;
        }
        kept.push(category.to_string());
    }
    kept
}

/// A change of a product that product triggers tell contacts about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductNews {
    PriceDrop,
    BackInStock,
}

impl Catalogue {
    /// Applies what the event says about products (updates, the prices and stock states
    /// pages show, sales); returns the price drops and returns to stock it caused.
    pub fn apply<'e>(&mut self, event: &'e TrackerEvent, at: i64) -> Vec<(&'e str, ProductNews)> {
        let touched = touched_products(event);
        let before: Vec<(Option<Decimal>, Option<bool>)> = touched
            .iter()
            .map(|key| self.price_and_stock(key))
            .collect();
        self.change(event, at);
        let mut news = Vec::new();
        for (key, (old_price, old_stock)) in touched.into_iter().zip(before) {
            let (new_price, new_stock) = self.price_and_stock(key);
            if let (Some(old), Some(new)) = (old_price, new_price)
                && new < old
            {
                news.push((key, ProductNews::PriceDrop));
            }
            if old_stock == Some(false) && new_stock == Some(true) {
                news.push((key, ProductNews::BackInStock));
            }
        }
        news
    }

    fn price_and_stock(&self, key: &str) -> (Option<Decimal>, Option<bool>) {
        let product = self.get(key);
        (
            product
                .and_then(|p| p.price.as_ref())
                .map(|p| p.value.amount),
            product.and_then(|p| p.in_stock.as_ref()).map(|s| s.value),
        )
    }

    fn change(&mut self, event: &TrackerEvent, at: i64) {
        let catalogue = self;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn price(amount: &str) -> Price {
        Price {
            amount: amount.parse().unwrap(),
            currency: None,
        }
    }

    #[test]
    fn indexes_follow_categories_and_first_sightings() {
        let mut catalogue = Catalogue::default();
        let put = |catalogue: &mut Catalogue, key: &str, category: &str, at: i64| {
            catalogue.update(
                &ProductUpdate {
                    product_key: key.into(),
                    category: Some(category.into()),
                    ..ProductUpdate::default()
                },
                at,
            )
        };
        put(&mut catalogue, "mug", "Home > Kitchen", 10);
        put(&mut catalogue, "pan", "Home > Kitchen", 20);
        put(&mut catalogue, "lamp", "Home > Light", 30);
        assert_eq!(catalogue.in_category("Kitchen"), ["mug", "pan"]);
        assert_eq!(catalogue.in_category("Home"), ["mug", "pan", "lamp"]);
        // The pan moves: it leaves Kitchen, and Home keeps it once.
        put(&mut catalogue, "pan", "Home > Light", 40);
        assert_eq!(catalogue.in_category("Kitchen"), ["mug"]);
        assert_eq!(catalogue.in_category("Light"), ["lamp", "pan"]);
        assert_eq!(catalogue.in_category("Home"), ["mug", "pan", "lamp"]);
        let newest: Vec<&str> = catalogue.newest_first().collect();
        assert_eq!(newest, ["lamp", "pan", "mug"]);
        // A late event shows the lamp was seen first of all.
        catalogue.mention("lamp", 5);
        let newest: Vec<&str> = catalogue.newest_first().collect();
        assert_eq!(newest, ["pan", "mug", "lamp"]);
    }

    #[test]
    fn categories_a_client_sends_by_the_hundred_thousand_are_capped() {
        let mut catalogue = Catalogue::default();
        let dropped = limits::dropped(Dropped::ProductCategory);
        let path = vec!["level"; 100_000].join(" > ");
        let ids: Vec<spoor_protocol::Text> = (0..100_000).map(|i| i.to_string().into()).collect();
        catalogue.update(
            &ProductUpdate {
                product_key: "p".into(),
                category: Some(path),
                category_ids: Some(ids),
                ..ProductUpdate::default()
            },
            1,
        );
        let product = catalogue.get("p").unwrap();
        assert_eq!(product.category_path.len(), MAX_CATEGORIES);
        assert_eq!(product.category_ids.len(), MAX_CATEGORIES);
        assert!(limits::dropped(Dropped::ProductCategory) >= dropped + 2 * 99_968);
    }

    #[test]
    fn partial_update_changes_only_the_fields_sent() {
        let mut catalogue = Catalogue::default();
        catalogue.update(
            &ProductUpdate {
                product_key: "1".into(),
                name: Some("Mug".into()),
                brand: Some("Acme".into()),
                price: Some(price("10")),
                category: Some("Home > Kitchen > Mugs".into()),
                ..ProductUpdate::default()
            },
            100,
        );
        catalogue.update(
            &ProductUpdate {
                product_key: "1".into(),
                price: Some(price("8")),
                in_stock: Some(false),
                ..ProductUpdate::default()
            },
            200,
        );
        let mug = catalogue.get("1").unwrap();
        assert_eq!(mug.name.as_deref(), Some("Mug"));
        assert_eq!(mug.brand.as_deref(), Some("Acme"));
        assert_eq!(mug.category_path, ["Home", "Kitchen", "Mugs"]);
        assert_eq!(mug.price.as_ref().unwrap().value.amount.to_string(), "8");
        assert!(!mug.in_stock.as_ref().unwrap().value);
        let history: Vec<String> = mug
            .price_history
            .iter()
            .map(|h| h.value.to_string())
            .collect();
        assert_eq!(history, ["10", "8"]);
    }

    #[test]
    fn the_site_value_wins_over_a_feed_that_did_not_change() {
        let mut catalogue = Catalogue::default();
        let item = |amount: &str| ProductUpdate {
            product_key: "p".into(),
            name: Some("Lamp".into()),
            price: Some(price(amount)),
            in_stock: Some(true),
            ..ProductUpdate::default()
        };
        catalogue.feed(&item("20"), 100);
        catalogue.observe("p", Some(&price("18")), Some(false), 200);
        // The next import still says 20 and in stock: the site's 18, out of stock, stands.
        catalogue.feed(&item("20"), 300);
        let lamp = catalogue.get("p").unwrap();
        assert_eq!(lamp.price.as_ref().unwrap().value.amount.to_string(), "18");
        assert!(!lamp.in_stock.as_ref().unwrap().value);
        // A feed that changes the price is news.
        catalogue.feed(&item("15"), 400);
        let lamp = catalogue.get("p").unwrap();
        assert_eq!(lamp.price.as_ref().unwrap().value.amount.to_string(), "15");
        assert!(
            !lamp.in_stock.as_ref().unwrap().value,
            "the feed's stock state did not change"
        );
    }

    #[test]
    fn the_latest_price_wins_whatever_the_arrival_order() {
        let mut in_order = Catalogue::default();
        let mut shuffled = Catalogue::default();
        let seen = [(100, "10"), (300, "12"), (200, "9"), (400, "12")];
        for (at, amount) in seen {
            in_order.observe("p", Some(&price(amount)), Some(true), at);
        }
        for (at, amount) in seen.iter().rev() {
            shuffled.observe("p", Some(&price(amount)), Some(true), *at);
        }
        let (a, b) = (in_order.get("p").unwrap(), shuffled.get("p").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.price.as_ref().unwrap().value.amount.to_string(), "12");
        let history: Vec<(i64, String)> = a
            .price_history
            .iter()
            .map(|h| (h.at, h.value.to_string()))
            .collect();
        assert_eq!(
            history,
            [(100, "10".into()), (200, "9".into()), (300, "12".into())]
        );
    }
    #[test]
    fn a_full_catalogue_takes_no_new_product_from_events_but_the_feed_still_comes_in() {
        let mut catalogue = Catalogue::default();
        assert!(catalogue.entry_within(2, "a", 1).is_some());
        assert!(catalogue.entry_within(2, "b", 2).is_some());
        let before = limits::dropped(Dropped::Product);
        assert!(catalogue.entry_within(2, "junk", 3).is_none());
        assert!(limits::dropped(Dropped::Product) > before);
        assert!(
            catalogue.entry_within(2, "a", 4).is_some(),
            "a known product still changes"
        );
        catalogue.entry_beyond_cap("from-the-feed", 5);
        assert_eq!(catalogue.len(), 3);
        assert!(catalogue.get("junk").is_none());
    }
}
