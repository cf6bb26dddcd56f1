//! Talking to a running spoor server.

use anyhow::{Context, bail};

/// The JSON of a server's answer; an answer other than 2xx is an error quoting the body,
/// which says what was wrong.
pub async fn json_answer(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body = response.text().await.context("read the server's answer")?;
    if !status.is_success() {
        bail!("the server answered {status}: {body}");
    }
    serde_json::from_str(&body).context("the server's answer is not JSON")
}
