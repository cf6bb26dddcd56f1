//! Requests spoor makes to other systems: the shop's webhooks, its product feeds, and the
//! CLI's calls to a spoor server. TLS is rustls, trusting the system's root certificates
//! and, added to them, those of `SSL_CERT_FILE` (and `SSL_CERT_DIR`), the variables
//! OpenSSL-based tools read, so that a shop with a private CA names its certificate once.

mod targets;

use std::path::Path;
use std::sync::OnceLock;

/// Where systems keep their CA bundle as one file (Debian and Ubuntu, RHEL and Fedora,
/// SUSE, Alpine): some have no hashed certificate directory beside it.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub use targets::{MAX_REDIRECTS, Targets, is_public};

/// A client builder for requests to other systems, trusting [`trusted_roots`].
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .user_agent(concat!("spoor/", env!("CARGO_PKG_VERSION")));
    trusted_roots().iter().fold(builder, |builder, root| {
        builder.add_root_certificate(root.clone())
    })
}

/// The system's root certificates, and those `SSL_CERT_FILE` and `SSL_CERT_DIR` name;
/// read once per process. Files that cannot be read are logged and left out.
pub fn trusted_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(load_roots)
}

fn load_roots() -> Vec<reqwest::Certificate> {
    // With either variable set, this reads only what they name...
    let mut found = rustls_native_certs::load_native_certs();
    // ...so the system's own store is added to it: the variables add, never replace.
    if openssl_probe::has_ssl_cert_env_vars() {
        let bundles = SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .filter(|file| file.exists());
        let dirs = openssl_probe::candidate_cert_dirs();
        let stores =
            (bundles.map(|file| (Some(file), None))).chain(dirs.map(|dir| (None, Some(dir))));
        for (file, dir) in stores {
            let system = rustls_native_certs::load_certs_from_paths(file, dir);
            found.certs.extend(system.certs);
            found.errors.extend(system.errors);
        }
    }
    for error in &found.errors {
        tracing::warn!(%error, "a root certificate source could not be read; left out");
    }
    let roots: Vec<reqwest::Certificate> = (found.certs.iter())
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
        .collect();
    if roots.is_empty() {
        tracing::warn!(
            "no root certificates found: HTTPS requests (webhooks, feeds) will fail; \
             install the system's CA certificates or name a bundle in SSL_CERT_FILE"
        );
    }
    roots
}
