//! The portal's routes and pages: askama templates (escaped at build time) around the views of
//! `record`, `access_log`, `proof` and `choices`, the login and logout, the language choice,
//! and the security headers every answer carries.
//! What it is not: where data is fetched (`sources`) or where a token is verified
//! (`zorgnet_web::oidc`, `zorgnet_trust::oidc`).

use crate::access_log::{Access, REPORT_REASON_CHARS_MAX, ReportFailure, accesses};
use crate::choices::{
    CHOICE_ALL, CHOICE_CATEGORY, CHOICE_DENY, CHOICE_EMERGENCY, CHOICE_PERMIT, Choice, ChoiceRow,
    Confirmation, RevokedRow, category_options, describe, failure, organisation_options,
    person_token, rows,
};
use crate::citizen::{CitizenClaims, CitizenId};
use crate::i18n::{LANG_COOKIE, Texts};
use crate::proof::{Verdict, check};
use crate::record::{RecordView, bundle};
use crate::session::Session;
use crate::sources::{Failure, Gathered, Question, gather};
use crate::{FORM_BYTES_MAX, Inner, RESPONSE_BYTES_MAX};
use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use zorgnet_hub_client::{HubClient, HubClientError, is_directive_id};
use zorgnet_web::Lang;
use zorgnet_web::client::read_body;
use zorgnet_web::oidc::{LoggedIn, callback_code};
use zorgnet_web::page::{
    PageRequest, Site, cookie, cookie_header, redirect, same_token, security_headers, with_cookie,
};
use zorgnet_web::record::Item;
use zorgnet_web::session::{PendingLogin, random_token, session_lifetime};

/// The session cookie.
const SESSION_COOKIE: &str = "zorgnet_portal_sessie";
/// The cookie of a login under way (sent only to `/callback`).
const LOGIN_COOKIE: &str = "zorgnet_portal_login";
/// The stylesheet, in the binary.
const STYLESHEET: &str = include_str!("../assets/portal.css");

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", get(start))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
        .route("/overzicht", get(overview))
        .route("/afdrukken", get(print))
        .route("/download.json", get(download))
        .route("/wie-keek", get(access_log))
        .route("/wie-keek/bewijs", get(proof))
        .route("/wie-keek/melden", post(report))
        .route("/keuzes", get(choices).post(choose))
        .route("/keuzes/intrekken", post(revoke))
        .route("/assets/portal.css", get(stylesheet))
        .merge(crate::fhir_api::routes())
        .merge(crate::json_api::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(inner)
}

/// What every page needs to know of the request.
struct Context {
    request: PageRequest,
    session: Option<(String, Session)>,
}

impl Context {
    fn of(inner: &Inner, headers: &HeaderMap, uri: &Uri) -> Context {
        let site = Site {
            prefix: "",
            lang_cookie: LANG_COOKIE,
            secure: inner.config.base_url.starts_with("https://"),
        };
        let session = cookie(headers, SESSION_COOKIE)
            .and_then(|id| inner.sessions.get(id).map(|s| (id.to_string(), s)));
        Context {
            request: PageRequest::of(headers, uri, site),
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

    /// The page's layout, titled `title`.
    fn layout(&self, title: &str) -> Layout {
        let (switch_href, switch_lang) = self.request.switch();
        let (logged_in, csrf, name) = match &self.session {
            Some((_, session)) => (
                true,
                session.csrf.clone(),
                session.name.clone().unwrap_or_default(),
            ),
            None => (false, String::new(), String::new()),
        };
        Layout {
            t: self.t(),
            lang: self.request.lang.code(),
            title: title.to_string(),
            switch_href,
            switch_lang,
            logged_in,
            csrf,
            name,
        }
    }

    /// `page` as HTML with `status`, with the language cookie when one was chosen.
    fn render(&self, status: StatusCode, page: &impl Template) -> Response {
        self.request.render(status, page, self.t().error_internal)
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        self.error_back(status, message, "/", self.t().to_start)
    }

    /// An error page whose way on is `back` (`back_text`).
    fn error_back(
        &self,
        status: StatusCode,
        message: &str,
        back: &'static str,
        back_text: &'static str,
    ) -> Response {
        let page = ErrorPage {
            l: self.layout(self.t().error_title),
            message: message.to_string(),
            back,
            back_text,
        };
        self.render(status, &page)
    }
}

/// What the base template shows.
struct Layout {
    t: &'static Texts,
    lang: &'static str,
    title: String,
    switch_href: String,
    switch_lang: &'static str,
    logged_in: bool,
    csrf: String,
    name: String,
}

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    l: Layout,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    l: Layout,
    message: String,
    back: &'static str,
    back_text: &'static str,
}

/// A topic of the record: a heading and its items.
struct Topic {
    id: &'static str,
    heading: &'static str,
    with_kind: bool,
    items: Vec<Item>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    l: Layout,
    failures: Vec<(String, String)>,
    truncated: Vec<String>,
    view: RecordView,
    topics: Vec<Topic>,
}

#[derive(Template)]
#[template(path = "print.html")]
struct PrintPage {
    l: Layout,
    fetched_at: String,
    failures: Vec<(String, String)>,
    truncated: Vec<String>,
    view: RecordView,
    topics: Vec<Topic>,
}

#[derive(Template)]
#[template(path = "access_log.html")]
struct AccessLogPage {
    l: Layout,
    failures: Vec<(String, String)>,
    truncated: Vec<String>,
    accesses: Vec<Access>,
    /// The confirmation of a report just passed on: the organisation's name.
    reported: Option<String>,
    report_reason_max: usize,
}

/// What the proof page says.
enum ProofVerdict {
    Verified,
    Unsigned,
    Failed(String),
    Unavailable(String),
}

#[derive(Template)]
#[template(path = "proof.html")]
struct ProofPage {
    l: Layout,
    source: String,
    verdict: ProofVerdict,
    record_rows: Vec<(String, String)>,
    checkpoint_rows: Vec<(String, String)>,
}

async fn start(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let page = StartPage {
        l: cx.layout(cx.t().start_title),
    };
    cx.render(StatusCode::OK, &page)
}

async fn not_found(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    cx.error(StatusCode::NOT_FOUND, cx.t().error_not_found)
}

async fn stylesheet() -> Response {
    zorgnet_web::page::stylesheet(STYLESHEET)
}

async fn login(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let pending = PendingLogin::new(());
    let url = match inner
        .provider
        .authorization_url(&inner.http, &pending)
        .await
    {
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
        "/callback",
        crate::LOGIN_LIFETIME.as_secs(),
        cx.secure(),
    );
    with_cookie(redirect(&url), cookie)
}

async fn callback(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    Query(parameters): Query<HashMap<String, String>>,
) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let t = cx.t();
    let pending = cookie(&headers, LOGIN_COOKIE).and_then(|id| inner.sessions.take_login(id));
    let clear_login = cookie_header(LOGIN_COOKIE, "", "/callback", 0, cx.secure());
    let Some(pending) = pending else {
        return with_cookie(
            cx.error(StatusCode::BAD_REQUEST, t.error_login),
            clear_login,
        );
    };
    let Some(code) = callback_code(&pending, &parameters) else {
        return with_cookie(
            cx.error(StatusCode::BAD_REQUEST, t.error_login),
            clear_login,
        );
    };
    let completed = inner
        .provider
        .complete::<CitizenClaims, ()>(&inner.http, &pending, code)
        .await
        .and_then(|logged_in| CitizenId::of_login(&logged_in).map(|id| (id, logged_in)));
    let (citizen, logged_in): (CitizenId, LoggedIn<CitizenClaims>) = match completed {
        Ok(completed) => completed,
        Err(e) => {
            tracing::warn!(error = %e, "a login did not complete");
            let (status, message) = if e.is_provider_failure() {
                (StatusCode::BAD_GATEWAY, t.error_provider)
            } else {
                (StatusCode::BAD_REQUEST, t.error_login)
            };
            return with_cookie(cx.error(status, message), clear_login);
        }
    };
    let lifetime = session_lifetime(logged_in.expires_in_s);
    let session = Session {
        citizen,
        name: logged_in.claims.name,
        access_token: logged_in.access_token,
        csrf: random_token(),
        confirmation: None,
    };
    let id = inner.sessions.open(session, Instant::now() + lifetime);
    tracing::info!("a citizen logged in");
    let session_cookie = cookie_header(SESSION_COOKIE, &id, "/", lifetime.as_secs(), cx.secure());
    with_cookie(
        with_cookie(redirect("/overzicht"), session_cookie),
        clear_login,
    )
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((id, session)) = &cx.session else {
        return redirect("/");
    };
    if !form.is_ok_and(|Form(form)| same_token(&form.csrf, &session.csrf)) {
        return cx.error(StatusCode::FORBIDDEN, cx.t().error_form);
    }
    inner.sessions.close(id);
    with_cookie(
        redirect("/"),
        cookie_header(SESSION_COOKIE, "", "/", 0, cx.secure()),
    )
}

/// Why each failed source is missing, in the page's language.
fn failure_texts(gathered: &Gathered, t: &Texts) -> Vec<(String, String)> {
    gathered
        .failures
        .iter()
        .map(|f| {
            let why = match f.failure {
                Failure::Timeout => t.failure_timeout.to_string(),
                Failure::Unreachable => t.failure_unreachable.to_string(),
                Failure::Status(status) => format!("{} {status}", t.failure_status),
                Failure::Invalid => t.failure_invalid.to_string(),
            };
            (f.source.clone(), why)
        })
        .collect()
}

fn source_names(inner: &Inner) -> Vec<String> {
    inner
        .config
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// Where a page that needs a session sends a browser without one.
fn to_login() -> Response {
    redirect("/login")
}

/// The record of the session's citizen: what the sources gave, arranged.
async fn record(
    inner: &Arc<Inner>,
    session: &Session,
    t: &'static Texts,
) -> (Gathered, RecordView, Vec<Topic>) {
    let gathered = gather(
        inner,
        &session.access_token,
        &session.citizen,
        Question::Record,
    )
    .await;
    let mut view = RecordView::of(&gathered.found, &source_names(inner), t);
    let topics = vec![
        Topic {
            id: "problemen",
            heading: t.problems,
            with_kind: false,
            items: std::mem::take(&mut view.problems),
        },
        Topic {
            id: "medicatie",
            heading: t.medication,
            with_kind: false,
            items: std::mem::take(&mut view.medication),
        },
        Topic {
            id: "allergieen",
            heading: t.allergies,
            with_kind: false,
            items: std::mem::take(&mut view.allergies),
        },
        Topic {
            id: "vaccinaties",
            heading: t.vaccinations,
            with_kind: false,
            items: std::mem::take(&mut view.vaccinations),
        },
        Topic {
            id: "contacten",
            heading: t.encounters,
            with_kind: false,
            items: std::mem::take(&mut view.encounters),
        },
        Topic {
            id: "documenten",
            heading: t.documents,
            with_kind: false,
            items: std::mem::take(&mut view.documents),
        },
        Topic {
            id: "tijdlijn",
            heading: t.timeline,
            with_kind: true,
            items: std::mem::take(&mut view.timeline),
        },
    ];
    (gathered, view, topics)
}

async fn overview(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    let (gathered, view, topics) = record(&inner, &session, t).await;
    let page = OverviewPage {
        l: cx.layout(t.overview_title),
        failures: failure_texts(&gathered, t),
        truncated: gathered.truncated,
        view,
        topics,
    };
    cx.render(StatusCode::OK, &page)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn print(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    let (gathered, view, topics) = record(&inner, &session, t).await;
    let page = PrintPage {
        l: cx.layout(t.print_title),
        fetched_at: now_rfc3339(),
        failures: failure_texts(&gathered, t),
        truncated: gathered.truncated,
        view,
        topics,
    };
    cx.render(StatusCode::OK, &page)
}

async fn download(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let gathered = gather(
        &inner,
        &session.access_token,
        &session.citizen,
        Question::Record,
    )
    .await;
    let missing = failure_texts(&gathered, Texts::of(Lang::En));
    let body = bundle(&gathered.found, &missing, &now_rfc3339()).to_string();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"mijn-gezondheidsoverzicht.json\""),
    );
    response
}

async fn access_log(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    // After a report (`?gemeld={source}`): the source's name from the configuration.
    let reported = cx
        .request
        .query_value("gemeld")
        .and_then(|index| index.parse::<usize>().ok())
        .and_then(|index| inner.config.sources.get(index))
        .map(|source| source.name.clone());
    let gathered = gather(
        &inner,
        &session.access_token,
        &session.citizen,
        Question::AccessLog,
    )
    .await;
    let page = AccessLogPage {
        l: cx.layout(t.log_title),
        failures: failure_texts(&gathered, t),
        accesses: accesses(&gathered.found, &source_names(&inner), t),
        truncated: gathered.truncated,
        reported,
        report_reason_max: REPORT_REASON_CHARS_MAX,
    };
    cx.render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct ReportForm {
    csrf: Option<String>,
    source: Option<String>,
    id: Option<String>,
    reden: Option<String>,
}

/// `POST /wie-keek/melden`: reports one record of a source's access log as suspicious, with
/// the session's own access token (the node decides whether it is the citizen's to report),
/// and back to `/wie-keek` with a confirmation naming the organisation.
async fn report(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<ReportForm>, FormRejection>,
) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    let form = form.ok().map(|Form(form)| form);
    let csrf = form.as_ref().and_then(|f| f.csrf.as_deref());
    if !csrf.is_some_and(|csrf| same_token(csrf, &session.csrf)) {
        return cx.error_back(
            StatusCode::FORBIDDEN,
            t.error_form,
            "/wie-keek",
            t.back_to_log,
        );
    }
    let index = form
        .as_ref()
        .and_then(|f| f.source.as_deref())
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|index| *index < inner.config.sources.len());
    let id = form
        .as_ref()
        .and_then(|f| f.id.as_deref())
        .and_then(|id| id.parse::<u64>().ok());
    let (Some(index), Some(id)) = (index, id) else {
        return cx.error_back(
            StatusCode::BAD_REQUEST,
            t.error_bad_request,
            "/wie-keek",
            t.back_to_log,
        );
    };
    let reason = form
        .as_ref()
        .and_then(|f| f.reden.as_deref())
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > REPORT_REASON_CHARS_MAX) {
        return cx.error_back(
            StatusCode::BAD_REQUEST,
            t.report_invalid,
            "/wie-keek",
            t.back_to_log,
        );
    }
    let source = &inner.config.sources[index];
    let reported = crate::access_log::report(
        &inner.http,
        &source.fhir_base,
        id,
        &session.access_token,
        reason,
        inner.config.source_timeout,
    )
    .await;
    match reported {
        Ok(()) => {
            tracing::info!("a citizen reported an access as suspicious");
            redirect(&format!("/wie-keek?gemeld={index}"))
        }
        Err(failure) => {
            let (status, message) = match failure {
                ReportFailure::Refused => (StatusCode::FORBIDDEN, t.report_refused),
                ReportFailure::Invalid => (StatusCode::BAD_REQUEST, t.report_invalid),
                ReportFailure::Unavailable => (StatusCode::BAD_GATEWAY, t.report_unavailable),
            };
            cx.error_back(status, message, "/wie-keek", t.back_to_log)
        }
    }
}

/// Fetches the `$proof` of record `id` at source `index`.
async fn fetch_proof(
    inner: &Inner,
    index: usize,
    id: u64,
    token: &str,
) -> Result<serde_json::Value, String> {
    let source = &inner.config.sources[index];
    let url = format!("{}/AuditEvent/{id}/$proof", source.fhir_base);
    let asked = async {
        let answer = inner
            .http
            .get(&url)
            .bearer_auth(token)
            .header("accept", "application/fhir+json")
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = read_body(answer, RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(inner.config.source_timeout, asked)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

async fn proof(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((_, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    let parameters: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let index = parameters
        .get("source")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|index| *index < inner.config.sources.len());
    let id = parameters.get("id").and_then(|id| id.parse::<u64>().ok());
    let (Some(index), Some(id)) = (index, id) else {
        return cx.error(StatusCode::BAD_REQUEST, t.error_bad_request);
    };
    let source = &inner.config.sources[index];
    let (verdict, record_rows, checkpoint_rows) =
        match fetch_proof(&inner, index, id, &session.access_token).await {
            Err(reason) => (ProofVerdict::Unavailable(reason), Vec::new(), Vec::new()),
            Ok(parameters) => {
                let key = inner
                    .checkpoint_keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&source.ura)
                    .copied();
                let checked = check(&parameters, id, &source.ura, key.as_ref());
                let record_rows = checked
                    .record
                    .as_ref()
                    .map(|record| {
                        vec![
                            (
                                t.col_when.to_string(),
                                zorgnet_audit::balp::instant(record.at_ms),
                            ),
                            (t.col_what.to_string(), record.request.clone()),
                            (t.col_outcome.to_string(), format!("HTTP {}", record.status)),
                        ]
                    })
                    .unwrap_or_default();
                let checkpoint_rows = vec![
                    (t.proof_position.to_string(), checked.leaf.to_string()),
                    (t.proof_size.to_string(), checked.size.to_string()),
                    (
                        t.proof_signed.to_string(),
                        zorgnet_audit::balp::instant(checked.signed_ms),
                    ),
                ];
                let verdict = match checked.verdict {
                    Verdict::Verified => ProofVerdict::Verified,
                    Verdict::IncludedUnsigned => ProofVerdict::Unsigned,
                    Verdict::Failed(reason) => ProofVerdict::Failed(reason),
                };
                (verdict, record_rows, checkpoint_rows)
            }
        };
    let page = ProofPage {
        l: cx.layout(t.proof_title),
        source: source.name.clone(),
        verdict,
        record_rows,
        checkpoint_rows,
    };
    cx.render(StatusCode::OK, &page)
}

/// What the choices page can show.
enum ChoicesState {
    /// The portal has no consent register.
    Unavailable,
    /// The register did not answer as it should.
    Failed(&'static str),
    /// The citizen's directives, and the forms.
    Ready,
}

/// A confirmation as shown: what happened and to which choice.
struct Confirmed {
    title: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "choices.html")]
struct ChoicesPage {
    l: Layout,
    state: ChoicesState,
    confirmed: Option<Confirmed>,
    active: Vec<ChoiceRow>,
    revoked: Vec<RevokedRow>,
    categories: Vec<(&'static str, String)>,
    organisations: Vec<(String, String)>,
    choice_all: &'static str,
    choice_category: &'static str,
    choice_deny: &'static str,
    choice_permit: &'static str,
    choice_emergency: &'static str,
}

/// `/keuzes`: the citizen's directives at the consent register and the forms to change them.
async fn choices(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = Context::of(&inner, &headers, &uri);
    let Some((id, session)) = cx.session.clone() else {
        return to_login();
    };
    let t = cx.t();
    let sources = &inner.config.sources;
    let confirmed = inner
        .sessions
        .update(&id, |session| session.confirmation.take())
        .flatten()
        .map(|confirmation| match confirmation {
            Confirmation::Recorded(d) => Confirmed {
                title: t.confirm_recorded,
                text: describe(&d, sources, t),
            },
            Confirmation::Revoked(d) => Confirmed {
                title: t.confirm_revoked,
                text: describe(&d, sources, t),
            },
        });
    let (status, state, active, revoked) = match inner.consent_register() {
        None => (StatusCode::OK, ChoicesState::Unavailable, vec![], vec![]),
        Some(hub) => {
            let read = async {
                let token = person_token(&hub, &session.citizen).await?;
                hub.consent_directives(&token).await
            };
            match read.await {
                Ok(directives) => {
                    let (active, revoked) = rows(&directives, sources, t);
                    (StatusCode::OK, ChoicesState::Ready, active, revoked)
                }
                Err(e) => {
                    let (status, _) = failure(&e, t);
                    let status = if status.is_server_error() {
                        status
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    let state = ChoicesState::Failed(t.error_register_read);
                    (status, state, vec![], vec![])
                }
            }
        }
    };
    let page = ChoicesPage {
        l: cx.layout(t.choices_title),
        state,
        confirmed,
        active,
        revoked,
        categories: category_options(t),
        organisations: organisation_options(sources),
        choice_all: CHOICE_ALL,
        choice_category: CHOICE_CATEGORY,
        choice_deny: CHOICE_DENY,
        choice_permit: CHOICE_PERMIT,
        choice_emergency: CHOICE_EMERGENCY,
    };
    cx.render(status, &page)
}

/// What a change to consent needs: the page's context, the session's id, the register and the
/// session's own citizen (never one a form names); or the answer refusing the change.
async fn for_change(
    inner: &Inner,
    headers: &HeaderMap,
    uri: &Uri,
    csrf: Option<&str>,
) -> Result<(Context, String, HubClient, CitizenId), Response> {
    let cx = Context::of(inner, headers, uri);
    let Some((id, session)) = cx.session.clone() else {
        return Err(to_login());
    };
    let t = cx.t();
    if !csrf.is_some_and(|csrf| same_token(csrf, &session.csrf)) {
        return Err(cx.error_back(
            StatusCode::FORBIDDEN,
            t.error_form,
            "/keuzes",
            t.back_to_choices,
        ));
    }
    let Some(hub) = inner.consent_register() else {
        return Err(cx.error_back(
            StatusCode::SERVICE_UNAVAILABLE,
            t.choices_unavailable,
            "/keuzes",
            t.back_to_choices,
        ));
    };
    Ok((cx, id, hub, session.citizen))
}

/// The page that says a change failed, and that nothing changed.
fn register_failed(cx: &Context, error: &HubClientError) -> Response {
    let t = cx.t();
    let (status, message) = failure(error, t);
    cx.error_back(status, message, "/keuzes", t.back_to_choices)
}

#[derive(Deserialize)]
struct ChoiceForm {
    csrf: Option<String>,
    keuze: Option<String>,
    onderwerp: Option<String>,
    organisatie: Option<String>,
}

/// `POST /keuzes`: records the choice of the form for the session's citizen.
async fn choose(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<ChoiceForm>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(form)| form);
    let csrf = form.as_ref().and_then(|f| f.csrf.as_deref());
    let (cx, id, hub, citizen) = match for_change(&inner, &headers, &uri, csrf).await {
        Ok(ready) => ready,
        Err(refused) => return refused,
    };
    let choice = form.as_ref().and_then(|f| {
        Choice::of_form(
            f.keuze.as_deref().unwrap_or_default(),
            f.onderwerp.as_deref(),
            f.organisatie.as_deref(),
            &inner.config.sources,
        )
    });
    let Some(choice) = choice else {
        let t = cx.t();
        return cx.error_back(
            StatusCode::BAD_REQUEST,
            t.error_choice_invalid,
            "/keuzes",
            t.back_to_choices,
        );
    };
    let recorded = async {
        let token = person_token(&hub, &citizen).await?;
        hub.record_consent_directive(&token, &choice.directive())
            .await
    };
    match recorded.await {
        Ok(directive) => {
            if directive.recorded_by != "citizen" {
                tracing::warn!(
                    "the consent register kept a citizen's choice as the portal's own: \
                     the hub's operator has not admitted this portal as a citizen portal"
                );
            }
            tracing::info!("a citizen recorded a consent directive");
            inner.sessions.update(&id, |session| {
                session.confirmation = Some(Confirmation::Recorded(directive));
            });
            redirect("/keuzes")
        }
        Err(e) => register_failed(&cx, &e),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: Option<String>,
    id: Option<String>,
}

/// `POST /keuzes/intrekken`: revokes one directive of the session's citizen.
async fn revoke(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(form)| form);
    let csrf = form.as_ref().and_then(|f| f.csrf.as_deref());
    let (cx, id, hub, citizen) = match for_change(&inner, &headers, &uri, csrf).await {
        Ok(ready) => ready,
        Err(refused) => return refused,
    };
    let directive = form
        .as_ref()
        .and_then(|f| f.id.as_deref())
        .filter(|id| is_directive_id(id));
    let Some(directive) = directive else {
        let t = cx.t();
        return cx.error_back(
            StatusCode::BAD_REQUEST,
            t.error_bad_request,
            "/keuzes",
            t.back_to_choices,
        );
    };
    let revoked = async {
        let token = person_token(&hub, &citizen).await?;
        hub.revoke_consent_directive(&token, directive).await
    };
    match revoked.await {
        Ok(revoked) => {
            tracing::info!("a citizen revoked a consent directive");
            inner.sessions.update(&id, |session| {
                session.confirmation = Some(Confirmation::Revoked(revoked));
            });
            redirect("/keuzes")
        }
        Err(e) => register_failed(&cx, &e),
    }
}
