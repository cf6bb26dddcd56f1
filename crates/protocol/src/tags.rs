//! [`TagMap`]: the `tag_*` fields of a product, or the arrays of an event's `Tags` object.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Text;

type Entry = (Text, Vec<Text>);

/// Named lists of texts, each name once, in name order (as the JSON object they are read
/// from and written as). An event carries one or two: held as a sorted vector rather than
/// a tree, whose every node has room for eleven entries and takes as long to free.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagMap(Vec<Entry>);

impl TagMap {
    pub const fn new() -> Self {
        TagMap(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &str) -> Option<&Vec<Text>> {
        let at = self.find(name).ok()?;
        Some(&self.0[at].1)
    }

    /// Sets the values of `name`; returns those it had.
    pub fn insert(&mut self, name: Text, values: Vec<Text>) -> Option<Vec<Text>> {
        match self.find(&name) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, values)),
            Err(at) => {
                self.0.insert(at, (name, values));
                None
            }
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(name, values)| (name, values))
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(held, _)| held.as_str().cmp(name))
    }
}

pub type Iter<'a> =
    std::iter::Map<std::slice::Iter<'a, Entry>, fn(&'a Entry) -> (&'a Text, &'a Vec<Text>)>;

impl<'a> IntoIterator for &'a TagMap {
    type Item = (&'a Text, &'a Vec<Text>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for TagMap {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Later entries replace earlier ones of the same name, as in a JSON object.
impl Extend<Entry> for TagMap {
    fn extend<I: IntoIterator<Item = Entry>>(&mut self, entries: I) {
        for (name, values) in entries {
            self.insert(name, values);
        }
    }
}

impl FromIterator<Entry> for TagMap {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Self {
        let mut tags = TagMap::new();
        tags.extend(entries);
        tags
    }
}

impl<const N: usize> From<[Entry; N]> for TagMap {
    fn from(entries: [Entry; N]) -> Self {
        entries.into_iter().collect()
    }
}

impl std::ops::Index<&str> for TagMap {
    type Output = Vec<Text>;

    fn index(&self, name: &str) -> &Vec<Text> {
        match self.get(name) {
            Some(values) => values,
            None => panic!("no tag {name:?}"),
        }
    }
}

impl Serialize for TagMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for TagMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor;

        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = TagMap;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string arrays")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TagMap, A::Error> {
                let mut tags = TagMap(Vec::with_capacity(map.size_hint().unwrap_or(0)));
                while let Some((name, values)) = map.next_entry()? {
                    tags.insert(name, values);
                }
                Ok(tags)
            }
        }

        deserializer.deserialize_map(TagsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(values: &[&str]) -> Vec<Text> {
        values.iter().map(|v| Text::from(*v)).collect()
    }

    #[test]
    fn names_are_kept_once_in_order_the_last_value_winning() {
        let mut tags = TagMap::from([
            ("size".into(), texts(&["M"])),
            ("colour".into(), texts(&["red"])),
        ]);
        assert_eq!(
            tags.insert("size".into(), texts(&["L"])),
            Some(texts(&["M"]))
        );
        tags.extend([("brand".into(), texts(&["acme", "other"]))]);
        let names: Vec<&str> = tags.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["brand", "colour", "size"]);
        assert_eq!(tags["size"], texts(&["L"]));
        assert_eq!(tags.get("weight"), None);
    }

    #[test]
    fn reads_and_writes_as_a_json_object() {
        let tags: TagMap =
            serde_json::from_str(r#"{"size": ["M"], "colour": ["red"], "size": ["L"]}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&tags).unwrap(),
            r#"{"colour":["red"],"size":["L"]}"#
        );
        assert!(serde_json::from_str::<TagMap>(r#"["size"]"#).is_err());
    }
}
