//! Bounds on what events can make the state hold. The tracker is public: anyone can post
//! events with new profile fields, prices, tags and orders, so every structure they grow
//! has a cap, chosen well above what real shops send. What goes past a cap is dropped and
//! counted by reason (the server's `/metrics` shows the counts), never an error for the
//! shop; the log still holds every event as it came.

use std::sync::atomic::{AtomicU64, Ordering};

/// Further profile fields (`user_city`, `user_card_id`...) per contact.
pub const MAX_PROFILE_FIELDS: usize = 64;
/// Bytes of a profile field's name, and of its value.
pub const MAX_FIELD_NAME_BYTES: usize = 64;
pub const MAX_FIELD_VALUE_BYTES: usize = 1024;
/// Points of a product's price history, and of its stock history: the latest are kept.
pub const MAX_HISTORY_POINTS: usize = 256;
/// Tag names per product, and values per tag name.
pub const MAX_PRODUCT_TAGS: usize = 64;
pub const MAX_TAG_VALUES: usize = 64;
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
