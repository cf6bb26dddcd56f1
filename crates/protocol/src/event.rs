//! The normalised, typed form of every event the tracker API accepts.
//!
//! This is what the log stores and what `spoor events export` prints: one shape per event
//! whatever variant the client sent (nested or flat, `product_id` or `productKey`, prices as
//! numbers or strings). Field names are camelCase; absent values are omitted.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use crate::tags::TagMap;
pub use crate::text::Text;

/// An amount with the currency it was sent with, when one was (`"754 USD"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Text>,
}

/// Who did it: every identifier and profile field `GeneralInfo` carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Visitor {
    /// The `sc` cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sc: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_customer_id: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    /// `user_es_contact_id`: the contact id in the vendor's system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub es_contact_id: Option<Text>,
    /// Further `GeneralInfo` fields (`user_card_id`, `user_city`, `user_tags_gender`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Visitor {
    /// Whether anything identifies the visitor at all.
    pub fn is_identified(&self) -> bool {
        self.sc.is_some()
            || self.external_customer_id.is_some()
            || self.email.is_some()
            || self.phone.is_some()
            || self.es_contact_id.is_some()
    }
}

/// One behaviour event of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "FlatEvent")]
pub struct TrackerEvent {
    pub site_id: Text,
    /// When it happened, in milliseconds since the epoch, as the client sent it.
    /// Absent on the wire means "now": ingest fills in the receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datetime: Option<i64>,
    #[serde(default, skip_serializing_if = "visitor_is_empty")]
    pub visitor: Visitor,
    #[serde(flatten)]
    pub body: EventBody,
    /// The event's `Tags` object.
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
}

/// A stored event as it reads, every body field optional: read straight into this and
/// checked against its `eventName`, rather than through `#[serde(flatten)]`, which buffers
/// the whole object and reads it twice (the state reads every record of the log).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatEvent {
    site_id: Text,
    #[serde(default)]
    datetime: Option<i64>,
    #[serde(default)]
    visitor: Visitor,
    event_name: EventKind,
    #[serde(default)]
    product: Option<ProductSeen>,
    #[serde(default)]
    cart: Option<Cart>,
    #[serde(default)]
    purchase: Option<Purchase>,
    #[serde(default)]
    impressions: Option<Vec<Impression>>,
    #[serde(default)]
    category_key: Option<String>,
    #[serde(default)]
    search: Option<Search>,
    #[serde(default)]
    products: Option<Vec<ProductUpdate>>,
    #[serde(default)]
    tags: TagMap,
}

impl TryFrom<FlatEvent> for TrackerEvent {
    type Error = String;

    fn try_from(flat: FlatEvent) -> Result<Self, Self::Error> {
        fn needs<T>(value: Option<T>, field: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{field}`"))
        }
        let body = match flat.event_name {
            EventKind::ProductPage => EventBody::ProductPage {
                product: needs(flat.product, "product")?,
            },
            EventKind::StatusCart => EventBody::StatusCart {
                cart: needs(flat.cart, "cart")?,
            },
            EventKind::AddToWishlist => EventBody::AddToWishlist {
                product: needs(flat.product, "product")?,
            },
            EventKind::PurchasedItems => EventBody::PurchasedItems {
                purchase: needs(flat.purchase, "purchase")?,
            },
            EventKind::ProductImpressions => EventBody::ProductImpressions {
                impressions: needs(flat.impressions, "impressions")?,
            },
            EventKind::CategoryPage => EventBody::CategoryPage {
                category_key: needs(flat.category_key, "categoryKey")?,
            },
            EventKind::CustomerData => EventBody::CustomerData,
            EventKind::SearchRequest => EventBody::SearchRequest {
                search: needs(flat.search, "search")?,
            },
            EventKind::ProductUpdate => EventBody::ProductUpdate {
                products: needs(flat.products, "products")?,
            },
            EventKind::MainPage => EventBody::MainPage,
            EventKind::NotFound => EventBody::NotFound,
            EventKind::StatusCartPage => EventBody::StatusCartPage,
            EventKind::PageView => EventBody::PageView,
        };
        Ok(TrackerEvent {
            site_id: flat.site_id,
            datetime: flat.datetime,
            visitor: flat.visitor,
            body,
            tags: flat.tags,
        })
    }
}

fn visitor_is_empty(v: &Visitor) -> bool {
    *v == Visitor::default()
}

impl TrackerEvent {
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }
}

/// What happened. The tag is the wire's `eventName`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eventName")]
pub enum EventBody {
    ProductPage {
        product: ProductSeen,
    },
    StatusCart {
        cart: Cart,
    },
    AddToWishlist {
        product: ProductSeen,
    },
    PurchasedItems {
        purchase: Purchase,
    },
    ProductImpressions {
        impressions: Vec<Impression>,
    },
    CategoryPage {
        #[serde(rename = "categoryKey")]
        category_key: String,
    },
    CustomerData,
    SearchRequest {
        search: Search,
    },
    ProductUpdate {
        products: Vec<ProductUpdate>,
    },
    /// Page events: the home page, a 404 page, the cart page (or pop-up) without a
    /// change of cart, and any page (the browser script sends one on every load). Kept
    /// in the log as shown; recommendations read the page type from them.
    MainPage,
    NotFound,
    StatusCartPage,
    PageView,
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::ProductPage { .. } => EventKind::ProductPage,
            EventBody::StatusCart { .. } => EventKind::StatusCart,
            EventBody::AddToWishlist { .. } => EventKind::AddToWishlist,
            EventBody::PurchasedItems { .. } => EventKind::PurchasedItems,
            EventBody::ProductImpressions { .. } => EventKind::ProductImpressions,
            EventBody::CategoryPage { .. } => EventKind::CategoryPage,
            EventBody::CustomerData => EventKind::CustomerData,
            EventBody::SearchRequest { .. } => EventKind::SearchRequest,
            EventBody::ProductUpdate { .. } => EventKind::ProductUpdate,
            EventBody::MainPage => EventKind::MainPage,
            EventBody::NotFound => EventKind::NotFound,
            EventBody::StatusCartPage => EventKind::StatusCartPage,
            EventBody::PageView => EventKind::PageView,
        }
    }
}

/// The event names of the API, as they appear in `GeneralInfo.eventName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum EventKind {
    ProductPage,
    StatusCart,
    AddToWishlist,
    PurchasedItems,
    ProductImpressions,
    CategoryPage,
    CustomerData,
    SearchRequest,
    ProductUpdate,
    MainPage,
    NotFound,
    StatusCartPage,
    PageView,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::ProductPage,
        EventKind::StatusCart,
        EventKind::AddToWishlist,
        EventKind::PurchasedItems,
        EventKind::ProductImpressions,
        EventKind::CategoryPage,
        EventKind::CustomerData,
        EventKind::SearchRequest,
        EventKind::ProductUpdate,
        EventKind::MainPage,
        EventKind::NotFound,
        EventKind::StatusCartPage,
        EventKind::PageView,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProductPage => "ProductPage",
            EventKind::StatusCart => "StatusCart",
            EventKind::AddToWishlist => "AddToWishlist",
            EventKind::PurchasedItems => "PurchasedItems",
            EventKind::ProductImpressions => "ProductImpressions",
            EventKind::CategoryPage => "CategoryPage",
            EventKind::CustomerData => "CustomerData",
            EventKind::SearchRequest => "SearchRequest",
            EventKind::ProductUpdate => "ProductUpdate",
            EventKind::MainPage => "MainPage",
            EventKind::NotFound => "NotFound",
            EventKind::StatusCartPage => "StatusCartPage",
            EventKind::PageView => "PageView",
        }
    }

    /// The body of a page event (a page of a type was shown): nothing but its name.
    pub fn page(self) -> Option<EventBody> {
        match self {
            EventKind::MainPage => Some(EventBody::MainPage),
            EventKind::NotFound => Some(EventBody::NotFound),
            EventKind::StatusCartPage => Some(EventBody::StatusCartPage),
            EventKind::PageView => Some(EventBody::PageView),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A product as seen on a product page or added to the wishlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductSeen {
    pub product_key: Text,
    pub price: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
    /// Where the visit came from when a recommendation block led to it: the block's
    /// `sc_content` (its container type) or `s_location`, as the client echoed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
}

/// The whole current cart. An empty `products` list is an emptied cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    pub products: Vec<CartLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartLine {
    pub product_key: Text,
    pub price: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    pub order_number: String,
    /// The GUID of the cart state that became this order, when the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_order_id: Option<String>,
    pub products: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub product_key: Text,
    pub unit_price: Price,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
}

/// One product shown in one recommendation block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Impression {
    pub product_key: Text,
    pub container_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Search {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
}

/// A catalogue update. Only the fields sent are present: a partial update changes only them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductUpdate {
    pub product_key: Text,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
    /// A category path, `level1 > level2 > level3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_ids: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "TagMap::is_empty")]
    pub tags: TagMap,
    /// Any other field the client sent, kept as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A contact-link body, posted by a shop plugin without `GeneralInfo`: joins a cookie to
/// a customer id, email or phone. It names no site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactLink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A shop plugin's own diagnostic record, posted to the tracker URL. Acknowledged so the
/// plugin keeps working; not behaviour, so not stored as an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginLog {
    pub type_cms: Option<String>,
    pub log_level: Option<String>,
}

/// Whatever a body posted to `/api/v2` turned out to be.
// Made once per request and taken apart at once: boxing the event would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Event(TrackerEvent),
    ContactLink(ContactLink),
    PluginLog(PluginLog),
}
