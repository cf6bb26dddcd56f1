//! Recommendation blocks: what a shop puts on a page ("similar products on the product
//! page"), defined once by an admin and asked for by id. A block names an algorithm or a
//! fallback chain, a size and rules, and optionally A/B variants with traffic shares; a
//! visitor always sees the same variant. Answers are labelled `<blockId>_<variantId>`
//! (the container type), which clicks and impressions echo back for attribution.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

use spoor_engine::recommend::Algorithm;
use spoor_engine::recommend::query::Filters;
use spoor_engine::recommend::rules::{Rules, read_json};

use crate::error::{Setting, SettingsError};
use crate::file::SettingsFile;

const FILE_NAME: &str = "blocks.json";
/// The variant of a block defined without variants.
pub const DEFAULT_VARIANT: &str = "default";
pub const DEFAULT_SIZE: usize = 10;
pub const MAX_SIZE: usize = 100;

/// An algorithm or a fallback chain: `"similar,popular"` or `["similar", "popular"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(pub Vec<Algorithm>);

impl Chain {
    pub fn parse(text: &str) -> Result<Chain, String> {
        let names: Vec<&str> = text.split(',').map(str::trim).collect();
        Chain::from_names(&names)
    }

    fn from_names(names: &[&str]) -> Result<Chain, String> {
        let algorithms = names
            .iter()
            .map(|name| {
                Algorithm::parse(name).ok_or_else(|| {
                    format!(
                        "unknown algorithm {name:?}; expected one of {}, or several \
                         separated by commas as a fallback chain",
                        Algorithm::names()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err(format!("expected one of {}", Algorithm::names()));
        }
        Ok(Chain(algorithms))
    }
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| a.name()))
    }
}

impl<'de> Deserialize<'de> for Chain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Chain, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            List(Vec<String>),
        }
        match Written::deserialize(d)? {
            Written::Text(text) => Chain::parse(&text),
            Written::List(names) => {
                Chain::from_names(&names.iter().map(|n| n.trim()).collect::<Vec<_>>())
            }
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The rules of a block: catalogue-field rules and the visitor-based exclusions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlockFilters {
    #[serde(flatten)]
    pub rules: Rules,
    /// Leave out products the catalogue says are out of stock (default true).
    #[serde(default = "yes")]
    pub in_stock_only: bool,
    /// Leave out what is in the visitor's cart.
    #[serde(default)]
    pub exclude_cart: bool,
    /// Leave out what the visitor has bought.
    #[serde(default)]
    pub exclude_bought: bool,
}

fn yes() -> bool {
    true
}

impl Default for BlockFilters {
    fn default() -> Self {
        BlockFilters {
            rules: Rules::default(),
            in_stock_only: true,
            exclude_cart: false,
            exclude_bought: false,
        }
    }
}

impl BlockFilters {
    fn to_filters(&self) -> Filters {
        Filters {
            include_out_of_stock: !self.in_stock_only,
            exclude_cart: self.exclude_cart,
            exclude_bought: self.exclude_bought,
            rules: self.rules.clone(),
        }
    }
}

/// An A/B variant: what differs from the block, and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variant {
    pub id: String,
    /// Relative weight: shares 50 and 50, or 1 and 1, split traffic evenly.
    pub share: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Chain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<BlockFilters>,
}

/// A block as `PUT /admin/v1/sites/{siteId}/blocks/{blockId}` defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Block {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub algorithm: Chain,
    #[serde(default = "default_size")]
    pub size: usize,
    #[serde(default)]
    pub filters: BlockFilters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Where the browser script shows the block by itself. A block without one is for
    /// the page's own `getRecommendations` calls and the REST route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// The longest CSS selector, title and template of a placement: they go into the
/// script every page of the site loads.
pub const MAX_SELECTOR_BYTES: usize = 512;
pub const MAX_TITLE_BYTES: usize = 200;
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

/// A block the browser script renders: on which pages, where, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// The page types it shows on, as the page's events tell them.
    pub page_types: Vec<PageType>,
    /// The element it goes next to or into: a CSS selector (the first match).
    pub selector: String,
    #[serde(default)]
    pub position: Position,
    /// Shown above the products (`{{title}}` in the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// HTML with `{{title}}`, and `{{#products}}...{{/products}}` repeated for each
    /// product with its fields (`{{name}}`, `{{url}}`, `{{imgurl}}`, `{{unit_price}}`,
    /// `{{tag_color}}`...), every value filled in as text by the browser script, which
    /// keeps listed attributes only; the script's own when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// A type of page, from the event the page sends: `MainPage`, `CategoryPage`,
/// `ProductPage`, `StatusCart`/`StatusCartPage`, `NotFound`; `any` for every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PageType {
    Main,
    Category,
    Product,
    Cart,
    NotFound,
    Any,
}

/// Where a placed block goes, relative to the selected element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Position {
    Before,
    After,
    /// At the end of the element's content.
    #[default]
    Inside,
}

impl Placement {
    fn validate(&self) -> Result<(), String> {
        if self.page_types.is_empty() {
            return Err(
                "placement.pageTypes: name at least one of main, category, product, \
                 cart, notFound or any"
                    .into(),
            );
        }
        let selector = self.selector.trim();
        if selector.is_empty() || selector.len() > MAX_SELECTOR_BYTES {
            return Err(format!(
                "placement.selector: expected a CSS selector of 1 to {MAX_SELECTOR_BYTES} bytes"
            ));
        }
        if self
            .title
            .as_ref()
            .is_some_and(|t| t.len() > MAX_TITLE_BYTES)
        {
            return Err(format!(
                "placement.title: expected at most {MAX_TITLE_BYTES} bytes"
            ));
        }
        if let Some(template) = &self.template {
            if template.len() > MAX_TEMPLATE_BYTES {
                return Err(format!(
                    "placement.template: expected at most {MAX_TEMPLATE_BYTES} bytes, got {}",
                    template.len()
                ));
            }
            let (opens, closes) = (
                template.matches("{{#products}}").count(),
                template.matches("{{/products}}").count(),
            );
            if let Some(refusal) = active_markup(template) {
                return Err(format!(
                    "placement.template: {refusal}; a template is markup and placeholders \
                     only, shown on the shop's pages"
                ));
            }
            if opens != 1 || closes != 1 {
                return Err(
                    "placement.template: expected one {{#products}}...{{/products}} \
                 section, which is repeated for each product"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// Elements that run code, reach elsewhere, hold markup for later or animate an address
/// into a link; the browser script strips them too.
const ACTIVE_ELEMENTS: &[&str] = &[
    "script",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "base",
    "meta",
    "link",
    "noscript",
    "style",
    "template",
    "xmp",
    "noembed",
    "noframes",
    "plaintext",
    "form",
    "portal",
    "set",
    "animate",
    "animatetransform",
    "animatemotion",
    "discard",
];

/// What in a template could run code on the shop's pages, if anything: an element of
/// [`ACTIVE_ELEMENTS`], an event handler attribute (`on...=`), `srcdoc`, or a
/// `javascript:` address. A template is set with the site's key, which is kept on the
/// shop's servers, not in its pages; it must not turn that key into a way to run
/// script on every page. A check of the text, for a clear refusal at once: the browser
/// script, which parses the template, is what keeps a page safe (it keeps listed
/// attributes only, and checks addresses after the browser decoded them).
fn active_markup(template: &str) -> Option<String> {
    let lower = template.to_ascii_lowercase();
    for element in ACTIVE_ELEMENTS {
        let opening = format!("<{element}");
        let found = lower.match_indices(&opening).any(|(at, _)| {
            lower[at + opening.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_whitespace() || c == '>' || c == '/')
        });
        if found {
            return Some(format!("a <{element}> element is not allowed"));
        }
    }
    if lower.contains("javascript:") || lower.contains("vbscript:") {
        return Some("a javascript: address is not allowed".into());
    }
    if lower.contains("srcdoc") {
        return Some("a srcdoc attribute is not allowed".into());
    }
    let bytes = lower.as_bytes();
    for (at, _) in lower.match_indices("on") {
        // HTML's whitespace includes the form feed.
        let after_separator = at > 0
            && (bytes[at - 1].is_ascii_whitespace()
                || matches!(bytes[at - 1], b'/' | b'"' | b'\''));
        if !after_separator {
            continue;
        }
        let name_end = lower[at..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
            .map_or(lower.len(), |n| at + n);
        if name_end > at + 2 && lower[name_end..].trim_start().starts_with('=') {
            return Some(format!(
                "an event handler attribute ({}) is not allowed",
                &template[at..name_end]
            ));
        }
    }
    None
}

fn default_size() -> usize {
    DEFAULT_SIZE
}

/// What one variant of a block asks the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub variant_id: String,
    pub algorithms: Vec<Algorithm>,
    pub size: usize,
    pub filters: Filters,
}

impl Block {
    /// Reads a definition from JSON; errors name the field path.
    pub fn from_json(bytes: &[u8]) -> Result<Block, String> {
        let block: Block = read_json(bytes, "")?;
        block.validate()?;
        Ok(block)
    }

    fn validate(&self) -> Result<(), String> {
        check_size("size", self.size)?;
        self.filters.rules.validate("filters")?;
        if let Some(placement) = &self.placement {
            placement.validate()?;
        }
        let mut seen = Vec::new();
        for (i, variant) in self.variants.iter().enumerate() {
            let path = format!("variants[{i}]");
            check_variant_id(&variant.id).map_err(|e| format!("{path}.id: {e}"))?;
            if seen.contains(&variant.id.as_str()) {
                return Err(format!("{path}.id: {:?} is used twice", variant.id));
            }
            seen.push(&variant.id);
            if variant.share == 0 {
                return Err(format!(
                    "{path}.share: expected a positive weight, got 0 (remove the variant \
                     to stop showing it)"
                ));
            }
            if let Some(size) = variant.size {
                check_size(&format!("{path}.size"), size)?;
            }
            if let Some(filters) = &variant.filters {
                filters.rules.validate(&format!("{path}.filters"))?;
            }
        }
        Ok(())
    }

    /// The variant `visitor_key` sees, or the one named by `variant_id`.
    pub fn setup(
        &self,
        block_id: &str,
        visitor_key: Option<&str>,
        variant_id: Option<&str>,
    ) -> Result<Setup, String> {
        let variant = match variant_id {
            Some(DEFAULT_VARIANT) if self.variants.is_empty() => None,
            Some(id) => Some(self.variants.iter().find(|v| v.id == id).ok_or_else(|| {
                format!(
                    "variantId {id:?} was not found in block {block_id:?}; its variants are: {}",
                    self.variant_ids().join(", ")
                )
            })?),
            None => self.assign(block_id, visitor_key),
        };
        let Some(variant) = variant else {
            return Ok(Setup {
                variant_id: DEFAULT_VARIANT.to_string(),
                algorithms: self.algorithm.0.clone(),
                size: self.size,
                filters: self.filters.to_filters(),
            });
        };
        Ok(Setup {
            variant_id: variant.id.clone(),
            algorithms: variant
                .algorithm
                .as_ref()
                .unwrap_or(&self.algorithm)
                .0
                .clone(),
            size: variant.size.unwrap_or(self.size),
            filters: variant
                .filters
                .as_ref()
                .unwrap_or(&self.filters)
                .to_filters(),
        })
    }

    pub fn variant_ids(&self) -> Vec<&str> {
        if self.variants.is_empty() {
            vec![DEFAULT_VARIANT]
        } else {
            self.variants.iter().map(|v| v.id.as_str()).collect()
        }
    }

    /// A stable choice: the same visitor and block always give the same variant, and
    /// visitors spread over the variants in proportion to their shares. Without a
    /// visitor (a page asking anonymously) the first variant answers.
    fn assign(&self, block_id: &str, visitor_key: Option<&str>) -> Option<&Variant> {
        let first = self.variants.first()?;
        let Some(visitor) = visitor_key else {
            return Some(first);
        };
        let total: u64 = self.variants.iter().map(|v| u64::from(v.share)).sum();
        // SHA-256, not the std hasher: assignments must survive upgrades and restarts.
        let digest = sha2::Sha256::new()
            .chain_update(block_id.as_bytes())
            .chain_update([0])
            .chain_update(visitor.as_bytes())
            .finalize();
        let bucket = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % total;
        let mut upto = 0;
        self.variants.iter().find(|v| {
            upto += u64::from(v.share);
            bucket < upto
        })
    }
}

fn check_size(path: &str, size: usize) -> Result<(), String> {
    if (1..=MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(format!("{path}: expected 1 to {MAX_SIZE}, got {size}"))
    }
}

/// Block ids appear in container types and URLs: short, printable, no spaces.
pub fn check_block_id(id: &str) -> Result<(), String> {
    spoor_protocol::ids::check_id(id)
}

/// Variant ids end the container type after the last `_`, so they hold none.
fn check_variant_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to 32 characters of A-Z, a-z, 0-9, '-' or '.' (no '_': it separates \
             the block from the variant in container types), got {id:?}"
        ))
    }
}

/// The container type answers carry and impressions and clicks echo.
pub fn container_type(block_id: &str, variant_id: &str) -> String {
    format!("{block_id}_{variant_id}")
}

type SiteBlocks = BTreeMap<String, Arc<Block>>;

/// Every site's blocks, kept in `blocks.json` in the data directory (see
/// [`SettingsFile`]).
pub struct BlockRegistry {
    file: SettingsFile<SiteBlocks>,
}

impl BlockRegistry {
    pub fn open(data_dir: &Path) -> Result<BlockRegistry, SettingsError> {
        Ok(BlockRegistry {
            file: SettingsFile::open(data_dir, FILE_NAME, Setting::Block)?,
        })
    }

    pub(crate) fn file(&self) -> &dyn crate::file::SharedFile {
        &self.file
    }

    pub fn get(&self, site_id: &str, block_id: &str) -> Option<Arc<Block>> {
        self.file
            .read(|sites| sites.get(site_id)?.get(block_id).cloned())
    }

    pub fn list(&self, site_id: &str) -> Vec<(String, Arc<Block>)> {
        self.file.read(|sites| {
            sites
                .get(site_id)
                .map(|blocks| blocks.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }

    /// Defines or replaces a block; true when it is new.
    pub fn put(&self, site_id: &str, block_id: &str, block: Block) -> Result<bool, SettingsError> {
        check_block_id(block_id)
            .map_err(|e| SettingsError::invalid(Setting::Block, format!("blockId: {e}")))?;
        self.file.change(|sites| {
            let blocks = sites.entry(site_id.to_string()).or_default();
            Ok(blocks
                .insert(block_id.to_string(), Arc::new(block))
                .is_none())
        })
    }

    /// Removes a block; false when there was none.
    pub fn delete(&self, site_id: &str, block_id: &str) -> Result<bool, SettingsError> {
        if self.get(site_id, block_id).is_none() {
            return Ok(false);
        }
        self.file.change(|sites| {
            let removed = sites.get_mut(site_id).and_then(|b| b.remove(block_id));
            Ok(removed.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(json: serde_json::Value) -> Result<Block, String> {
        Block::from_json(json.to_string().as_bytes())
    }

    #[test]
    fn a_placements_template_carries_no_code() {
        let placed = |template: &str| {
            block(serde_json::json!({"algorithm": "popular", "placement": {
                "pageTypes": ["main"], "selector": "#recs", "template": template}}))
        };
        let fine = r#"<ul class="on-sale" title=one>{{#products}}<li style="x" data-on="1">
            <a href="{{url}}">{{name}}</a> on offer</li>{{/products}}</ul>"#;
        assert!(placed(fine).is_ok(), "{:?}", placed(fine).err());
        for (template, refusal) in [
            ("<script>x</script>", "a <script> element"),
            ("<IFRAME src=x>", "a <iframe> element"),
            (
                "<img src=x onerror=alert(1)>",
                "an event handler attribute (onerror)",
            ),
            (
                "<img src=x/ONLOAD = 'y'>",
                "an event handler attribute (ONLOAD)",
            ),
            ("<a href=\"JavaScript:alert(1)\">", "a javascript: address"),
            ("<iframe srcdoc=x>", "a <iframe> element"),
            ("<div srcdoc=x>", "a srcdoc attribute"),
            (
                "<img src=x\x0conerror=y>",
                "an event handler attribute (onerror)",
            ),
            (
                "<svg><a><set attributeName=href to=x /></a></svg>",
                "a <set> element",
            ),
            ("<template x-if=1></template>", "a <template> element"),
            ("<style>a{}</style>", "a <style> element"),
        ] {
            let template = format!("{template}{{{{#products}}}}{{{{/products}}}}");
            let error = placed(&template).unwrap_err();
            assert!(
                error.starts_with("placement.template: ") && error.contains(refusal),
                "{template}: {error}"
            );
        }
    }

    #[test]
    fn definitions_are_read_and_checked_with_paths() {
        let b = block(serde_json::json!({"algorithm": "similar, popular"})).unwrap();
        assert_eq!(b.algorithm.0, vec![Algorithm::Similar, Algorithm::Popular]);
        assert_eq!(b.size, DEFAULT_SIZE);
        assert!(b.filters.in_stock_only);
        let err = |json| block(json).unwrap_err();
        assert!(
            err(serde_json::json!({"algorithm": ["similar", "best"]}))
                .starts_with("algorithm: unknown algorithm \"best\"")
        );
        assert_eq!(
            err(serde_json::json!({"algorithm": "popular", "size": 0})),
            "size: expected 1 to 100, got 0"
        );
        assert!(
            err(serde_json::json!({"algorithm": "popular", "colour": 1}))
                .contains("unknown field `colour`")
        );
        assert_eq!(
            err(serde_json::json!({"algorithm": "popular",
                "variants": [{"id": "a", "share": 1}, {"id": "a_b", "share": 1}]})),
            "variants[1].id: expected 1 to 32 characters of A-Z, a-z, 0-9, '-' or '.' (no \
             '_': it separates the block from the variant in container types), got \"a_b\""
        );
        assert!(
            err(serde_json::json!({"algorithm": "popular",
                "variants": [{"id": "a", "share": "half"}]}))
            .starts_with("variants[0].share: invalid type")
        );
        assert_eq!(
            err(serde_json::json!({"algorithm": "popular",
                "filters": {"include": [{"name": "price", "min": 9, "max": 1}]}})),
            "filters.include[0].min: 9 is above max 1"
        );
    }

    #[test]
    fn block_filters_take_rules_and_visitor_exclusions_together() {
        let b = block(serde_json::json!({
            "algorithm": "popular",
            "filters": {"include": [{"name": "brand", "values": ["A"]}],
                        "excludeCart": true, "inStockOnly": false}
        }))
        .unwrap();
        let setup = b.setup("home", None, None).unwrap();
        assert_eq!(setup.variant_id, DEFAULT_VARIANT);
        assert!(setup.filters.exclude_cart && setup.filters.include_out_of_stock);
        assert_eq!(setup.filters.rules.include.len(), 1);
        let err = block(serde_json::json!({
            "algorithm": "popular", "filters": {"colour": []}
        }))
        .unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn assignment_is_stable_and_follows_the_shares() {
        let b = block(serde_json::json!({
            "algorithm": "popular",
            "variants": [
                {"id": "a", "share": 80},
                {"id": "b", "share": 20, "algorithm": "bestsellers", "size": 4}
            ]
        }))
        .unwrap();
        let mut counts = BTreeMap::new();
        for visitor in 0..10_000 {
            let key = format!("cookie-{visitor}");
            let setup = b.setup("home", Some(&key), None).unwrap();
            // Asked again, the same visitor sees the same variant.
            assert_eq!(b.setup("home", Some(&key), None).unwrap(), setup);
            *counts.entry(setup.variant_id).or_insert(0) += 1;
        }
        let a = counts["a"];
        assert!((7_700..8_300).contains(&a), "80% share got {a} of 10000");
        let b_setup = b.setup("home", None, Some("b")).unwrap();
        assert_eq!(b_setup.algorithms, vec![Algorithm::Bestsellers]);
        assert_eq!(b_setup.size, 4);
        assert!(
            b.setup("home", None, Some("c"))
                .unwrap_err()
                .contains("its variants are: a, b")
        );
        assert_eq!(b.setup("home", None, None).unwrap().variant_id, "a");
    }

    #[test]
    fn registry_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let registry = BlockRegistry::open(dir.path()).unwrap();
        let b = block(serde_json::json!({"algorithm": "popular", "size": 4})).unwrap();
        assert!(registry.put("S", "home", b.clone()).unwrap());
        assert!(!registry.put("S", "home", b.clone()).unwrap());
        assert!(registry.put("S", "bad id", b.clone()).is_err());
        let reopened = BlockRegistry::open(dir.path()).unwrap();
        assert_eq!(*reopened.get("S", "home").unwrap(), b);
        assert!(reopened.delete("S", "home").unwrap());
        assert!(!reopened.delete("S", "home").unwrap());
        assert!(
            BlockRegistry::open(dir.path())
                .unwrap()
                .list("S")
                .is_empty()
        );
    }
}
