//! The demo shop's pages: server-rendered HTML that loads spoor's browser script with the
//! vendor's loader snippet and makes the `eS(...)` calls a shop makes. Its cart lives in
//! the visitor's browser (`shop.js`); the blocks are placed by spoor's script.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::catalogue::{CATEGORIES, Catalogue, Product, category, url_path};

const SHOP_JS: &str = include_str!("shop.js");
const SHOP_CSS: &str = include_str!("shop.css");
/// Products a category page lists; the blocks show the rest.
const CATEGORY_PAGE_PRODUCTS: usize = 48;

pub struct Shop {
    products: Vec<Product>,
    by_key: HashMap<String, usize>,
    site: String,
    /// Where pages load spoor's script from: `spoor`'s address, or, where spoor listens
    /// on every interface, the host the page was opened by, at spoor's port.
    spoor: SpoorAddress,
}

pub enum SpoorAddress {
    Fixed(String),
    PageHostAtPort(u16),
}

impl Shop {
    pub fn new(catalogue: Catalogue, site: &str, spoor: SpoorAddress) -> Shop {
        let by_key = catalogue
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), i))
            .collect();
        Shop {
            products: catalogue.products,
            by_key,
            site: site.to_string(),
            spoor,
        }
    }

    fn product(&self, key: &str) -> Option<&Product> {
        self.by_key.get(key).map(|&i| &self.products[i])
    }

    /// A whole page: the header, `body`, spoor's loader snippet and the page's calls.
    fn page(&self, title: &str, body: &str, calls: &str) -> Html<String> {
        let mut nav = String::new();
        for category in CATEGORIES {
            let _ = write!(
                nav,
                r#"<a href="/category/{}">{}</a>"#,
                category.id,
                escape(category.title)
            );
        }
        Html(format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · spoor demo shop</title>
<link rel="stylesheet" href="/shop.css">
<link rel="icon" href="data:,">
<script>
(function (win, doc, tagName, siteKey) {{
  var el = doc.createElement(tagName);
  el.async = 1;
  el.src = {script_base} + siteKey + '.js';
  var firstScript = doc.scripts[0];
  firstScript.parentNode.insertBefore(el, firstScript);
  var stub = function () {{ stub.c(arguments); }};
  stub.q = [];
  stub.c = function () {{ stub.q.push(arguments); }};
  win['eS'] = win['eS'] || stub;
}})(window, document, 'script', {site});
eS('init', {{TRACKING: true, RECOMS: true}});
</script>
</head>
<body>
<header>
  <a class="logo" href="/">spoor <span>demo shop</span></a>
  <nav>{nav}</nav>
  <a class="cart-link" href="/cart">Cart (<span id="cart-count">0</span>)</a>
</header>
<main>
{body}
<section id="blocks"></section>
</main>
<footer>A demo of spoor: this shop's pages load spoor's browser script and make the calls a
shop makes; the recommendation blocks are placed by the script.</footer>
<script src="/shop.js"></script>
<script>
{calls}
</script>
</body>
</html>
"#,
            title = escape(title),
            script_base = match &self.spoor {
                SpoorAddress::Fixed(url) => js_string(&format!("{url}/js/")),
                SpoorAddress::PageHostAtPort(port) => {
                    format!("location.protocol + '//' + location.hostname + ':{port}/js/'")
                }
            },
            site = js_string(&self.site),
        ))
    }

    fn tile(&self, product: &Product) -> String {
        let path = url_path(&product.key);
        format!(
            r#"<a class="tile" href="/product/{path}"><img src="/img/{path}.svg" alt=""><span>{}</span><b>£{}</b></a>"#,
            escape(&product.name),
            escape(&product.price)
        )
    }
}

pub fn router(shop: Shop) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/category/{id}", get(category_page))
        .route("/product/{key}", get(product_page))
        .route("/cart", get(cart_page))
        .route("/checkout", get(checkout_page))
        .route("/img/{file}", get(picture))
        .route(
            "/shop.js",
            get(|| async { asset("text/javascript; charset=utf-8", SHOP_JS) }),
        )
        .route(
            "/shop.css",
            get(|| async { asset("text/css; charset=utf-8", SHOP_CSS) }),
        )
        .fallback(not_found)
        .with_state(Arc::new(shop))
}

type Shared = State<Arc<Shop>>;

async fn home(State(shop): Shared) -> Html<String> {
    let mut tiles = String::new();
    for category in CATEGORIES {
        let _ = write!(
            tiles,
            r#"<a class="category" href="/category/{}">{}</a>"#,
            category.id,
            escape(category.title)
        );
    }
    let body = format!(
        r#"<h1>Welcome</h1>
<p class="lead">Look at a few products, put one in the cart: the blocks on each page follow
what you do.</p>
<div class="categories">{tiles}</div>"#
    );
    shop.page("Home", &body, "eS('sendEvent', 'MainPage');")
}

async fn category_page(State(shop): Shared, Path(id): Path<String>) -> Response {
    let Some(category) = category(&id) else {
        return not_found(State(shop)).await;
    };
    let members: Vec<&Product> = shop
        .products
        .iter()
        .filter(|p| p.category == category.id)
        .collect();
    let mut grid = String::new();
    for product in members.iter().take(CATEGORY_PAGE_PRODUCTS) {
        grid.push_str(&shop.tile(product));
    }
    let more = members.len().saturating_sub(CATEGORY_PAGE_PRODUCTS);
    let more = if more > 0 {
        format!("<p class=\"more\">and {more} more</p>")
    } else {
        String::new()
    };
    let body = format!(
        r#"<h1>{}</h1><div class="grid">{grid}</div>{more}"#,
        escape(category.title)
    );
    let calls = format!(
        "eS('sendEvent', 'CategoryPage', {{CategoryPage: {{categoryKey: {}}}}});",
        js_string(category.id)
    );
    shop.page(category.title, &body, &calls).into_response()
}

async fn product_page(State(shop): Shared, Path(key): Path<String>) -> Response {
    let Some(product) = shop.product(&key) else {
        return not_found(State(shop)).await;
    };
    let path = url_path(&product.key);
    let category = category(product.category).map_or("", |c| c.title);
    let body = format!(
        r#"<div class="product">
  <img src="/img/{path}.svg" alt="">
  <div>
    <p class="crumb"><a href="/category/{category_id}">{category}</a></p>
    <h1>{name}</h1>
    <p class="price">£{price}</p>
    <button id="add" type="button">Add to cart</button>
    <span id="added" hidden>In your cart</span>
  </div>
</div>"#,
        category_id = product.category,
        category = escape(category),
        name = escape(&product.name),
        price = escape(&product.price),
    );
    let item = format!(
        "{{key: {}, name: {}, price: {}}}",
        js_string(&product.key),
        js_string(&product.name),
        js_string(&product.price)
    );
    let calls = format!(
        "eS('sendEvent', 'ProductPage', {{ProductPage: {{productKey: {key}, price: {price}, \
         isInStock: 1}}}});\ndemoShop.addButton({item});",
        key = js_string(&product.key),
        price = js_string(&product.price),
    );
    shop.page(&product.name, &body, &calls).into_response()
}

async fn cart_page(State(shop): Shared) -> Html<String> {
    let body = r#"<h1>Your cart</h1><div id="cart"></div>"#;
    let calls = "eS('sendEvent', 'StatusCartPage');\ndemoShop.showCart();";
    shop.page("Cart", body, calls)
}

async fn checkout_page(State(shop): Shared) -> Html<String> {
    let body = r#"<h1>Checkout</h1>
<form id="checkout">
  <label>Email <input type="email" name="email" required placeholder="you@example.com"></label>
  <button type="submit">Place the order</button>
</form>
<p id="thanks" hidden>Thank you: your order is placed (nothing is shipped, this is a demo).</p>"#;
    shop.page("Checkout", body, "demoShop.checkout();")
}

async fn not_found(State(shop): Shared) -> Response {
    let page = shop.page(
        "Not found",
        "<h1>Not found</h1><p>No such page in this shop.</p>",
        "eS('sendEvent', 'NotFound');",
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

/// A product's picture: a tile in a colour of its own with its initials.
async fn picture(State(shop): Shared, Path(file): Path<String>) -> Response {
    let Some(product) = file.strip_suffix(".svg").and_then(|key| shop.product(key)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let hue = product
        .key
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 360;
    let initials: String = product
        .name
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .filter(|c| c.is_alphanumeric())
        .take(2)
        .collect();
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 200"><rect width="200" height="200" fill="hsl({hue},55%,82%)"/><circle cx="100" cy="100" r="62" fill="hsl({hue},45%,62%)"/><text x="100" y="118" font-family="sans-serif" font-size="52" text-anchor="middle" fill="white">{}</text></svg>"#,
        escape(&initials)
    );
    asset("image/svg+xml", svg)
}

fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A JavaScript string literal that is safe inside a `<script>` element.
fn js_string(text: &str) -> String {
    serde_json::Value::from(text)
        .to_string()
        .replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_text_in_pages_and_scripts() {
        assert_eq!(
            escape("<b a=\"1\">&'"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
        assert_eq!(js_string("</script>'"), "\"\\u003c/script>'\"");
    }
}
