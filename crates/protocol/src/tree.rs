//! A JSON document as a tree that borrows its strings from the request body.
//!
//! Every tracker request is read once into a tree and then walked by the field readers
//! (`reader.rs`). `serde_json::Value` would allocate a `String` for every key and string
//! value and a map node for every object: most of an event's allocations. Here keys and
//! strings without escapes are slices of the body, objects short vectors of entries (an
//! event's objects have a handful of keys, so a scan beats a map).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// Objects up to this many entries find repeated keys by scanning.
const SCAN_LIMIT: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// An object's entries in document order. A key sent twice means its last value, as
/// `serde_json::Value` reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.get_key_value(key).map(|(_, value)| value)
    }

    pub fn get_key_value(&self, key: &str) -> Option<(&str, &Json<'a>)> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(k, v)| (&**k, v))
    }

    /// Each key once, with its last value, in document order. Linear in the number of
    /// entries whatever the body holds: a client's object can have many thousands.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        let entries = &self.0;
        // An event's objects have a handful of keys: scanning the rest is cheaper than a
        // table. A large object gets a table of each key's last place.
        let last: Option<HashMap<&str, usize>> = (entries.len() > SCAN_LIMIT).then(|| {
            let places = entries.iter().enumerate();
            places.map(|(i, (key, _))| (&**key, i)).collect()
        });
        entries
            .iter()
            .enumerate()
            .filter_map(move |(i, (key, value))| {
                let kept = match &last {
                    Some(last) => last.get(&**key) == Some(&i),
                    None => !entries[i + 1..].iter().any(|(later, _)| later == key),
                };
                kept.then_some((&**key, value))
            })
    }

    /// The entries, each value changed by `change` (key and value given).
    pub fn map_values(&self, mut change: impl FnMut(&str, &Json<'a>) -> Json<'a>) -> Object<'a> {
        Object(
            self.iter()
                .map(|(key, value)| (Cow::Owned(key.to_string()), change(key, value)))
                .collect(),
        )
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(key, _)| key)
    }
}

impl<'a> Json<'a> {
    /// The value under `key`, when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(map) => map.get(key),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    /// The same value as an owned `serde_json::Value` (for what is kept as JSON).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// A tree that owns its strings, free of what it was read from.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(n),
            Json::String(s) => Json::String(Cow::Owned(s.into_owned())),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(Object(entries)) => Json::Object(Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            )),
        }
    }
}

impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

impl fmt::Display for Json<'_> {
    /// Compact JSON, as `serde_json::Value` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        // JSON has no NaN or infinity: a number read from it is always finite.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(text.to_string())))
    }

    fn visit_string<E>(self, text: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object(entries)))
    }
}

/// An object key, borrowed from the document when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_serde_json_does_borrowing_what_it_can() {
        let text = r#"{"a": "plain", "b\u0041": "esc\"aped", "n": [1, -2, 2.5, 1e3],
                       "o": {"t": true, "z": null}, "a": "again"}"#;
        let tree: Json = serde_json::from_str(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tree.to_value(), value);
        assert_eq!(Json::from(&value).to_value(), value);
        let Json::Object(root) = &tree else {
            panic!("an object")
        };
        assert_eq!(root.get("a").and_then(Json::as_str), Some("again"));
        assert!(matches!(root.get("n"), Some(Json::Array(items)) if items.len() == 4));
        assert!(matches!(
            root.get_key_value("bA"),
            Some(("bA", Json::String(Cow::Owned(_))))
        ));
        assert!(matches!(
            root.iter().find(|(k, _)| *k == "a"),
            Some((_, Json::String(Cow::Borrowed("again"))))
        ));
        assert_eq!(root.keys().collect::<Vec<_>>(), ["bA", "n", "o", "a"]);
        assert_eq!(tree.to_string(), value.to_string());
        assert_eq!(tree.clone().into_owned(), tree);
    }

    #[test]
    fn an_object_of_many_keys_is_walked_in_linear_time() {
        let keys = 200_000;
        let mut text = String::from("{");
        for i in 0..keys {
            text.push_str(&format!("\"k{i}\": {i},"));
        }
        text.push_str("\"k0\": \"last\"}");
        let tree: Json = serde_json::from_str(&text).unwrap();
        let Json::Object(root) = &tree else {
            panic!("an object")
        };
        // Quadratic work here would take minutes; the test's point is that it does not.
        assert_eq!(root.iter().count(), keys);
        assert_eq!(root.get("k0").and_then(Json::as_str), Some("last"));
        let copied = root.map_values(|_, v| v.clone());
        assert_eq!(copied.iter().count(), keys);
    }
}
