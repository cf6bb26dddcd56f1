//! Product keys as small numbers, so that the models hold `u32`s instead of strings.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type ItemId = u32;

#[derive(Clone, Default)]
pub struct Items {
    /// By product key, which clients send: a keyed hash (SipHash), so that crafted keys
    /// cannot pile into one bucket and slow every lookup of the site down.
    ids: HashMap<Box<str>, ItemId>,
    keys: Vec<Box<str>>,
}

impl Items {
    /// The number of `key`, given one at its first sight.
    pub fn intern(&mut self, key: &str) -> ItemId {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.keys.len() as ItemId;
        self.keys.push(key.into());
        self.ids.insert(key.into(), id);
        id
    }

    pub fn get(&self, key: &str) -> Option<ItemId> {
        self.ids.get(key).copied()
    }

    pub fn key(&self, id: ItemId) -> &str {
        &self.keys[id as usize]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

// Saved as the key list alone; the lookup map is derived from it.
impl Serialize for Items {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Items, D::Error> {
        let keys: Vec<Box<str>> = Vec::deserialize(d)?;
        let ids = keys
            .iter()
            .enumerate()
            .map(|(id, key)| (key.clone(), id as ItemId))
            .collect();
        Ok(Items { ids, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_number() {
        let mut items = Items::default();
        assert_eq!(items.intern("a"), 0);
        assert_eq!(items.intern("b"), 1);
        assert_eq!(items.intern("a"), 0);
        assert_eq!(items.get("b"), Some(1));
        assert_eq!(items.get("c"), None);
        assert_eq!(items.key(1), "b");
        assert_eq!(items.len(), 2);
    }
}
