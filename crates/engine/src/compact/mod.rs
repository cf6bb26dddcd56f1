//! Compact storage for what a million contacts hold: texts and short lists behind one
//! pointer ([`thin`]), latest-first lists of timed entries packed as varints ([`recent`]),
//! and the varint coding both use ([`varint`]).

pub mod recent;
pub mod thin;
pub(crate) mod varint;
