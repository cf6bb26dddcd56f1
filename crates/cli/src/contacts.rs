//! `spoor contacts export|erase`: a person's right of access and erasure, through a
//! running server's API.

use anyhow::Context;

#[derive(clap::Args)]
pub struct ContactArgs {
    /// The running server.
    #[arg(long, env = "SPOOR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The site's API key or the admin token.
    #[arg(long = "key", env = "SPOOR_ADMIN_TOKEN", hide_env_values = true)]
    key: String,
    #[arg(long)]
    site: String,
    /// Name the contact by exactly one of the following.
    #[arg(long, group = "who")]
    email: Option<String>,
    #[arg(long, group = "who")]
    phone: Option<String>,
    #[arg(long, group = "who")]
    sc: Option<String>,
    #[arg(long, group = "who")]
    external_customer_id: Option<String>,
    #[arg(long, group = "who")]
    contact_id: Option<u32>,
}

#[derive(clap::Subcommand)]
pub enum ContactsCommand {
    /// Print everything held about a contact: its state and every event naming it.
    Export(ContactArgs),
    /// Erase a contact's personal data from the event log and the state, for good.
    Erase(ContactArgs),
}

impl ContactArgs {
    fn query(&self) -> anyhow::Result<(&'static str, String)> {
        let named = [
            ("email", self.email.clone()),
            ("phone", self.phone.clone()),
            ("sc", self.sc.clone()),
            ("externalCustomerId", self.external_customer_id.clone()),
            ("contactId", self.contact_id.map(|n| n.to_string())),
        ];
        named
            .into_iter()
            .find_map(|(kind, value)| value.map(|v| (kind, v)))
            .context(
                "name the contact: --email, --phone, --sc, --external-customer-id or --contact-id",
            )
    }
}

pub async fn run(command: ContactsCommand) -> anyhow::Result<()> {
    let (method, path, args) = match &command {
        ContactsCommand::Export(args) => (reqwest::Method::GET, "contacts/export", args),
        ContactsCommand::Erase(args) => (reqwest::Method::DELETE, "contacts", args),
    };
    let (kind, value) = args.query()?;
    let endpoint = format!(
        "{}/api/v1/sites/{}/{path}",
        args.url.trim_end_matches('/'),
        args.site
    );
    let response = spoor_outgoing::client_builder()
        .build()?
        .request(method, &endpoint)
        .query(&[(kind, value.as_str())])
        .bearer_auth(&args.key)
        .send()
        .await
        .with_context(|| format!("call {endpoint}"))?;
    let answer = crate::http::json_answer(response).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
