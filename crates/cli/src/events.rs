//! `spoor events export` and `spoor events import`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use spoor_ingest::Ingestor;
use spoor_ingest::export::{ExportFilter, ImportSummary, export};
use spoor_server::directory::RegisteredSites;
use spoor_server::now_ms;
use spoor_settings::SiteRegistry;

use crate::data_dir::{DataDir, LogChoice};
use spoor_log::LogSpec;

/// Import bodies sent to a server stay below its limit.
const IMPORT_PIECE_BYTES: usize = 32 * 1024 * 1024;

#[derive(clap::Subcommand)]
pub enum EventsCommand {
    /// Write the normalised events as NDJSON, one record per line, in log order.
    /// Safe to run beside a running server: it reads without writing.
    Export {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        log: LogChoice,
        /// Only this site's events.
        #[arg(long, value_name = "ID")]
        site: Option<String>,
        /// Only records received at or after this time (milliseconds since the epoch).
        #[arg(long, value_name = "MS")]
        since: Option<i64>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Load an export. Records already present are skipped, so importing a file twice
    /// stores it once; sites it names are registered when missing.
    Import {
        /// The NDJSON file written by `spoor events export`.
        file: PathBuf,
        /// Load into a running server (e.g. http://127.0.0.1:8080) instead of a data
        /// directory.
        #[arg(long, conflicts_with = "path")]
        url: Option<String>,
        /// With --url: the server's admin token.
        #[arg(long, env = "SPOOR_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        log: LogChoice,
    },
}

pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Export {
            data,
            log,
            site,
            since,
            output,
        } => export_to(
            log.existing_spec(&data)?,
            ExportFilter {
                site_id: site,
                since_ms: since,
            },
            output,
        ),
        EventsCommand::Import {
            file,
            url: Some(url),
            admin_token,
            ..
        } => import_over_http(&file, &url, admin_token).await,
        EventsCommand::Import {
            file, data, log, ..
        } => import_into_directory(&file, &data, &log.spec(&data)?).await,
    }
}

fn export_to(spec: LogSpec, filter: ExportFilter, output: Option<PathBuf>) -> anyhow::Result<()> {
    let log = spoor_log::open_read_only(&spec).with_context(|| format!("open {spec}"))?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let keys = spoor_log::open_keyring(&spec).context("open the key table")?;
    let written = export(&*log, keys.as_deref(), &filter, &mut out)?;
    out.flush().context("write the export")?;
    tracing::info!(records = written, "export finished");
    Ok(())
}

async fn import_into_directory(
    file: &PathBuf,
    data: &DataDir,
    spec: &LogSpec,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    // The sites it names are registered there, whichever log holds the events.
    std::fs::create_dir_all(&data.path)
        .with_context(|| format!("create the data directory {}", data.path.display()))?;
    let log = spoor_log::open(spec, None).with_context(|| format!("open {spec}"))?;
    let sites = Arc::new(RegisteredSites(Arc::new(SiteRegistry::open(&data.path)?)));
    let keys = spoor_log::open_keyring(spec).context("open the key table")?;
    let ingestor = Ingestor::open(log, sites, now_ms())?.sealing_with(keys);
    let lines: Vec<&str> = text.lines().collect();
    let summary = ingestor.import(&lines, now_ms()).await?;
    report(&summary)
}

async fn import_over_http(
    file: &PathBuf,
    url: &str,
    admin_token: Option<String>,
) -> anyhow::Result<()> {
    let token = admin_token.context(
        "--url needs the server's admin token: --admin-token or SPOOR_ADMIN_TOKEN \
         (it is in <data>/admin-token on the server)",
    )?;
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let endpoint = format!("{}/admin/v1/events/import", url.trim_end_matches('/'));
    let client = spoor_outgoing::client_builder().build()?;
    let mut total = ImportSummary::default();
    for piece in pieces(&text, IMPORT_PIECE_BYTES) {
        let response = client
            .post(&endpoint)
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .body(piece.to_string())
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        let summary = crate::http::json_answer(response).await?;
        add(&mut total, &summary);
    }
    report(&total)
}

/// Splits NDJSON text into pieces of whole lines, each at most `limit` bytes where a line
/// allows.
fn pieces(text: &str, limit: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + limit).min(text.len());
        if end < text.len() {
            end = match text[start..end].rfind('\n') {
                Some(newline) => start + newline + 1,
                None => text[end..].find('\n').map_or(text.len(), |n| end + n + 1),
            };
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn add(total: &mut ImportSummary, piece: &serde_json::Value) {
    let count = |key: &str| piece[key].as_u64().unwrap_or(0);
    total.imported += count("imported");
    total.already_present += count("alreadyPresent");
    total.repeated += count("repeated");
    total.error_count += count("errorCount");
    if let Some(sites) = piece["sitesRegistered"].as_array() {
        total
            .sites_registered
            .extend(sites.iter().filter_map(|s| s.as_str().map(String::from)));
    }
}

fn report(summary: &ImportSummary) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(summary)?);
    if summary.error_count > 0 {
        bail!("{} lines could not be imported", summary.error_count);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_end_on_line_boundaries() {
        let text = "aaaa\nbb\ncccccc\nd\n";
        let parts = pieces(text, 6);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts[0], "aaaa\n");
    }
}
