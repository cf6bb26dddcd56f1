//! Bounds on what events can make the state hold. The tracker is public: anyone can post
//! events with new profile fields, prices, tags and orders, so every structure they grow
//! has a cap, chosen well above what real shops send. What goes past a cap is dropped and
//! counted by reason (the server's `/metrics` shows the counts), never an error for the
//! shop; the log still holds every event as it came.

use std::sync::atomic::{AtomicU64, Ordering};

use spoor_protocol::{TagMap, Text};

/// Further profile fields (`user_city`, `user_card_id`...) per contact.
pub const MAX_PROFILE_FIELDS: usize = 64;
/// Bytes of a profile field's name, and of its value.
pub const MAX_FIELD_NAME_BYTES: usize = 64;
pub const MAX_FIELD_VALUE_BYTES: usize = 1024;
/// Points of a product's price history, and of its stock history: the latest are kept.
pub const MAX_HISTORY_POINTS: usize = 256;
/// Tag names per product (or cart or order line), values per tag name, and bytes of all
/// its tags' names and values together: a product's tags go into every answer that shows
/// it.
pub const MAX_PRODUCT_TAGS: usize = 64;
pub const MAX_TAG_VALUES: usize = 64;
pub const MAX_TAG_BYTES: usize = 16 * 1024;
/// Bytes of a tag's name or of one of its values, and of a further catalogue field's name.
pub const MAX_TAG_TEXT_BYTES: usize = 512;
/// Bytes of a further catalogue field's value, as JSON.
pub const MAX_PRODUCT_FIELD_BYTES: usize = 16 * 1024;
/// Categories (or levels of a category path) per product, and bytes of each.
pub const MAX_CATEGORIES: usize = 32;
pub const MAX_CATEGORY_BYTES: usize = 256;
/// Further catalogue fields (a feed's or an update's own) per product.
pub const MAX_PRODUCT_FIELDS: usize = 64;
/// Orders per contact: the latest are kept.
pub const MAX_ORDERS: usize = 1_000;
/// Lines of a cart or an order a contact keeps: the first sent.
pub const MAX_LINES: usize = 500;
/// Products in a contact's wishlist: the latest added are kept.
pub const MAX_WISHLIST: usize = 500;
/// Products in a site's catalogue (the shop's feed is admitted beyond it), and product
/// keys the site's models number (every key any event named).
pub const MAX_PRODUCTS: usize = 1_000_000;
pub const MAX_ITEMS: usize = 2_000_000;

/// Why something was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    ProfileField,
    HistoryPoint,
    ProductTag,
    ProductField,
    Order,
    WishlistItem,
    ProductCategory,
    Line,
    Attribution,
    Product,
    /// A cookie, phone or vendor id a contact let go to keep [`crate::contacts::identity::MAX_SHARED_IDS`].
    Identifier,
    /// A contact left a product's price-drop list (see [`crate::interest::MAX_INTERESTED`]).
    InterestedContact,
    /// A block click or impression a contact's attribution let go (the latest are kept).
    Touch,
}

impl Dropped {
    pub const ALL: [Dropped; 13] = [
        Dropped::ProfileField,
        Dropped::HistoryPoint,
        Dropped::ProductTag,
        Dropped::ProductField,
        Dropped::Order,
        Dropped::WishlistItem,
        Dropped::ProductCategory,
        Dropped::Line,
        Dropped::Attribution,
        Dropped::Product,
        Dropped::Identifier,
        Dropped::InterestedContact,
        Dropped::Touch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dropped::ProfileField => "profile_field",
            Dropped::HistoryPoint => "history_point",
            Dropped::ProductTag => "product_tag",
            Dropped::ProductField => "product_field",
            Dropped::Order => "order",
            Dropped::WishlistItem => "wishlist_item",
            Dropped::ProductCategory => "product_category",
            Dropped::Line => "line",
            Dropped::Attribution => "attribution",
            Dropped::Product => "product",
            Dropped::Identifier => "identifier",
            Dropped::InterestedContact => "interested_contact",
            Dropped::Touch => "touch",
        }
    }
}

/// Puts each of `new`'s tags into `tags` (replacing one of the same name) within the caps
/// on tag names, values per tag and bytes; what does not fit is dropped and counted.
pub fn put_tags(tags: &mut TagMap, new: &TagMap) {
    let size =
        |name: &str, values: &[Text]| name.len() + values.iter().map(|v| v.len()).sum::<usize>();
    let mut held: usize = tags.iter().map(|(name, values)| size(name, values)).sum();
    for (name, values) in new.iter() {
        let replaced = tags.get(name).map(|old| size(name, old));
        if name.len() > MAX_TAG_TEXT_BYTES || (replaced.is_none() && tags.len() >= MAX_PRODUCT_TAGS)
        {
            drop_one(Dropped::ProductTag);
            continue;
        }
        let kept: Vec<Text> = (values.iter())
            .filter(|value| value.len() <= MAX_TAG_TEXT_BYTES)
            .take(MAX_TAG_VALUES)
            .cloned()
            .collect();
        if kept.len() < values.len() {
            drop_one(Dropped::ProductTag);
        }
        let before = held - replaced.unwrap_or(0);
        let after = before + size(name, &kept);
        // A change that does not grow the tags is always taken, so tags held before the
        // cap existed can still shrink.
        if after > MAX_TAG_BYTES && after > held {
            drop_one(Dropped::ProductTag);
            continue;
        }
        held = after;
        tags.insert(name.clone(), kept);
    }
}

static COUNTS: [AtomicU64; Dropped::ALL.len()] = [const { AtomicU64::new(0) }; Dropped::ALL.len()];

/// Counts one drop.
pub fn drop_one(reason: Dropped) {
    COUNTS[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Drops since the process started, by reason (a replay of the log at start counts its
/// drops again).
pub fn dropped(reason: Dropped) -> u64 {
    COUNTS[reason as usize].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(entries: &[(&str, Vec<String>)]) -> TagMap {
        let mut map = TagMap::new();
        for (name, values) in entries {
            map.insert(
                (*name).into(),
                values.iter().map(|v| v.as_str().into()).collect(),
            );
        }
        map
    }

    #[test]
    fn tags_are_kept_within_their_count_values_and_bytes() {
        let mut held = TagMap::new();
        let many: Vec<String> = (0..MAX_TAG_VALUES + 5).map(|i| i.to_string()).collect();
        put_tags(&mut held, &tags(&[("color", many)]));
        assert_eq!(held.get("color").unwrap().len(), MAX_TAG_VALUES);

        // Some 10 KB in values of 500 bytes: two of these do not fit.
        let big: Vec<String> = (0..20)
            .map(|i| format!("{i:03}{}", "x".repeat(497)))
            .collect();
        put_tags(&mut held, &tags(&[("a", big.clone())]));
        assert!(held.get("a").is_some());
        put_tags(&mut held, &tags(&[("b", big.clone())]));
        assert!(held.get("b").is_none(), "past the byte budget");
        // Replacing a tag frees its bytes first.
        put_tags(&mut held, &tags(&[("a", vec!["small".into()])]));
        put_tags(&mut held, &tags(&[("b", big)]));
        assert!(held.get("b").is_some());

        // Over-long names and values are dropped, the rest of the event kept.
        let long = "x".repeat(MAX_TAG_TEXT_BYTES + 1);
        let mut kept = TagMap::new();
        put_tags(
            &mut kept,
            &tags(&[
                ("size", vec!["M".into(), long.clone()]),
                (long.as_str(), vec!["v".into()]),
            ]),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.get("size").unwrap().len(), 1);

        let mut names = TagMap::new();
        let each: Vec<(String, Vec<String>)> = (0..MAX_PRODUCT_TAGS + 3)
            .map(|i| (format!("t{i:03}"), vec!["v".to_string()]))
            .collect();
        let each: Vec<(&str, Vec<String>)> =
            each.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        put_tags(&mut names, &tags(&each));
        assert_eq!(names.len(), MAX_PRODUCT_TAGS);
    }
}
