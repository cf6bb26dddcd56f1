//! `spoor demo`: spoor on a fresh data directory, a shop's catalogue and history loaded
//! through its tracker API, and a small shop on its own port whose pages use only the
//! browser script, with recommendation blocks placed on them.

mod catalogue;
mod shop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use crate::load::{self, LoadSummary};
use crate::serve::ServeArgs;
use catalogue::Catalogue;

/// The demo's site id.
const SITE: &str = "DEMO";
/// Where the data set is, from the repository's root, when it sits beside it.
const SHARED_ONLINE_RETAIL: &str = "../shared/data/online-retail/online_retail.csv.gz";
/// How long spoor may take to start before the demo gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// UCI Online Retail's online_retail.csv(.gz): a real gift shop's catalogue and a
    /// year of its orders. Without it (and with none at ../shared/data/online-retail), a
    /// generated shop.
    data_set: Option<PathBuf>,

    /// A generated shop (a seeded catalogue and visitors), even where the data set is at
    /// hand: quicker to load.
    #[arg(long, conflicts_with = "data_set")]
    generated: bool,

    /// Where spoor listens (its API and the browser script).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Where the demo shop listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    shop_listen: SocketAddr,

    /// Keep spoor's data here, in a new (empty) directory; by default, a temporary
    /// directory removed at the end.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// `spoor serve`'s flags, as the demo sets them.
#[derive(Parser)]
struct DemoServe {
    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temporary = match &args.data {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("create a temporary data directory")?),
    };
    let data = args
        .data
        .clone()
        .or_else(|| temporary.as_ref().map(|dir| dir.path().to_path_buf()))
        .context("a data directory")?;
    if let Some(dir) = &args.data {
        let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
        if used {
            bail!(
                "--data {}: not empty; the demo loads its shop into a new data directory \
                 (leave --data out for a temporary one)",
                dir.display()
            );
        }
    }
    let spoor_url = format!("http://{}", loopback_if_any(args.listen));
    let shop_url = format!("http://{}", loopback_if_any(args.shop_listen));
    // Both ports tried before anything is loaded: one in use is said at once, and the
    // readiness check below cannot be answered by another server.
    drop(std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "listen on {} for spoor: is a spoor already running there? Stop it, or choose \
             another address with --listen",
            args.listen
        )
    })?);
    let shop_listener = tokio::net::TcpListener::bind(args.shop_listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} for the demo shop; choose another address with --shop-listen",
                args.shop_listen
            )
        })?;

    let serve = DemoServe::try_parse_from([
        "spoor-demo".to_string(),
        format!("--listen={}", args.listen),
        format!("--data={}", data.display()),
        format!("--site={SITE}"),
    ])
    .context("spoor's flags for the demo")?
    .serve;
    let mut server = tokio::spawn(crate::serve::run(serve));
    let client = spoor_outgoing::client_builder().build()?;
    tokio::select! {
        ready = wait_ready(&client, &spoor_url) => ready?,
        stopped = &mut server => {
            stopped??;
            bail!("spoor stopped before it was ready");
        }
    }
    let token = std::fs::read_to_string(data.join("admin-token"))
        .context("read the admin token spoor generated")?;
    let admin = Admin {
        client: &client,
        spoor: &spoor_url,
        token: token.trim(),
    };
    admin.place_blocks().await?;

    let source = data_set(&args);
    let catalogue = match &source {
        Some(file) => {
            println!(
                "loading the Online Retail data set from {}...",
                file.display()
            );
            Catalogue::online_retail(file, SITE)?
        }
        None => {
            println!("loading a generated shop (no Online Retail data set given or found)...");
            Catalogue::generated(SITE)
        }
    };
    let started = Instant::now();
    let mut summary = LoadSummary::default();
    load::post_events(&catalogue.events, &spoor_url, &mut summary).await?;
    if summary.rejected > 0 {
        bail!(
            "spoor rejected {} of the demo's events: {:?}",
            summary.rejected,
            summary.rejections
        );
    }
    println!(
        "loaded {} products and {} events in {:.1} s",
        catalogue.products.len(),
        summary.accepted,
        started.elapsed().as_secs_f64()
    );

    let spoor_address = if args.listen.ip().is_unspecified() {
        shop::SpoorAddress::PageHostAtPort(args.listen.port())
    } else {
        shop::SpoorAddress::Fixed(spoor_url.clone())
    };
    let shop = shop::router(shop::Shop::new(catalogue, SITE, spoor_address));
    let shop_server = tokio::spawn(async move { axum::serve(shop_listener, shop).await });
    println!();
    println!("  the demo shop:  {shop_url}/");
    println!(
        "  spoor:          {spoor_url}/  (admin token in {})",
        data.join("admin-token").display()
    );
    println!("  the dashboard:  {spoor_url}/ui/  (sign in with the admin token)");
    println!();
    println!(
        "Browse the shop: the blocks follow what you look at and put in the cart; the \
         dashboard shows what they earn. Ctrl-C stops."
    );

    let served = server.await.context("spoor's task")?;
    shop_server.abort();
    served
}

/// The address to reach a listener at: loopback for one on every interface.
fn loopback_if_any(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    }
}

/// The data set: the one named, or the one beside the repository when it is there.
fn data_set(args: &DemoArgs) -> Option<PathBuf> {
    if args.generated {
        return None;
    }
    args.data_set.clone().or_else(|| {
        let beside = Path::new(SHARED_ONLINE_RETAIL);
        beside.exists().then(|| beside.to_path_buf())
    })
}

async fn wait_ready(client: &reqwest::Client, spoor: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let answer = client.get(format!("{spoor}/readyz")).send().await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("spoor was not ready within {} s", START_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shop's block template: prices in pounds, and, where `add_to_cart`, an "Add"
/// button on each product, which the script reports as an add from the block before the
/// shop's code puts the product in the cart.
fn template(add_to_cart: bool) -> String {
    let button = if add_to_cart {
        r#" <button type="button" data-spoor-add-to-cart data-price="{{unit_price}}">Add</button>"#
    } else {
        ""
    };
    [
        r#"<div class="spoor-block"><div class="spoor-block__title">{{title}}</div>"#,
        r#"<div class="spoor-block__items">{{#products}}<div class="spoor-block__item">"#,
        r#"<a href="{{url}}"><img src="{{imgurl}}" alt="">"#,
        r#"<span class="spoor-block__name">{{name}}</span></a>"#,
        r#"<span class="spoor-block__price">£{{unit_price}}</span>"#,
        button,
        r#"</div>{{/products}}</div></div>"#,
    ]
    .concat()
}

struct Admin<'a> {
    client: &'a reqwest::Client,
    spoor: &'a str,
    token: &'a str,
}

impl Admin<'_> {
    /// The blocks of the shop's pages: each placed by the browser script in an element
    /// the shop's pages keep for it.
    async fn place_blocks(&self) -> anyhow::Result<()> {
        let blocks = [
            // No fallback: shown once the visitor has a history, as they browse.
            ("home-personal", "Picked for you", "personal", "main"),
            ("home-popular", "Popular now", "popular,bestsellers", "main"),
            (
                "category-top",
                "Best in this category",
                "popular-in-category",
                "category",
            ),
            (
                "product-similar",
                "Similar products",
                "similar,popular-in-category",
                "product",
            ),
            (
                "product-together",
                "Bought together",
                "bought-together",
                "product",
            ),
            (
                "cart-cross-sell",
                "You may also need",
                "cart-cross-sell,popular",
                "cart",
            ),
        ];
        for (id, title, algorithm, page_type) in blocks {
            let placement = json!({"pageTypes": [page_type], "selector": "#blocks",
                                   "position": "inside", "title": title,
                                   "template": template(page_type == "cart")});
            let block = json!({"name": title, "algorithm": algorithm, "size": 6,
                               "placement": placement});
            self.put(&format!("/admin/v1/sites/{SITE}/blocks/{id}"), &block)
                .await?;
        }
        Ok(())
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let response = self
            .client
            .put(format!("{}{path}", self.spoor))
            .bearer_auth(self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        crate::http::json_answer(response)
            .await
            .with_context(|| format!("PUT {path}"))?;
        Ok(())
    }
}
