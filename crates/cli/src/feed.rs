//! `spoor feed import`: load a product feed into a running server.

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum FeedCommand {
    /// Import a Google Merchant RSS 2.0 (or Atom) product feed, from a file or a URL.
    /// Items that cannot be read are listed with why; the others are kept.
    Import {
        /// A feed file, or the http(s) URL the shop publishes its feed at.
        source: String,
        #[arg(long)]
        site: String,
        /// The running server.
        #[arg(long, env = "SPOOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The site's API key or the admin token.
        #[arg(long = "key", env = "SPOOR_ADMIN_TOKEN", hide_env_values = true)]
        key: String,
    },
}

pub async fn run(command: FeedCommand) -> anyhow::Result<()> {
    let FeedCommand::Import {
        source,
        site,
        url,
        key,
    } = command;
    let client = spoor_outgoing::client_builder().build()?;
    let xml = if source.starts_with("http://") || source.starts_with("https://") {
        let response = client
            .get(&source)
            .send()
            .await
            .with_context(|| format!("fetch {source}"))?;
        if !response.status().is_success() {
            bail!("fetching {source} answered {}", response.status());
        }
        response.bytes().await.context("read the feed")?.to_vec()
    } else {
        std::fs::read(&source).with_context(|| format!("read {source}"))?
    };
    let endpoint = format!("{}/admin/v1/sites/{site}/feed", url.trim_end_matches('/'));
    let response = client
        .post(&endpoint)
        .bearer_auth(&key)
        .header("content-type", "application/rss+xml")
        .body(xml)
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let summary = crate::http::json_answer(response).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
