//! The `--data` flag: where spoor keeps its log, settings, snapshots and admin token.

use std::path::PathBuf;

use spoor_log::LogSpec;

/// The data directory flag, shared by the subcommands that open one.
#[derive(clap::Args, Clone)]
pub struct DataDir {
    /// Where spoor keeps its log, sites and admin token.
    #[arg(long = "data", env = "SPOOR_DATA", default_value = "./spoor-data")]
    pub path: PathBuf,
}

impl DataDir {
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("log")
    }

    /// The log the commands other than `serve` read and write, with its default settings.
    pub fn log_spec(&self) -> LogSpec {
        LogSpec::file(self.log_dir())
    }
}
