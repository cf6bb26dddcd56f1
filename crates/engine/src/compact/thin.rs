//! Owned bytes behind one pointer, with their length in front of them as a varint
//! (one byte up to 127 bytes), and a list of texts packed into them.
//!
//! A million contacts each hold a handful of short lists. `Box<[u8]>` takes 16 bytes in
//! place, `ThinVec<u8>` 8 in place but a 16-byte header (length and capacity) in its
//! allocation; [`ThinBytes`] takes 8 in place and one byte of header, and holds no spare
//! capacity (its lists are rewritten whole on a change, so spare room would never be
//! used). Being bytes only, it needs no element drops and no alignment, and
//! a varint in front is all the header it takes.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;

use super::varint::varint;
use spoor_protocol::Text;

/// Owned bytes: an allocation of their length (LEB128) and the bytes, or, when empty, no
/// allocation and a dangling pointer (never an allocation's address; being non-null, it
/// leaves `Option<ThinBytes>` one word too).
pub struct ThinBytes(NonNull<u8>);

// SAFETY: a ThinBytes owns its allocation alone, as a Box<[u8]> does; nothing is shared.
unsafe impl Send for ThinBytes {}
// SAFETY: shared references only read the bytes.
unsafe impl Sync for ThinBytes {}

impl ThinBytes {
    pub const EMPTY: ThinBytes = ThinBytes(NonNull::dangling());

    pub fn new(bytes: &[u8]) -> ThinBytes {
        ThinBytes::concat(&[bytes])
    }

    /// The bytes of `parts` one after another, copied once into the new block.
    pub fn concat(parts: &[&[u8]]) -> ThinBytes {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        if total == 0 {
            return ThinBytes::EMPTY;
        }
        let (prefix, prefix_len) = varint(total as u64);
        let prefix = &prefix[..prefix_len];
        let layout = layout(prefix.len() + total);
        // SAFETY: the layout is at least one byte long.
        let block = unsafe { alloc(layout) };
        let Some(block) = NonNull::new(block) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the block holds exactly the prefix and the parts, which do not overlap it.
        unsafe {
            let start = block.as_ptr();
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), start, prefix.len());
            let mut at = prefix.len();
            for part in parts {
                std::ptr::copy_nonoverlapping(part.as_ptr(), start.add(at), part.len());
                at += part.len();
            }
        }
        ThinBytes(block)
    }

    /// The block, the length of its prefix and the length of the bytes after it.
    fn parts(&self) -> Option<(NonNull<u8>, usize, usize)> {
        let block = self.0;
        if block == NonNull::dangling() {
            return None;
        }
        let mut len = 0usize;
        let mut prefix = 0;
        loop {
            // SAFETY: the block begins with a whole varint, written by `new`; it is read
            // no further than its last byte (the one without the high bit).
            let byte = unsafe { *block.as_ptr().add(prefix) };
            len |= usize::from(byte & 0x7f) << (7 * prefix);
            prefix += 1;
            if byte & 0x80 == 0 {
                return Some((block, prefix, len));
            }
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self.parts() {
            None => &[],
            // SAFETY: `len` bytes follow the prefix in the block, initialised by `new`, and
            // live as long as `self`.
            Some((block, prefix, len)) => unsafe {
                std::slice::from_raw_parts(block.as_ptr().add(prefix), len)
            },
        }
    }
}

fn layout(size: usize) -> Layout {
    match Layout::array::<u8>(size) {
        Ok(layout) => layout,
        Err(_) => panic!("{size} bytes cannot be allocated"),
    }
}

impl Drop for ThinBytes {
    fn drop(&mut self) {
        if let Some((block, prefix, len)) = self.parts() {
            // SAFETY: the block was allocated by `new` with this very layout.
            unsafe { dealloc(block.as_ptr(), layout(prefix + len)) }
        }
    }
}

impl Default for ThinBytes {
    fn default() -> Self {
        ThinBytes::EMPTY
    }
}

impl Clone for ThinBytes {
    fn clone(&self) -> Self {
        ThinBytes::new(self)
    }
}

impl Deref for ThinBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for ThinBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ThinBytes {}

impl fmt::Debug for ThinBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// A text in a [`ThinBytes`]: one word in place (`Option<ThinStr>` too) where a
/// `Box<str>` takes two, and no allocation when empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ThinStr(ThinBytes);

impl ThinStr {
    pub fn as_str(&self) -> &str {
        // SAFETY: a ThinStr is made only from a `str` (`From`, `Deserialize`), and its
        // bytes never change: they are UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl Deref for ThinStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ThinStr {
    fn from(text: &str) -> Self {
        ThinStr(ThinBytes::new(text.as_bytes()))
    }
}

impl From<String> for ThinStr {
    fn from(text: String) -> Self {
        ThinStr::from(text.as_str())
    }
}

impl fmt::Debug for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ThinStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ThinStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(ThinStr::from(&*text))
    }
}

/// Texts in arrival order, each as its length and its bytes, in one [`ThinBytes`]: a
/// contact's cookies or phones (usually one) in one small block instead of a vector and a
/// box each.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Texts(ThinBytes);

impl Texts {
    pub const EMPTY: Texts = Texts(ThinBytes::EMPTY);

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        // SAFETY: every entry was written from a `str` (`add`, `FromIterator`), whole.
        self.entries()
            .map(|(_, text)| unsafe { std::str::from_utf8_unchecked(text) })
    }

    /// Each text's bytes, with where its entry ends in the block.
    fn entries(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let all: &[u8] = &self.0;
        let mut rest = all;
        std::iter::from_fn(move || {
            let len = usize::try_from(super::varint::read_varint(&mut rest)?).ok()?;
            let text = rest.get(..len)?;
            rest = &rest[len..];
            Some((all.len() - rest.len(), text))
        })
    }

    pub fn first(&self) -> Option<&str> {
        self.iter().next()
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, text: &str) -> bool {
        self.entries().any(|(_, held)| held == text.as_bytes())
    }

    /// Adds `text` unless held; once more than `limit` are held, lets the oldest go and
    /// returns it. One pass over the block and one copy of it: a client that sends a new
    /// cookie with every event keeps a contact at the limit, and each event adds one.
    pub fn add(&mut self, text: &str, limit: usize) -> Option<Text> {
        let mut held = 0;
        let mut first_end = 0;
        let wanted = text.as_bytes();
        for (end, entry) in self.entries() {
            // The last bytes first: texts of one kind tend to share a length and a start
            // (`cookie-1041`, `cookie-1042`), so this spares most full comparisons.
            if entry.last() == wanted.last() && entry == wanted {
                return None;
            }
            if held == 0 {
                first_end = end;
            }
            held += 1;
        }
        let (let_go, kept) = if held >= limit {
            (self.first().map(Text::from), &self.0[first_end..])
        } else {
            (None, &self.0[..])
        };
        let (length, length_len) = varint(text.len() as u64);
        self.0 = ThinBytes::concat(&[kept, &length[..length_len], wanted]);
        let_go
    }

    /// Keeps the texts for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        if self.iter().all(&keep) {
            return;
        }
        *self = Texts::from_iter(self.iter().filter(|t| keep(t)));
    }
}

impl AsRef<Texts> for Texts {
    fn as_ref(&self) -> &Texts {
        self
    }
}

impl<'a> FromIterator<&'a str> for Texts {
    fn from_iter<I: IntoIterator<Item = &'a str>>(texts: I) -> Self {
        let mut bytes = Vec::new();
        for text in texts {
            crate::compact::varint::write_text(&mut bytes, text);
        }
        Texts(ThinBytes::new(&bytes))
    }
}

impl fmt::Debug for Texts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Texts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Texts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        Ok(texts.iter().map(String::as_str).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_any_length_come_back_as_given() {
        for len in [0usize, 1, 127, 128, 300, 20_000] {
            let given: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let thin = ThinBytes::new(&given);
            assert_eq!(&*thin, &given[..]);
            assert_eq!(thin.clone(), thin);
            let prefix = thin.parts().map(|(_, prefix, len)| (prefix, len));
            let expected = match len {
                0 => None,
                1..=127 => Some((1, len)),
                128..=16_383 => Some((2, len)),
                _ => Some((3, len)),
            };
            assert_eq!(prefix, expected);
        }
        assert_eq!(ThinBytes::default(), ThinBytes::new(&[]));
        assert_eq!(std::mem::size_of::<Option<ThinBytes>>(), 8);
        assert_eq!(std::mem::size_of::<Option<ThinStr>>(), 8);
    }

    #[test]
    fn a_thin_str_is_its_text() {
        for text in ["", "a", "ann@example.com", "Олена", &"x".repeat(500)] {
            let thin = ThinStr::from(text);
            assert_eq!(&*thin, text);
            assert_eq!(thin.to_string(), text);
            let json = serde_json::to_string(&thin).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<ThinStr>(&json).unwrap(), thin);
        }
    }

    #[test]
    fn texts_keep_arrival_order_and_the_newest_within_a_limit() {
        let mut texts = Texts::default();
        assert!(texts.is_empty());
        assert_eq!(texts.add("a", 3), None);
        assert_eq!(texts.add("b", 3), None);
        assert_eq!(texts.add("a", 3), None, "already held");
        assert_eq!(texts.add("", 3), None);
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["a", "b", ""]);
        assert_eq!(texts.add("d", 3), Some("a".into()));
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["b", "", "d"]);
        texts.retain(|t| !t.is_empty());
        assert_eq!(texts.iter().collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(texts.first(), Some("b"));
        assert!(texts.contains("d") && !texts.contains("a"));
        let json = serde_json::to_string(&texts).unwrap();
        assert_eq!(json, r#"["b","d"]"#);
        assert_eq!(serde_json::from_str::<Texts>(&json).unwrap(), texts);
    }
}
