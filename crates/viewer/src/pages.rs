//! The viewer's routes and pages: askama templates (escaped at build time) around the views of
//! `record`, the login per organisation, the patient search, the treatment relation, the
//! emergency access, the language choice, and the security headers every answer carries.
//! What it is not: where data is fetched or arranged (`record`), where the hub is asked
//! (`hub`) or where a token is verified (`oidc`).

use crate::hub::{self, RELATION_KINDS, Relation};
use crate::i18n::{LANG_COOKIE, Lang, Texts};
use crate::oidc::LoginError;
use crate::patient_number::PatientNumber;
use crate::record::{
    Contacts, FetchFailure, Fetched, Part, Purpose, RecordView, fetch, own_patient,
};
use crate::session::{PendingLogin, Session, random_token};
use crate::{FORM_BYTES_MAX, Inner, LOGIN_LIFETIME, Org, REASON_CHARS_MAX, SESSION_LIFETIME_MAX};
use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zorgnet_trust::roles::Role;

/// The session cookie's name starts with this; the organisation's URA follows, so a browser
/// holds one session per organisation, each sent only to that organisation's pages.
const SESSION_COOKIE_PREFIX: &str = "zorgnet_viewer_sessie_";
/// The cookie of a login under way (sent only to the organisation's `/callback`).
const LOGIN_COOKIE: &str = "zorgnet_viewer_login";
/// How long the language cookie lasts, in seconds (a year).
const LANG_COOKIE_MAX_AGE_S: u64 = 365 * 24 * 60 * 60;
/// How long the stylesheet may be cached, in seconds.
const STYLESHEET_MAX_AGE_S: u64 = 60 * 60;
/// The stylesheet, in the binary.
const STYLESHEET: &str = include_str!("../assets/viewer.css");
/// The policy of every answer: no scripts at all, styles from the viewer only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", get(start))
        .route("/assets/viewer.css", get(stylesheet))
        .route("/{ura}", get(search_page))
        .route("/{ura}/", get(search_page))
        .route("/{ura}/login", get(login))
        .route("/{ura}/callback", get(callback))
        .route("/{ura}/logout", post(logout))
        .route("/{ura}/zoeken", post(search))
        .route("/{ura}/patient", get(patient))
        .route("/{ura}/relatie", post(register_relation))
        .route("/{ura}/nood", get(emergency_form).post(emergency))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(inner)
}

/// Adds the security headers to every answer; pages are never cached (they may hold health
/// data), the stylesheet may be.
async fn security_headers(request: Request, next: Next) -> Response {
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

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Equality that takes as long whatever the first difference (for the CSRF token).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn session_cookie(ura: &str) -> String {
    format!("{SESSION_COOKIE_PREFIX}{ura}")
}

fn cookie_header(name: &str, value: &str, path: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// What the base template shows.
struct Layout {
    t: &'static Texts,
    lang: &'static str,
    title: String,
    /// The path prefix of every link.
    root: String,
    /// The start page: the prefix itself (a nested router does not serve `{prefix}/`).
    home: String,
    switch_href: String,
    switch_lang: &'static str,
    /// The organisation of the page (empty on the start page).
    ura: String,
    org_name: String,
    logged_in: bool,
    csrf: String,
    name: String,
    role: String,
    /// The page shows an emergency access.
    emergency: bool,
}

/// What every page needs to know of the request.
struct Context {
    lang: Lang,
    /// The language cookie to set, when `?lang=` chose one.
    lang_cookie: Option<String>,
    root: String,
    path: String,
    query: Vec<(String, String)>,
    secure: bool,
    /// The organisation of the page, when it names one the viewer serves.
    org: Option<(String, String)>,
    /// The session for this organisation: `Err(())` when the cookie names a session of
    /// another organisation.
    session: Result<Option<(String, Session)>, ()>,
}

impl Context {
    fn of(inner: &Inner, headers: &HeaderMap, uri: &Uri, ura: Option<&str>) -> Context {
        let query: Vec<(String, String)> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let asked = query
            .iter()
            .find(|(name, _)| name == "lang")
            .and_then(|(_, value)| Lang::parse(value));
        let lang = asked
            .or_else(|| cookie(headers, LANG_COOKIE).and_then(Lang::parse))
            .unwrap_or(Lang::Nl);
        let root = inner.prefix.clone();
        let lang_cookie = asked.map(|lang| {
            let path = if root.is_empty() { "/" } else { root.as_str() };
            cookie_header(
                LANG_COOKIE,
                lang.code(),
                path,
                LANG_COOKIE_MAX_AGE_S,
                inner.secure,
            )
        });
        let org = ura
            .and_then(|ura| inner.organisation(ura))
            .map(|o| (o.config.ura.clone(), o.config.name.clone()));
        let session = match &org {
            None => Ok(None),
            Some((ura, _)) => match cookie(headers, &session_cookie(ura))
                .and_then(|id| inner.sessions.get(id).map(|s| (id.to_string(), s)))
            {
                Some((_, session)) if session.ura != *ura => Err(()),
                found => Ok(found),
            },
        };
        Context {
            lang,
            lang_cookie,
            path: format!("{root}{}", uri.path()),
            root,
            query,
            secure: inner.secure,
            org,
            session,
        }
    }

    fn t(&self) -> &'static Texts {
        self.lang.texts()
    }

    fn session(&self) -> Option<&(String, Session)> {
        self.session.as_ref().ok().and_then(Option::as_ref)
    }

    fn ura(&self) -> &str {
        self.org.as_ref().map(|(ura, _)| ura.as_str()).unwrap_or("")
    }

    /// The start page's path.
    fn home(&self) -> String {
        if self.root.is_empty() {
            "/".to_string()
        } else {
            self.root.clone()
        }
    }

    /// A path under the organisation's pages.
    fn org_path(&self, rest: &str) -> String {
        format!("{}/{}{rest}", self.root, self.ura())
    }

    /// The page's layout, titled `title`.
    fn layout(&self, title: &str) -> Layout {
        let other = self.lang.other();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.query.iter().filter(|(name, _)| name != "lang") {
            query.append_pair(name, value);
        }
        query.append_pair("lang", other.code());
        let session = self.session().map(|(_, s)| s);
        Layout {
            t: self.t(),
            lang: self.lang.code(),
            title: title.to_string(),
            root: self.root.clone(),
            home: self.home(),
            switch_href: format!("{}?{}", self.path, query.finish()),
            switch_lang: other.code(),
            ura: self.ura().to_string(),
            org_name: self
                .org
                .as_ref()
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            logged_in: session.is_some(),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            name: session.map(|s| s.name.clone()).unwrap_or_default(),
            role: session.map(|s| s.role.clone()).unwrap_or_default(),
            emergency: false,
        }
    }

    /// `page` as HTML with `status`, with the language cookie when one was chosen.
    fn render(&self, status: StatusCode, page: &impl Template) -> Response {
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "a page did not render");
                (StatusCode::INTERNAL_SERVER_ERROR, self.t().error_internal).into_response()
            }
        };
        if let Some(cookie) = &self.lang_cookie
            && let Ok(value) = HeaderValue::from_str(cookie)
        {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        let page = ErrorPage {
            l: self.layout(self.t().error_title),
            message: message.to_string(),
            login_href: String::new(),
        };
        self.render(status, &page)
    }

    /// The organisation's session, or the answer for a request without one: to the login
    /// when there is none, a refusal when the cookie is another organisation's. (The answer
    /// is boxed: a `Response` is large, and the session is the common case.)
    fn require_session(&self) -> Result<(String, Session), Box<Response>> {
        match &self.session {
            Ok(Some(found)) => Ok(found.clone()),
            Ok(None) => Err(Box::new(redirect(&self.org_path("/login")))),
            Err(()) => Err(Box::new(
                self.error(StatusCode::FORBIDDEN, self.t().error_other_org),
            )),
        }
    }
}

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    l: Layout,
    organisations: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    l: Layout,
    message: String,
    /// Where to log in again, when that is the way on.
    login_href: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    l: Layout,
    roles: Vec<String>,
    error: String,
    bsn: String,
}

/// A part of the summary shown as a list of items.
struct Section {
    id: &'static str,
    heading: &'static str,
    part: Part,
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    l: Layout,
    /// The patient's BSN or zorgverificatienummer, and which of the two it is.
    number: String,
    number_label: &'static str,
    /// The organisation's relations with the patient; `None` when the hub could not say.
    relations: Option<Vec<RelationRow>>,
    relation_active: bool,
    kinds: Vec<(&'static str, &'static str)>,
    failure: String,
    view: RecordView,
    sections: Vec<Section>,
    contacts: Contacts,
    may_break_glass: bool,
}

/// A relation as the page shows it.
struct RelationRow {
    kind: String,
    status: String,
    valid_from: String,
    valid_until: String,
}

#[derive(Template)]
#[template(path = "emergency_form.html")]
struct EmergencyFormPage {
    l: Layout,
    /// The patient's BSN or zorgverificatienummer, and which of the two it is.
    number: String,
    number_label: &'static str,
    error: String,
    reason: String,
    reason_max: usize,
}

#[derive(Template)]
#[template(path = "emergency.html")]
struct EmergencyPage {
    l: Layout,
    /// The patient's BSN or zorgverificatienummer, and which of the two it is.
    number: String,
    number_label: &'static str,
    reason: String,
    failure: String,
    view: RecordView,
    sections: Vec<Section>,
    contacts: Contacts,
}

async fn start(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri, None);
    let page = StartPage {
        l: cx.layout(cx.t().start_title),
        organisations: inner
            .organisations
            .iter()
            .map(|o| (o.config.ura.clone(), o.config.name.clone()))
            .collect(),
    };
    cx.render(StatusCode::OK, &page)
}

async fn not_found(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri, None);
    cx.error(StatusCode::NOT_FOUND, cx.t().error_not_found)
}

async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
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

/// The organisation `ura` names and the page's context, or the not-found page.
fn org_context<'a>(
    inner: &'a Inner,
    headers: &HeaderMap,
    uri: &Uri,
    ura: &str,
) -> Result<(&'a Org, Context), Box<Response>> {
    let cx = Context::of(inner, headers, uri, Some(ura));
    match inner.organisation(ura) {
        Some(org) => Ok((org, cx)),
        None => Err(Box::new(
            cx.error(StatusCode::NOT_FOUND, cx.t().error_not_found),
        )),
    }
}

/// The organisation, the page context and the session of a page that needs a login.
fn org_session<'a>(
    inner: &'a Inner,
    headers: &HeaderMap,
    uri: &Uri,
    ura: &str,
) -> Result<(&'a Org, Context, String, Session), Box<Response>> {
    let (org, cx) = org_context(inner, headers, uri, ura)?;
    let (id, session) = cx.require_session()?;
    Ok((org, cx, id, session))
}

async fn login(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (org, cx) = match org_context(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let pending = PendingLogin {
        ura: org.config.ura.clone(),
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        started: Instant::now(),
    };
    let url = match org.provider.authorization_url(&inner.http, &pending).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(error = %e, "a login could not start");
            return cx.error(StatusCode::BAD_GATEWAY, cx.t().error_provider);
        }
    };
    let Some(id) = inner.sessions.start_login(pending) else {
        return cx.error(StatusCode::SERVICE_UNAVAILABLE, cx.t().error_busy);
    };
    let cookie = cookie_header(
        LOGIN_COOKIE,
        &id,
        &cx.org_path("/callback"),
        LOGIN_LIFETIME.as_secs(),
        cx.secure,
    );
    with_cookie(redirect(&url), cookie)
}

async fn callback(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(parameters): Query<HashMap<String, String>>,
) -> Response {
    let (org, cx) = match org_context(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let t = cx.t();
    let pending = cookie(&headers, LOGIN_COOKIE).and_then(|id| inner.sessions.take_login(id));
    let clear_login = cookie_header(LOGIN_COOKIE, "", &cx.org_path("/callback"), 0, cx.secure);
    let fail = |status, message| with_cookie(cx.error(status, message), clear_login.clone());
    let Some(pending) = pending.filter(|p| p.ura == org.config.ura) else {
        return fail(StatusCode::BAD_REQUEST, t.error_login);
    };
    let state_matches = parameters
        .get("state")
        .is_some_and(|state| same(state, &pending.state));
    let (Some(code), true) = (parameters.get("code"), state_matches) else {
        tracing::warn!(
            provider_error = parameters.get("error").map(String::as_str),
            state_matches,
            "a login came back without a code or with another state"
        );
        return fail(StatusCode::BAD_REQUEST, t.error_login);
    };
    let logged_in = match org.provider.complete(&inner.http, &pending, code).await {
        Ok(logged_in) => logged_in,
        Err(e) => {
            tracing::warn!(error = %e, "a login did not complete");
            let (status, message) = match e {
                LoginError::Provider(_) => (StatusCode::BAD_GATEWAY, t.error_provider),
                LoginError::Mismatch(_) | LoginError::Token(_) => {
                    (StatusCode::BAD_REQUEST, t.error_login)
                }
            };
            return fail(status, message);
        }
    };
    let professional = match hub::professional(org, &logged_in.uzi).await {
        Ok(Some(professional)) => professional,
        Ok(None) => {
            tracing::info!(uzi = %logged_in.uzi, ura = %org.config.ura, "refused a professional without a role at the organisation");
            return fail(StatusCode::FORBIDDEN, t.error_no_role);
        }
        Err(e) => {
            tracing::warn!(error = %e, "the professional register cannot be asked");
            return fail(StatusCode::BAD_GATEWAY, t.error_hub);
        }
    };
    let lifetime = logged_in
        .expires_in_s
        .map(Duration::from_secs)
        .unwrap_or(SESSION_LIFETIME_MAX)
        .min(SESSION_LIFETIME_MAX);
    let name = if professional.name.is_empty() {
        logged_in.name.unwrap_or_default()
    } else {
        professional.name
    };
    let id = inner.sessions.open(Session {
        ura: org.config.ura.clone(),
        uzi: logged_in.uzi.clone(),
        name,
        role: professional.roles[0].clone(),
        roles: professional.roles,
        access_token: logged_in.access_token,
        csrf: random_token(),
        patient: None,
        expires: Instant::now() + lifetime,
    });
    tracing::info!(uzi = %logged_in.uzi, ura = %org.config.ura, "a professional logged in");
    let session_cookie = cookie_header(
        &session_cookie(&org.config.ura),
        &id,
        &cx.org_path(""),
        lifetime.as_secs(),
        cx.secure,
    );
    with_cookie(
        with_cookie(redirect(&cx.org_path("/")), session_cookie),
        clear_login,
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Whether a form carries the session's CSRF token.
fn form_ok<T>(
    form: &Result<Form<T>, FormRejection>,
    session: &Session,
    csrf: impl Fn(&T) -> &str,
) -> bool {
    form.as_ref()
        .is_ok_and(|Form(form)| same(csrf(form), &session.csrf))
}

async fn logout(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let (_, cx, id, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !form_ok(&form, &session, |f| &f.csrf) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().error_form);
    }
    inner.sessions.close(&id);
    with_cookie(
        redirect(&cx.home()),
        cookie_header(
            &session_cookie(cx.ura()),
            "",
            &cx.org_path(""),
            0,
            cx.secure,
        ),
    )
}

async fn search_page(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (_, cx, _, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let page = SearchPage {
        l: cx.layout(cx.t().search_title),
        roles: session.roles,
        error: String::new(),
        bsn: String::new(),
    };
    cx.render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct SearchForm {
    csrf: String,
    bsn: String,
    #[serde(default)]
    role: Option<String>,
}

async fn search(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<SearchForm>, FormRejection>,
) -> Response {
    let (_, cx, id, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !form_ok(&form, &session, |f| &f.csrf) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().error_form);
    }
    let Ok(Form(form)) = form else {
        return cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request);
    };
    let Some(patient) = PatientNumber::parse(&form.bsn) else {
        let page = SearchPage {
            l: cx.layout(cx.t().search_title),
            roles: session.roles,
            error: cx.t().bsn_invalid.to_string(),
            bsn: form.bsn.chars().take(32).collect(),
        };
        return cx.render(StatusCode::BAD_REQUEST, &page);
    };
    let role = form.role.unwrap_or_else(|| session.role.clone());
    if !session.roles.contains(&role) {
        return cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request);
    }
    if !inner.sessions.update(&id, |s| {
        s.patient = Some(patient.digits().to_string());
        s.role = role;
    }) {
        return redirect(&cx.org_path("/login"));
    }
    redirect(&cx.org_path("/patient"))
}

/// What the page calls the patient's number.
fn number_label(patient: &PatientNumber, t: &'static Texts) -> &'static str {
    if patient.is_zvn() {
        t.patient_zvn
    } else {
        t.patient_bsn
    }
}

/// The relations as rows, in the page's language.
fn relation_rows(relations: &[Relation], t: &'static Texts) -> Vec<RelationRow> {
    relations
        .iter()
        .map(|r| RelationRow {
            kind: kind_label(&r.kind, t).to_string(),
            status: r.status.clone(),
            valid_from: r.valid_from.clone(),
            valid_until: r.valid_until.clone(),
        })
        .collect()
}

fn kind_label<'a>(kind: &'a str, t: &'static Texts) -> &'a str {
    match kind {
        "referral" => t.kind_referral,
        "consultation" => t.kind_consultation,
        "co-treatment" => t.kind_co_treatment,
        "own-patient" => t.kind_own_patient,
        other => other,
    }
}

/// The summary parts shown as lists, taken out of `view`.
fn sections(view: &mut RecordView, t: &'static Texts) -> Vec<Section> {
    vec![
        Section {
            id: "alerts",
            heading: t.alerts,
            part: std::mem::take(&mut view.alerts),
        },
        Section {
            id: "allergieen",
            heading: t.allergies,
            part: std::mem::take(&mut view.allergies),
        },
        Section {
            id: "problemen",
            heading: t.problems,
            part: std::mem::take(&mut view.problems),
        },
    ]
}

/// The message of a failed fetch; `None` when the session has expired (the caller sends the
/// professional to log in again).
fn failure_text(failure: &FetchFailure, t: &Texts) -> Option<String> {
    match failure {
        FetchFailure::SessionExpired => None,
        FetchFailure::Refused(reason) => Some(format!("{} {reason}", t.fetch_refused)),
        FetchFailure::Unavailable(reason) => {
            tracing::warn!(error = %reason, "a fetch failed");
            Some(t.fetch_unavailable.to_string())
        }
    }
}

/// The page for a session whose token the node no longer accepts.
fn expired(inner: &Inner, cx: &Context, id: &str) -> Response {
    inner.sessions.close(id);
    let page = ErrorPage {
        l: cx.layout(cx.t().error_title),
        message: cx.t().session_expired.to_string(),
        login_href: cx.org_path("/login"),
    };
    cx.render(StatusCode::UNAUTHORIZED, &page)
}

async fn patient(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (org, cx, id, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(patient) = session.patient.as_deref().and_then(PatientNumber::parse) else {
        return redirect(&cx.org_path("/"));
    };
    let t = cx.t();
    let (relations, fetched, own) = tokio::join!(
        hub::relations(org, &patient),
        fetch(&inner.http, org, &session, &patient, Purpose::Treatment),
        own_patient(&inner.http, org, &session, &patient),
    );
    let relations = relations
        .inspect_err(|e| tracing::warn!(error = %e, "the relation register cannot be asked"))
        .ok();
    let (fetched, failure) = match fetched {
        Ok(fetched) => (fetched, String::new()),
        Err(failure) => match failure_text(&failure, t) {
            Some(text) => (Fetched::default(), text),
            None => return expired(&inner, &cx, &id),
        },
    };
    let mut view = RecordView::of(fetched, &session.role, t);
    let page = PatientPage {
        l: cx.layout(t.patient_title),
        number: patient.digits().to_string(),
        number_label: number_label(&patient, t),
        relation_active: relations
            .as_ref()
            .is_some_and(|r| r.iter().any(Relation::active)),
        relations: relations.map(|r| relation_rows(&r, t)),
        kinds: RELATION_KINDS
            .iter()
            .map(|kind| (*kind, kind_label(kind, t)))
            .collect(),
        failure,
        sections: sections(&mut view, t),
        view,
        contacts: Contacts::of(own.as_ref()),
        may_break_glass: Role::parse(&session.role).is_some_and(Role::may_ask_emergency),
    };
    cx.render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct RelationForm {
    csrf: String,
    kind: String,
}

async fn register_relation(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<RelationForm>, FormRejection>,
) -> Response {
    let (org, cx, _, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !form_ok(&form, &session, |f| &f.csrf) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().error_form);
    }
    let (Ok(Form(form)), Some(patient)) = (
        form,
        session.patient.as_deref().and_then(PatientNumber::parse),
    ) else {
        return cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request);
    };
    if !RELATION_KINDS.contains(&form.kind.as_str()) {
        return cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request);
    }
    match hub::register_relation(org, &patient, &form.kind).await {
        Ok(()) => {
            tracing::info!(uzi = %session.uzi, ura = %org.config.ura, kind = %form.kind, "registered a treatment relation");
            redirect(&cx.org_path("/patient"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the hub did not register a relation");
            cx.error(StatusCode::BAD_GATEWAY, cx.t().relation_refused)
        }
    }
}

async fn emergency_form(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (_, cx, _, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(patient) = session.patient.as_deref().and_then(PatientNumber::parse) else {
        return redirect(&cx.org_path("/"));
    };
    if !Role::parse(&session.role).is_some_and(Role::may_ask_emergency) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().emergency_role_refused);
    }
    let page = EmergencyFormPage {
        l: cx.layout(cx.t().emergency_title),
        number: patient.digits().to_string(),
        number_label: number_label(&patient, cx.t()),
        error: String::new(),
        reason: String::new(),
        reason_max: REASON_CHARS_MAX,
    };
    cx.render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct EmergencyForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn emergency(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<EmergencyForm>, FormRejection>,
) -> Response {
    let (org, cx, id, session) = match org_session(&inner, &headers, &uri, &ura) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !form_ok(&form, &session, |f| &f.csrf) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().error_form);
    }
    let (Ok(Form(form)), Some(patient)) = (
        form,
        session.patient.as_deref().and_then(PatientNumber::parse),
    ) else {
        return cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request);
    };
    let t = cx.t();
    if !Role::parse(&session.role).is_some_and(Role::may_ask_emergency) {
        return cx.error(StatusCode::FORBIDDEN, t.emergency_role_refused);
    }
    let reason = form.reason.trim();
    let problem = if reason.is_empty() {
        Some(t.emergency_reason_required)
    } else if reason.chars().count() > REASON_CHARS_MAX || reason.chars().any(char::is_control) {
        Some(t.emergency_reason_too_long)
    } else {
        None
    };
    if let Some(problem) = problem {
        let page = EmergencyFormPage {
            l: cx.layout(t.emergency_title),
            number: patient.digits().to_string(),
            number_label: number_label(&patient, t),
            error: problem.to_string(),
            reason: reason.chars().take(REASON_CHARS_MAX).collect(),
            reason_max: REASON_CHARS_MAX,
        };
        return cx.render(StatusCode::BAD_REQUEST, &page);
    }
    tracing::warn!(uzi = %session.uzi, ura = %org.config.ura, role = %session.role, "a professional breaks the glass");
    let (fetched, own) = tokio::join!(
        fetch(
            &inner.http,
            org,
            &session,
            &patient,
            Purpose::Emergency(reason)
        ),
        own_patient(&inner.http, org, &session, &patient),
    );
    let (fetched, failure, status) = match fetched {
        Ok(fetched) => (fetched, String::new(), StatusCode::OK),
        Err(failure) => {
            let status = match failure {
                FetchFailure::Refused(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            match failure_text(&failure, t) {
                Some(text) => (Fetched::default(), text, status),
                None => return expired(&inner, &cx, &id),
            }
        }
    };
    let mut view = RecordView::of(fetched, &session.role, t);
    let mut l = cx.layout(t.emergency_title);
    l.emergency = true;
    let page = EmergencyPage {
        l,
        number: patient.digits().to_string(),
        number_label: number_label(&patient, t),
        reason: reason.to_string(),
        failure,
        sections: sections(&mut view, t),
        view,
        contacts: Contacts::of(own.as_ref()),
    };
    cx.render(status, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; zorgnet_viewer_sessie_00000022=abc; zorgnet_viewer_taal=en",
            ),
        );
        assert_eq!(cookie(&headers, &session_cookie("00000022")), Some("abc"));
        assert_eq!(cookie(&headers, &session_cookie("00000033")), None);
        assert_eq!(cookie(&headers, LANG_COOKIE), Some("en"));
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
