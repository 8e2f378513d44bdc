//! What every page of a front-end does alike: the security headers of every answer (a
//! Content-Security-Policy without scripts; pages never cached, since they may hold health
//! data), cookies read and built (`HttpOnly`, `SameSite=Lax`, `Secure` over `https`), tokens
//! compared in constant time, redirects, the stylesheet compiled into the binary, and
//! [`PageRequest`]: the language, path and query of a page's request, the language switch,
//! and the page rendered with the language cookie when `?lang=` chose one.
//! What it is not: routes, templates or texts (each front-end has its own), or sessions
//! ([`crate::session`]).

use crate::lang::{LANG_COOKIE_MAX_AGE_S, Lang};
use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

/// The policy of every answer: no scripts at all, styles and images from the front-end only,
/// forms posted only to it, and never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// How long the stylesheet may be cached, in seconds (an hour).
pub const STYLESHEET_MAX_AGE_S: u64 = 60 * 60;

/// Adds the security headers to every answer (a layer: `axum::middleware::from_fn`); an
/// answer is never cached unless its handler set its own `Cache-Control` (the stylesheet).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Equality that takes as long whatever the first difference (for CSRF tokens and `state`).
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A `Set-Cookie` value: cookie `name` for the pages under `path`, for `max_age_s` seconds
/// (0 removes it), `HttpOnly`, `SameSite=Lax`, and `Secure` when `secure`.
pub fn cookie_header(name: &str, value: &str, path: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

/// A `303 See Other` to `location`.
pub fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `response` setting `cookie` (a [`cookie_header`]) too.
pub fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The stylesheet `css` (compiled into the binary), cached for [`STYLESHEET_MAX_AGE_S`].
pub fn stylesheet(css: &'static str) -> Response {
    let mut response = css.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={STYLESHEET_MAX_AGE_S}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

/// Where a front-end is served: what a [`PageRequest`] needs of it.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The path prefix the front-end is nested under (`/zorgverlener`), or empty.
    pub prefix: &'a str,
    /// The name of the cookie that keeps the language chosen.
    pub lang_cookie: &'a str,
    /// Whether the front-end is reached over `https` (its cookies are then `Secure`).
    pub secure: bool,
}

/// What every page needs to know of its request (no `Debug`: a callback's query holds the
/// provider's code).
#[derive(Clone)]
pub struct PageRequest {
    /// The page's language.
    pub lang: Lang,
    /// The language cookie to set, when `?lang=` chose one.
    pub lang_cookie: Option<String>,
    /// The page's path, with the site's prefix.
    pub path: String,
    /// The query's parameters, decoded.
    pub query: Vec<(String, String)>,
    /// Whether cookies are `Secure`.
    pub secure: bool,
}

impl PageRequest {
    /// The request of `uri` with `headers` at `site`.
    pub fn of(headers: &HeaderMap, uri: &Uri, site: Site<'_>) -> PageRequest {
        let query: Vec<(String, String)> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let (lang, asked) = Lang::of_request(&query, headers, site.lang_cookie);
        let lang_cookie = asked.map(|lang| {
            let path = if site.prefix.is_empty() {
                "/"
            } else {
                site.prefix
            };
            cookie_header(
                site.lang_cookie,
                lang.code(),
                path,
                LANG_COOKIE_MAX_AGE_S,
                site.secure,
            )
        });
        PageRequest {
            lang,
            lang_cookie,
            path: format!("{}{}", site.prefix, uri.path()),
            query,
            secure: site.secure,
        }
    }

    /// The value of the query's parameter `name`, when it has one.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The language switch: the same page in the other language (its query kept), and that
    /// language's code.
    pub fn switch(&self) -> (String, &'static str) {
        let other = self.lang.other();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.query.iter().filter(|(name, _)| name != "lang") {
            query.append_pair(name, value);
        }
        query.append_pair("lang", other.code());
        (format!("{}?{}", self.path, query.finish()), other.code())
    }

    /// `page` as HTML with `status`, with the language cookie when one was chosen; a page
    /// that does not render is logged and answered with `internal_error` (the page's
    /// language's text).
    pub fn render(
        &self,
        status: StatusCode,
        page: &impl Template,
        internal_error: &'static str,
    ) -> Response {
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "a page did not render");
                (StatusCode::INTERNAL_SERVER_ERROR, internal_error).into_response()
            }
        };
        if let Some(cookie) = &self.lang_cookie
            && let Ok(value) = HeaderValue::from_str(cookie)
        {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; zorgnet_portal_sessie=abc; taal=en"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, "zorgnet_portal_sessie"), Some("abc"));
        assert_eq!(cookie(&headers, "taal"), Some("en"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }

    #[test]
    fn cookies_are_http_only_and_secure_over_https() {
        assert_eq!(
            cookie_header("taal", "en", "/", 60, true),
            "taal=en; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            cookie_header("s", "", "/x", 0, false),
            "s=; Path=/x; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn the_switch_keeps_the_query_and_the_prefix() {
        let site = Site {
            prefix: "/zorgverlener",
            lang_cookie: "taal",
            secure: false,
        };
        let uri: Uri = "/00000022/patient?a=b&lang=nl".parse().unwrap();
        let request = PageRequest::of(&HeaderMap::new(), &uri, site);
        assert_eq!(request.lang, Lang::Nl);
        assert_eq!(request.query_value("a"), Some("b"));
        assert_eq!(
            request.lang_cookie.as_deref(),
            Some("taal=nl; Path=/zorgverlener; Max-Age=31536000; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            request.switch(),
            (
                "/zorgverlener/00000022/patient?a=b&lang=en".to_string(),
                "en"
            )
        );
        let bare = Site { prefix: "", ..site };
        let request = PageRequest::of(&HeaderMap::new(), &"/?lang=en".parse().unwrap(), bare);
        assert!(request.lang_cookie.unwrap().contains("; Path=/;"));
        let unasked = PageRequest::of(&HeaderMap::new(), &"/x".parse().unwrap(), bare);
        assert_eq!(unasked.lang_cookie, None);
    }

    #[tokio::test]
    async fn every_answer_has_the_policy_and_only_the_stylesheet_is_cached() {
        let app = Router::new()
            .route("/", get(|| async { "page" }))
            .route("/assets/x.css", get(|| async { stylesheet("p {}") }))
            .layer(axum::middleware::from_fn(security_headers));
        let get = |path: &'static str| {
            app.clone()
                .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
        };
        let page = get("/").await.unwrap();
        assert_eq!(
            page.headers()["content-security-policy"],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let css = get("/assets/x.css").await.unwrap();
        assert_eq!(css.headers()["cache-control"], "public, max-age=3600");
        assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
        assert!(css.headers().contains_key("content-security-policy"));
    }
}
