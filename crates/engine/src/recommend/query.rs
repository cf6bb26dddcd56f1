//! Questions to the models: an algorithm, what the page is about (products, a category,
//! the visitor) and how many products; answers are product keys, best first, filtered.

use std::collections::HashSet;
use std::fmt;

use crate::catalogue::{Catalogue, Product};
use crate::contacts::contact::Contact;

use rustc_hash::FxHashMap;

use super::rules::{Rules, in_category};
use super::sessions::{MAX_SESSION_ITEMS, normalise, top};
use super::{BasketSettings, NextItemParams, Recommender, RepeatParams};
use crate::items::ItemId;

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
    /// Include, exclude and prefer by catalogue fields.
    pub rules: Rules,
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
    /// The site's tuned next-item settings; the built-in ones when `None`.
    pub next_item: Option<&'a NextItemParams>,
    /// The site's tuned blends over orders; the built-in ones when `None`.
    pub baskets: Option<&'a BasketSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'a> {
    pub products: Vec<&'a Product>,
    /// Which algorithm gave each product.
    pub sources: Vec<Algorithm>,
    /// Why an algorithm of the chain gave fewer products than asked, in plain words.
    pub notes: Vec<String>,
}

/// Candidates beyond the limit, so that filters leave enough; more when rules on
/// catalogue fields may turn many away.
fn overfetch(limit: usize, rules: &Rules) -> usize {
    let base = limit * 4 + 20;
    if rules.include.is_empty() && rules.exclude.is_empty() {
        base
    } else {
        base * 5
    }
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
    let excluded = excluded_keys(recommender, request);
    let rules = &request.filters.rules;
    let mut chosen: HashSet<&str> = HashSet::new();
    // Candidates the whole chain may still read: filters nothing matches would otherwise
    // read rankings of millions, under the state's read lock, for one public request.
    let mut unread = READ_AT_MOST;
    for algorithm in &request.algorithms {
        let room = request.limit.saturating_sub(answer.products.len());
        if room == 0 {
            break;
        }
        let candidates = match candidates(recommender, catalogue, request, *algorithm) {
            Ok(candidates) => candidates,
            Err(note) => {
                answer.notes.push(format!("{algorithm}: {note}"));
                continue;
            }
        };
        // With preferences, a wider pool is gathered and the preferred come first in it.
        let pool = if rules.should.is_empty() {
            room
        } else {
            overfetch(room, rules)
        };
        let mut picked: Vec<&Product> = Vec::new();
        for key in candidates.take(unread) {
            unread -= 1;
            if picked.len() >= pool {
                break;
            }
            if excluded.contains(&key) || chosen.contains(key) {
                continue;
            }
            let Some(product) = catalogue.get(key) else {
                continue;
            };
            let out_of_stock = product.in_stock.as_ref().is_some_and(|s| !s.value);
            if (out_of_stock && !request.filters.include_out_of_stock)
                || !product.recommendable()
                || !rules.admit(product)
            {
                continue;
            }
            chosen.insert(key);
            picked.push(product);
        }
        if picked.is_empty() {
            answer
                .notes
                .push(format!("{algorithm}: nothing left after the filters"));
            continue;
        }
        if !rules.should.is_empty() {
            // Stable: among equally preferred products the algorithm's order stands.
            picked.sort_by_key(|p| std::cmp::Reverse(rules.preference(p)));
            picked.truncate(room);
        }
        answer
            .sources
            .extend(std::iter::repeat_n(*algorithm, picked.len()));
        answer.products.extend(picked);
    }
    answer
}

/// Candidates one request reads at most, over its whole chain of algorithms.
const READ_AT_MOST: usize = 20_000;
/// Lines of a contact's orders a request reads to leave out what was bought.
const EXCLUDED_BOUGHT_AT_MOST: usize = 2_000;
/// A category up to this size is sorted whole; a larger one is read off a site-wide list.
const SORT_UP_TO: usize = 5_000;

/// Keys of products not to show: a set, since a contact's orders hold many lines and
/// every candidate is looked up in it.
fn excluded_keys<'a>(recommender: &'a Recommender, request: &Request<'a>) -> HashSet<&'a str> {
    let mut excluded: HashSet<&str> = request.product_keys.iter().copied().collect();
    if let Some(contact) = request.contact {
        if request.filters.exclude_cart
            && let Some(cart) = &contact.cart
        {
            excluded.extend(cart.lines.iter().map(|l| recommender.key(l.item)));
        }
        if request.filters.exclude_bought {
            // The latest orders' lines: a contact may hold 1,000 orders of 500 lines, too
            // many to gather for every request.
            let bought = contact.orders.iter().rev().flat_map(|o| &o.lines);
            excluded.extend(
                bought
                    .take(EXCLUDED_BOUGHT_AT_MOST)
                    .map(|l| recommender.key(l.item)),
            );
        }
    }
    excluded
}

/// An algorithm's product keys, best first; the caller takes as many as it needs (ranked
/// lists are long, and are read only as far as the filters require).
type Candidates<'a> = Result<Box<dyn Iterator<Item = &'a str> + 'a>, String>;

fn candidates<'a>(
    recommender: &'a Recommender,
    catalogue: &'a Catalogue,
    request: &Request<'a>,
    algorithm: Algorithm,
) -> Candidates<'a> {
    let want = overfetch(request.limit, &request.filters.rules);
    let ranked = |ranking: std::sync::Arc<Vec<ItemId>>| {
        (0..ranking.len()).map(move |i| recommender.items.key(ranking[i]))
    };
    let listed = |keys: Vec<&'a str>| -> Candidates<'a> { Ok(Box::new(keys.into_iter())) };
    match algorithm {
        Algorithm::Popular => Ok(Box::new(ranked(recommender.views.ranked()))),
        Algorithm::Bestsellers => Ok(Box::new(ranked(recommender.sales.ranked()))),
        Algorithm::PopularInCategory => {
            let category = request
                .category_key
                .ok_or("needs categoryKey, the category the page shows")?;
            Ok(popular_in(recommender, catalogue, category))
        }
        Algorithm::NewArrivals => match request.category_key {
            None => Ok(Box::new(catalogue.newest_first())),
            Some(category) if catalogue.in_category(category).len() > SORT_UP_TO => {
                // A large category's newest are read off the whole catalogue's arrivals,
                // where they come often enough.
                let newest = catalogue.newest_first().take(READ_AT_MOST);
                Ok(Box::new(newest.filter(move |key| {
                    catalogue.get(key).is_some_and(|p| in_category(p, category))
                })))
            }
            Some(category) => {
                let mut members: Vec<&Product> = catalogue
                    .in_category(category)
                    .iter()
                    .filter_map(|key| catalogue.get(key))
                    .collect();
                members.sort_unstable_by(|a, b| {
                    b.first_seen
                        .cmp(&a.first_seen)
                        .then_with(|| a.product_key.cmp(&b.product_key))
                });
                listed(
                    members
                        .into_iter()
                        .map(|p| p.product_key.as_str())
                        .collect(),
                )
            }
        },
        Algorithm::RecentlyViewed => {
            let contact = request
                .contact
                .ok_or("needs a known visitor (sc or contactId)")?;
            Ok(Box::new(
                contact
                    .viewed_products
                    .iter()
                    .map(|viewed| recommender.key(viewed.item)),
            ))
        }
        Algorithm::Similar => {
            let context = page_products_or_last_viewed(recommender, request)?;
            let params = request.next_item.unwrap_or(&recommender.next_item);
            listed(
                recommender
                    .next_items_with(params, &context, request.now, want)
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect(),
            )
        }
        Algorithm::BoughtTogether => {
            if request.product_keys.is_empty() {
                return Err("needs productKey or productKeys".into());
            }
            listed(bought_with(
                recommender,
                request,
                &request.product_keys,
                want,
            ))
        }
        Algorithm::CartCrossSell => {
            let cart: Vec<&str> = match request.contact.and_then(|c| c.cart.as_ref()) {
                Some(cart) if !cart.lines.is_empty() => {
                    cart.lines.iter().map(|l| recommender.key(l.item)).collect()
                }
                _ if !request.product_keys.is_empty() => request.product_keys.clone(),
                _ => return Err("needs a visitor with a cart, or productKeys".into()),
            };
            let mut found = bought_with(recommender, request, &cart, want);
            found.retain(|key| !cart.contains(key));
            listed(found)
        }
        Algorithm::Personal => listed(personal(recommender, request, want)?),
        Algorithm::SearchFallback => match personal(recommender, request, want) {
            Ok(found) if !found.is_empty() => listed(found),
            _ => Ok(Box::new(ranked(recommender.views.ranked()))),
        },
    }
}

/// A category's most viewed products. A small category is sorted by the view counts; a
/// large one is read off the site-wide ranking, where its products come often enough.
fn popular_in<'a>(
    recommender: &'a Recommender,
    catalogue: &'a Catalogue,
    category: &'a str,
) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    let members = catalogue.in_category(category);
    if members.len() > SORT_UP_TO {
        let ranking = recommender.views.ranked();
        let ranked =
            (0..ranking.len().min(READ_AT_MOST)).map(move |i| recommender.items.key(ranking[i]));
        return Box::new(
            ranked.filter(move |key| catalogue.get(key).is_some_and(|p| in_category(p, category))),
        );
    }
    let mut viewed: Vec<(f64, &str)> = members
        .iter()
        .filter_map(|key| {
            let item = recommender.items.get(key)?;
            let score = recommender.views.score(item);
            (score > 0.0).then_some((score, key.as_str()))
        })
        .collect();
    viewed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    Box::new(viewed.into_iter().map(|(_, key)| key))
}

fn page_products_or_last_viewed<'a>(
    recommender: &'a Recommender,
    request: &Request<'a>,
) -> Result<Vec<&'a str>, String> {
    if !request.product_keys.is_empty() {
        return Ok(request.product_keys.clone());
    }
    match request.contact.and_then(|c| c.viewed_products.first()) {
        Some(viewed) => Ok(vec![recommender.key(viewed.item)]),
        None => Err("needs productKey, or a visitor who viewed a product".into()),
    }
}

fn bought_with<'a>(
    recommender: &'a Recommender,
    request: &Request<'a>,
    keys: &[&str],
    want: usize,
) -> Vec<&'a str> {
    let basket = recommender.known(keys);
    let tuned = request.baskets.map(BasketSettings::together);
    let params = tuned.as_ref().unwrap_or(&recommender.basket);
    let found = recommender
        .baskets
        .next_items(&basket, request.now, None, params, want);
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
) -> Result<Vec<&'a str>, String> {
    let contact = request
        .contact
        .ok_or("needs a known visitor (sc or contactId)")?;
    let session = recommender.current_session(contact.id, request.now);
    let (items, own) = match session {
        Some(session) => (recommender.sessions.items(session).to_vec(), Some(session)),
        None => {
            let mut recent: Vec<ItemId> = contact.viewed_products.iter().map(|v| v.item).collect();
            recent.reverse();
            (recent, None)
        }
    };
    if !items.is_empty() {
        let params = request.next_item.unwrap_or(&recommender.next_item);
        let found = recommender
            .sessions
            .next_items(&items, request.now, own, params, want);
        // What the visitor has just looked at is the recently-viewed block's business.
        return Ok(found
            .into_iter()
            .filter(|(item, _)| !items.contains(item))
            .map(|(item, _)| recommender.items.key(item))
            .collect());
    }
    if contact.orders.is_empty() {
        return Err("the visitor has no views or orders yet".into());
    }
    let settings = request.baskets.map_or(&recommender.repeat, |b| &b.personal);
    Ok(from_orders(
        recommender,
        settings,
        contact,
        request.now,
        want,
    ))
}

/// For a visitor known by their orders: the blend of [`RepeatParams`]. With a repeat
/// weight of 0, nothing they bought is offered again but as a bestseller (the
/// request's `excludeBought` leaves those out too).
fn from_orders<'a>(
    recommender: &'a Recommender,
    settings: &RepeatParams,
    contact: &Contact,
    now: i64,
    want: usize,
) -> Vec<&'a str> {
    let mut repeat: FxHashMap<ItemId, f32> = FxHashMap::default();
    // The bought items as one basket, the latest orders last, as the model reads sessions.
    let mut context: Vec<ItemId> = Vec::new();
    for (age, order) in contact.orders.iter().rev().enumerate() {
        let weight = settings.decay.powi(age as i32);
        for line in &order.lines {
            let item = line.item;
            *repeat.entry(item).or_default() += weight;
            if !context.contains(&item) && context.len() < MAX_SESSION_ITEMS {
                context.push(item);
            }
        }
    }
    context.reverse();
    let reach = want + context.len();
    let params = NextItemParams {
        neighbour_weight: settings.together_weight,
        cooccurrence_weight: settings.cooccurrence_weight,
        ..recommender.basket.clone()
    };
    let found = (recommender.baskets).next_items(&context, now, None, &params, reach);
    let mut scores: FxHashMap<ItemId, f32> = found.into_iter().collect();
    normalise(&mut scores);
    if settings.weight > 0.0 {
        normalise(&mut repeat);
        for (item, score) in repeat {
            *scores.entry(item).or_default() += settings.weight * score;
        }
    } else {
        scores.retain(|item, _| !context.contains(item));
    }
    // After the repeats' filter: the bestsellers are the bestsellers, whoever bought them
    // (popularity alone is the plain bestsellers list a shop could show).
    if settings.popularity_weight > 0.0 {
        add_bestsellers(recommender, &mut scores, settings.popularity_weight, reach);
    }
    top(scores, want)
        .into_iter()
        .map(|(item, _)| recommender.items.key(item))
        .collect()
}

/// Adds the `reach` bestsellers to `scores`, the best at `weight`.
fn add_bestsellers(
    recommender: &Recommender,
    scores: &mut FxHashMap<ItemId, f32>,
    weight: f32,
    reach: usize,
) {
    let ranked = recommender.sales.ranked();
    let Some(best) = ranked.first().map(|item| recommender.sales.score(*item)) else {
        return;
    };
    if best <= 0.0 {
        return;
    }
    for item in ranked.iter().take(reach) {
        let share = (recommender.sales.score(*item) / best) as f32;
        *scores.entry(*item).or_default() += weight * share;
    }
}
