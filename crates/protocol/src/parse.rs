//! From a JSON body to a typed [`Incoming`]: every event of the tracker API in the nested
//! form the page documents and the flat forms real clients send (see COMPAT.md).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{ErrorCode, ProtocolError};
use crate::event::*;
use crate::json;
#[cfg(test)]
use crate::reader::MAX_TEXT_BYTES;
use crate::reader::{MAX_CURRENCY_CHARS, MAX_KEY_BYTES, Node, Obj, Result};
use crate::tree::{Json, Object};

/// Earliest plausible event time: 2000-01-01T00:00:00Z, in milliseconds.
const EARLIEST_DATETIME_MS: i64 = 946_684_800_000;
/// How far ahead of the receive time an event's clock may run.
const MAX_CLOCK_SKEW_MS: i64 = 24 * 60 * 60 * 1000;
/// Longest accepted siteId.
const MAX_SITE_ID_LEN: usize = 64;

/// `GeneralInfo` fields with a meaning of their own; any other is kept in `Visitor::extra`.
const GENERAL_INFO_FIELDS: [&str; 11] = [
    "eventName",
    "siteId",
    "datetime",
    "cookies",
    "externalCustomerId",
    "user_phone",
    "user_email",
    "user_name",
    "user_es_contact_id",
    "s_location",
    "sc_content",
];

/// Parses the bytes of one request body.
pub fn parse_request(body: &[u8], now_ms: i64) -> Result<Incoming> {
    json::with_tree(body, |tree| parse_tree(tree, now_ms))?
}

/// Parses one JSON document held as a `serde_json::Value`.
pub fn parse_value(value: &Value, now_ms: i64) -> Result<Incoming> {
    parse_tree(&Json::from(value), now_ms)
}

/// Parses one JSON document. `now_ms` is the receive time, used to refuse event times
/// implausibly far in the future.
pub fn parse_tree(value: &Json<'_>, now_ms: i64) -> Result<Incoming> {
    let Json::Object(root) = value else {
        return Err(ProtocolError::new(
            ErrorCode::InvalidValue,
            "",
            format!(
                "expected a JSON object, got {}",
                crate::reader::describe(value)
            ),
        ));
    };
    let expanded = expand_json_strings(root);
    let root = Obj::new(expanded.as_ref().unwrap_or(root), "");
    if let Some((_, info)) = root.get_any(&["GeneralInfo"]) {
        return parse_event(&root, info, now_ms).map(Incoming::Event);
    }
    if root
        .get_any(&["typeCMS", "log_level", "errorMessage"])
        .is_some()
    {
        return Ok(Incoming::PluginLog(PluginLog {
            type_cms: root.text(&["typeCMS"])?,
            log_level: root.text(&["log_level"])?,
        }));
    }
    if root.get_any(&["webId", "orgId"]).is_some() {
        return parse_contact_link(&root).map(Incoming::ContactLink);
    }
    Err(root.missing("GeneralInfo"))
}

/// The tables type `GeneralInfo` and some bodies "object, string": a string holding JSON.
/// Returns a copy with such strings parsed, or `None` when there are none (the usual case,
/// which then costs no copy).
fn expand_json_strings<'a>(root: &Object<'a>) -> Option<Object<'a>> {
    if !root.iter().any(|(_, value)| holds_json(value)) {
        return None;
    }
    Some(root.map_values(|_, value| {
        match value {
            Json::String(text) if holds_json(value) => serde_json::from_str::<Json<'_>>(text)
                .map(Json::into_owned)
                .unwrap_or_else(|_| value.clone()),
            _ => value.clone(),
        }
    }))
}

/// Whether the value is a string that holds a JSON object or array.
fn holds_json(value: &Json<'_>) -> bool {
    matches!(value, Json::String(s) if s.trim_start().starts_with(['{', '[']))
}

fn parse_event(root: &Obj<'_>, info: &Json<'_>, now_ms: i64) -> Result<TrackerEvent> {
    let Json::Object(info) = info else {
        return Err(Node::root(info, "GeneralInfo").invalid("an object"));
    };
    let info = Obj::new(info, "GeneralInfo");
    let name = info.require(&["eventName"], Node::text_in_place)?;
    let kind = EventKind::from_name(&name).ok_or_else(|| unknown_event(&name))?;
    let site_id = info.require(&["siteId"], site_id)?;
    let datetime = info.read(&["datetime"], |n| event_time(n, now_ms))?;
    let mut visitor = parse_visitor(&info)?;
    if kind != EventKind::ProductUpdate && !visitor.is_identified() {
        return Err(ProtocolError::new(
            ErrorCode::MissingField,
            "GeneralInfo.cookies.sc",
            "an sc cookie is required unless the event carries externalCustomerId, \
             user_email, user_phone or user_es_contact_id",
        ));
    }
    let mut tags = root.tags_object()?;
    let mut body = parse_body(kind, root, &mut visitor, &mut tags)?;
    // A block's "add to cart" is reported with the block in `GeneralInfo.s_location`.
    if let EventBody::ProductPage { product } | EventBody::AddToWishlist { product } = &mut body
        && product.location.is_none()
    {
        product.location = info.text(&["s_location", "sc_content"])?;
    }
    Ok(TrackerEvent {
        site_id,
        datetime,
        visitor,
        body,
        tags,
    })
}

fn unknown_event(name: &str) -> ProtocolError {
    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    ProtocolError::new(
        ErrorCode::UnknownEvent,
        "GeneralInfo.eventName",
        format!(
            "unknown event {:?}; expected one of {}",
            name,
            known.join(", ")
        ),
    )
}

fn site_id(node: &Node<'_>) -> Result<Option<Text>> {
    let Some(id) = node.text::<Text>()? else {
        return Ok(None);
    };
    let printable = id.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if id.len() > MAX_SITE_ID_LEN || !printable {
        return Err(node.invalid(&format!(
            "a site id of at most {MAX_SITE_ID_LEN} characters without spaces"
        )));
    }
    Ok(Some(id))
}

fn event_time(node: &Node<'_>, now_ms: i64) -> Result<Option<i64>> {
    let Some(ms) = node.integer()? else {
        return Ok(None);
    };
    let seconds_range = EARLIEST_DATETIME_MS / 1000..EARLIEST_DATETIME_MS;
    if seconds_range.contains(&ms) {
        return Err(node.out_of_range(
            "expected milliseconds since the epoch (this looks like seconds: multiply by 1000)",
        ));
    }
    if ms < EARLIEST_DATETIME_MS {
        return Err(
            node.out_of_range("expected milliseconds since the epoch, no earlier than 2000-01-01")
        );
    }
    if ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(node.out_of_range("expected a time no more than a day in the future"));
    }
    Ok(Some(ms))
}

fn parse_visitor(info: &Obj<'_>) -> Result<Visitor> {
    let mut extra = BTreeMap::new();
    for (key, value) in info.entries() {
        if GENERAL_INFO_FIELDS.contains(&key) {
            continue;
        }
        if let Some(text) = scalar_text(value) {
            extra.insert(key.to_string(), text);
        }
    }
    Ok(Visitor {
        sc: info.read(&["cookies"], sc_cookie)?,
        external_customer_id: info.key(&["externalCustomerId"])?,
        email: info.key(&["user_email"])?,
        phone: info.key(&["user_phone"])?,
        name: info.key(&["user_name"])?,
        es_contact_id: info.key(&["user_es_contact_id"])?,
        extra,
    })
}

/// A field value kept as text: scalars as written, structures as compact JSON.
fn scalar_text(value: &Json<'_>) -> Option<String> {
    match value {
        Json::Null => None,
        Json::String(s) if s.trim().is_empty() => None,
        Json::String(s) => Some(s.trim().to_string()),
        Json::Number(_) | Json::Bool(_) => Some(value.to_string()),
        other => Some(other.to_string()),
    }
}

/// `cookies` is `{"sc": "..."}`, a raw cookie header (`sc=...; _ga=...`) or the bare value.
fn sc_cookie(node: &Node<'_>) -> Result<Option<Text>> {
    match node.value {
        Json::Object(map) => Obj::new(map, node.path_text()).key(&["sc"]),
        Json::String(raw) if raw.contains('=') => {
            let sc = raw.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let value = value.trim();
                (name.trim() == "sc" && !value.is_empty()).then(|| Text::from(value))
            });
            node.check_length(sc, MAX_KEY_BYTES)
        }
        _ => node.key(),
    }
}

fn parse_contact_link(root: &Obj<'_>) -> Result<ContactLink> {
    let link = ContactLink {
        org_id: root.text(&["orgId"])?,
        web_id: root.key(&["webId"])?,
        external_customer_id: root.key(&["externalCustomerId"])?,
        email: root.key(&["email", "user_email"])?,
        phone: root.key(&["phone", "user_phone"])?,
    };
    if link.web_id.is_none()
        && link.external_customer_id.is_none()
        && link.email.is_none()
        && link.phone.is_none()
    {
        return Err(root.missing("webId"));
    }
    Ok(link)
}

fn parse_body(
    kind: EventKind,
    root: &Obj<'_>,
    visitor: &mut Visitor,
    tags: &mut TagMap,
) -> Result<EventBody> {
    let body_keys: &[&str] = match kind {
        EventKind::ProductImpressions => &["ProductImpression", "ProductImpressions"],
        _ => &[kind.as_str()],
    };
    let Some((key, body)) = root.get_any(body_keys) else {
        return match (kind, kind.page()) {
            (EventKind::CustomerData, _) => Ok(EventBody::CustomerData),
            (_, Some(page)) => Ok(page),
            _ => Err(ProtocolError::new(
                ErrorCode::MissingField,
                kind.as_str(),
                format!(
                    "the event body is missing: expected a \"{}\" object",
                    kind.as_str()
                ),
            )),
        };
    };
    let node = Node::root(body, key);
    if let Json::Object(map) = body {
        tags.extend(Obj::new(map, key).tags_object()?);
    }
    Ok(match kind {
        EventKind::ProductPage => EventBody::ProductPage {
            product: product_seen(&node)?,
        },
        EventKind::AddToWishlist => EventBody::AddToWishlist {
            product: product_seen(&node)?,
        },
        EventKind::StatusCart => EventBody::StatusCart {
            cart: cart(&node, root)?,
        },
        EventKind::PurchasedItems => EventBody::PurchasedItems {
            purchase: purchase(&node, root)?,
        },
        EventKind::ProductImpressions => EventBody::ProductImpressions {
            impressions: list_of(&node, &["Products", "products"], impression)?,
        },
        EventKind::CategoryPage => EventBody::CategoryPage {
            category_key: category_key(&node)?,
        },
        EventKind::CustomerData => {
            customer_fields(&node, visitor)?;
            EventBody::CustomerData
        }
        EventKind::SearchRequest => EventBody::SearchRequest {
            search: search(&node)?,
        },
        EventKind::ProductUpdate => EventBody::ProductUpdate {
            products: non_empty(
                &node,
                list_of(&node, &["Products", "products"], product_update)?,
            )?,
        },
        // Nothing in a page event's object has a meaning but its tags.
        EventKind::MainPage => EventBody::MainPage,
        EventKind::NotFound => EventBody::NotFound,
        EventKind::StatusCartPage => EventBody::StatusCartPage,
        EventKind::PageView => EventBody::PageView,
    })
}

fn as_object<'a>(node: &Node<'a>) -> Result<Obj<'a>> {
    match node.value {
        Json::Object(map) => Ok(Obj::new(map, node.path_text())),
        _ => Err(node.invalid("an object")),
    }
}

/// The body's list of items: the body itself when it is an array (the flat form), or the
/// array under one of `keys`; a lone object counts as a list of one.
fn list_of<T>(
    node: &Node<'_>,
    keys: &[&str],
    item: impl Fn(&Obj<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let (items, path) = match node.value {
        Json::Array(items) => (items, node.path_text()),
        Json::Object(map) => {
            let obj = Obj::new(map, node.path_text());
            match obj.get_any(keys) {
                Some((key, Json::Array(items))) => (items, obj.child_path(key)),
                Some((key, value)) => {
                    let path = obj.child_path(key);
                    return Err(Node::root(value, path).invalid("an array of objects"));
                }
                // A single product object, not wrapped in a list.
                None if keys.iter().all(|k| map.get(k).is_none())
                    && map.keys().next().is_some() =>
                {
                    return Ok(vec![item(&obj)?]);
                }
                None => return Err(obj.missing(keys[0])),
            }
        }
        _ => return Err(node.invalid("an object or an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, value)| {
            as_object(&Node::root(value, String::new()))
                .and_then(|obj| item(&obj))
                .map_err(|e| e.within(&format!("{path}[{i}]")))
        })
        .collect()
}

fn non_empty<T>(node: &Node<'_>, items: Vec<T>) -> Result<Vec<T>> {
    if items.is_empty() {
        return Err(node.out_of_range("expected at least one product"));
    }
    Ok(items)
}

/// A price, with the currency taken from `price_currency_code` when the price has none.
fn price_with_currency(obj: &Obj<'_>, keys: &[&str]) -> Result<Option<Price>> {
    let Some(mut price) = obj.read(keys, Node::price)? else {
        return Ok(None);
    };
    if price.currency.is_none() {
        price.currency = obj.read(&["price_currency_code", "currency"], currency_code)?;
    }
    Ok(Some(price))
}

/// A currency, as short as one written in a price (`"754 USD"`): it is shown beside the
/// price on the shop's pages, and any client may send it.
fn currency_code<'a, T: From<Cow<'a, str>>>(node: &Node<'a>) -> Result<Option<T>> {
    let Some(code) = node.text_in_place()? else {
        return Ok(None);
    };
    if code.chars().count() > MAX_CURRENCY_CHARS {
        return Err(node.out_of_range(&format!(
            "expected a currency code of at most {MAX_CURRENCY_CHARS} characters"
        )));
    }
    Ok(Some(T::from(code)))
}

fn required_price(obj: &Obj<'_>, keys: &[&str]) -> Result<Price> {
    price_with_currency(obj, keys)?.ok_or_else(|| obj.missing(keys[0]))
}

const PRODUCT_KEY: &[&str] = &["productKey", "product_id"];
const ORDER_PRODUCT_KEY: &[&str] = &["product_id", "productKey"];
const IN_STOCK: &[&str] = &["isInStock", "isinStock", "is_in_stock"];

/// `{"Product": {...}, "Tags": {...}}`, or the flat `{productKey, price, isInStock}`.
fn product_seen(node: &Node<'_>) -> Result<ProductSeen> {
    let body = as_object(node)?;
    const LOCATION: &[&str] = &["sc_content", "s_location"];
    let (product, location) = match body.get_any(&["Product", "product"]) {
        Some((key, value)) => {
            let product = as_object(&Node::root(value, body.child_path(key)))?;
            let location = match product.text(LOCATION)? {
                Some(location) => Some(location),
                None => body.text(LOCATION)?,
            };
            (product, location)
        }
        None => {
            let location = body.text(LOCATION)?;
            (body, location)
        }
    };
    Ok(ProductSeen {
        product_key: product.required_key(PRODUCT_KEY)?,
        price: required_price(&product, &["price", "unit_price"])?,
        in_stock: product.read(IN_STOCK, Node::flag)?,
        location,
        tags: product.tag_fields()?,
    })
}

fn cart(node: &Node<'_>, root: &Obj<'_>) -> Result<Cart> {
    let guid = match node.value {
        Json::Object(map) => Obj::new(map, node.path_text()).key(&["GUID", "guid"])?,
        _ => None,
    };
    let guid = match guid {
        Some(guid) => Some(guid),
        None => root.key(&["GUID", "guid"])?,
    };
    Ok(Cart {
        guid,
        products: list_of(node, &["Products", "products"], cart_line)?,
    })
}

fn cart_line(line: &Obj<'_>) -> Result<CartLine> {
    Ok(CartLine {
        product_key: line.required_key(PRODUCT_KEY)?,
        price: required_price(line, &["price", "unit_price"])?,
        discount: line.read(&["discount"], Node::decimal)?,
        quantity: line.require(&["quantity"], Node::quantity)?,
        tags: line.tag_fields()?,
    })
}

/// Reads an identifier from the body object first, then from the top level of the request.
fn body_or_root(node: &Node<'_>, root: &Obj<'_>, keys: &[&str]) -> Result<Option<String>> {
    if let Json::Object(map) = node.value
        && let Some(text) = Obj::new(map, node.path_text()).key(keys)?
    {
        return Ok(Some(text));
    }
    root.key(keys)
}

fn purchase(node: &Node<'_>, root: &Obj<'_>) -> Result<Purchase> {
    let order_number = body_or_root(node, root, &["OrderNumber", "orderNumber"])?;
    let order_number = order_number.ok_or_else(|| match node.value {
        Json::Object(map) => Obj::new(map, node.path_text()).missing("OrderNumber"),
        _ => root.missing("OrderNumber"),
    })?;
    let products = list_of(node, &["Products", "products"], order_line)?;
    Ok(Purchase {
        order_number,
        guid: body_or_root(node, root, &["GUID", "guid"])?,
        tracked_order_id: body_or_root(node, root, &["TrackedOrderId", "trackedOrderId"])?,
        products: non_empty(node, products)?,
    })
}

fn order_line(line: &Obj<'_>) -> Result<OrderLine> {
    Ok(OrderLine {
        product_key: line.required_key(ORDER_PRODUCT_KEY)?,
        unit_price: required_price(line, &["unit_price", "price"])?,
        quantity: line.require(&["quantity"], Node::quantity)?,
        tags: line.tag_fields()?,
    })
}

fn impression(item: &Obj<'_>) -> Result<Impression> {
    Ok(Impression {
        product_key: item.required_key(ORDER_PRODUCT_KEY)?,
        container_type: item.required_key(&["container_type", "containerType"])?,
    })
}

fn category_key(node: &Node<'_>) -> Result<String> {
    let body = as_object(node)?;
    match body.get_any(&["Category", "category"]) {
        Some((key, value)) => {
            as_object(&Node::root(value, body.child_path(key)))?.required_key(&["categoryKey"])
        }
        None => body.required_key(&["categoryKey"]),
    }
}

/// The `CustomerData` fields that name the person: held as identifiers, so bounded as keys.
const IDENTIFYING: [&str; 4] = [
    "user_email",
    "user_phone",
    "user_name",
    "externalCustomerId",
];

/// A `CustomerData` body object, when one is sent, adds profile fields.
fn customer_fields(node: &Node<'_>, visitor: &mut Visitor) -> Result<()> {
    let body = as_object(node)?;
    for (key, value) in body.entries() {
        if key == "Tags" {
            continue;
        }
        let Some(text) = scalar_text(value) else {
            continue;
        };
        if IDENTIFYING.contains(&key) {
            let field = Node::root(value, body.child_path(key));
            field.check_length(Some(&text), MAX_KEY_BYTES)?;
        }
        match key {
            "user_email" => visitor.email = Some(text.into()),
            "user_phone" => visitor.phone = Some(text.into()),
            "user_name" => visitor.name = Some(text.into()),
            "externalCustomerId" => visitor.external_customer_id = Some(text.into()),
            _ => {
                visitor.extra.insert(key.to_string(), text);
            }
        }
    }
    Ok(())
}

fn search(node: &Node<'_>) -> Result<Search> {
    let body = as_object(node)?;
    Ok(Search {
        query: body.required_key(&["search", "query"])?,
        found: body.read(&["isFound", "is_found"], Node::flag)?,
    })
}

/// Product fields with a meaning of their own; any other is kept in `ProductUpdate::extra`.
const PRODUCT_UPDATE_FIELDS: [&str; 17] = [
    "product_id",
    "productKey",
    "name",
    "description",
    "brand",
    "url",
    "imgurl",
    "image_url",
    "unit_price",
    "price",
    "isInStock",
    "isinStock",
    "is_in_stock",
    "price_currency_code",
    "currency",
    "category",
    "category_id",
];

/// A product's page or image: an `http(s)://` address, or one without a scheme (a path,
/// `//host/...`). Pages and emails link to it, and the tracker is public: a
/// `javascript:` or `data:` address would run or show whatever its sender chose.
fn web_address(node: &Node<'_>) -> Result<Option<String>> {
    let Some(address) = node.text::<String>()? else {
        return Ok(None);
    };
    let scheme = address
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|scheme| !scheme.contains(['/', '?', '#']));
    match scheme {
        Some(scheme) if !["http", "https"].contains(&scheme.to_ascii_lowercase().as_str()) => {
            Err(node.invalid("an http:// or https:// address, or a path"))
        }
        _ => Ok(Some(address)),
    }
}

fn product_update(item: &Obj<'_>) -> Result<ProductUpdate> {
    let extra = item
        .entries()
        .filter(|(key, value)| {
            !PRODUCT_UPDATE_FIELDS.contains(key) && !key.starts_with("tag_") && !value.is_null()
        })
        .map(|(key, value)| (key.to_string(), value.to_value()))
        .collect();
    Ok(ProductUpdate {
        product_key: item.required_key(ORDER_PRODUCT_KEY)?,
        name: item.text(&["name"])?,
        description: item.text(&["description"])?,
        brand: item.text(&["brand"])?,
        url: item.read(&["url"], web_address)?,
        image_url: item.read(&["imgurl", "image_url"], web_address)?,
        price: price_with_currency(item, &["unit_price", "price"])?,
        in_stock: item.read(IN_STOCK, Node::flag)?,
        category: item.text(&["category"])?,
        category_ids: item.read(&["category_id"], |n| Ok(Some(n.string_list()?)))?,
        tags: item.tag_fields()?,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn event(value: Value) -> TrackerEvent {
        match parse_value(&value, NOW).unwrap() {
            Incoming::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn error(value: Value) -> String {
        parse_value(&value, NOW).unwrap_err().message()
    }

    fn info(name: &str) -> Value {
        json!({"eventName": name, "siteId": "S1", "datetime": NOW, "cookies": {"sc": "c1"}})
    }

    #[test]
    fn flat_cart_form_with_top_level_guid() {
        let e = event(json!({
            "GeneralInfo": info("StatusCart"),
            "StatusCart": [{"productKey": "1", "price": "10.50", "quantity": "2"}],
            "GUID": "g1"
        }));
        let EventBody::StatusCart { cart } = e.body else {
            panic!()
        };
        assert_eq!(cart.guid.as_deref(), Some("g1"));
        assert_eq!(cart.products[0].quantity, 2);
        assert_eq!(cart.products[0].price.amount.to_string(), "10.5");
    }

    #[test]
    fn flat_product_page_without_product_wrapper() {
        let e = event(json!({
            "GeneralInfo": info("ProductPage"),
            "ProductPage": {"productKey": 72354, "price": 754, "isInStock": true}
        }));
        let EventBody::ProductPage { product } = e.body else {
            panic!()
        };
        assert_eq!(product.product_key, "72354");
        assert_eq!(product.in_stock, Some(true));
    }

    #[test]
    fn general_info_as_a_json_string_and_cookie_header() {
        let mut gi = info("CategoryPage");
        gi["cookies"] = json!("_ga=GA1.2; sc=ABC-1; other=x");
        let e = event(json!({
            "GeneralInfo": gi.to_string(),
            "CategoryPage": {"Category": {"categoryKey": "Babies"}}
        }));
        assert_eq!(e.visitor.sc.as_deref(), Some("ABC-1"));
        assert_eq!(
            e.body,
            EventBody::CategoryPage {
                category_key: "Babies".into()
            }
        );
    }

    #[test]
    fn null_cookie_is_fine_when_an_email_identifies_the_visitor() {
        let e = event(json!({
            "GeneralInfo": {"eventName": "CustomerData", "siteId": "S1",
                            "cookies": {"sc": null}, "user_email": "a@b.c",
                            "externalCustomerId": 17, "user_city": "Kyiv"}
        }));
        assert_eq!(e.visitor.sc, None);
        assert_eq!(e.visitor.external_customer_id.as_deref(), Some("17"));
        assert_eq!(e.visitor.extra["user_city"], "Kyiv");
        let err = error(json!({"GeneralInfo": {"eventName": "CustomerData", "siteId": "S1"}}));
        assert!(err.starts_with("GeneralInfo.cookies.sc: "), "{err}");
    }

    #[test]
    fn purchase_with_product_key_price_and_top_level_tracked_order() {
        let e = event(json!({
            "GeneralInfo": info("PurchasedItems"),
            "PurchasedItems": {"Products": [{"productKey": "9", "price": "5 UAH", "quantity": 1}],
                               "OrderNumber": 42, "GUID": "g"},
            "TrackedOrderId": "T-1"
        }));
        let EventBody::PurchasedItems { purchase } = e.body else {
            panic!()
        };
        assert_eq!(purchase.order_number, "42");
        assert_eq!(purchase.tracked_order_id.as_deref(), Some("T-1"));
        assert_eq!(
            purchase.products[0].unit_price.currency.as_deref(),
            Some("UAH")
        );
    }

    #[test]
    fn errors_name_the_field_path() {
        let cases = [
            (
                json!({"GeneralInfo": info("StatusCart"), "StatusCart": {"GUID": "g", "Products": [
                    {"productKey": "1", "price": 1, "quantity": 1},
                    {"productKey": "2", "price": 1, "quantity": "two"}]}}),
                "StatusCart.Products[1].quantity: expected an integer, got \"two\"",
            ),
            (
                json!({"GeneralInfo": info("ProductPage")}),
                "ProductPage: the event body is missing: expected a \"ProductPage\" object",
            ),
            (
                json!({"GeneralInfo": info("ProductPage"), "ProductPage": {"Product": {"price": 1}}}),
                "ProductPage.Product.productKey: required field is missing",
            ),
            (
                json!({"GeneralInfo": {"siteId": "S"}}),
                "GeneralInfo.eventName: required field is missing",
            ),
            (json!([1]), "expected a JSON object, got an array"),
        ];
        for (input, want) in cases {
            assert_eq!(error(input), want);
        }
    }

    #[test]
    fn identifiers_and_texts_have_a_length_bound_named_at_their_path() {
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let mut cookie = info("CustomerData");
        cookie["cookies"] = json!({"sc": long});
        let mut header = info("CustomerData");
        header["cookies"] = json!(format!("_ga=1; sc={long}"));
        let mut customer = info("CustomerData");
        customer["user_email"] = json!(long);
        let cases = [
            (json!({"GeneralInfo": cookie}), "GeneralInfo.cookies.sc"),
            (json!({"GeneralInfo": header}), "GeneralInfo.cookies"),
            (json!({"GeneralInfo": customer}), "GeneralInfo.user_email"),
            (
                json!({"GeneralInfo": info("CustomerData"), "CustomerData": {"user_phone": long}}),
                "CustomerData.user_phone",
            ),
            (
                json!({"GeneralInfo": info("ProductPage"),
                       "ProductPage": {"Product": {"productKey": long, "price": 1}}}),
                "ProductPage.Product.productKey",
            ),
            (
                json!({"GeneralInfo": info("SearchRequest"), "SearchRequest": {"search": long}}),
                "SearchRequest.search",
            ),
            (
                json!({"GeneralInfo": info("PurchasedItems"), "PurchasedItems": {"OrderNumber": long,
                       "Products": [{"product_id": "1", "unit_price": 1, "quantity": 1}]}}),
                "PurchasedItems.OrderNumber",
            ),
        ];
        for (input, path) in cases {
            let message = error(input);
            assert_eq!(
                message,
                format!("{path}: expected a text of at most {MAX_KEY_BYTES} bytes, got 513 bytes")
            );
        }
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,x",
        ] {
            let update = json!({"GeneralInfo": info("ProductUpdate"),
                "ProductUpdate": [{"product_id": "1", "url": bad}]});
            assert!(
                error(update)
                    .starts_with("ProductUpdate[0].url: expected an http:// or https:// address"),
                "{bad}"
            );
        }
        for good in [
            "https://shop.example/p/1",
            "HTTP://shop.example/p",
            "/p/1",
            "//cdn.example/1.jpg",
            "p/1?a=b:c",
        ] {
            let update = json!({"GeneralInfo": info("ProductUpdate"),
                "ProductUpdate": [{"product_id": "1", "imgurl": good}]});
            assert!(parse_value(&update, NOW).is_ok(), "{good}");
        }
        // A product's description may be long, up to the general bound.
        let description = "d".repeat(MAX_TEXT_BYTES);
        let update = json!({"GeneralInfo": info("ProductUpdate"),
            "ProductUpdate": [{"product_id": "1", "description": description}]});
        assert!(parse_value(&update, NOW).is_ok());
        let too_long = json!({"GeneralInfo": info("ProductUpdate"),
            "ProductUpdate": [{"product_id": "1", "description": format!("{description}d")}]});
        assert!(
            error(too_long).starts_with("ProductUpdate[0].description: expected a text of at most")
        );
    }

    #[test]
    fn unknown_event_lists_the_known_ones() {
        let err = error(json!({"GeneralInfo": info("PageViewed")}));
        assert!(err.contains("unknown event \"PageViewed\""), "{err}");
        assert!(
            err.contains("ProductUpdate") && err.contains("PageView"),
            "{err}"
        );
    }

    #[test]
    fn a_currency_is_a_code_not_a_text() {
        let event = |currency: &str| {
            json!({"GeneralInfo": info("ProductPage"),
                   "ProductPage": {"productKey": "k", "price": "10", "price_currency_code": currency}})
        };
        assert!(parse_value(&event("грн"), NOW).is_ok());
        let err = error(event("<b>Everything must go</b>"));
        assert_eq!(
            err,
            "ProductPage.price_currency_code: expected a currency code of at most 8 characters, \
             got \"<b>Everything must go</b>\""
        );
    }

    #[test]
    fn a_blocks_location_may_come_in_general_info() {
        let mut gi = info("ProductPage");
        gi["s_location"] = json!("home_a");
        let event = json!({"GeneralInfo": gi, "ProductPage": {"productKey": "k", "price": 1}});
        let Ok(Incoming::Event(parsed)) = parse_value(&event, NOW) else {
            panic!("refused")
        };
        let EventBody::ProductPage { product } = &parsed.body else {
            panic!("{parsed:?}")
        };
        assert_eq!(product.location.as_deref(), Some("home_a"));
        assert!(parsed.visitor.extra.is_empty(), "not a profile field");
    }

    #[test]
    fn page_events_are_taken_with_or_without_their_object() {
        for (name, body) in [
            ("MainPage", None),
            ("NotFound", None),
            ("StatusCartPage", Some(json!({}))),
            ("PageView", Some(json!({"Tags": {"section": ["sale"]}}))),
        ] {
            let mut event = json!({"GeneralInfo": info(name)});
            if let Some(body) = body {
                event[name] = body;
            }
            let Ok(Incoming::Event(parsed)) = parse_value(&event, NOW) else {
                panic!("{name} refused: {event}");
            };
            assert_eq!(parsed.kind().as_str(), name);
            let stored = serde_json::to_value(&parsed).unwrap();
            let read: TrackerEvent = serde_json::from_value(stored).unwrap();
            assert_eq!(read, parsed, "{name} reads back as stored");
        }
        let tagged = json!({"GeneralInfo": info("PageView"),
                            "PageView": {"Tags": {"section": ["sale"]}}});
        let Ok(Incoming::Event(parsed)) = parse_value(&tagged, NOW) else {
            panic!("refused")
        };
        assert_eq!(parsed.tags.len(), 1, "{:?}", parsed.tags);
    }

    #[test]
    fn implausible_times_are_refused() {
        let mut gi = info("CustomerData");
        gi["datetime"] = json!(NOW / 1000);
        assert!(error(json!({"GeneralInfo": gi})).contains("looks like seconds"));
        let mut gi = info("CustomerData");
        gi["datetime"] = json!(NOW + 3 * 365 * 24 * 3_600_000);
        assert!(error(json!({"GeneralInfo": gi})).contains("future"));
    }

    #[test]
    fn plugin_bodies_without_general_info() {
        let link = parse_value(
            &json!({"externalCustomerId": null, "webId": "sc-1", "orgId": "7", "email": "a@b.c"}),
            NOW,
        )
        .unwrap();
        assert!(matches!(
            link,
            Incoming::ContactLink(ContactLink {
                web_id: Some(_),
                ..
            })
        ));
        let log = parse_value(
            &json!({"orgId": 123, "typeCMS": "Shopify", "errorMessage": "x", "log_level": "INFO"}),
            NOW,
        )
        .unwrap();
        assert!(matches!(log, Incoming::PluginLog(_)));
    }

    #[test]
    fn normalised_form_round_trips_through_serde() {
        let e = event(json!({
            "GeneralInfo": info("ProductUpdate"),
            "ProductUpdate": [{"product_id": 1, "unit_price": "2", "category_id": "3",
                               "tag_x": ["a"], "weight": 1.5}]
        }));
        let text = serde_json::to_string(&e).unwrap();
        let back: TrackerEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }
}
