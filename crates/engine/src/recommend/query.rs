//! Questions to the models: an algorithm, what the page is about (products, a category,
//! the visitor) and how many products; answers are product keys, best first, filtered.

use std::fmt;

use crate::catalogue::{Catalogue, Product};
use crate::contact::Contact;

use super::{ItemId, Recommender};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Most viewed products, views decaying with a half-life of a week.
    Popular,
    /// Most units sold, decaying with a half-life of two weeks.
    Bestsellers,
    /// Most viewed among the products of `categoryKey`.
    PopularInCategory,
    /// The products the site mentioned first most recently (in `categoryKey` if given).
    NewArrivals,
    /// The visitor's recently viewed products, latest first.
    RecentlyViewed,
    /// Also viewed: what sessions that viewed the given products viewed near them.
    Similar,
    /// Bought in the same orders as the given products.
    BoughtTogether,
    /// Bought together with everything in the visitor's cart (or the given products).
    CartCrossSell,
    /// The next products for the visitor's current session, other than those it viewed;
    /// without a session, from their recent views, then their orders.
    Personal,
    /// For a search that found nothing: personal when the visitor has a history, popular
    /// otherwise.
    SearchFallback,
}

impl Algorithm {
    pub const ALL: [Algorithm; 10] = [
        Algorithm::Popular,
        Algorithm::Bestsellers,
        Algorithm::PopularInCategory,
        Algorithm::NewArrivals,
        Algorithm::RecentlyViewed,
        Algorithm::Similar,
        Algorithm::BoughtTogether,
        Algorithm::CartCrossSell,
        Algorithm::Personal,
        Algorithm::SearchFallback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Popular => "popular",
            Algorithm::Bestsellers => "bestsellers",
            Algorithm::PopularInCategory => "popular-in-category",
            Algorithm::NewArrivals => "new-arrivals",
            Algorithm::RecentlyViewed => "recently-viewed",
            Algorithm::Similar => "similar",
            Algorithm::BoughtTogether => "bought-together",
            Algorithm::CartCrossSell => "cart-cross-sell",
            Algorithm::Personal => "personal",
            Algorithm::SearchFallback => "search-fallback",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        Algorithm::ALL.map(Algorithm::name).join(", ")
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Business rules applied to every answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Keep products the catalogue says are out of stock (dropped by default).
    pub include_out_of_stock: bool,
    /// Drop what is in the visitor's cart.
    pub exclude_cart: bool,
    /// Drop what the visitor has bought.
    pub exclude_bought: bool,
}

#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Tried in order until `limit` products are found: a fallback chain.
    pub algorithms: Vec<Algorithm>,
    pub contact: Option<&'a Contact>,
    /// The page's products (the product page, or a list); never recommended themselves.
    pub product_keys: Vec<&'a str>,
    pub category_key: Option<&'a str>,
    pub limit: usize,
    pub now: i64,
    pub filters: Filters,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'a> {
    pub products: Vec<&'a Product>,
    /// Which algorithm gave each product.
    pub sources: Vec<Algorithm>,
    /// Why an algorithm of the chain gave fewer products than asked, in plain words.
    pub notes: Vec<String>,
}

/// Candidates beyond the limit, so that filters leave enough.
fn overfetch(limit: usize) -> usize {
    limit * 4 + 20
}

pub(crate) fn recommend<'a>(
    recommender: &'a Recommender,
    catalogue: &'a Catalogue,
    request: &Request<'a>,
) -> Answer<'a> {
    let mut answer = Answer {
        products: Vec::new(),
        sources: Vec::new(),
        notes: Vec::new(),
    };
    let excluded = excluded_keys(request);
    for algorithm in &request.algorithms {
        if answer.products.len() >= request.limit {
            break;
        }
        let candidates = match candidates(recommender, catalogue, request, *algorithm) {
            Ok(candidates) => candidates,
            Err(note) => {
                answer.notes.push(format!("{algorithm}: {note}"));
                continue;
            }
        };
        let before = answer.products.len();
        for key in candidates {
            if answer.products.len() >= request.limit {
                break;
            }
            if excluded.contains(&key) || answer.products.iter().any(|p| p.product_key == key) {
                continue;
            }
            let Some(product) = catalogue.get(key) else {
                continue;
            };
            let out_of_stock = product.in_stock.as_ref().is_some_and(|s| !s.value);
            if out_of_stock && !request.filters.include_out_of_stock {
                continue;
            }
            answer.products.push(product);
            answer.sources.push(*algorithm);
        }
        if answer.products.len() == before {
            answer
                .notes
                .push(format!("{algorithm}: nothing left after the filters"));
        }
    }
    answer
}

fn excluded_keys<'a>(request: &Request<'a>) -> Vec<&'a str> {
    let mut excluded = request.product_keys.clone();
    if let Some(contact) = request.contact {
        if request.filters.exclude_cart
            && let Some(cart) = &contact.cart
        {
            excluded.extend(cart.lines.iter().map(|l| l.product_key.as_str()));
        }
        if request.filters.exclude_bought {
            let bought = contact.orders.iter().flat_map(|o| &o.lines);
            excluded.extend(bought.map(|l| l.product_key.as_str()));
        }
    }
    excluded
}

type Candidates<'a> = Result<Vec<&'a str>, String>;

fn candidates<'a>(
    recommender: &'a Recommender,
    catalogue: &'a Catalogue,
    request: &Request<'a>,
    algorithm: Algorithm,
) -> Candidates<'a> {
    let want = overfetch(request.limit);
    let keys = |items: &[ItemId]| -> Vec<&'a str> {
        items.iter().map(|i| recommender.items.key(*i)).collect()
    };
    match algorithm {
        Algorithm::Popular => Ok(keys(&recommender.views.ranked())),
        Algorithm::Bestsellers => Ok(keys(&recommender.sales.ranked())),
        Algorithm::PopularInCategory => {
            let category = request
                .category_key
                .ok_or("needs categoryKey, the category the page shows")?;
            let ranked = recommender.views.ranked();
            let in_category = ranked
                .iter()
                .map(|i| recommender.items.key(*i))
                .filter(|key| catalogue.get(key).is_some_and(|p| in_category(p, category)))
                .take(want)
                .collect();
            Ok(in_category)
        }
        Algorithm::NewArrivals => Ok(catalogue.newest(want, |p| {
            request.category_key.is_none_or(|c| in_category(p, c))
        })),
        Algorithm::RecentlyViewed => {
            let contact = request
                .contact
                .ok_or("needs a known visitor (sc or contactId)")?;
            Ok(contact
                .viewed_products
                .iter()
                .map(|seen| seen.key.as_str())
                .collect())
        }
        Algorithm::Similar => {
            let context = page_products_or_last_viewed(request)?;
            Ok(recommender
                .next_items(&context, request.now, want)
                .into_iter()
                .map(|(key, _)| key)
                .collect())
        }
        Algorithm::BoughtTogether => {
            if request.product_keys.is_empty() {
                return Err("needs productKey or productKeys".into());
            }
            Ok(bought_with(
                recommender,
                &request.product_keys,
                request.now,
                want,
            ))
        }
        Algorithm::CartCrossSell => {
            let cart: Vec<&str> = match request.contact.and_then(|c| c.cart.as_ref()) {
                Some(cart) if !cart.lines.is_empty() => {
                    cart.lines.iter().map(|l| l.product_key.as_str()).collect()
                }
                _ if !request.product_keys.is_empty() => request.product_keys.clone(),
                _ => return Err("needs a visitor with a cart, or productKeys".into()),
            };
            let mut found = bought_with(recommender, &cart, request.now, want);
            found.retain(|key| !cart.contains(key));
            Ok(found)
        }
        Algorithm::Personal => personal(recommender, request, want),
        Algorithm::SearchFallback => match personal(recommender, request, want) {
            Ok(found) if !found.is_empty() => Ok(found),
            _ => Ok(keys(&recommender.views.ranked())),
        },
    }
}

fn page_products_or_last_viewed<'a>(request: &Request<'a>) -> Result<Vec<&'a str>, String> {
    if !request.product_keys.is_empty() {
        return Ok(request.product_keys.clone());
    }
    match request.contact.and_then(|c| c.viewed_products.first()) {
        Some(seen) => Ok(vec![seen.key.as_str()]),
        None => Err("needs productKey, or a visitor who viewed a product".into()),
    }
}

fn bought_with<'a>(
    recommender: &'a Recommender,
    keys: &[&str],
    now: i64,
    want: usize,
) -> Vec<&'a str> {
    let basket = recommender.known(keys);
    let found = recommender
        .baskets
        .next_items(&basket, now, None, &recommender.basket, want);
    found
        .into_iter()
        .map(|(item, _)| recommender.items.key(item))
        .filter(|key| !keys.contains(key))
        .collect()
}

fn personal<'a>(
    recommender: &'a Recommender,
    request: &Request<'a>,
    want: usize,
) -> Candidates<'a> {
    let contact = request
        .contact
        .ok_or("needs a known visitor (sc or contactId)")?;
    let session = recommender.current_session(contact.id, request.now);
    let (items, own) = match session {
        Some(session) => (recommender.sessions.items(session).to_vec(), Some(session)),
        None => {
            let mut recent: Vec<&str> = contact
                .viewed_products
                .iter()
                .map(|seen| seen.key.as_str())
                .collect();
            recent.reverse();
            (recommender.known(&recent), None)
        }
    };
    if !items.is_empty() {
        let found =
            recommender
                .sessions
                .next_items(&items, request.now, own, &recommender.next_item, want);
        // What the visitor has just looked at is the recently-viewed block's business.
        return Ok(found
            .into_iter()
            .filter(|(item, _)| !items.contains(item))
            .map(|(item, _)| recommender.items.key(item))
            .collect());
    }
    let bought: Vec<&str> = contact
        .orders
        .iter()
        .flat_map(|o| &o.lines)
        .map(|l| l.product_key.as_str())
        .collect();
    if bought.is_empty() {
        return Err("the visitor has no views or orders yet".into());
    }
    Ok(bought_with(recommender, &bought, request.now, want))
}

fn in_category(product: &Product, category: &str) -> bool {
    product.category_ids.iter().any(|c| c == category)
        || product.category_path.iter().any(|c| c == category)
}
