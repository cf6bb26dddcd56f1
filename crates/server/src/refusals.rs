//! Events refused per site, by reason and field path, since the process started: what the
//! dashboard's overview shows a shop's engineer who wonders why events are missing.
//! Codes and paths only, never a value sent (a refused field may hold an email).

use std::collections::HashMap;
use std::sync::Mutex;

use spoor_ingest::{IngestError, KeyProblem};

/// Distinct (reason, path) pairs kept per site; past it, refusals count as "other".
pub const MAX_KINDS_PER_SITE: usize = 200;
/// Sites counted; a registry larger than this counts only the first ones seen.
pub const MAX_SITES: usize = 10_000;
const MAX_PATH_CHARS: usize = 120;
/// A field name longer than this is taken for one a client made up.
const MAX_NAME_CHARS: usize = 40;

#[derive(Default)]
pub struct Refusals {
    by_site: Mutex<HashMap<String, SiteRefusals>>,
}

#[derive(Default, Clone)]
pub struct SiteRefusals {
    /// (reason, field path with its indexes left out) -> events refused.
    pub counts: HashMap<(&'static str, String), u64>,
    /// Refusals past [`MAX_KINDS_PER_SITE`] kinds.
    pub other: u64,
}

impl SiteRefusals {
    /// The kinds counted, most frequent first.
    pub fn ranked(&self) -> Vec<(&'static str, &str, u64)> {
        let mut all: Vec<(&'static str, &str, u64)> = (self.counts.iter())
            .map(|((reason, path), n)| (*reason, path.as_str(), *n))
            .collect();
        all.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        all
    }
}

impl Refusals {
    /// Counts `error` against the site it names, when it names a registered one.
    pub fn count(&self, error: &IngestError) {
        let (site_id, reason, path) = match error {
            IngestError::Rejected {
                error,
                site_id: Some(site_id),
                ..
            } => (site_id, error.code.as_str(), error.path.as_deref()),
            IngestError::RateLimited { site_id, .. } => (site_id, "rate_limited", None),
            IngestError::KeyRequired {
                site_id, problem, ..
            } => (site_id, key_reason(*problem), None),
            _ => return,
        };
        self.add(site_id, reason, &path_shape(path.unwrap_or("")));
    }

    fn add(&self, site_id: &str, reason: &'static str, path: &str) {
        let mut by_site = self.by_site.lock().unwrap_or_else(|p| p.into_inner());
        if !by_site.contains_key(site_id) && by_site.len() >= MAX_SITES {
            return;
        }
        let site = by_site.entry(site_id.to_string()).or_default();
        let key = (reason, path.to_string());
        if let Some(count) = site.counts.get_mut(&key) {
            *count += 1;
        } else if site.counts.len() < MAX_KINDS_PER_SITE {
            site.counts.insert(key, 1);
        } else {
            site.other += 1;
        }
    }

    /// What the site's refusals are, counted since the process started.
    pub fn of(&self, site_id: &str) -> SiteRefusals {
        let by_site = self.by_site.lock().unwrap_or_else(|p| p.into_inner());
        by_site.get(site_id).cloned().unwrap_or_default()
    }
}

pub fn key_reason(problem: KeyProblem) -> &'static str {
    match problem {
        KeyProblem::Missing => "key_required",
        KeyProblem::NotTheSites => "key_refused",
        KeyProblem::TooManyRefused(_) => "too_many_refused_keys",
    }
}

/// The path with its array indexes left out (`items[3].price` -> `items[].price`), so
/// that one mistake in every line of a cart counts as one kind; and with the names a
/// client chose (a `tag_` field's, the `Tags` object's keys, anything that is not a plain
/// field name) as `*`: a client may name a field after a person.
fn path_shape(path: &str) -> String {
    let mut shape = Vec::new();
    let mut free_keys = false;
    for segment in path.split('.') {
        let (name, indexes) = segment.split_once('[').unwrap_or((segment, ""));
        let plain = name.len() <= MAX_NAME_CHARS
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // A name the client chose may hold dots: nothing after it is told.
        if free_keys || !plain {
            shape.push("*".to_string());
            break;
        }
        if name.starts_with("tag_") {
            shape.push("tag_*".to_string());
            break;
        }
        free_keys = name.eq_ignore_ascii_case("tags");
        let brackets = indexes.matches(']').count();
        shape.push(format!("{name}{}", "[]".repeat(brackets)));
    }
    shape.join(".").chars().take(MAX_PATH_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_protocol::{ErrorCode, ProtocolError};

    fn invalid(site: Option<&str>, path: &str) -> IngestError {
        IngestError::Rejected {
            error: ProtocolError::new(ErrorCode::InvalidValue, path, "detail"),
            event: None,
            site_id: site.map(String::from),
        }
    }

    #[test]
    fn counts_by_site_reason_and_path_shape() {
        let refusals = Refusals::default();
        refusals.count(&invalid(Some("shop"), "StatusCart.productKeys[3]"));
        refusals.count(&invalid(Some("shop"), "StatusCart.productKeys[12]"));
        refusals.count(&invalid(None, "x"));
        let shop = refusals.of("shop");
        assert_eq!(
            shop.ranked(),
            [("invalid_value", "StatusCart.productKeys[]", 2)]
        );
        assert!(refusals.of("other").counts.is_empty());
    }

    #[test]
    fn names_a_client_chose_are_not_kept() {
        for (path, shape) in [
            (
                "StatusCart.Products[2].tag_john.smith@x.com",
                "StatusCart.Products[].tag_*",
            ),
            ("Tags.ann_lee[0]", "Tags.*"),
            ("GeneralInfo.user_email", "GeneralInfo.user_email"),
            ("ProductPage.a b", "ProductPage.*"),
        ] {
            assert_eq!(path_shape(path), shape);
        }
    }

    #[test]
    fn kinds_per_site_are_bounded() {
        let refusals = Refusals::default();
        for i in 0..MAX_KINDS_PER_SITE + 5 {
            refusals.count(&invalid(Some("shop"), &format!("field{i}")));
        }
        let shop = refusals.of("shop");
        assert_eq!(shop.counts.len(), MAX_KINDS_PER_SITE);
        assert_eq!(shop.other, 5);
    }
}
