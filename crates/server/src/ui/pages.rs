//! The dashboard's frame: every page's head, navigation and footer; the sign-in page,
//! the list of sites, and the answers for what cannot be shown.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::{Session, Who};
use super::{ASSETS_VERSION, Section};

/// Pages only load spoor's own stylesheet and script, and product pictures (https or
/// spoor's own); nothing may frame them.
const POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' https: data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A page of the dashboard, as a response.
pub struct Page(pub Markup);

impl Page {
    pub fn with_status(self, status: StatusCode) -> Response {
        let mut response = self.into_response();
        *response.status_mut() = status;
        response
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = self.0.into_string().into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            // No icon to fetch: a request for one would only be a 404.
            link rel="icon" href="data:,";
            title { (title) " · spoor" }
            link rel="stylesheet" href={ "/ui/assets/dashboard.css?v=" (ASSETS_VERSION) };
            script src={ "/ui/assets/dashboard.js?v=" (ASSETS_VERSION) } defer {}
        }
    }
}

/// A page of a site's dashboard: its navigation, then `body`.
pub fn site_page(
    session: &Session,
    site_id: &str,
    section: Section,
    title: &str,
    body: Markup,
) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("{title} · {site_id}")))
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    a.brand href="/ui/" { "spoor" }
                    span.site { "Site " strong { (site_id) } }
                    nav aria-label="Sections" {
                        ul {
                            @for each in Section::ALL {
                                li {
                                    a href={ "/ui/sites/" (site_id) "/" (each.path()) }
                                        aria-current=[(each == section).then_some("page")] {
                                        (each.title())
                                    }
                                }
                            }
                        }
                    }
                    (sign_out_form(session))
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    })
}

fn sign_out_form(session: &Session) -> Markup {
    html! {
        form.sign-out method="post" action="/ui/sign-out" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" { "Sign out" }
        }
    }
}

/// The hidden field every changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub fn sign_in_page(problem: Option<&str>) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.sign-in {
                main #main {
                    h1 { "spoor" }
                    p { "Sign in with the admin token (every site) or a site's API key (that site)." }
                    form method="post" action="/ui/sign-in" {
                        label for="key" { "Key" }
                        input #key type="password" name="key" required autocomplete="current-password"
                            aria-invalid=[problem.map(|_| "true")]
                            aria-describedby=[problem.map(|_| "key-problem")];
                        @if let Some(problem) = problem {
                            p #key-problem .field-error role="alert" { (problem) }
                        }
                        button type="submit" { "Sign in" }
                    }
                    p.hint {
                        "The admin token is printed when spoor starts and kept in the data "
                        "directory's " code { "admin-token" } " file."
                    }
                }
            }
        }
    })
}

/// The sites a session may see, to pick one.
pub fn sites_page(session: &Session, sites: &[(String, String, u64)]) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sites"))
            body {
                header.top {
                    a.brand href="/ui/" { "spoor" }
                    (sign_out_form(session))
                }
                main #main {
                    h1 { "Sites" }
                    @if sites.is_empty() {
                        p { "No site is registered yet: register one with "
                            code { "spoor serve --site ID" } " or "
                            code { "POST /admin/v1/sites" } "." }
                    } @else {
                        table {
                            thead { tr { th scope="col" { "Site" } th scope="col" { "Name" } th.num scope="col" { "Events" } } }
                            tbody {
                                @for (id, name, events) in sites {
                                    tr {
                                        td { a href={ "/ui/sites/" (id) "/overview" } { (id) } }
                                        td { (name) }
                                        td.num { (number(*events)) }
                                    }
                                }
                            }
                        }
                    }
                    @if session.who == Who::Admin {
                        p.hint { "Signed in with the admin token: every site." }
                    }
                }
            }
        }
    })
}

/// A plain page with a message: what is not there, or not this session's to see.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/ui/" { "spoor" } }
                main #main { h1 { (title) } p { (text) } p { a href="/ui/" { "Back to the dashboard" } } }
            }
        }
    })
    .with_status(status)
}

pub fn forbidden() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Expired form",
        "This form's session token does not match: reload the page and try again.",
    )
}

pub fn no_site() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "No such site",
        "This site is not registered, or not one this key may see.",
    )
}

/// A whole number with thin separators for thousands.
pub fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as a percentage with two decimals; a dash for none.
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_string(), |s| format!("{:.2}%", s * 100.0))
}

/// Bytes as a short figure (KiB, MiB, GiB).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(number(0), "0");
        assert_eq!(number(1234567), "1,234,567");
        assert_eq!(percent(Some(0.12345)), "12.35%");
        assert_eq!(percent(None), "–");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
