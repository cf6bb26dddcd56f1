//! What a delivery says: the trigger, the contact (identifiers and profile), the products
//! concerned with their catalogue fields, and up to six recommended products. Built from
//! the state when sent, so it never outlives the contact's erasure.

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::{Algorithm, Request};
use spoor_engine::timers::TriggerKind;
use spoor_engine::{Contact, Product, SiteState};
use spoor_settings::SiteTuning;

use crate::outbox::{Fired, Reach};

/// Products recommended in a message.
pub const RECOMMENDED: usize = 6;
/// Products of a message (cart lines, viewed products).
const CONCERNED: usize = 6;

/// How a contact is found again: its email, else its first phone.
pub fn reach(contact: &Contact) -> Option<Reach> {
    let ids = &contact.identifiers;
    match (&ids.email, ids.phones.first()) {
        (Some(email), _) => Some(Reach::Email(email.to_string())),
        (None, Some(phone)) => Some(Reach::Phone(phone.to_string())),
        (None, None) => None,
    }
}

/// SHA-256 of the contact's email (else first phone), hex; `None` when it has neither.
pub fn contact_check(contact: &Contact) -> Option<String> {
    let ids = &contact.identifiers;
    let reach = ids.email.as_deref().or(ids.phones.first())?;
    Some(check_of(reach))
}

/// The digests a trigger of this contact may have been recorded under: its email's and
/// each of its phones' (a trigger fired while it had no email, or another first phone, is
/// recorded under that phone).
pub fn contact_checks(contact: &Contact) -> Vec<String> {
    let ids = &contact.identifiers;
    (ids.email.as_deref().into_iter())
        .chain(ids.phones.iter())
        .map(check_of)
        .collect()
}

/// The digest a trigger is recorded under for a contact reached by `reach` (a normalised
/// email or phone), hex.
pub fn check_of(reach: &str) -> String {
    hex::encode(Sha256::digest(reach.as_bytes()))
}

/// The delivery body of `fired`, or `None` when its contact is no longer held as the same
/// person (erased, or its number now names someone else). Its recommendations are the
/// site's own: answered with its tuned settings, `tuned`, when it has them.
pub fn payload(
    site: &SiteState,
    fired: &Fired,
    now: i64,
    tuned: Option<&SiteTuning>,
) -> Option<Value> {
    let contact = match &fired.reach {
        Some(reach) => site.contact(&reach.identifier()),
        None => site.contact_by_id(fired.contact),
    }?;
    if contact_check(contact).as_deref() != Some(fired.contact_check.as_str()) {
        return None;
    }
    let (products, search) = concerned(site, contact, fired);
    let keys: Vec<&str> = products
        .iter()
        .filter_map(|p| p["product_id"].as_str())
        .collect();
    let algorithms = match fired.kind {
        TriggerKind::AbandonedCart => vec![
            Algorithm::CartCrossSell,
            Algorithm::Personal,
            Algorithm::Popular,
        ],
        TriggerKind::AbandonedBrowse => {
            vec![Algorithm::Similar, Algorithm::Personal, Algorithm::Popular]
        }
        TriggerKind::SearchWithoutResults => vec![Algorithm::SearchFallback],
        TriggerKind::WishlistReminder | TriggerKind::PriceDrop | TriggerKind::BackInStock => {
            vec![Algorithm::Similar, Algorithm::Personal, Algorithm::Popular]
        }
    };
    let request = Request {
        algorithms,
        contact: Some(contact),
        product_keys: keys,
        category_key: None,
        limit: RECOMMENDED,
        now,
        filters: Filters::default(),
        next_item: tuned.map(|t| &t.next_item),
        baskets: tuned.and_then(|t| t.baskets.as_ref()),
    };
    let recommended: Vec<Value> = site
        .recommend(&request)
        .products
        .iter()
        .map(|p| product_fields(p, None))
        .collect();
    let mut body = json!({
        "id": fired.id,
        "type": fired.kind.name(),
        "step": fired.step,
        "siteId": fired.site_id,
        "firedAt": fired.fired_at,
        "anchorAt": fired.anchor,
        "contact": contact_fields(contact),
        "products": products,
        "recommended": recommended,
    });
    if let Some(query) = search {
        body["search"] = json!({"query": query});
    }
    Some(body)
}

fn concerned(site: &SiteState, contact: &Contact, fired: &Fired) -> (Vec<Value>, Option<String>) {
    let fields = |key: &str, quantity: Option<u32>| match site.product(key) {
        Some(product) => product_fields(product, quantity),
        None => json!({"product_id": key, "quantity": quantity}),
    };
    match fired.kind {
        TriggerKind::AbandonedCart => {
            let lines = contact.cart.iter().flat_map(|c| &c.lines);
            let products = lines
                .take(CONCERNED)
                .map(|l| fields(site.product_key(l.item), Some(l.quantity)))
                .collect();
            (products, None)
        }
        TriggerKind::AbandonedBrowse => {
            let viewed = site.viewed_products(contact).take(CONCERNED);
            (viewed.map(|(key, _)| fields(key, None)).collect(), None)
        }
        TriggerKind::WishlistReminder => {
            let wished = contact.wishlist.iter().take(CONCERNED);
            let wished = wished.map(|w| fields(site.product_key(w.item), None));
            (wished.collect(), None)
        }
        TriggerKind::PriceDrop | TriggerKind::BackInStock => {
            let Some(key) = fired.product.as_deref() else {
                return (Vec::new(), None);
            };
            let mut product = fields(key, None);
            // For a price drop, the old price is the one this contact saw.
            if fired.kind == TriggerKind::PriceDrop
                && let Some(seen) = site.seen_price(contact, key)
            {
                product["old_price"] = seen.to_string().into();
            }
            (vec![product], None)
        }
        TriggerKind::SearchWithoutResults => {
            let query = contact
                .searches
                .iter()
                .find(|s| s.found == Some(false))
                .map(|s| s.query.to_string());
            (Vec::new(), query)
        }
    }
}

fn contact_fields(contact: &Contact) -> Value {
    let ids = &contact.identifiers;
    let profile = &contact.profile;
    let mut fields = Map::new();
    fields.insert("contactId".into(), contact.id.into());
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            fields.insert(key.into(), value.into());
        }
    };
    put("email", ids.email.as_deref());
    put("phone", ids.phones.first());
    put("externalCustomerId", ids.external_customer_id());
    put("name", profile.name.as_ref().map(|n| &*n.value));
    let extra: Map<String, Value> = profile
        .fields()
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone().into()))
        .collect();
    if !extra.is_empty() {
        fields.insert("fields".into(), extra.into());
    }
    if !ids.cookies.is_empty() {
        let cookies: Vec<&str> = ids.cookies.iter().collect();
        fields.insert("sc".into(), cookies.into());
    }
    Value::Object(fields)
}

/// A product's catalogue fields, with `old_price` when its price fell from a higher one.
fn product_fields(product: &Product, quantity: Option<u32>) -> Value {
    let mut fields = Map::new();
    fields.insert("product_id".into(), product.product_key.clone().into());
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(key.into(), value);
        }
    };
    put("name", product.name.clone().map(Value::from));
    put("url", product.url.clone().map(Value::from));
    put("imgurl", product.image_url.clone().map(Value::from));
    let price = product.price.as_ref().map(|p| &p.value);
    put("unit_price", price.map(|p| p.amount.to_string().into()));
    put(
        "price_currency_code",
        price.and_then(|p| p.currency.as_deref()).map(Value::from),
    );
    put(
        "old_price",
        old_price(product).map(|p| p.to_string().into()),
    );
    put("quantity", quantity.map(Value::from));
    Value::Object(fields)
}

/// The price before the current one, when it was higher.
fn old_price(product: &Product) -> Option<Decimal> {
    let current = product.price.as_ref()?.value.amount;
    let history = &product.price_history;
    let before = history.len().checked_sub(2).map(|i| history[i].value)?;
    (before > current).then_some(before)
}
