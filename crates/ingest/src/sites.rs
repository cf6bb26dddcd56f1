//! Which sites may send events: ingest asks, the server's per-site settings answer.

/// The sites whose events are accepted. The server's per-site settings answer; ingest
/// needs no more of them than this.
pub trait SiteDirectory: Send + Sync {
    fn is_registered(&self, site_id: &str) -> bool;
    /// Registers a site whose records an import brings; `Ok(true)` when it was new.
    fn register_imported(&self, site_id: &str, now_ms: i64) -> Result<bool, DirectoryError>;
}

/// Why a site could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The site id was refused; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The directory could not be written: nothing was registered.
    #[error("{0}")]
    Storage(String),
}
