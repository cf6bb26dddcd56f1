//! The admin token: given on the command line, or generated once and kept in the data
//! directory, readable by its owner only.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, StatusCode};

use crate::app::AppState;
use crate::error::ApiError;
use axum::http::header::AUTHORIZATION;

const TOKEN_FILE: &str = "admin-token";

/// Where the admin token came from, for the startup message.
pub enum TokenSource {
    Given,
    Stored(PathBuf),
    Generated(PathBuf),
}

/// The token to use: `given` when set, else the one stored in `data_dir`, else a new one
/// written there with mode 0600.
pub fn admin_token(
    given: Option<String>,
    data_dir: &Path,
) -> std::io::Result<(String, TokenSource)> {
    if let Some(token) = given.filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_string(), TokenSource::Given));
    }
    let path = data_dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            return Ok((token.trim().to_string(), TokenSource::Stored(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = hex::encode(bytes);
    fs::create_dir_all(data_dir)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok((token, TokenSource::Generated(path)))
}

/// The token of `Authorization: Bearer <token>`, when there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    // The scheme is case-insensitive (RFC 9110): `bearer` is a key too, never no key.
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request carries `Authorization: Bearer <token>`.
pub fn is_admin(headers: &HeaderMap, token: &str) -> bool {
    bearer(headers).is_some_and(|given| is_admin_token(given, token))
}

/// Whether `given` is the admin token.
pub fn is_admin_token(given: &str, token: &str) -> bool {
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// The site's API key, or the admin token: 401 without either, 403 for the key of
/// another site (which site is not said).
pub fn require_site(headers: &HeaderMap, state: &AppState, site_id: &str) -> Result<(), ApiError> {
    let sites = &state.settings.sites;
    let site_key = bearer(headers).is_some_and(|key| sites.verify_api_key(site_id, key));
    if site_key || is_admin(headers, &state.admin_token) {
        return Ok(());
    }
    if bearer(headers).is_some_and(|key| sites.site_of_key(key).is_some()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key is not {site_id:?}'s: send that site's key or the admin token"),
        ));
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send the site's API key (or the admin token) as `Authorization: Bearer <key>`",
    ))
}

/// Compares digests in constant time: timing tells nothing of the token, not even its
/// length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    subtle::ConstantTimeEq::ct_eq(a.as_slice(), b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_token_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = admin_token(None, dir.path()).unwrap();
        let TokenSource::Generated(path) = source else {
            panic!()
        };
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, source) = admin_token(None, dir.path()).unwrap();
        assert_eq!(first, again);
        assert!(matches!(source, TokenSource::Stored(_)));
        let (given, _) = admin_token(Some("s3cret".into()), dir.path()).unwrap();
        assert_eq!(given, "s3cret");
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!is_admin(&headers, "abc"));
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(is_admin(&headers, "abc"));
        assert!(!is_admin(&headers, "abcd"));
        headers.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!is_admin(&headers, "abc"));
        assert_eq!(bearer(&headers), None, "another scheme is no key");
        headers.insert(AUTHORIZATION, "bearer abc".parse().unwrap());
        assert!(
            is_admin(&headers, "abc"),
            "the scheme's case does not matter"
        );
    }
}
