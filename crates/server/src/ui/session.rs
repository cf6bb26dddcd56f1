//! Signing in to the dashboard: a key (the admin token, or a site's API key) exchanged
//! for a session cookie. The cookie is HttpOnly (page scripts never see it), SameSite
//! Strict (no other site's page sends it), Secure when spoor is reached over https, and
//! expires; every change also carries the session's CSRF token in its form.
//!
//! Sessions live in memory: a restart signs everyone out, which a dashboard can afford
//! and which keeps no secret on disk. The key itself is kept with its session and checked
//! again on every request, so a site's new key (or a changed admin token) ends the
//! sessions opened with the old one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::access::{client_address, network_of};
use crate::app::{AppState, Shared};
use crate::auth;

pub const COOKIE_NAME: &str = "spoor_session";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// A session ends this long after sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at once; past it, the least recently used one ends.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions of one key holder (the admin, or one site's key); past it, their least
/// recently used one ends: no one signing in again and again ends others' sessions.
pub const MAX_SESSIONS_PER_HOLDER: usize = 20;
/// How long a wrong key waits for its answer: with the refused-keys budget of the
/// address, guessing a key (128 bits and more) is pointless.
pub const WRONG_KEY_WAIT: Duration = Duration::from_secs(1);
/// The route a page asks for by itself (the overview's live part).
pub const REFRESH_ROUTE: &str = "/ui/sites/{site_id}/overview/live";
/// The longest key read from the sign-in form.
const MAX_KEY_BYTES: usize = 256;

/// Who a session is: the admin (every site) or one site's key holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Admin,
    Site(String),
}

#[derive(Clone)]
pub struct Session {
    pub who: Who,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The key signed in with: checked again on each request, and sent to the API's
    /// handlers as their `Authorization`, so that the dashboard sees what the API shows.
    key: String,
    started: Instant,
    last_used: Instant,
}

impl Session {
    pub fn may_see(&self, site_id: &str) -> bool {
        match &self.who {
            Who::Admin => true,
            Who::Site(site) => site == site_id,
        }
    }

    /// Headers that carry the session's key, for calling the API's own handlers.
    pub fn api_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", self.key)) {
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }

    /// Whether `given` is this session's CSRF token.
    pub fn csrf_matches(&self, given: &str) -> bool {
        auth::is_admin_token(given, &self.csrf)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the system's random source works");
    hex::encode(buffer)
}

impl Sessions {
    /// A new session for `who`; its id, for the cookie.
    fn open(&self, who: Who, key: String, now: Instant) -> String {
        let id = random_hex(32);
        let session = Session {
            who,
            csrf: random_hex(32),
            key,
            started: now,
            last_used: now,
        };
        let mut sessions = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| alive(s, now));
        let holders = (sessions.values()).filter(|s| s.who == session.who).count();
        if holders >= MAX_SESSIONS_PER_HOLDER {
            end_least_used(&mut sessions, |s| s.who == session.who);
        }
        if sessions.len() >= MAX_SESSIONS {
            end_least_used(&mut sessions, |_| true);
        }
        sessions.insert(id.clone(), session);
        id
    }

    /// The live session of `id`, marked used now when `used`.
    fn find(&self, id: &str, now: Instant, used: bool) -> Option<Session> {
        let mut sessions = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let session = sessions.get_mut(id)?;
        if !alive(session, now) {
            sessions.remove(id);
            return None;
        }
        if used {
            session.last_used = now;
        }
        Some(session.clone())
    }

    fn close(&self, id: &str) {
        let mut sessions = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(id);
    }
}

fn end_least_used(sessions: &mut HashMap<String, Session>, among: impl Fn(&Session) -> bool) {
    let oldest = (sessions.iter())
        .filter(|(_, s)| among(s))
        .min_by_key(|(_, s)| s.last_used)
        .map(|(id, _)| id.clone());
    if let Some(oldest) = oldest {
        sessions.remove(&oldest);
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last_used) < IDLE && now.duration_since(session.started) < LIFETIME
}

/// Who `key` signs in as: the admin token first, then a site's key.
fn who_has(state: &AppState, key: &str) -> Option<Who> {
    if auth::is_admin_token(key, &state.admin_token) {
        return Some(Who::Admin);
    }
    state.settings.sites.site_of_key(key).map(Who::Site)
}

/// Whether the key a session was opened with still opens it.
fn still_valid(state: &AppState, session: &Session) -> bool {
    match &session.who {
        Who::Admin => auth::is_admin_token(&session.key, &state.admin_token),
        Who::Site(site) => state.settings.sites.verify_api_key(site, &session.key),
    }
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    (headers.get_all(COOKIE).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the session cookie is to be `Secure`: spoor was told so, or a proxy it trusts
/// says the browser came over https.
fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    state.secure_cookies || (state.trust_forwarded_for && forwarded_https)
}

fn session_cookie(id: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&cookie).expect("a cookie of hex and fixed text")
}

/// The signed-in session of a request: pages without one send the browser to sign in.
pub struct Signed(pub Session);

impl FromRequestParts<Shared> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        // A page's own refreshing is not someone using it: an open tab alone does not
        // keep a session from ending when idle.
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let used = route != Some(REFRESH_ROUTE);
        let session = cookie_value(&parts.headers, COOKIE_NAME).and_then(|id| {
            state
                .sessions
                .find(id, Instant::now(), used)
                .map(|s| (id, s))
        });
        match session {
            Some((_, session)) if still_valid(state, &session) => Ok(Signed(session)),
            Some((id, _)) => {
                state.sessions.close(id);
                Err(Redirect::to("/ui/").into_response())
            }
            None => Err(Redirect::to("/ui/").into_response()),
        }
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
}

/// `POST /ui/sign-in`: a good key opens a session and goes to the dashboard; a wrong
/// one waits, counts against the address's refused keys, and is told so.
pub async fn sign_in(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let client = network_of(client_address(&state, &headers, peer));
    let key = form.key.trim();
    let who = (key.len() <= MAX_KEY_BYTES)
        .then(|| who_has(&state, key))
        .flatten();
    let Some(who) = who else {
        // A good key is let in even past the address's budget: the budget slows
        // guessing only.
        if let Some(wait) = state.guesses.wait(client, Instant::now()) {
            return super::pages::sign_in_page(Some(&format!(
                "Too many wrong keys from this address: try again in {} s.",
                wait.as_secs() + 1
            )))
            .with_status(StatusCode::TOO_MANY_REQUESTS);
        }
        state.guesses.failed(client, Instant::now());
        tokio::time::sleep(WRONG_KEY_WAIT).await;
        tracing::info!("dashboard sign-in refused: not a key of this spoor");
        return super::pages::sign_in_page(Some(
            "That key is neither the admin token nor a site's API key.",
        ))
        .with_status(StatusCode::UNAUTHORIZED);
    };
    let site = match &who {
        Who::Admin => None,
        Who::Site(site) => Some(site.clone()),
    };
    tracing::info!(
        site_id = site.as_deref().unwrap_or("(admin)"),
        "dashboard sign-in"
    );
    let id = state.sessions.open(who, key.to_string(), Instant::now());
    let mut response = Redirect::to("/ui/").into_response();
    let cookie = session_cookie(&id, LIFETIME.as_secs(), over_https(&state, &headers));
    response.headers_mut().insert(SET_COOKIE, cookie);
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /ui/sign-out`: the session ends here and in the browser.
pub async fn sign_out(
    State(state): State<Shared>,
    headers: HeaderMap,
    Signed(session): Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return super::pages::forbidden();
    }
    if let Some(id) = cookie_value(&headers, COOKIE_NAME) {
        state.sessions.close(id);
    }
    let mut response = Redirect::to("/ui/").into_response();
    let cookie = session_cookie("", 0, over_https(&state, &headers));
    response.headers_mut().insert(SET_COOKIE, cookie);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_or_old() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let id = sessions.open(Who::Admin, "k".into(), start);
        assert!(sessions.find(&id, start + IDLE / 2, true).is_some());
        let idle = start + IDLE / 2 + IDLE;
        assert!(sessions.find(&id, idle, true).is_none(), "idle");
        let id = sessions.open(Who::Admin, "k".into(), start);
        let mut at = start;
        while at < start + LIFETIME - IDLE / 2 {
            at += IDLE / 2;
            assert!(sessions.find(&id, at, true).is_some());
        }
        let old = start + LIFETIME;
        assert!(sessions.find(&id, old, true).is_none(), "too old");
        let id = sessions.open(Who::Admin, "k".into(), start);
        assert!(sessions.find(&id, start + IDLE / 2, false).is_some());
        let later = start + IDLE + IDLE / 4;
        assert!(
            sessions.find(&id, later, false).is_none(),
            "a refresh alone does not keep it"
        );
    }

    #[test]
    fn one_holder_cannot_end_anothers_sessions() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let admin = sessions.open(Who::Admin, "k".into(), start);
        let site = Who::Site("S".into());
        for i in 0..3 * MAX_SESSIONS_PER_HOLDER {
            let at = start + Duration::from_millis(i as u64 + 1);
            sessions.open(site.clone(), "s".into(), at);
        }
        let held = sessions.by_id.lock().unwrap().len();
        assert_eq!(held, MAX_SESSIONS_PER_HOLDER + 1);
        assert!(sessions.find(&admin, start, true).is_some());
    }

    #[test]
    fn cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; spoor_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&headers, COOKIE_NAME), Some("abc"));
        let cookie = session_cookie("abc", 60, true);
        let text = cookie.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"));
        assert!(text.contains("Secure") && text.contains("Max-Age=60"));
    }
}
