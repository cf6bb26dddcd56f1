//! Product keys as small numbers, so that the models hold `u32`s instead of strings.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{self, Dropped, MAX_ITEMS};

pub type ItemId = u32;

#[derive(Clone, Default)]
pub struct Items {
    /// By product key, which clients send: a keyed hash (SipHash), so that crafted keys
    /// cannot pile into one bucket and slow every lookup of the site down.
    ids: HashMap<Box<str>, ItemId>,
    keys: Vec<Box<str>>,
}

impl Items {
    /// The number of `key`, given one at its first sight while the dictionary holds
    /// fewer than [`MAX_ITEMS`] keys; `None`, counted as a drop, past it (events are
    /// public: anyone can name new product keys).
    pub fn intern(&mut self, key: &str) -> Option<ItemId> {
        self.intern_within(MAX_ITEMS, key)
    }

    fn intern_within(&mut self, cap: usize, key: &str) -> Option<ItemId> {
        if let Some(id) = self.ids.get(key) {
            return Some(*id);
        }
        if self.keys.len() >= cap {
            limits::drop_one(Dropped::Product);
            return None;
        }
        let id = self.keys.len() as ItemId;
        self.keys.push(key.into());
        self.ids.insert(key.into(), id);
        Some(id)
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
        assert_eq!(items.intern("a"), Some(0));
        assert_eq!(items.intern("b"), Some(1));
        assert_eq!(items.intern("a"), Some(0));
        assert_eq!(items.get("b"), Some(1));
        assert_eq!(items.get("c"), None);
        assert_eq!(items.key(1), "b");
        assert_eq!(items.len(), 2);
    }
    #[test]
    fn a_full_dictionary_numbers_no_new_key() {
        let mut items = Items::default();
        assert_eq!(items.intern_within(1, "a"), Some(0));
        assert_eq!(items.intern_within(1, "b"), None);
        assert_eq!(items.intern_within(1, "a"), Some(0));
        assert_eq!(items.len(), 1);
    }
}
