//! Product feeds: Google Merchant RSS 2.0 (`<item>` elements with `g:` fields), and the
//! Atom form (`<entry>`). Each item becomes a [`ProductUpdate`]; an item that cannot be
//! read is reported with its number, id and reason, and the others are kept.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ErrorCode, ProtocolError};
use crate::event::{Price, ProductUpdate, TagMap, Text};
use crate::reader::Node;
use crate::tree::Json;

/// An item of the feed that was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedItemError {
    /// 1 for the feed's first item.
    pub item: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Feed {
    pub items: Vec<ProductUpdate>,
    pub errors: Vec<FeedItemError>,
}

/// Fields kept as they are, under `extra`.
const EXTRA_FIELDS: [&str; 4] = [
    "google_product_category",
    "item_group_id",
    "gtin",
    // `false` keeps the product out of recommendations (postage, fees, samples).
    "recommendable",
];

/// Parses a whole feed. Only XML that cannot be read at all is an error.
pub fn parse_feed(xml: &[u8]) -> Result<Feed, ProtocolError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut feed = Feed::default();
    let mut buf = Vec::new();
    // Inside an item: the child elements open, and the text of each first-level field.
    let mut item: Option<(Vec<String>, BTreeMap<String, String>)> = None;
    let mut count = 0;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidValue,
                "",
                format!(
                    "the feed is not readable XML at byte {}: {e}",
                    reader.error_position()
                ),
            )
        })?;
        match event {
            Event::Start(start) => {
                let name = local_name(start.name().as_ref());
                match &mut item {
                    Some((open, _)) => open.push(name),
                    None if name == "item" || name == "entry" => {
                        item = Some((Vec::new(), BTreeMap::new()));
                    }
                    None => {}
                }
            }
            Event::End(_) => match &mut item {
                Some((open, _)) if !open.is_empty() => {
                    open.pop();
                }
                Some(_) => {
                    let (_, fields) = item.take().expect("inside an item");
                    count += 1;
                    match product(&fields) {
                        Ok(update) => feed.items.push(update),
                        Err(reason) => feed.errors.push(FeedItemError {
                            item: count,
                            id: fields.get("id").cloned(),
                            reason,
                        }),
                    }
                }
                None => {}
            },
            Event::Text(text) => {
                if let Some((open, fields)) = &mut item
                    && open.len() == 1
                {
                    let text = text.unescape().map(|t| t.into_owned()).unwrap_or_default();
                    fields.entry(open[0].clone()).or_default().push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some((open, fields)) = &mut item
                    && open.len() == 1
                {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    fields.entry(open[0].clone()).or_default().push_str(&text);
                }
            }
            Event::Empty(empty) => {
                // `<link href="..."/>` in Atom feeds.
                if let Some((open, fields)) = &mut item
                    && open.is_empty()
                    && local_name(empty.name().as_ref()) == "link"
                    && let Some(Ok(href)) = empty
                        .try_get_attribute("href")
                        .ok()
                        .flatten()
                        .map(|a| a.unescape_value())
                {
                    fields.insert("link".into(), href.into_owned());
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(feed)
}

/// `g:price` and `price` alike.
fn local_name(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.split_once(':') {
        Some((_, local)) => local.to_string(),
        None => name.into_owned(),
    }
}

fn price_of(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<Price>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(text) => {
            let value = Json::String(text.as_str().into());
            Node::root(&value, format!("g:{name}"))
                .price()
                .map_err(|e| e.message())
        }
    }
}

fn product(fields: &BTreeMap<String, String>) -> Result<ProductUpdate, String> {
    let text = |name: &str| {
        fields
            .get(name)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let product_key = text("id").ok_or("g:id is missing")?.into();
    let regular = price_of(fields, "price")?;
    let sale = price_of(fields, "sale_price")?;
    let mut tags = TagMap::new();
    if let (Some(regular), Some(_)) = (&regular, &sale) {
        tags.insert(
            Text::from("tag_oldprice"),
            vec![compact_str::format_compact!("{}", regular.amount)],
        );
    }
    let in_stock = match text("availability").map(|a| a.to_lowercase().replace('_', " ")) {
        None => None,
        Some(a) if a == "in stock" => Some(true),
        Some(a) if ["out of stock", "preorder", "backorder"].contains(&a.as_str()) => Some(false),
        Some(other) => {
            return Err(format!(
                "g:availability: expected in stock, out of stock, preorder or backorder, got {other:?}"
            ));
        }
    };
    let extra = EXTRA_FIELDS
        .iter()
        .filter_map(|name| text(name).map(|v| (name.to_string(), Value::String(v))))
        .collect();
    Ok(ProductUpdate {
        product_key,
        name: text("title"),
        description: text("description"),
        brand: text("brand"),
        url: text("link"),
        image_url: text("image_link"),
        price: sale.or(regular),
        in_stock,
        category: text("product_type"),
        category_ids: None,
        tags,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"<?xml version="1.0"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
 <channel>
  <title>Shop</title>
  <item>
   <g:id>A1</g:id>
   <g:title>Mug &amp; spoon</g:title>
   <g:description><![CDATA[A <b>big</b> mug]]></g:description>
   <g:link>https://shop.example/a1</g:link>
   <g:image_link>https://shop.example/a1.jpg</g:image_link>
   <g:price>12.00 USD</g:price>
   <g:sale_price>9.50 USD</g:sale_price>
   <g:availability>in stock</g:availability>
   <g:brand>Acme</g:brand>
   <g:google_product_category>Home &gt; Kitchen</g:google_product_category>
   <g:product_type>Home &gt; Kitchen &gt; Mugs</g:product_type>
   <g:item_group_id>G1</g:item_group_id>
   <g:shipping><g:country>US</g:country><g:price>4 USD</g:price></g:shipping>
  </item>
  <item><g:title>No id</g:title></item>
  <item><g:id>A3</g:id><g:price>cheap</g:price></item>
  <item><g:id>A4</g:id><g:availability>soon</g:availability></item>
  <item><g:id>A5</g:id><g:availability>out_of_stock</g:availability><title>Plain title</title><g:recommendable>false</g:recommendable></item>
 </channel>
</rss>"#;

    #[test]
    fn items_become_product_updates_and_bad_items_are_reported() {
        let feed = parse_feed(FEED.as_bytes()).unwrap();
        assert_eq!(feed.items.len(), 2);
        let mug = &feed.items[0];
        assert_eq!(mug.product_key, "A1");
        assert_eq!(mug.name.as_deref(), Some("Mug & spoon"));
        assert_eq!(mug.description.as_deref(), Some("A <b>big</b> mug"));
        let price = mug.price.as_ref().unwrap();
        assert_eq!(
            (price.amount.to_string(), price.currency.as_deref()),
            ("9.5".into(), Some("USD"))
        );
        assert_eq!(mug.tags["tag_oldprice"], ["12"]);
        assert_eq!(mug.in_stock, Some(true));
        assert_eq!(mug.category.as_deref(), Some("Home > Kitchen > Mugs"));
        assert_eq!(mug.extra["item_group_id"], "G1");
        assert_eq!(feed.items[1].in_stock, Some(false));
        assert_eq!(feed.items[1].name.as_deref(), Some("Plain title"));
        assert_eq!(feed.items[1].extra["recommendable"], "false");

        let reasons: Vec<(usize, Option<&str>, &str)> = feed
            .errors
            .iter()
            .map(|e| (e.item, e.id.as_deref(), e.reason.as_str()))
            .collect();
        assert_eq!(reasons[0], (2, None, "g:id is missing"));
        assert_eq!(reasons[1].0, 3);
        assert!(
            reasons[1].2.starts_with("g:price: expected a price"),
            "{}",
            reasons[1].2
        );
        assert!(
            reasons[2].2.starts_with("g:availability"),
            "{}",
            reasons[2].2
        );
    }

    #[test]
    fn unreadable_xml_is_one_error() {
        let err = parse_feed(b"<rss><channel><item><g:id>1</g:id></channel>").unwrap_err();
        assert!(
            err.message().contains("not readable XML"),
            "{}",
            err.message()
        );
    }
}
