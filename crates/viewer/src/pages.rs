//! The viewer's routes and pages: askama templates (escaped at build time) around the views of
//! `record`, the login per organisation, the patient search, the treatment relation, the
//! emergency access, the language choice, and the security headers every answer carries.
//! What it is not: where data is fetched or arranged (`record`), where the hub is asked
//! (`hub`) or where a token is verified (`zorgnet_web::oidc`, `zorgnet_trust::oidc`).

use crate::hub::{self, RELATION_KINDS, Relation};
use crate::i18n::{LANG_COOKIE, Texts};
use crate::patient_number::PatientNumber;
use crate::record::{
    Contacts, FetchFailure, Fetched, Part, Purpose, RecordView, fetch, own_patient,
};
use crate::session::Session;
use crate::{FORM_BYTES_MAX, Inner, LOGIN_LIFETIME, Org, REASON_CHARS_MAX};
use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use zorgnet_trust::roles::Role;
use zorgnet_web::oidc::{LoggedIn, LoginError, callback_code};
use zorgnet_web::page::{
    PageRequest, Site, cookie, cookie_header, redirect, same_token, security_headers, with_cookie,
};
use zorgnet_web::session::{PendingLogin, random_token, session_lifetime};

/// The session cookie's name starts with this; the organisation's URA follows, so a browser
/// holds one session per organisation, each sent only to that organisation's pages.
const SESSION_COOKIE_PREFIX: &str = "zorgnet_viewer_sessie_";
/// The cookie of a login under way (sent only to the organisation's `/callback`).
const LOGIN_COOKIE: &str = "zorgnet_viewer_login";
/// The stylesheet, in the binary.
const STYLESHEET: &str = include_str!("../assets/viewer.css");

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

fn session_cookie(ura: &str) -> String {
    format!("{SESSION_COOKIE_PREFIX}{ura}")
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
    request: PageRequest,
    root: String,
    /// The organisation of the page, when it names one the viewer serves.
    org: Option<(String, String)>,
    /// The session for this organisation: `Err(())` when the cookie names a session of
    /// another organisation.
    session: Result<Option<(String, Session)>, ()>,
}

impl Context {
    fn of(inner: &Inner, headers: &HeaderMap, uri: &Uri, ura: Option<&str>) -> Context {
        let site = Site {
            prefix: &inner.prefix,
            lang_cookie: LANG_COOKIE,
            secure: inner.secure,
        };
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
            request: PageRequest::of(headers, uri, site),
            root: inner.prefix.clone(),
            org,
            session,
        }
    }

    fn t(&self) -> &'static Texts {
        Texts::of(self.request.lang)
    }

    /// Whether cookies are `Secure`.
    fn secure(&self) -> bool {
        self.request.secure
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
        let (switch_href, switch_lang) = self.request.switch();
        let session = self.session().map(|(_, s)| s);
        Layout {
            t: self.t(),
            lang: self.request.lang.code(),
            title: title.to_string(),
            root: self.root.clone(),
            home: self.home(),
            switch_href,
            switch_lang,
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
        self.request.render(status, page, self.t().error_internal)
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
    zorgnet_web::page::stylesheet(STYLESHEET)
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
    let pending = PendingLogin::new(org.config.ura.clone());
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
        cx.secure(),
    );
    with_cookie(redirect(&url), cookie)
}

/// The claims of a verified ID token the viewer reads beyond `zorgnet_trust`'s.
#[derive(Deserialize)]
struct StaffClaims {
    #[serde(default)]
    name: Option<String>,
}

/// The professional a completed login names: the verified token's UZI number, when it names
/// no citizen.
fn uzi_of(logged_in: &LoggedIn<StaffClaims>) -> Result<String, LoginError> {
    let verified = &logged_in.verified;
    match (&verified.uzi, &verified.person) {
        (Some(uzi), None) => Ok(uzi.clone()),
        _ => Err(LoginError::Token(
            "the viewer is for professionals: the token names no UZI number".into(),
        )),
    }
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
    let clear_login = cookie_header(LOGIN_COOKIE, "", &cx.org_path("/callback"), 0, cx.secure());
    let fail = |status, message| with_cookie(cx.error(status, message), clear_login.clone());
    let Some(pending) = pending.filter(|p| p.context == org.config.ura) else {
        return fail(StatusCode::BAD_REQUEST, t.error_login);
    };
    let Some(code) = callback_code(&pending, &parameters) else {
        return fail(StatusCode::BAD_REQUEST, t.error_login);
    };
    let completed = org
        .provider
        .complete::<StaffClaims, String>(&inner.http, &pending, code)
        .await
        .and_then(|logged_in| uzi_of(&logged_in).map(|uzi| (uzi, logged_in)));
    let (uzi, logged_in) = match completed {
        Ok(completed) => completed,
        Err(e) => {
            tracing::warn!(error = %e, "a login did not complete");
            let (status, message) = if e.is_provider_failure() {
                (StatusCode::BAD_GATEWAY, t.error_provider)
            } else {
                (StatusCode::BAD_REQUEST, t.error_login)
            };
            return fail(status, message);
        }
    };
    let professional = match hub::professional(org, &uzi).await {
        Ok(Some(professional)) => professional,
        Ok(None) => {
            tracing::info!(uzi = %uzi, ura = %org.config.ura, "refused a professional without a role at the organisation");
            return fail(StatusCode::FORBIDDEN, t.error_no_role);
        }
        Err(e) => {
            tracing::warn!(error = %e, "the professional register cannot be asked");
            return fail(StatusCode::BAD_GATEWAY, t.error_hub);
        }
    };
    let lifetime = session_lifetime(logged_in.expires_in_s);
    let name = if professional.name.is_empty() {
        logged_in.claims.name.unwrap_or_default()
    } else {
        professional.name
    };
    let session = Session {
        ura: org.config.ura.clone(),
        uzi: uzi.clone(),
        name,
        role: professional.roles[0].clone(),
        roles: professional.roles,
        access_token: logged_in.access_token,
        csrf: random_token(),
        patient: None,
    };
    let id = inner.sessions.open(session, Instant::now() + lifetime);
    tracing::info!(uzi = %uzi, ura = %org.config.ura, "a professional logged in");
    let session_cookie = cookie_header(
        &session_cookie(&org.config.ura),
        &id,
        &cx.org_path(""),
        lifetime.as_secs(),
        cx.secure(),
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

/// A form posted to an organisation's page by its logged-in professional: the organisation,
/// the page's context, the session's id and the session, and the form.
type Posted<'a, T> = (&'a Org, Context, String, Session, T);

/// The form posted to organisation `ura`'s page, read with the session's CSRF token (`csrf`
/// of the form); or the answer refusing it: to the login without a session, 403 with another
/// organisation's session or a form without the session's token.
fn posted<'a, T>(
    inner: &'a Inner,
    headers: &HeaderMap,
    uri: &Uri,
    ura: &str,
    form: Result<Form<T>, FormRejection>,
    csrf: impl Fn(&T) -> &str,
) -> Result<Posted<'a, T>, Box<Response>> {
    let (org, cx, id, session) = org_session(inner, headers, uri, ura)?;
    match form {
        Ok(Form(form)) if same_token(csrf(&form), &session.csrf) => {
            Ok((org, cx, id, session, form))
        }
        _ => Err(Box::new(cx.error(StatusCode::FORBIDDEN, cx.t().error_form))),
    }
}

/// A [`posted`] form and the patient its session is looking at; 400 when there is none.
fn about_patient<T>(
    posted: Posted<'_, T>,
) -> Result<(Posted<'_, T>, PatientNumber), Box<Response>> {
    let (_, cx, _, session, _) = &posted;
    match session.patient.as_deref().and_then(PatientNumber::parse) {
        Some(patient) => Ok((posted, patient)),
        None => Err(Box::new(
            cx.error(StatusCode::BAD_REQUEST, cx.t().error_bad_request),
        )),
    }
}

async fn logout(
    State(inner): State<Arc<Inner>>,
    Path(ura): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let (_, cx, id, _, _) = match posted(&inner, &headers, &uri, &ura, form, |f| &f.csrf) {
        Ok(posted) => posted,
        Err(response) => return *response,
    };
    inner.sessions.close(&id);
    with_cookie(
        redirect(&cx.home()),
        cookie_header(
            &session_cookie(cx.ura()),
            "",
            &cx.org_path(""),
            0,
            cx.secure(),
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
    let (_, cx, id, session, form) = match posted(&inner, &headers, &uri, &ura, form, |f| &f.csrf) {
        Ok(posted) => posted,
        Err(response) => return *response,
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
    let kept = inner.sessions.update(&id, |s| {
        s.patient = Some(patient.digits().to_string());
        s.role = role;
    });
    if kept.is_none() {
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
    let posted = posted(&inner, &headers, &uri, &ura, form, |f| &f.csrf).and_then(about_patient);
    let ((org, cx, _, session, form), patient) = match posted {
        Ok(posted) => posted,
        Err(response) => return *response,
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
    let posted = posted(&inner, &headers, &uri, &ura, form, |f| &f.csrf).and_then(about_patient);
    let ((org, cx, id, session, form), patient) = match posted {
        Ok(posted) => posted,
        Err(response) => return *response,
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
    use axum::http::{HeaderValue, header};

    #[test]
    fn each_organisation_has_its_session_cookie() {
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
}
