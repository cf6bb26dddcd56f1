//! Each algorithm on small hand-built histories, through the state's own `apply`.

use serde_json::{Value, json};
use spoor_protocol::{Incoming, parse_value};

use super::query::{Algorithm, Filters, Request};
use super::sessions::{MAX_SUCCESSOR_DEPTH, NO_VISITOR, NextItemParams, Sessions, Voice};
use crate::contacts::identity::Identifier;
use crate::site::SiteState;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn apply(site: &mut SiteState, body: Value) {
    match parse_value(&body, T0).expect("a valid event") {
        Incoming::Event(event) => {
            let at = event.datetime.unwrap_or(T0);
            site.apply(&event, at)
        }
        _ => panic!("not an event"),
    }
}

fn general(event: &str, sc: &str, at: i64) -> Value {
    json!({"eventName": event, "siteId": "S", "datetime": T0 + at, "cookies": {"sc": sc}})
}

fn view(site: &mut SiteState, sc: &str, key: &str, at: i64) {
    apply(
        site,
        json!({"GeneralInfo": general("ProductPage", sc, at),
               "ProductPage": {"Product": {"productKey": key, "price": "5 USD"}}}),
    );
}

fn order(site: &mut SiteState, sc: &str, number: &str, lines: &[(&str, u32)], at: i64) {
    let products: Vec<Value> = lines
        .iter()
        .map(|(key, quantity)| json!({"product_id": key, "unit_price": "1", "quantity": quantity}))
        .collect();
    apply(
        site,
        json!({"GeneralInfo": general("PurchasedItems", sc, at),
               "PurchasedItems": {"OrderNumber": number, "Products": products}}),
    );
}

fn cart(site: &mut SiteState, sc: &str, keys: &[&str], at: i64) {
    let products: Vec<Value> = keys
        .iter()
        .map(|key| json!({"productKey": key, "price": 1, "quantity": 1}))
        .collect();
    apply(
        site,
        json!({"GeneralInfo": general("StatusCart", sc, at),
               "StatusCart": {"GUID": "g", "Products": products}}),
    );
}

fn update(site: &mut SiteState, products: Value, at: i64) {
    apply(
        site,
        json!({"GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S", "datetime": T0 + at},
               "ProductUpdate": products}),
    );
}

fn ask(site: &SiteState, algorithms: &[Algorithm], sc: Option<&str>, keys: &[&str]) -> Vec<String> {
    ask_with(site, algorithms, sc, keys, None, Filters::default())
}

fn ask_with(
    site: &SiteState,
    algorithms: &[Algorithm],
    sc: Option<&str>,
    keys: &[&str],
    category: Option<&str>,
    filters: Filters,
) -> Vec<String> {
    let contact = sc.and_then(|sc| site.contact(&Identifier::Sc(sc.into())));
    let request = Request {
        algorithms: algorithms.to_vec(),
        contact,
        product_keys: keys.to_vec(),
        category_key: category,
        limit: 10,
        now: T0 + 10 * MINUTE,
        filters,
        next_item: None,
        baskets: None,
    };
    let answer = site.recommend(&request);
    answer
        .products
        .iter()
        .map(|p| p.product_key.clone())
        .collect()
}

/// Plain session-kNN: no decays, no popularity correction, no successor voice, so that
/// scores are cosine similarities that can be worked out by hand.
fn plain() -> NextItemParams {
    NextItemParams {
        prefix_decay: f32::INFINITY,
        recency_half_life_ms: f64::INFINITY,
        neighbour_decay: f32::INFINITY,
        successor_weight: 0.0,
        idf_power: 0.0,
        seen_weight: 1.0,
        ..NextItemParams::default()
    }
}

#[test]
fn neighbours_vote_by_cosine_similarity() {
    let mut sessions = Sessions::default();
    for items in [&[1, 2, 3][..], &[1, 4], &[4, 5]] {
        let s = sessions.start(0, NO_VISITOR);
        for item in items {
            sessions.push(s, *item, 0);
        }
    }
    // [1] shares one item with [1,2,3] (1/sqrt 3 = .577) and with [1,4] (1/sqrt 2 = .707):
    // item 1 gets both, 4 gets .707, 2 and 3 get .577 each (ties: lower number first).
    let answer = sessions.next_items(&[1], 0, None, &plain(), 10);
    let ranked: Vec<u32> = answer.iter().map(|(item, _)| *item).collect();
    assert_eq!(ranked, vec![1, 4, 2, 3]);
    assert!((answer[1].1 - 0.707 / 1.284).abs() < 1e-3, "{answer:?}");
    // A session is not its own neighbour.
    let own = sessions.next_items(&[4, 5], 0, Some(2), &plain(), 10);
    let ranked: Vec<u32> = own.iter().map(|(item, _)| *item).collect();
    assert_eq!(ranked, vec![1, 4]);
}

/// Sessions of `items`, each started at its time (ms).
fn sessions_of(list: &[(&[u32], i64)]) -> Sessions {
    let mut sessions = Sessions::default();
    for (items, at) in list {
        let s = sessions.start(*at, NO_VISITOR);
        for item in *items {
            sessions.push(s, *item, *at);
        }
    }
    sessions
}

fn ranked(answer: Vec<(u32, f32)>) -> Vec<u32> {
    answer.into_iter().map(|(item, _)| item).collect()
}

#[test]
fn the_trend_puts_what_many_view_lately_first() {
    const DAY: i64 = 86_400_000;
    // 2 and 3 follow 1 once each; 3 was viewed by two other sessions in the last days,
    // 2 by three sessions long ago.
    let sessions = sessions_of(&[
        (&[2, 9], 0),
        (&[2, 8], 0),
        (&[2, 7], 0),
        (&[1, 2], 30 * DAY),
        (&[1, 3], 30 * DAY),
        (&[3, 6], 39 * DAY),
        (&[3, 5], 39 * DAY),
    ]);
    let now = 39 * DAY;
    let steady = ranked(sessions.next_items(&[1], now, None, &plain(), 2));
    assert_eq!(
        steady,
        vec![1, 2],
        "ties go to the lower number without the trend"
    );
    let trending = NextItemParams {
        trend_power: 0.5,
        trend_window_ms: 7.0 * DAY as f64,
        ..plain()
    };
    let answer = sessions.next_items(&[1], now, None, &trending, 3);
    assert_eq!(ranked(answer.clone()), vec![1, 3, 2], "{answer:?}");
    // 3: two sessions within the week (the one with 1, 9 days ago, is not): x sqrt 3.
    assert!(
        (answer[1].1 / answer[2].1 - 3f32.sqrt()).abs() < 1e-4,
        "{answer:?}"
    );
}

#[test]
fn what_no_one_viewed_lately_counts_less() {
    const DAY: i64 = 86_400_000;
    // 2 and 3 each follow 1 once; 2 was last viewed 59 days ago, 3 today.
    let sessions = sessions_of(&[
        (&[1, 2], 40 * DAY),
        (&[1, 3], 40 * DAY),
        (&[3, 4], 99 * DAY),
    ]);
    let now = 99 * DAY;
    let fading = NextItemParams {
        stale_half_life_ms: 30.0 * DAY as f64,
        ..plain()
    };
    let answer = sessions.next_items(&[1], now, None, &fading, 3);
    assert_eq!(ranked(answer.clone()), vec![3, 1, 2], "{answer:?}");
    // 2 idle 59 days of a 30-day half-life; 3 not idle.
    let expected = (-59.0f32 / 30.0).exp2();
    assert!(
        (answer[2].1 / answer[0].1 - expected).abs() < 1e-4,
        "{answer:?}"
    );
}

#[test]
fn the_successors_of_earlier_items_count_at_depth() {
    // After 1 came 5 (twice), after 2 came 6 (once); a visitor viewed 1 then 2.
    let sessions = sessions_of(&[(&[1, 5], 0), (&[1, 5], 0), (&[2, 6], 0)]);
    let successors = NextItemParams {
        neighbour_weight: 0.0,
        successor_weight: 1.0,
        ..plain()
    };
    let last_only = sessions.next_items(&[1, 2], 0, None, &successors, 5);
    assert_eq!(ranked(last_only), vec![6]);
    let deeper = NextItemParams {
        successor_depth: 1.0,
        ..successors
    };
    // 5: 2 votes x e^-1 = .74 of the top; 6: 1 vote.
    let answer = sessions.next_items(&[1, 2], 0, None, &deeper, 5);
    assert_eq!(ranked(answer.clone()), vec![6, 5], "{answer:?}");
    assert!(
        (answer[1].1 - 2.0 * (-1.0f32).exp()).abs() < 1e-4,
        "{answer:?}"
    );
}

#[test]
fn a_voice_alone_hears_no_demand_weights_and_a_deep_setting_is_capped() {
    let tuned = NextItemParams {
        trend_power: 0.3,
        stale_half_life_ms: 1.0,
        successor_depth: 1e9,
        ..NextItemParams::default()
    };
    for voice in Voice::ALL {
        let alone = tuned.alone(voice);
        assert_eq!((alone.trend_power, alone.stale_half_life_ms), (0.0, 0.0));
    }
    // 150 products in a row, 140 of them asked about (latest 1): a depth past the cap
    // hears as far back as the cap (56 items), not all 140.
    let chain: Vec<u32> = (1..=150).collect();
    let sessions = sessions_of(&[(&chain, 0)]);
    let successors = |depth: f32| NextItemParams {
        neighbour_weight: 0.0,
        successor_weight: 1.0,
        successor_depth: depth,
        ..plain()
    };
    let s: Vec<u32> = (1..=140).rev().collect();
    let capped = sessions.next_items(&s, 0, None, &successors(MAX_SUCCESSOR_DEPTH), 200);
    let asked = sessions.next_items(&s, 0, None, &successors(1e9), 200);
    assert_eq!(asked, capped);
    assert!(capped.len() < 100, "{} answers", capped.len());
}

#[test]
fn neighbours_meeting_on_a_rare_item_are_closer() {
    // `s` = [2, 1]: 1 is in every session, 2 in one; the neighbour through 2 votes for 4,
    // the one through 1 alone for 3, two of them.
    let sessions = sessions_of(&[
        (&[1, 3], 0),
        (&[1, 3], 0),
        (&[1, 2, 4], 0),
        (&[1, 5], 0),
        (&[1, 6], 0),
    ]);
    let plain_votes = ranked(sessions.next_items(&[2, 1], 0, None, &plain(), 10));
    let position = |list: &[u32], item| list.iter().position(|i| *i == item).unwrap();
    assert!(
        position(&plain_votes, 3) < position(&plain_votes, 4),
        "{plain_votes:?}"
    );
    let rare_first = NextItemParams {
        shared_idf_power: -1.0,
        ..plain()
    };
    let weighed = ranked(sessions.next_items(&[2, 1], 0, None, &rare_first, 10));
    assert!(position(&weighed, 4) < position(&weighed, 3), "{weighed:?}");
}

#[test]
fn items_whose_weight_is_negligible_are_not_read() {
    let mut sessions = Sessions::default();
    // Neighbours through an item long ago in `s` (1), and through its last (10), whose
    // sessions reach their votes (2; 90 and 11) only far from where they meet `s`.
    let mut far_vote = vec![10];
    far_vote.extend(100..160);
    far_vote.push(90);
    for items in [&[1, 2][..], &[10, 11], &far_vote] {
        let s = sessions.start(0, NO_VISITOR);
        for item in items {
            sessions.push(s, *item, 0);
        }
    }
    let params = NextItemParams {
        successor_weight: 0.0,
        idf_power: 0.0,
        seen_weight: 1.0,
        ..NextItemParams::default()
    };
    // 1 at 40 views back weighs e^-20 of the last view's weight: not read. 90 is 61
    // positions from 10 in its session, a vote of e^-7.6: not cast.
    let mut s = vec![1];
    s.extend(1000..1039);
    s.push(10);
    let ranked: Vec<u32> = sessions
        .next_items(&s, 0, None, &params, 100)
        .iter()
        .map(|(item, _)| *item)
        .collect();
    assert!(ranked.contains(&11) && ranked.contains(&100), "{ranked:?}");
    assert!(!ranked.contains(&2) && !ranked.contains(&90), "{ranked:?}");
}

#[test]
fn a_view_counts_at_once() {
    let mut site = SiteState::default();
    view(&mut site, "v1", "a", 0);
    view(&mut site, "v1", "b", MINUTE);
    assert_eq!(ask(&site, &[Algorithm::Similar], None, &["a"]), vec!["b"]);
    view(&mut site, "v2", "a", 2 * MINUTE);
    view(&mut site, "v2", "c", 3 * MINUTE);
    view(&mut site, "v3", "a", 4 * MINUTE);
    view(&mut site, "v3", "c", 5 * MINUTE);
    assert_eq!(
        ask(&site, &[Algorithm::Similar], None, &["a"]),
        vec!["c", "b"]
    );
}

#[test]
fn popular_and_bestsellers() {
    let mut site = SiteState::default();
    for (sc, key) in [
        ("v1", "a"),
        ("v2", "b"),
        ("v3", "b"),
        ("v4", "c"),
        ("v5", "b"),
        ("v6", "c"),
    ] {
        view(&mut site, sc, key, 0);
    }
    // One buyer takes 500 of a, two buy c: bestsellers count orders, not units.
    order(&mut site, "v1", "1", &[("a", 500), ("c", 1)], MINUTE);
    order(&mut site, "v2", "2", &[("c", 2), ("c", 1)], MINUTE);
    assert_eq!(
        ask(&site, &[Algorithm::Popular], None, &[]),
        vec!["b", "c", "a"]
    );
    assert_eq!(
        ask(&site, &[Algorithm::Bestsellers], None, &[]),
        vec!["c", "a"]
    );
    // The page's own product is never recommended.
    assert_eq!(
        ask(&site, &[Algorithm::Popular], None, &["b"]),
        vec!["c", "a"]
    );
}

#[test]
fn what_the_shop_marks_not_recommendable_is_never_recommended() {
    let mut site = SiteState::default();
    for (sc, key) in [("v1", "POST"), ("v2", "POST"), ("v3", "mug"), ("v1", "mug")] {
        view(&mut site, sc, key, 0);
    }
    order(&mut site, "v1", "1", &[("POST", 1), ("mug", 1)], MINUTE);
    order(&mut site, "v2", "2", &[("POST", 1), ("mug", 1)], MINUTE);
    update(
        &mut site,
        json!([{"product_id": "POST", "name": "Postage", "recommendable": false}]),
        2 * MINUTE,
    );
    for algorithm in [
        Algorithm::Popular,
        Algorithm::Bestsellers,
        Algorithm::NewArrivals,
    ] {
        assert_eq!(
            ask(&site, &[algorithm], None, &[]),
            vec!["mug"],
            "{algorithm:?}"
        );
    }
    assert!(
        !ask(&site, &[Algorithm::BoughtTogether], None, &["mug"]).contains(&"POST".to_string())
    );
    // Marked again as a product: recommended again.
    update(
        &mut site,
        json!([{"product_id": "POST", "recommendable": "true"}]),
        3 * MINUTE,
    );
    assert_eq!(
        ask(&site, &[Algorithm::Bestsellers], None, &[]),
        vec!["POST", "mug"]
    );
}

#[test]
fn category_and_new_arrivals() {
    let mut site = SiteState::default();
    update(
        &mut site,
        json!([{"product_id": "old", "unit_price": "1", "category_id": ["shoes"]},
               {"product_id": "hat", "unit_price": "1", "category_id": ["hats"]}]),
        0,
    );
    update(
        &mut site,
        json!([{"product_id": "new", "unit_price": "1", "category_id": ["shoes"]}]),
        MINUTE,
    );
    view(&mut site, "v1", "old", 2 * MINUTE);
    view(&mut site, "v2", "old", 2 * MINUTE);
    view(&mut site, "v3", "hat", 2 * MINUTE);
    view(&mut site, "v3", "hat", 2 * MINUTE);
    view(&mut site, "v3", "hat", 2 * MINUTE);
    view(&mut site, "v4", "new", 2 * MINUTE);
    let shoes = |algorithm| {
        ask_with(
            &site,
            &[algorithm],
            None,
            &[],
            Some("shoes"),
            Filters::default(),
        )
    };
    assert_eq!(shoes(Algorithm::PopularInCategory), vec!["old", "new"]);
    assert_eq!(shoes(Algorithm::NewArrivals), vec!["new", "old"]);
    assert_eq!(
        ask(&site, &[Algorithm::NewArrivals], None, &[]),
        vec!["new", "hat", "old"]
    );
}

#[test]
fn recently_viewed_and_personal() {
    let mut site = SiteState::default();
    // Two earlier visitors went a -> b -> c.
    for sc in ["v1", "v2"] {
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            view(&mut site, sc, key, i as i64 * MINUTE);
        }
    }
    view(&mut site, "me", "x", 0);
    view(&mut site, "me", "a", 5 * MINUTE);
    view(&mut site, "me", "b", 6 * MINUTE);
    assert_eq!(
        ask(&site, &[Algorithm::RecentlyViewed], Some("me"), &["b"]),
        vec!["a", "x"]
    );
    // The visitor's session [x, a, b] meets both neighbours: c is what they went on to.
    let personal = ask(&site, &[Algorithm::Personal], Some("me"), &["b"]);
    assert_eq!(personal[0], "c", "{personal:?}");
    assert!(!personal.contains(&"b".to_string()));
}

#[test]
fn bought_together_and_cart_cross_sell() {
    let mut site = SiteState::default();
    order(&mut site, "v1", "1", &[("a", 1), ("b", 1)], 0);
    order(&mut site, "v2", "2", &[("a", 1), ("c", 1)], 0);
    order(&mut site, "v3", "3", &[("a", 1), ("b", 1)], 0);
    order(&mut site, "v4", "4", &[("d", 1), ("e", 1)], 0);
    assert_eq!(
        ask(&site, &[Algorithm::BoughtTogether], None, &["a"]),
        vec!["b", "c"]
    );
    cart(&mut site, "me", &["a", "b"], MINUTE);
    // From everything in the cart, and nothing already in it.
    assert_eq!(
        ask(&site, &[Algorithm::CartCrossSell], Some("me"), &[]),
        vec!["c"]
    );
    // Bought by the visitor: excluded on request.
    let filters = Filters {
        exclude_bought: true,
        ..Filters::default()
    };
    assert_eq!(
        ask_with(
            &site,
            &[Algorithm::BoughtTogether],
            Some("v2"),
            &["a"],
            None,
            filters
        ),
        vec!["b"]
    );
}

#[test]
fn out_of_stock_is_left_out_and_chains_fall_back() {
    let mut site = SiteState::default();
    update(
        &mut site,
        json!([{"product_id": "gone", "unit_price": "1", "isInStock": 0},
               {"product_id": "here", "unit_price": "1", "isInStock": 1}]),
        0,
    );
    for sc in ["v1", "v2", "v3"] {
        view(&mut site, sc, "gone", MINUTE);
    }
    view(&mut site, "v4", "here", MINUTE);
    assert_eq!(ask(&site, &[Algorithm::Popular], None, &[]), vec!["here"]);
    let all = Filters {
        include_out_of_stock: true,
        ..Filters::default()
    };
    assert_eq!(
        ask_with(&site, &[Algorithm::Popular], None, &[], None, all),
        vec!["gone", "here"]
    );
    // An unknown product: similar has nothing, popular fills in, and the answer says why.
    let request = Request {
        algorithms: vec![Algorithm::Similar, Algorithm::Popular],
        contact: None,
        product_keys: vec!["unknown"],
        category_key: None,
        limit: 5,
        now: T0 + MINUTE,
        filters: Filters::default(),
        next_item: None,
        baskets: None,
    };
    let answer = site.recommend(&request);
    assert_eq!(answer.products.len(), 1);
    assert_eq!(answer.sources, vec![Algorithm::Popular]);
    assert_eq!(
        answer.notes,
        vec!["similar: nothing left after the filters"]
    );
}

#[test]
fn catalogue_rules_include_exclude_and_boost() {
    let mut site = SiteState::default();
    // Views first (they carry a price of 5), then the catalogue's own prices.
    // Popularity: a (4 views), b (3), c (2), d (1).
    for (key, views) in [("a", 4), ("b", 3), ("c", 2), ("d", 1)] {
        for v in 0..views {
            view(&mut site, &format!("{key}{v}"), key, MINUTE);
        }
    }
    update(
        &mut site,
        json!([{"product_id": "a", "unit_price": "10", "brand": "Acme", "tag_color": ["red"]},
               {"product_id": "b", "unit_price": "20", "brand": "Zeta"},
               {"product_id": "c", "unit_price": "30", "brand": "Acme"},
               {"product_id": "d", "unit_price": "40", "brand": "Zeta", "tag_color": ["red"]}]),
        2 * MINUTE,
    );
    let with = |rules: Value| Filters {
        rules: serde_json::from_value(rules).unwrap(),
        ..Filters::default()
    };
    let popular = |filters| ask_with(&site, &[Algorithm::Popular], None, &[], None, filters);
    assert_eq!(
        popular(with(
            json!({"include": [{"name": "brand", "values": ["acme"]}]})
        )),
        vec!["a", "c"]
    );
    assert_eq!(
        popular(with(
            json!({"include": [{"name": "price", "min": 15, "max": 35}]})
        )),
        vec!["b", "c"]
    );
    assert_eq!(
        popular(with(
            json!({"exclude": [{"name": "tag_color", "values": ["red"]}]})
        )),
        vec!["b", "c"]
    );
    // A boost reorders without excluding: red first (a, d), then the rest in popularity order.
    assert_eq!(
        popular(with(
            json!({"should": [{"name": "tag_color", "values": ["red"]}]})
        )),
        vec!["a", "d", "b", "c"]
    );
    // Boosted products still respect the limit: the best two of the reordered pool.
    let request = Request {
        algorithms: vec![Algorithm::Popular],
        contact: None,
        product_keys: vec![],
        category_key: None,
        limit: 2,
        now: T0 + MINUTE,
        filters: with(json!({"should": [{"name": "brand", "values": ["Zeta"]}]})),
        next_item: None,
        baskets: None,
    };
    let keys: Vec<&str> = site
        .recommend(&request)
        .products
        .iter()
        .map(|p| p.product_key.as_str())
        .collect();
    assert_eq!(keys, vec!["b", "d"]);
}
