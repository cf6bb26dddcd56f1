//! The demo shop's products and history: the Online Retail data set's, or a generated
//! shop's (a seeded catalogue, and visitors who browse, fill carts and buy).

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::load::{self, LoadSummary, Shaping};

const DAY_MS: i64 = 86_400_000;

/// A product as the shop's own pages show it.
#[derive(Clone, Debug)]
pub struct Product {
    pub key: String,
    pub name: String,
    pub price: String,
    pub category: &'static str,
}

/// A category of the shop: its id, title, and the words that put a product in it.
pub struct Category {
    pub id: &'static str,
    pub title: &'static str,
    words: &'static [&'static str],
}

pub const CATEGORIES: &[Category] = &[
    Category {
        id: "christmas",
        title: "Christmas",
        words: &[
            "CHRISTMAS",
            "XMAS",
            "ADVENT",
            "BAUBLE",
            "WREATH",
            "STOCKING",
        ],
    },
    Category {
        id: "lights",
        title: "Lights & candles",
        words: &["CANDLE", "LIGHT", "LANTERN", "LAMP"],
    },
    Category {
        id: "bags",
        title: "Bags",
        words: &["BAG", "PURSE", "SHOPPER", "BACKPACK"],
    },
    Category {
        id: "kitchen",
        title: "Kitchen & tea",
        words: &[
            "MUG", "CUP", "TEA", "CAKE", "LUNCH", "BOWL", "PLATE", "JAR", "BOTTLE", "TRAY",
            "SPOON", "BAKING", "NAPKIN",
        ],
    },
    Category {
        id: "paper",
        title: "Cards & paper",
        words: &[
            "CARD", "WRAP", "PAPER", "NOTEBOOK", "PENCIL", "STICKER", "ENVELOPE",
        ],
    },
    Category {
        id: "home",
        title: "Home",
        words: &[
            "SIGN", "FRAME", "CLOCK", "CUSHION", "DOORMAT", "HOOK", "MIRROR", "HANGER", "HOLDER",
            "DRAWER", "BOX", "TIN",
        ],
    },
    Category {
        id: "toys",
        title: "Toys & games",
        words: &[
            "TOY", "GAME", "DOLL", "PUZZLE", "SPACEBOY", "SKIPPING", "KITE",
        ],
    },
    Category {
        id: "gifts",
        title: "Gifts & more",
        words: &[],
    },
];

pub fn category_of(name: &str) -> &'static Category {
    let upper = name.to_uppercase();
    CATEGORIES
        .iter()
        .find(|c| c.words.iter().any(|w| upper.contains(w)))
        .unwrap_or(&CATEGORIES[CATEGORIES.len() - 1])
}

pub fn category(id: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.id == id)
}

/// A product key as a segment of a path.
pub fn url_path(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The catalogue's fields the shop adds: its page, its picture (drawn by the shop) and
/// its category. Paths, not addresses: the shop is the same whatever host name it is
/// opened by (127.0.0.1, localhost, the machine's name).
fn product_fields(key: &str, name: &str) -> Map<String, Value> {
    let path = url_path(key);
    let fields = json!({
        "url": format!("/product/{path}"),
        "imgurl": format!("/img/{path}.svg"),
        "category_id": [category_of(name).id],
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub struct Catalogue {
    pub products: Vec<Product>,
    /// What the shop's site would have sent, in time order.
    pub events: Vec<Value>,
}

impl Catalogue {
    /// UCI Online Retail, its year of orders moved to end today.
    pub fn online_retail(file: &Path, site: &str) -> anyhow::Result<Catalogue> {
        let mut lines = without_cancelled_sales(load::read_lines(file)?);
        // Postage, bank charges, fees and manual entries have codes that are no product's.
        lines.retain(|line| load::is_merchandise(&line.stock_code));
        let last = lines.iter().map(|l| l.at).max().unwrap_or(0);
        let now = spoor_server::now_ms();
        let fields = |key: &str, name: &str| product_fields(key, name);
        let shaping = Shaping {
            site,
            shift_ms: now - DAY_MS - last,
            product_fields: &fields,
            views_from_ms: Some(last - VIEWED_DAYS * DAY_MS),
        };
        let events = load::events(&lines, &shaping, &mut LoadSummary::default());
        Ok(Catalogue {
            products: products_of(&events),
            events,
        })
    }

    /// A shop of its own: a catalogue and two months of visitors, the same at every run.
    pub fn generated(site: &str) -> Catalogue {
        let products = generated_products();
        let events = Visits::new(site, &products).all();
        Catalogue { products, events }
    }
}

/// The data set's last days whose orders get views of their products before them.
const VIEWED_DAYS: i64 = 45;

/// The lines without the sales that a cancellation takes back whole (the same customer,
/// product and quantity): a few of them are of tens of thousands of units, which would
/// top every bestseller list of the demo.
fn without_cancelled_sales(lines: Vec<load::Line>) -> Vec<load::Line> {
    let mut cancelled: std::collections::HashMap<(Option<String>, String, i64), usize> =
        std::collections::HashMap::new();
    for line in lines.iter().filter(|l| l.invoice.starts_with('C')) {
        *cancelled
            .entry((
                line.customer.clone(),
                line.stock_code.clone(),
                -line.quantity,
            ))
            .or_default() += 1;
    }
    lines
        .into_iter()
        .filter(|line| {
            if line.invoice.starts_with('C') {
                return true;
            }
            let key = (
                line.customer.clone(),
                line.stock_code.clone(),
                line.quantity,
            );
            match cancelled.get_mut(&key) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    false
                }
                _ => true,
            }
        })
        .collect()
}

/// The products of the catalogue's ProductUpdate events, each once, as last updated.
fn products_of(events: &[Value]) -> Vec<Product> {
    let mut products: Vec<Product> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let updates = events
        .iter()
        .filter(|e| e["GeneralInfo"]["eventName"] == "ProductUpdate")
        .flat_map(|e| e["ProductUpdate"].as_array().into_iter().flatten());
    for update in updates {
        let text = |field: &str| update[field].as_str().unwrap_or_default().to_string();
        let product = Product {
            key: text("product_id"),
            name: text("name"),
            price: text("unit_price"),
            category: category_of(&text("name")).id,
        };
        match seen.get(&product.key) {
            Some(&at) => products[at] = product,
            None => {
                seen.insert(product.key.clone(), products.len());
                products.push(product);
            }
        }
    }
    products
}

const STYLES: &[&str] = &[
    "Red", "Blue", "Vintage", "Spotty", "Floral", "Retro", "Green", "Pink", "Striped", "Heart",
];

/// Things of each category, as the generated shop names them.
fn things(category: &str) -> &'static [&'static str] {
    match category {
        "christmas" => &["Bauble", "Advent Calendar", "Wreath", "Stocking"],
        "lights" => &["Candle", "Lantern", "Lamp", "Tealight Holder"],
        "bags" => &["Tote Bag", "Lunch Bag", "Shopper", "Backpack"],
        "kitchen" => &["Mug", "Teapot", "Bowl", "Cake Tin"],
        "paper" => &["Greeting Card", "Notebook", "Wrapping Paper", "Sticker Set"],
        "home" => &["Cushion", "Doormat", "Clock", "Photo Frame"],
        "toys" => &["Puzzle", "Doll", "Kite", "Skipping Rope"],
        _ => &["Gift Set", "Keyring", "Umbrella", "Scarf"],
    }
}

fn generated_products() -> Vec<Product> {
    let mut random = fastrand::Rng::with_seed(20_101_201);
    let mut products = Vec::new();
    for category in CATEGORIES {
        for thing in things(category.id) {
            for n in 0..6 {
                let style = STYLES[(n + thing.len()) % STYLES.len()];
                let name = format!("{style} {thing}");
                let pence = random.u32(150..4_000);
                products.push(Product {
                    key: format!("G{:04}", products.len() + 1),
                    name,
                    price: format!("{}.{:02}", pence / 100, pence % 100),
                    category: category.id,
                });
            }
        }
    }
    products
}

/// Generated visitors: each fond of a category, most of whose views are in it; some
/// fill a cart and buy, often with the product that goes with the first they chose.
struct Visits<'a> {
    site: &'a str,
    products: &'a [Product],
    random: fastrand::Rng,
    events: Vec<(i64, Value)>,
}

const VISITORS: usize = 2_000;
const DAYS: i64 = 60;

impl<'a> Visits<'a> {
    fn new(site: &'a str, products: &'a [Product]) -> Visits<'a> {
        Visits {
            site,
            products,
            random: fastrand::Rng::with_seed(42),
            events: Vec::new(),
        }
    }

    fn all(mut self) -> Vec<Value> {
        let now = spoor_server::now_ms();
        let start = now - DAYS * DAY_MS;
        let catalogue: Vec<Value> = self
            .products
            .iter()
            .map(|p| {
                load::product_update(&p.key, &p.name, &p.price, product_fields(&p.key, &p.name))
            })
            .collect();
        for chunk in catalogue.chunks(load::PRODUCTS_PER_UPDATE) {
            let info = json!({"eventName": "ProductUpdate", "siteId": self.site,
                              "datetime": start});
            self.events
                .push((start, json!({"GeneralInfo": info, "ProductUpdate": chunk})));
        }
        for visitor in 0..VISITORS {
            let at = start + self.random.i64(DAY_MS..DAYS * DAY_MS - DAY_MS);
            self.visit(visitor, at);
        }
        self.events.sort_by_key(|(at, _)| *at);
        self.events.into_iter().map(|(_, event)| event).collect()
    }

    fn info(&self, event: &str, visitor: usize, at: i64) -> Value {
        json!({"eventName": event, "siteId": self.site, "datetime": at,
               "cookies": {"sc": format!("demo-visitor-{visitor}")}})
    }

    fn visit(&mut self, visitor: usize, mut at: i64) {
        let fond = &CATEGORIES[self.random.usize(..CATEGORIES.len())];
        let liked: Vec<usize> = (0..self.products.len())
            .filter(|&i| self.products[i].category == fond.id)
            .collect();
        let mut viewed = Vec::new();
        for _ in 0..self.random.usize(3..9) {
            let i = if self.random.f32() < 0.75 && !liked.is_empty() {
                liked[self.random.usize(..liked.len())]
            } else {
                self.random.usize(..self.products.len())
            };
            at += self.random.i64(20_000..120_000);
            let product = &self.products[i];
            let event = json!({"GeneralInfo": self.info("ProductPage", visitor, at),
                "ProductPage": {"productKey": product.key, "price": product.price}});
            self.events.push((at, event));
            viewed.push(i);
        }
        if self.random.f32() < 0.35 {
            let first = viewed[self.random.usize(..viewed.len())];
            let mut cart = vec![first];
            if self.random.f32() < 0.6 {
                cart.push(companion(first, self.products.len()));
            }
            at += 60_000;
            self.buy(visitor, at, &cart);
        }
    }

    fn buy(&mut self, visitor: usize, at: i64, cart: &[usize]) {
        let guid = format!("demo-cart-{visitor}");
        let lines: Vec<Value> = cart
            .iter()
            .map(|&i| {
                let p = &self.products[i];
                json!({"productKey": p.key, "price": p.price, "quantity": 1})
            })
            .collect();
        let event = json!({"GeneralInfo": self.info("StatusCart", visitor, at),
                           "StatusCart": {"GUID": guid, "Products": lines}});
        self.events.push((at, event));
        if self.random.f32() < 0.6 {
            let bought: Vec<Value> = cart
                .iter()
                .map(|&i| {
                    let p = &self.products[i];
                    json!({"product_id": p.key, "unit_price": p.price, "quantity": 1})
                })
                .collect();
            let event = json!({"GeneralInfo": self.info("PurchasedItems", visitor, at + 120_000),
                "PurchasedItems": {"OrderNumber": format!("demo-order-{visitor}"), "GUID": guid,
                                   "Products": bought}});
            self.events.push((at + 120_000, event));
        }
    }
}

/// The product that goes with product `i`: the same place in another category's list.
fn companion(i: usize, products: usize) -> usize {
    (i + products / 3 + 7) % products
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_put_products_in_categories() {
        assert_eq!(
            category_of("WHITE HANGING HEART T-LIGHT HOLDER").id,
            "lights"
        );
        assert_eq!(
            category_of("PAPER CHAIN KIT 50'S CHRISTMAS").id,
            "christmas"
        );
        assert_eq!(category_of("JUMBO BAG RED RETROSPOT").id, "bags");
        assert_eq!(category_of("POSTAGE").id, "gifts");
    }

    #[test]
    fn the_generated_shop_is_the_same_at_every_run() {
        let (a, b) = (generated_products(), generated_products());
        assert!(a.len() > 100, "{}", a.len());
        assert_eq!(
            a.iter().map(|p| &p.name).collect::<Vec<_>>(),
            b.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
        let events = Visits::new("DEMO", &a).all();
        assert!(events.len() > 10_000, "{}", events.len());
        assert_eq!(products_of(&events).len(), a.len());
        let bought = events
            .iter()
            .filter(|e| e["GeneralInfo"]["eventName"] == "PurchasedItems")
            .count();
        assert!(bought > 100, "{bought}");
    }
}
