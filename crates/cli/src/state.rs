//! `spoor state rebuild`: the state replayed from the log, offline.

use anyhow::Context;
use serde_json::json;
use spoor_live::LiveState;

use crate::data_dir::{DataDir, LogChoice};

#[derive(clap::Subcommand)]
pub enum StateCommand {
    /// Replay the whole event log into a fresh state and print, per site, its counts and
    /// a digest of the whole state. A running server gives the same digest at
    /// GET /api/v1/sites/{siteId}?digest=1 once it has applied the same records. Safe
    /// beside a running server: it only reads.
    Rebuild {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        log: LogChoice,
        /// Only this site.
        #[arg(long, value_name = "ID")]
        site: Option<String>,
    },
}

pub fn run(command: StateCommand) -> anyhow::Result<()> {
    let StateCommand::Rebuild { data, log, site } = command;
    let spec = log.existing_spec(&data)?;
    let log = spoor_log::open_read_only(&spec).with_context(|| format!("open {spec}"))?;
    let started = std::time::Instant::now();
    let state = LiveState::replay(&*log)?;
    let engine = state.read();
    let sites: Vec<_> = engine
        .sites()
        .into_iter()
        .filter(|(id, _)| site.as_deref().is_none_or(|wanted| wanted == *id))
        .map(|(id, site)| {
            let mut answer = serde_json::to_value(site.counts()).expect("counts serialise");
            answer["siteId"] = json!(id);
            answer["stateDigest"] = json!(site.digest());
            answer
        })
        .collect();
    let report = json!({
        "records": state.applied(),
        "undecodable": state.undecodable(),
        "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "sites": sites,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
