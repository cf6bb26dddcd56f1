//! A JSON value together with the path it was reached by, and the lenient coercions real
//! clients need (numbers as strings, strings as numbers, `"1"`/`1`/`true` flags, empty
//! string meaning absent). Every failure names the path and what was expected.

use std::borrow::Cow;

use crate::tree::{Json, Object};
use rust_decimal::Decimal;

use crate::error::{ErrorCode, ProtocolError};
use crate::event::{Price, TagMap, Text};

/// Longest excerpt of a bad value quoted back in an error message.
const QUOTE_LIMIT: usize = 40;
/// Quantities beyond this are a client bug, not an order.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Prices at or beyond this are a client bug (a timestamp or an id in the price field).
const MAX_PRICE: i64 = 1_000_000_000_000;
/// Longest text accepted in an event's own fields (a product's description, which may be
/// HTML, say).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest identifier or key: a cookie, an email, a name, a product key, an order number,
/// a cart id, a category key, a search. The state holds each for as long as what it
/// names, so the public tracker must not let them be large.
pub const MAX_KEY_BYTES: usize = 512;

pub type Result<T> = std::result::Result<T, ProtocolError>;

pub struct Node<'a> {
    pub value: &'a Json<'a>,
    /// Read only when something is wrong, and most requests have nothing wrong: held in
    /// place (an event's paths are short), so that a request's many readers allocate none.
    path: Text,
}

/// Field lookups on a JSON object, each child carrying its own path.
pub struct Obj<'a> {
    map: &'a Object<'a>,
    path: Text,
}

impl<'a> Node<'a> {
    pub fn root(value: &'a Json<'a>, path: impl Into<Text>) -> Self {
        Node {
            value,
            path: path.into(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path, to hand to a child reader.
    pub fn path_text(&self) -> Text {
        self.path.clone()
    }

    pub fn invalid(&self, expected: &str) -> ProtocolError {
        ProtocolError::new(
            ErrorCode::InvalidValue,
            &*self.path,
            format!("expected {expected}, got {}", describe(self.value)),
        )
    }

    pub fn out_of_range(&self, why: &str) -> ProtocolError {
        ProtocolError::new(
            ErrorCode::InvalidValue,
            &*self.path,
            format!("{why}, got {}", describe(self.value)),
        )
    }

    /// Text: strings are trimmed, numbers written out; empty means absent. As a `String`
    /// or, for short values, a [`Text`].
    pub fn text<T: From<Cow<'a, str>>>(&self) -> Result<Option<T>> {
        Ok(self.text_in_place()?.map(T::from))
    }

    /// [`Node::text`] without a copy of a string sent as one.
    pub fn text_in_place(&self) -> Result<Option<Cow<'a, str>>> {
        self.text_of_at_most(MAX_TEXT_BYTES)
    }

    /// An identifier or key: a text of at most [`MAX_KEY_BYTES`].
    pub fn key<T: From<Cow<'a, str>>>(&self) -> Result<Option<T>> {
        Ok(self.text_of_at_most(MAX_KEY_BYTES)?.map(T::from))
    }

    fn text_of_at_most(&self, max: usize) -> Result<Option<Cow<'a, str>>> {
        let text = match self.value {
            Json::Null => None,
            Json::String(s) => Some(s.trim()).filter(|t| !t.is_empty()).map(Cow::Borrowed),
            Json::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => return Err(self.invalid("a string")),
        };
        self.check_length(text, max)
    }

    /// `text` (read from this node) if it is at most `max` bytes long.
    pub fn check_length<T: AsRef<str>>(&self, text: Option<T>, max: usize) -> Result<Option<T>> {
        match text {
            Some(text) if text.as_ref().len() > max => Err(self.too_long(text.as_ref().len(), max)),
            text => Ok(text),
        }
    }

    /// The error for a text of `len` bytes where at most `max` are accepted.
    fn too_long(&self, len: usize, max: usize) -> ProtocolError {
        ProtocolError::new(
            ErrorCode::InvalidValue,
            &*self.path,
            format!("expected a text of at most {max} bytes, got {len} bytes"),
        )
    }

    /// A whole number, sent as a JSON number or as a numeric string.
    pub fn integer(&self) -> Result<Option<i64>> {
        match self.value {
            Json::Null => Ok(None),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return Ok(Some(i));
                }
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(self.invalid("an integer")),
                }
            }
            Json::String(s) if s.trim().is_empty() => Ok(None),
            Json::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.invalid("an integer")),
            _ => Err(self.invalid("an integer")),
        }
    }

    /// A count of items: a whole number from 0 to [`MAX_QUANTITY`].
    pub fn quantity(&self) -> Result<Option<u32>> {
        match self.integer()? {
            None => Ok(None),
            Some(q) if q < 0 => Err(self.out_of_range("expected a quantity of 0 or more")),
            Some(q) if q > MAX_QUANTITY => {
                Err(self.out_of_range(&format!("expected a quantity of at most {MAX_QUANTITY}")))
            }
            Some(q) => Ok(Some(q as u32)),
        }
    }

    /// A yes/no flag as clients send it: `1`/`0`, `"1"`/`"0"`, `true`/`false`.
    pub fn flag(&self) -> Result<Option<bool>> {
        let expected = "0 or 1 (or true/false)";
        match self.value {
            Json::Null => Ok(None),
            Json::Bool(b) => Ok(Some(*b)),
            Json::Number(n) => match n.as_f64() {
                Some(0.0) => Ok(Some(false)),
                Some(1.0) => Ok(Some(true)),
                _ => Err(self.invalid(expected)),
            },
            Json::String(s) => {
                let s = s.trim();
                let is = |word: &str| s.eq_ignore_ascii_case(word);
                match s {
                    "" => Ok(None),
                    _ if s == "1" || is("true") => Ok(Some(true)),
                    _ if s == "0" || is("false") => Ok(Some(false)),
                    _ => Err(self.invalid(expected)),
                }
            }
            _ => Err(self.invalid(expected)),
        }
    }

    /// A non-negative decimal, sent as a number or a numeric string.
    pub fn decimal(&self) -> Result<Option<Decimal>> {
        let amount = match self.value {
            Json::Null => return Ok(None),
            Json::Number(n) => parse_decimal(&n.to_string()),
            Json::String(s) if s.trim().is_empty() => return Ok(None),
            Json::String(s) => parse_decimal(s.trim()),
            _ => None,
        };
        let amount = amount.ok_or_else(|| self.invalid("a number"))?;
        self.check_amount(amount).map(Some)
    }

    /// A price: `201.95`, `"201.95"`, `"754 USD"`, `"USD 754"`, `"1,234.50 €"`.
    pub fn price(&self) -> Result<Option<Price>> {
        let price = match self.value {
            Json::Null => return Ok(None),
            Json::Number(n) => parse_decimal(&n.to_string()).map(|amount| Price {
                amount,
                currency: None,
            }),
            Json::String(s) if s.trim().is_empty() => return Ok(None),
            Json::String(s) => parse_price_text(s.trim()),
            _ => None,
        };
        let mut price = price.ok_or_else(|| {
            self.invalid("a price (a number, optionally with a currency code: \"754 USD\")")
        })?;
        price.amount = self.check_amount(price.amount)?;
        Ok(Some(price))
    }

    fn check_amount(&self, amount: Decimal) -> Result<Decimal> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(self.out_of_range("expected an amount of 0 or more"));
        }
        if amount >= Decimal::from(MAX_PRICE) {
            return Err(self.out_of_range(&format!("expected an amount below {MAX_PRICE}")));
        }
        Ok(amount.normalize())
    }

    /// An array of strings (`tag_*` values). A lone string or number counts as one element.
    pub fn string_list(&self) -> Result<Vec<Text>> {
        let expected = "an array of strings";
        match self.value {
            Json::Null => Ok(Vec::new()),
            Json::String(_) | Json::Number(_) => Ok(self.text()?.into_iter().collect()),
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Json::String(s) => out.push(Text::from(&**s)),
                        Json::Number(n) => out.push(compact_str::format_compact!("{n}")),
                        Json::Bool(b) => out.push(Text::from(if *b { "true" } else { "false" })),
                        _ => {
                            let path = format!("{}[{i}]", self.path);
                            return Err(Node::root(item, path).invalid("a string"));
                        }
                    }
                }
                Ok(out)
            }
            _ => Err(self.invalid(expected)),
        }
    }
}

impl<'a> Obj<'a> {
    pub fn new(map: &'a Object<'a>, path: impl Into<Text>) -> Self {
        Obj {
            map,
            path: path.into(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn child_path(&self, key: &str) -> Text {
        if self.path.is_empty() {
            Text::from(key)
        } else {
            compact_str::format_compact!("{}.{key}", self.path)
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Json<'a>)> {
        self.map.iter()
    }

    /// The value under the first of `keys` present and not null.
    pub fn get_any(&self, keys: &[&str]) -> Option<(&'a str, &'a Json<'a>)> {
        keys.iter()
            .find_map(|k| self.map.get_key_value(k).filter(|(_, v)| !v.is_null()))
    }

    /// Applies `read` to the first of `keys` present; `None` when none is.
    pub fn read<T>(
        &self,
        keys: &[&str],
        read: impl FnOnce(&Node<'a>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        match self.get_any(keys) {
            None => Ok(None),
            Some((key, value)) => {
                read(&Node::root(value, String::new())).map_err(|e| e.within(&self.child_path(key)))
            }
        }
    }

    /// Like [`Obj::read`], but absence is an error naming the first key.
    pub fn require<T>(
        &self,
        keys: &[&str],
        read: impl FnOnce(&Node<'a>) -> Result<Option<T>>,
    ) -> Result<T> {
        self.read(keys, read)?.ok_or_else(|| self.missing(keys[0]))
    }

    pub fn missing(&self, key: &str) -> ProtocolError {
        ProtocolError::new(
            ErrorCode::MissingField,
            self.child_path(key),
            "required field is missing",
        )
    }

    pub fn text<T: From<Cow<'a, str>>>(&self, keys: &[&str]) -> Result<Option<T>> {
        self.read(keys, Node::text)
    }

    pub fn required_text<T: From<Cow<'a, str>>>(&self, keys: &[&str]) -> Result<T> {
        self.require(keys, Node::text)
    }

    /// An identifier or key (see [`Node::key`]).
    pub fn key<T: From<Cow<'a, str>>>(&self, keys: &[&str]) -> Result<Option<T>> {
        self.read(keys, Node::key)
    }

    pub fn required_key<T: From<Cow<'a, str>>>(&self, keys: &[&str]) -> Result<T> {
        self.require(keys, Node::key)
    }

    /// The `tag_*` fields of a product, each an array of strings.
    pub fn tag_fields(&self) -> Result<TagMap> {
        let mut tags = TagMap::new();
        for (key, value) in self.map.iter() {
            if key.starts_with("tag_") {
                let list = Node::root(value, String::new()).string_list();
                tags.insert(
                    Text::from(key),
                    list.map_err(|e| e.within(&self.child_path(key)))?,
                );
            }
        }
        Ok(tags)
    }

    /// The event-level `Tags` object: named arrays of strings.
    pub fn tags_object(&self) -> Result<TagMap> {
        let Some((key, value)) = self.get_any(&["Tags", "tags"]) else {
            return Ok(TagMap::new());
        };
        let path = self.child_path(key);
        let Json::Object(map) = value else {
            return Err(Node::root(value, path).invalid("an object of string arrays"));
        };
        let tags = Obj::new(map, path);
        let mut out = TagMap::new();
        for (name, list) in map.iter() {
            let list = Node::root(list, String::new()).string_list();
            out.insert(
                Text::from(name),
                list.map_err(|e| e.within(&tags.child_path(name)))?,
            );
        }
        Ok(out)
    }
}

/// How a bad value is quoted back: short, and never a whole object.
pub fn describe(value: &Json<'_>) -> String {
    match value {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => {
            if s.chars().count() > QUOTE_LIMIT {
                let head: String = s.chars().take(QUOTE_LIMIT).collect();
                format!("{:?}", format!("{head}…"))
            } else {
                format!("{s:?}")
            }
        }
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

/// Parses `201.95`, `1,234.50`, `201,95` (decimal comma) and `1e3`.
fn parse_decimal(text: &str) -> Option<Decimal> {
    // Most amounts are plain ("201.95"): parsed where they are, without a cleaned copy.
    let cleaned: Cow<'_, str> = if !text.contains([',', ' ', '\u{a0}']) {
        Cow::Borrowed(text)
    } else {
        let separators_gone = match (text.contains(','), text.contains('.')) {
            (true, true) => text.replace(',', ""),
            (true, false) => {
                let after = text.rsplit(',').next().unwrap_or("");
                if text.matches(',').count() == 1 && after.len() <= 2 {
                    text.replace(',', ".")
                } else {
                    text.replace(',', "")
                }
            }
            _ => text.to_string(),
        };
        Cow::Owned(separators_gone.replace([' ', '\u{a0}'], ""))
    };
    if cleaned.is_empty() || cleaned.starts_with('+') {
        return None;
    }
    cleaned
        .parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(&cleaned).ok())
}

/// The longest currency a price carries, in characters: a code or a sign.
pub(crate) const MAX_CURRENCY_CHARS: usize = 8;

/// A number with a currency before or after it: a code (`USD`, `грн`) or a sign (`$`, `€`).
fn parse_price_text(text: &str) -> Option<Price> {
    let is_number_char = |c: char| c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | ' ');
    let start = text.find(|c: char| c.is_ascii_digit() || c == '-')?;
    let end = text
        .char_indices()
        .skip_while(|(i, _)| *i < start)
        .find(|(_, c)| !is_number_char(*c))
        .map_or(text.len(), |(i, _)| i);
    let amount = parse_decimal(text[start..end].trim())?;
    let (before, after) = (text[..start].trim(), text[end..].trim());
    let currency: Cow<'_, str> = match (before.is_empty(), after.is_empty()) {
        (true, _) => Cow::Borrowed(after),
        (_, true) => Cow::Borrowed(before),
        _ => Cow::Owned(format!("{before}{after}")),
    };
    if currency.chars().count() > MAX_CURRENCY_CHARS || currency.chars().any(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some(Price {
        amount,
        currency: (!currency.is_empty()).then(|| Text::from(&*currency)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn price(value: Value) -> Result<Option<Price>> {
        Node::root(&Json::from(&value), "p").price()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn prices_in_the_shapes_clients_send() {
        let cases = [
            (json!("754 USD"), "754", Some("USD")),
            (json!("201.95"), "201.95", None),
            (json!(201.95), "201.95", None),
            (json!("USD 12.5"), "12.5", Some("USD")),
            (json!("1,234.50 €"), "1234.5", Some("€")),
            (json!("201,95"), "201.95", None),
            (json!("33.333333333333"), "33.333333333333", None),
            (json!(596), "596", None),
        ];
        for (input, amount, currency) in cases {
            let got = price(input.clone()).unwrap().unwrap();
            assert_eq!(got.amount, dec(amount), "{input}");
            assert_eq!(got.currency.as_deref(), currency, "{input}");
        }
    }

    #[test]
    fn bad_prices_name_the_path() {
        let err = price(json!("-5")).unwrap_err();
        assert_eq!(
            err.message(),
            "p: expected an amount of 0 or more, got \"-5\""
        );
        assert!(price(json!("cheap")).is_err());
        assert!(price(json!("12 34 56 abc 1")).is_err());
        assert!(price(json!({"a": 1})).is_err());
        assert_eq!(price(json!("")).unwrap(), None);
    }

    #[test]
    fn flags_accept_strings_numbers_and_booleans() {
        for (v, want) in [
            (json!("1"), true),
            (json!(1), true),
            (json!(true), true),
            (json!("0"), false),
            (json!(0), false),
            (json!("false"), false),
        ] {
            assert_eq!(
                Node::root(&Json::from(&v), "f").flag().unwrap(),
                Some(want),
                "{v}"
            );
        }
        let v = json!(2);
        assert!(Node::root(&Json::from(&v), "f").flag().is_err());
    }

    #[test]
    fn quantities_are_whole_and_plausible() {
        let ok = json!("3");
        assert_eq!(
            Node::root(&Json::from(&ok), "q").quantity().unwrap(),
            Some(3)
        );
        let bad = json!("two");
        assert_eq!(
            Node::root(&Json::from(&bad), "q")
                .quantity()
                .unwrap_err()
                .message(),
            "q: expected an integer, got \"two\""
        );
        for v in [json!(-1), json!(1.5), json!(10_000_000)] {
            assert!(Node::root(&Json::from(&v), "q").quantity().is_err(), "{v}");
        }
    }

    #[test]
    fn long_values_are_cut_when_quoted() {
        let long = Value::String("x".repeat(500));
        assert!(describe(&Json::from(&long)).chars().count() < 50);
    }
}
