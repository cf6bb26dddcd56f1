//! [`Text`], the short texts of an event.

/// Short text: identifiers, keys, currency codes and tags. Most are a few bytes, kept in
/// place rather than each in an allocation of its own (an event has a dozen of them, and
/// the state's follower drops them on another thread than the one that made them).
pub type Text = compact_str::CompactString;
