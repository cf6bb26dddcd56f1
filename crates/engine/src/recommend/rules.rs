//! Business rules on catalogue fields, written as the vendor's blocks write them: lists
//! of `{name, values}` conditions to include, exclude, or prefer ("should": a boost,
//! never an exclusion). Prices take a range instead: `{name: "price", min, max}`.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use crate::catalogue::Product;

/// Rules of each kind (include, exclude, should) a block or a request may give, and values
/// a rule may list.
pub const MAX_RULES: usize = 16;
pub const MAX_RULE_VALUES: usize = 64;

/// One condition on one field of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `category`, `brand`, `price`, `product_id`, `isInStock`, a `tag_*` field, or any
    /// other field of the product feed.
    pub name: String,
    /// The product matches when its field holds any of these (brands compare without
    /// regard to case; categories match an id or a segment of the category path).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strings_or_numbers"
    )]
    pub values: Vec<String>,
    /// For `price`: the lowest price that matches, inclusive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "amount"
    )]
    pub min: Option<Decimal>,
    /// For `price`: the highest price that matches, inclusive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "amount"
    )]
    pub max: Option<Decimal>,
}

/// What a rule's name refers to.
enum Field<'a> {
    ProductId,
    Category,
    Brand,
    Price,
    InStock,
    Tag(&'a str),
    Feed(&'a str),
}

impl Rule {
    fn field(&self) -> Field<'_> {
        match self.name.as_str() {
            "product_id" | "productKey" | "id" => Field::ProductId,
            "category" | "categoryKey" | "category_id" => Field::Category,
            "brand" => Field::Brand,
            "price" | "unit_price" => Field::Price,
            "isInStock" | "in_stock" => Field::InStock,
            tag if tag.starts_with("tag_") => Field::Tag(tag),
            other => Field::Feed(other),
        }
    }

    /// Whether `product` meets the condition. A product without the field does not.
    pub fn matches(&self, product: &Product) -> bool {
        let any = |candidate: &str| self.values.iter().any(|v| v == candidate);
        match self.field() {
            Field::ProductId => any(&product.product_key),
            Field::Category => self.values.iter().any(|c| in_category(product, c)),
            Field::Brand => product
                .brand
                .as_ref()
                .is_some_and(|b| self.values.iter().any(|v| v.eq_ignore_ascii_case(b))),
            Field::Price => product.price.as_ref().is_some_and(|p| {
                let amount = p.value.amount;
                self.min.is_none_or(|min| amount >= min) && self.max.is_none_or(|max| amount <= max)
            }),
            // A product whose stock is not known counts as in stock, as everywhere else.
            Field::InStock => {
                let in_stock = product.in_stock.as_ref().is_none_or(|s| s.value);
                any(if in_stock { "1" } else { "0" })
                    || any(if in_stock { "true" } else { "false" })
            }
            Field::Tag(tag) => product
                .tags
                .get(tag)
                .is_some_and(|held| held.iter().any(|h| any(h))),
            Field::Feed(name) => product.extra.get(name).is_some_and(|held| match held {
                serde_json::Value::Array(items) => items.iter().any(|i| json_is_any(i, &any)),
                single => json_is_any(single, &any),
            }),
        }
    }

    fn validate(&self, path: &str) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err(format!(
                "{path}.name: required, the catalogue field to test"
            ));
        }
        match self.field() {
            Field::Price => {
                if self.min.is_none() && self.max.is_none() {
                    return Err(format!(
                        "{path}: a price rule needs min, max or both (e.g. {{\"name\": \
                         \"price\", \"min\": 10, \"max\": 50}})"
                    ));
                }
                if let (Some(min), Some(max)) = (self.min, self.max)
                    && min > max
                {
                    return Err(format!("{path}.min: {min} is above max {max}"));
                }
            }
            _ if self.values.is_empty() => {
                return Err(format!(
                    "{path}.values: expected a non-empty list of values for {:?}",
                    self.name
                ));
            }
            _ if self.min.is_some() || self.max.is_some() => {
                return Err(format!(
                    "{path}: min and max apply to price only, not to {:?}",
                    self.name
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn json_is_any(value: &serde_json::Value, any: &impl Fn(&str) -> bool) -> bool {
    match value {
        serde_json::Value::String(s) => any(s),
        serde_json::Value::Number(n) => any(&n.to_string()),
        serde_json::Value::Bool(b) => any(if *b { "true" } else { "false" }),
        _ => false,
    }
}

pub fn in_category(product: &Product, category: &str) -> bool {
    product.category_ids.iter().any(|c| c == category)
        || product.category_path.iter().any(|c| c == category)
}

/// Feed values are strings, but people write `"values": [42]` for ids: both are taken.
fn strings_or_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Number(serde_json::Number),
        Flag(bool),
    }
    let values = Vec::<Scalar>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            Scalar::Text(s) => s,
            Scalar::Number(n) => n.to_string(),
            Scalar::Flag(b) => b.to_string(),
        })
        .collect())
}

/// A price bound, written as a JSON number (`25.5`) or a string (`"25.50"`).
fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let text = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s,
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a price such as 25.5, got {other}"
            )));
        }
    };
    text.trim().parse::<Decimal>().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("expected a price such as 25.5, got {text:?}"))
    })
}

/// Deserialises `bytes`, with errors that start with the path of the offending field
/// (under `root`, when the document is itself a field).
pub fn read_json<T: serde::de::DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (root, path.as_str()) {
            ("", ".") => inner.to_string(),
            ("", _) => format!("{path}: {inner}"),
            (_, ".") => format!("{root}: {inner}"),
            _ => format!("{root}.{path}: {inner}"),
        }
    })
}

/// The rules of a block or a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// A product must meet every one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Rule>,
    /// A product meeting any of these is left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Rule>,
    /// Products meeting more of these come first among an algorithm's candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Rule>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.should.is_empty()
    }

    /// Whether the include and exclude rules let `product` through.
    pub fn admit(&self, product: &Product) -> bool {
        self.include.iter().all(|r| r.matches(product))
            && !self.exclude.iter().any(|r| r.matches(product))
    }

    /// How many "should" rules `product` meets.
    pub fn preference(&self, product: &Product) -> usize {
        self.should.iter().filter(|r| r.matches(product)).count()
    }

    /// Both rule sets together (a block's and a request's).
    pub fn extended(&self, more: &Rules) -> Rules {
        let join = |a: &[Rule], b: &[Rule]| [a, b].concat();
        Rules {
            include: join(&self.include, &more.include),
            exclude: join(&self.exclude, &more.exclude),
            should: join(&self.should, &more.should),
        }
    }

    /// Reads rules from JSON (a request's `filters` parameter) and checks them; errors
    /// name the field path under `filters`.
    pub fn from_json(bytes: &[u8]) -> Result<Rules, String> {
        let rules: Rules = read_json(bytes, "filters")?;
        rules.validate("filters")?;
        Ok(rules)
    }

    /// Checks every rule; the error names the rule by its path under `path`.
    pub fn validate(&self, path: &str) -> Result<(), String> {
        for (list, rules) in [
            ("include", &self.include),
            ("exclude", &self.exclude),
            ("should", &self.should),
        ] {
            // Each candidate product is tested against every rule and value: a public
            // request must not make that work large.
            if rules.len() > MAX_RULES {
                return Err(format!(
                    "{path}.{list}: expected at most {MAX_RULES} rules, got {}",
                    rules.len()
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                let at = format!("{path}.{list}[{i}]");
                if rule.values.len() > MAX_RULE_VALUES {
                    return Err(format!(
                        "{at}.values: expected at most {MAX_RULE_VALUES} values, got {}",
                        rule.values.len()
                    ));
                }
                rule.validate(&at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        serde_json::from_value(serde_json::json!({
            "productKey": "p1",
            "brand": "Acme",
            "price": {"value": {"amount": "25.50", "currency": "USD"}, "at": 1},
            "categoryPath": ["Shoes", "Boots"],
            "categoryIds": ["17"],
            "tags": {"tag_color": ["red", "black"]},
            "extra": {"g:product_type": "Outdoor", "sizes": [41, 42]},
            "firstSeen": 1,
            "priceHistory": [],
            "stockHistory": []
        }))
        .unwrap()
    }

    fn rule(json: serde_json::Value) -> Rule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_field_kind_matches_and_misses() {
        let p = product();
        let cases = [
            (
                serde_json::json!({"name": "brand", "values": ["acme"]}),
                true,
            ),
            (
                serde_json::json!({"name": "brand", "values": ["Other"]}),
                false,
            ),
            (
                serde_json::json!({"name": "category", "values": ["Boots"]}),
                true,
            ),
            (
                serde_json::json!({"name": "category", "values": [17]}),
                true,
            ),
            (
                serde_json::json!({"name": "category", "values": ["Hats"]}),
                false,
            ),
            (
                serde_json::json!({"name": "price", "min": 20, "max": 25.5}),
                true,
            ),
            (serde_json::json!({"name": "price", "max": 25.49}), false),
            (
                serde_json::json!({"name": "tag_color", "values": ["red"]}),
                true,
            ),
            (
                serde_json::json!({"name": "tag_color", "values": ["blue"]}),
                false,
            ),
            (
                serde_json::json!({"name": "g:product_type", "values": ["Outdoor"]}),
                true,
            ),
            (serde_json::json!({"name": "sizes", "values": [42]}), true),
            (serde_json::json!({"name": "sizes", "values": [43]}), false),
            (
                serde_json::json!({"name": "isInStock", "values": ["1"]}),
                true,
            ),
            (
                serde_json::json!({"name": "product_id", "values": ["p1", "p2"]}),
                true,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(rule(json.clone()).matches(&p), expected, "{json}");
        }
    }

    #[test]
    fn include_exclude_and_should_combine() {
        let p = product();
        let rules: Rules = serde_json::from_value(serde_json::json!({
            "include": [{"name": "brand", "values": ["Acme"]}],
            "exclude": [{"name": "tag_color", "values": ["black"]}],
            "should": [{"name": "category", "values": ["Boots"]}, {"name": "brand", "values": ["Acme"]}]
        }))
        .unwrap();
        assert!(!rules.admit(&p), "the exclude rule wins");
        assert_eq!(rules.preference(&p), 2);
        let loose = Rules {
            exclude: Vec::new(),
            ..rules
        };
        assert!(loose.admit(&p));
    }

    #[test]
    fn bad_rules_are_named_by_path() {
        let rules: Rules = serde_json::from_value(serde_json::json!({
            "include": [{"name": "brand", "values": ["A"]}, {"name": "price"}]
        }))
        .unwrap();
        let err = rules.validate("filters").unwrap_err();
        assert!(
            err.starts_with("filters.include[1]: a price rule needs min"),
            "{err}"
        );
        let rules: Rules = serde_json::from_value(serde_json::json!({
            "should": [{"name": "brand", "values": []}]
        }))
        .unwrap();
        assert_eq!(
            rules.validate("f").unwrap_err(),
            "f.should[0].values: expected a non-empty list of values for \"brand\""
        );
    }
}
