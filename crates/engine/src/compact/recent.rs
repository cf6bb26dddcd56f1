//! A contact's recent product views and searches, latest first, packed into one
//! allocation of varints: each entry's time as the distance from the entry before it (the
//! first as itself), then the entry's own parts. A view takes 5-7 bytes instead of 12, a
//! search its query's length and 3-8 bytes instead of 32 and a box of its own; a million
//! contacts hold a dozen views each.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::thin::ThinBytes;
use super::varint::{read_varint, write_varint};

/// How many entries of one kind a contact keeps.
pub const RECENT_LIMIT: usize = 50;

/// An entry of a [`Recent`] list: its time, and its other parts as bytes.
pub trait Packed: Sized {
    fn at(&self) -> i64;
    /// Appends everything but the time.
    fn write_parts(&self, out: &mut Vec<u8>);
    /// Reads back what [`Packed::write_parts`] wrote; `None` if the bytes end early.
    fn read_parts(at: i64, bytes: &mut &[u8]) -> Option<Self>;
    /// Steps over what [`Packed::write_parts`] wrote, for entries that need not be built.
    fn skip_parts(bytes: &mut &[u8]) -> Option<()> {
        Self::read_parts(0, bytes).map(drop)
    }
}

/// Entries latest first, at most [`RECENT_LIMIT`]. Equal lists have equal bytes: the
/// encoding of a list is the only one.
pub struct Recent<T> {
    bytes: ThinBytes,
    entries: PhantomData<T>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            bytes: ThinBytes::default(),
            entries: PhantomData,
        }
    }
}

impl<T> Clone for Recent<T> {
    fn clone(&self) -> Self {
        Recent {
            bytes: self.bytes.clone(),
            entries: PhantomData,
        }
    }
}

impl<T> PartialEq for Recent<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Recent<T> {}

impl<T: Packed + fmt::Debug> fmt::Debug for Recent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Packed> Recent<T> {
    /// The entries, latest first.
    pub fn iter(&self) -> Entries<'_, T> {
        Entries {
            rest: &self.bytes,
            previous: None,
            entries: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The latest entry.
    pub fn first(&self) -> Option<T> {
        self.iter().next()
    }

    /// Adds `entry` in its place by time (after those at the same time), keeping the
    /// latest [`RECENT_LIMIT`]: events that arrive out of order end as in order.
    pub fn remember(&mut self, entry: T) {
        let at = entry.at();
        let mut held = spans::<T>(&self.bytes);
        let mut kept = 0;
        let mut previous = None;
        let following = loop {
            match held.next() {
                Some(span) if span.at >= at => {
                    kept += 1;
                    previous = Some(span.at);
                }
                other => break other,
            }
        };
        drop(held);
        if kept >= RECENT_LIMIT {
            return;
        }
        let start = following.as_ref().map_or(self.bytes.len(), |s| s.start);
        let mut bytes = Vec::with_capacity(self.bytes.len() + 16);
        bytes.extend_from_slice(&self.bytes[..start]);
        write_time(&mut bytes, at, previous);
        entry.write_parts(&mut bytes);
        if let Some(next) = following {
            // The entry after the new one now counts its time from the new one.
            write_time(&mut bytes, next.at, Some(at));
            bytes.extend_from_slice(&self.bytes[next.parts..]);
        }
        // The oldest entries beyond the limit go.
        let beyond = spans::<T>(&bytes).nth(RECENT_LIMIT).map(|span| span.start);
        if let Some(cut) = beyond {
            bytes.truncate(cut);
        }
        self.bytes = ThinBytes::new(&bytes);
    }

    /// A list of entries given latest first, as [`Recent::iter`] yields them.
    pub fn from_latest_first(entries: impl IntoIterator<Item = T>) -> Self {
        let mut bytes = Vec::new();
        let mut previous = None;
        for entry in entries.into_iter().take(RECENT_LIMIT) {
            write_time(&mut bytes, entry.at(), previous);
            entry.write_parts(&mut bytes);
            previous = Some(entry.at());
        }
        Recent {
            bytes: ThinBytes::new(&bytes),
            entries: PhantomData,
        }
    }
}

/// Every entry's place in a list's bytes, without building the entries.
fn spans<T: Packed>(bytes: &[u8]) -> impl Iterator<Item = Span> + '_ {
    let mut rest = bytes;
    let mut previous = None;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let start = bytes.len() - rest.len();
        let at = read_time(&mut rest, previous)?;
        let parts = bytes.len() - rest.len();
        T::skip_parts(&mut rest)?;
        previous = Some(at);
        Some(Span { start, at, parts })
    })
}

/// Where an entry sits in a list's bytes.
struct Span {
    start: usize,
    at: i64,
    /// Where its parts begin, after its time.
    parts: usize,
}

pub struct Entries<'a, T> {
    rest: &'a [u8],
    previous: Option<i64>,
    entries: PhantomData<T>,
}

impl<T: Packed> Iterator for Entries<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.rest.is_empty() {
            return None;
        }
        let at = read_time(&mut self.rest, self.previous)?;
        self.previous = Some(at);
        T::read_parts(at, &mut self.rest)
    }
}

/// The first entry's time as itself (zigzag, for times before 1970), every other as how
/// much earlier it is than the one before (the list is latest first, so rarely negative;
/// wrapping arithmetic keeps even those exact).
fn write_time(out: &mut Vec<u8>, at: i64, previous: Option<i64>) {
    let value = match previous {
        None => ((at << 1) ^ (at >> 63)) as u64,
        Some(previous) => previous.wrapping_sub(at) as u64,
    };
    write_varint(out, value);
}

fn read_time(bytes: &mut &[u8], previous: Option<i64>) -> Option<i64> {
    let value = read_varint(bytes)?;
    Some(match previous {
        None => ((value >> 1) as i64) ^ -((value & 1) as i64),
        Some(previous) => previous.wrapping_sub(value as i64),
    })
}

impl<T: Packed + Serialize> Serialize for Recent<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, T: Packed + Deserialize<'de>> Deserialize<'de> for Recent<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut entries = Vec::<T>::deserialize(deserializer)?;
        // Written latest first; a list in another order is put in it.
        entries.sort_by_key(|e| std::cmp::Reverse(e.at()));
        Ok(Recent::from_latest_first(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::varint::{read_text, write_text};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
        at: i64,
    }

    impl Packed for Note {
        fn at(&self) -> i64 {
            self.at
        }
        fn write_parts(&self, out: &mut Vec<u8>) {
            write_text(out, &self.text);
        }
        fn read_parts(at: i64, bytes: &mut &[u8]) -> Option<Self> {
            let text = read_text(bytes)?.to_string();
            Some(Note { text, at })
        }
    }

    fn note(text: &str, at: i64) -> Note {
        Note {
            text: text.into(),
            at,
        }
    }

    fn texts(list: &Recent<Note>) -> Vec<(String, i64)> {
        list.iter().map(|n| (n.text, n.at)).collect()
    }

    #[test]
    fn entries_come_back_latest_first_whatever_order_they_came_in() {
        let times = [
            1_700_000_000_123,
            -5,
            0,
            1_700_000_000_123,
            i64::MAX,
            i64::MIN,
            42,
        ];
        let mut list = Recent::default();
        for (n, at) in times.iter().enumerate() {
            list.remember(note(&format!("n{n}"), *at));
        }
        let shown = texts(&list);
        let mut expected: Vec<(String, i64)> = times
            .iter()
            .enumerate()
            .map(|(n, at)| (format!("n{n}"), *at))
            .collect();
        // Latest first; of equal times, the one that came first stays first.
        expected.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
        assert_eq!(shown, expected);
        assert_eq!(list.len(), times.len());
        assert_eq!(list.first().map(|n| n.at), Some(i64::MAX));
    }

    #[test]
    fn the_same_entries_in_any_order_make_the_same_bytes() {
        let entries = [note("a", 30), note("b", 10), note("c", 20), note("d", 40)];
        let mut forward = Recent::default();
        let mut backward = Recent::default();
        for entry in &entries {
            forward.remember(entry.clone());
        }
        for entry in entries.iter().rev() {
            backward.remember(entry.clone());
        }
        assert_eq!(forward, backward);
        assert_eq!(forward, Recent::from_latest_first(forward.iter()));
    }

    #[test]
    fn only_the_latest_are_kept() {
        let mut list = Recent::default();
        for at in 0..(RECENT_LIMIT as i64 + 20) {
            list.remember(note("x", at * 1000));
        }
        assert_eq!(list.len(), RECENT_LIMIT);
        assert_eq!(
            list.first().map(|n| n.at),
            Some((RECENT_LIMIT as i64 + 19) * 1000)
        );
        // One older than every entry kept is not taken.
        let before = list.clone();
        list.remember(note("old", 0));
        assert_eq!(list, before);
        // One in the middle pushes the oldest out.
        list.remember(note("middle", 40_500));
        assert_eq!(list.len(), RECENT_LIMIT);
        assert!(texts(&list).contains(&("middle".to_string(), 40_500)));
        assert_eq!(list.iter().last().map(|n| n.at), Some(21_000));
    }

    #[test]
    fn a_list_is_shown_and_read_back_as_a_plain_list() {
        let mut list = Recent::default();
        list.remember(note("lamp", 5));
        list.remember(note("chair", 9));
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"text": "chair", "at": 9}, {"text": "lamp", "at": 5}])
        );
        assert_eq!(serde_json::from_value::<Recent<Note>>(json).unwrap(), list);
    }

    #[test]
    fn a_view_takes_a_few_bytes() {
        let mut list = Recent::default();
        for n in 0..12i64 {
            list.remember(note("", 1_700_000_000_000 + n * 1_000_000));
        }
        // Six bytes for the first time, three for each of the others' distance, one for
        // each empty text.
        assert_eq!(list.bytes.len(), 6 + 11 * 3 + 12);
    }
}
