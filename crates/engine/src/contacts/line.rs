//! A cart or order line as the state keeps it.
//!
//! A shop's contacts hold millions of lines, nearly all of them a product, a quantity, a
//! price of a few digits and a short currency code. Such a line is held in 32 bytes with
//! no allocation of its own: the product by its number in the site's product dictionary
//! ([`crate::items::Items`]), the price as an integer and a decimal scale, the currency
//! inline. What few lines have (a discount, tags, a price of more than 18 digits, a
//! currency of more than six bytes) is kept in a box beside it. Snapshots and the API show
//! a line whole: product, quantity, price as a decimal, and currency, discount and tags
//! when present.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spoor_protocol::{CartLine, OrderLine, Price, TagMap, Text};

use crate::items::ItemId;
use crate::limits;

/// Currency codes up to this many bytes are held in the line itself (`EUR`, `грн`, `$`).
const INLINE_CURRENCY: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The unit price is `units × 10^-scale` (when `rare` holds no price).
    units: i64,
    rare: Option<Box<RareParts>>,
    pub item: ItemId,
    pub quantity: u32,
    scale: u8,
    currency_len: u8,
    currency: [u8; INLINE_CURRENCY],
}

const _: () = assert!(std::mem::size_of::<Line>() == 32);

/// The parts of a line that few lines have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RareParts {
    /// A price whose digits do not fit in `units` (or a negative zero).
    price: Option<Decimal>,
    /// A currency longer than the inline room.
    currency: Option<Box<str>>,
    discount: Option<Decimal>,
    tags: Option<TagMap>,
}

impl RareParts {
    fn is_empty(&self) -> bool {
        *self == RareParts::default()
    }
}

impl Line {
    pub fn new(
        item: ItemId,
        quantity: u32,
        price: Decimal,
        currency: Option<&str>,
        discount: Option<Decimal>,
        tags: &TagMap,
    ) -> Line {
        let mut rare = RareParts {
            discount,
            tags: (!tags.is_empty()).then(|| {
                let mut kept = TagMap::new();
                limits::put_tags(&mut kept, tags);
                kept
            }),
            ..RareParts::default()
        };
        let (units, scale) = match i64::try_from(price.mantissa()) {
            Ok(units) if !(units == 0 && price.is_sign_negative()) => (units, price.scale() as u8),
            _ => {
                rare.price = Some(price);
                (0, 0)
            }
        };
        let mut inline = [0; INLINE_CURRENCY];
        let currency_len = match currency {
            Some(code) if code.len() <= INLINE_CURRENCY => {
                inline[..code.len()].copy_from_slice(code.as_bytes());
                code.len() as u8
            }
            Some(code) => {
                rare.currency = Some(code.into());
                0
            }
            None => 0,
        };
        Line {
            units,
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
            item,
            quantity,
            scale,
            currency_len,
            currency: inline,
        }
    }

    pub fn of_cart(line: &CartLine, item: ItemId) -> Line {
        Line::priced(item, line.quantity, &line.price, line.discount, &line.tags)
    }

    pub fn of_order(line: &OrderLine, item: ItemId) -> Line {
        Line::priced(item, line.quantity, &line.unit_price, None, &line.tags)
    }

    fn priced(
        item: ItemId,
        quantity: u32,
        price: &Price,
        discount: Option<Decimal>,
        tags: &TagMap,
    ) -> Line {
        let currency = price.currency.as_deref();
        Line::new(item, quantity, price.amount, currency, discount, tags)
    }

    /// The unit price.
    pub fn price(&self) -> Decimal {
        match self.rare.as_ref().and_then(|r| r.price) {
            Some(price) => price,
            None => Decimal::new(self.units, u32::from(self.scale)),
        }
    }

    pub fn currency(&self) -> Option<&str> {
        if self.currency_len > 0 {
            let code = &self.currency[..usize::from(self.currency_len)];
            // Only whole UTF-8 strings are put inline.
            return std::str::from_utf8(code).ok();
        }
        self.rare.as_ref().and_then(|r| r.currency.as_deref())
    }

    /// A cart line's discount.
    pub fn discount(&self) -> Option<Decimal> {
        self.rare.as_ref().and_then(|r| r.discount)
    }

    pub fn tags(&self) -> Option<&TagMap> {
        self.rare.as_ref().and_then(|r| r.tags.as_ref())
    }

    fn full_price(&self) -> Price {
        Price {
            amount: self.price(),
            currency: self.currency().map(Text::from),
        }
    }

    /// The line as the tracker API received it.
    pub fn to_cart_line(&self, product_key: &str) -> CartLine {
        CartLine {
            product_key: product_key.into(),
            price: self.full_price(),
            discount: self.discount(),
            quantity: self.quantity,
            tags: self.tags().cloned().unwrap_or_default(),
        }
    }

    /// The line as the tracker API received it.
    pub fn to_order_line(&self, product_key: &str) -> OrderLine {
        OrderLine {
            product_key: product_key.into(),
            unit_price: self.full_price(),
            quantity: self.quantity,
            tags: self.tags().cloned().unwrap_or_default(),
        }
    }
}

/// A line as snapshots and the API show it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shown<Text, Tags> {
    item: ItemId,
    quantity: u32,
    price: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    discount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
}

impl Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Shown {
            item: self.item,
            quantity: self.quantity,
            price: self.price(),
            currency: self.currency(),
            discount: self.discount(),
            tags: self.tags(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let held = Shown::<String, TagMap>::deserialize(deserializer)?;
        let tags = held.tags.unwrap_or_default();
        let currency = held.currency.as_deref();
        Ok(Line::new(
            held.item,
            held.quantity,
            held.price,
            currency,
            held.discount,
            &tags,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn tags() -> TagMap {
        TagMap::from([("colour".into(), vec!["red".into()])])
    }

    #[test]
    fn a_line_gives_back_every_part_it_was_made_of() {
        let cases = [
            ("754", Some("USD"), None, TagMap::new()),
            ("0.99", Some("€"), Some("0.10"), TagMap::new()),
            ("12.500", Some("грн"), None, tags()),
            ("3", None, None, TagMap::new()),
            ("-0.00", Some("EUR"), None, TagMap::new()),
            (
                "79228162514264337593543950335",
                Some("руб."),
                None,
                TagMap::new(),
            ),
            (
                "0.0000000000000000000000000001",
                Some("a long currency"),
                None,
                tags(),
            ),
        ];
        for (price, currency, discount, tags) in cases {
            let discount = discount.map(decimal);
            let line = Line::new(7, 2, decimal(price), currency, discount, &tags);
            assert_eq!(line.price().to_string(), decimal(price).to_string());
            assert_eq!(line.price().scale(), decimal(price).scale());
            assert_eq!(
                line.price().is_sign_negative(),
                decimal(price).is_sign_negative()
            );
            assert_eq!(line.currency(), currency, "{price}");
            assert_eq!(line.discount(), discount);
            assert_eq!(line.tags(), (!tags.is_empty()).then_some(&tags));
            assert_eq!((line.item, line.quantity), (7, 2));
            let json = serde_json::to_string(&line).unwrap();
            assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line, "{json}");
        }
    }

    #[test]
    fn a_usual_line_has_no_allocation_of_its_own() {
        let line = Line::new(1, 1, decimal("19.99"), Some("EUR"), None, &TagMap::new());
        assert!(line.rare.is_none());
        let long = Line::new(
            1,
            1,
            decimal("19.99"),
            Some("EURO!!!"),
            None,
            &TagMap::new(),
        );
        assert!(long.rare.is_some());
    }

    #[test]
    fn a_line_is_shown_as_snapshots_held_it() {
        let held = r#"{"item":3,"quantity":2,"price":"1.50","currency":"EUR","discount":"0.5","tags":{"size":["M"]}}"#;
        let line: Line = serde_json::from_str(held).unwrap();
        assert_eq!(serde_json::to_string(&line).unwrap(), held);
        let bare = r#"{"item":0,"quantity":1,"price":"3"}"#;
        let line: Line = serde_json::from_str(bare).unwrap();
        assert_eq!(serde_json::to_string(&line).unwrap(), bare);
    }
}
