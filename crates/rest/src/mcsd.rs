//! IHE mCSD over FHIR REST, the parts that a directory's publisher and its readers share: the
//! naming and code systems of an organisation's FHIR endpoint, and [`HistoryPager`], a reader
//! of another server's `_history` (used by the node's address-book cache and by the hub's
//! update consumer).
//!
//! What it is not: the address book (the hub's `addressing` module), the node's cache of it
//! (`zorgnet_node::addressing`), or a general FHIR client.

use reqwest::Url;
use serde_json::Value;
use std::collections::HashSet;
use zorgnet_fhir::datetime::{format_instant, parse_date_range};

/// The mCSD resource types of an organisation's directory: what an update supplier
/// publishes, what the hub's update consumer copies, and the only histories a node serves
/// without credentials (they hold no patient data).
pub const DIRECTORY_TYPES: [&str; 7] = [
    "Organization",
    "Endpoint",
    "Location",
    "HealthcareService",
    "Practitioner",
    "PractitionerRole",
    "OrganizationAffiliation",
];

/// The naming system of URA numbers.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
/// The code system of `Endpoint.connectionType`.
pub const CONNECTION_TYPE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/endpoint-connection-type";
/// The connection type of a FHIR REST endpoint.
pub const FHIR_REST_CONNECTION_TYPE: &str = "hl7-fhir-rest";
/// The code system of `Endpoint.payloadType`.
pub const PAYLOAD_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type";

/// Entries asked for per `_history` page (the node serves at most 1,000).
pub const HISTORY_PAGE_SIZE: usize = 1_000;
/// Most pages followed in one poll of one resource type (1,000,000 changes at
/// [`HISTORY_PAGE_SIZE`]): a guard against a server whose `next` links never end.
pub const MAX_HISTORY_PAGES: usize = 1_000;
/// Largest `_history` page body read, in bytes (1,000 directory resources are far smaller).
pub const MAX_HISTORY_PAGE_BYTES: usize = 64 * 1024 * 1024;
/// How far before the newest change seen a poll asks again (`_since` is inclusive, and a
/// server with concurrent writers can commit a change stamped a little earlier than one it
/// already served). Re-reading a change is harmless: unchanged content is not stored again.
pub const HISTORY_OVERLAP_MS: i64 = 10_000;

/// Why reading another server's `_history` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The request failed (connection refused, timeout, broken body).
    #[error("GET {url}: {source}")]
    Request {
        /// The URL asked for.
        url: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body exceeded [`MAX_HISTORY_PAGE_BYTES`].
    #[error("GET {url}: body larger than {MAX_HISTORY_PAGE_BYTES} bytes")]
    TooLarge {
        /// The URL asked for.
        url: String,
    },
    /// The body is not a history Bundle we can read.
    #[error("GET {url}: {detail}")]
    Malformed {
        /// The URL asked for.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// A `next` link points outside the server's base URL.
    #[error("a next link leaves the server's base URL {base}: {link}")]
    ForeignLink {
        /// The base URL polled.
        base: String,
        /// The offending link.
        link: String,
    },
    /// More than [`MAX_HISTORY_PAGES`] pages.
    #[error("{url}: more than {MAX_HISTORY_PAGES} history pages")]
    TooManyPages {
        /// The first URL of the poll.
        url: String,
    },
    /// The base URL cannot be parsed.
    #[error("base URL {0:?} is not a valid http(s) URL")]
    BadBase(String),
}

/// One change read from a `_history`: the newest state of one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or updated: the resource as the server holds it.
    Upsert(Value),
    /// Deleted.
    Delete {
        /// The resource's id at the server.
        id: String,
    },
}

/// Reads the `_history` of one resource type page by page, newest first, and hands out each
/// resource's newest change once (older versions on later pages are skipped).
pub struct HistoryPager<'a> {
    client: &'a reqwest::Client,
    bearer: Option<&'a str>,
    base: Url,
    resource_type: String,
    first_url: String,
    next_url: Option<String>,
    pages: usize,
    seen: HashSet<String>,
    newest_ms: Option<i64>,
}

impl<'a> HistoryPager<'a> {
    /// A pager over `{base}/{resource_type}/_history`, asking for changes since
    /// `mark_ms - HISTORY_OVERLAP_MS` (everything when `mark_ms` is `None`).
    pub fn new(
        client: &'a reqwest::Client,
        base: &str,
        resource_type: &str,
        mark_ms: Option<i64>,
        bearer: Option<&'a str>,
    ) -> Result<HistoryPager<'a>, PollError> {
        let base_url = Url::parse(base.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| PollError::BadBase(base.to_string()))?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("_count", &HISTORY_PAGE_SIZE.to_string());
        if let Some(mark) = mark_ms {
            query.append_pair(
                "_since",
                &format_instant(mark.saturating_sub(HISTORY_OVERLAP_MS).max(0)),
            );
        }
        let first_url = format!(
            "{}/{resource_type}/_history?{}",
            base.trim_end_matches('/'),
            query.finish()
        );
        Ok(HistoryPager {
            client,
            bearer,
            base: base_url,
            resource_type: resource_type.to_string(),
            next_url: Some(first_url.clone()),
            first_url,
            pages: 0,
            seen: HashSet::new(),
            newest_ms: None,
        })
    }

    /// The newest change time seen so far (epoch ms): the next poll's mark, once every page
    /// has been read.
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// The next page's changes, or `None` when every page has been read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Change>>, PollError> {
        let Some(url) = self.next_url.take() else {
            return Ok(None);
        };
        self.pages += 1;
        if self.pages > MAX_HISTORY_PAGES {
            return Err(PollError::TooManyPages {
                url: self.first_url.clone(),
            });
        }
        let bundle = self.get(&url).await?;
        let malformed = |detail: &str| PollError::Malformed {
            url: url.clone(),
            detail: detail.to_string(),
        };
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(malformed("not a Bundle"));
        }
        self.next_url = match next_link(&bundle) {
            Some(link) => Some(self.rebase(link)?),
            None => None,
        };
        let entries = match bundle.get("entry") {
            None => return Ok(Some(Vec::new())),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(malformed("Bundle.entry is not an array")),
        };
        let mut changes = Vec::new();
        for entry in entries {
            let Some((id, change, changed_ms)) = self.read_entry(entry) else {
                tracing::warn!(%url, "skipping an unreadable history entry");
                continue;
            };
            self.newest_ms = Some(self.newest_ms.map_or(changed_ms, |n| n.max(changed_ms)));
            if self.seen.insert(id) {
                changes.push(change);
            }
        }
        Ok(Some(changes))
    }

    /// Reads one entry into (id, change, when), or `None` when it is not one of ours.
    fn read_entry(&self, entry: &Value) -> Option<(String, Change, i64)> {
        let method = entry.pointer("/request/method").and_then(Value::as_str);
        let resource = entry.get("resource").filter(|r| r.is_object());
        let changed_ms = entry
            .pointer("/response/lastModified")
            .or_else(|| resource.and_then(|r| r.pointer("/meta/lastUpdated")))
            .and_then(Value::as_str)
            .and_then(parse_date_range)?
            .low_ms;
        match (method, resource) {
            (Some("DELETE"), _) | (_, None) => {
                let url = entry.pointer("/request/url").and_then(Value::as_str)?;
                let (resource_type, id) = url.split_once('/')?;
                let id = id.split(['/', '?']).next()?;
                (resource_type == self.resource_type && !id.is_empty()).then(|| {
                    let change = Change::Delete { id: id.to_string() };
                    (id.to_string(), change, changed_ms)
                })
            }
            (_, Some(resource)) => {
                let resource_type = resource.get("resourceType").and_then(Value::as_str)?;
                let id = resource.get("id").and_then(Value::as_str)?;
                (resource_type == self.resource_type)
                    .then(|| (id.to_string(), Change::Upsert(resource.clone()), changed_ms))
            }
        }
    }

    /// A `next` link, moved onto our base URL: only its path and query are taken, and the
    /// path must lie under the base's path (a server cannot send us elsewhere).
    fn rebase(&self, link: &str) -> Result<String, PollError> {
        let foreign = || PollError::ForeignLink {
            base: self.base.to_string(),
            link: link.to_string(),
        };
        let parsed = Url::parse(link).map_err(|_| foreign())?;
        let base_path = self.base.path().trim_end_matches('/');
        if !parsed.path().starts_with(&format!("{base_path}/")) {
            return Err(foreign());
        }
        let mut rebased = self.base.clone();
        rebased.set_path(parsed.path());
        rebased.set_query(parsed.query());
        Ok(rebased.to_string())
    }

    async fn get(&self, url: &str) -> Result<Value, PollError> {
        let request_error = |source| PollError::Request {
            url: url.to_string(),
            source,
        };
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/fhir+json");
        if let Some(key) = self.bearer {
            request = request.bearer_auth(key);
        }
        let mut response = request.send().await.map_err(request_error)?;
        if !response.status().is_success() {
            return Err(PollError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_HISTORY_PAGE_BYTES {
                return Err(PollError::TooLarge {
                    url: url.to_string(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| PollError::Malformed {
            url: url.to_string(),
            detail: format!("malformed JSON: {e}"),
        })
    }
}

fn next_link(bundle: &Value) -> Option<&str> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
}

/// The URA of an Organization, if it carries one.
pub fn ura_of(organization: &Value) -> Option<&str> {
    organization
        .get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(URA_SYSTEM))?
        .get("value")?
        .as_str()
}

/// Whether an Endpoint is an active FHIR REST endpoint.
pub fn is_active_fhir_rest(endpoint: &Value) -> bool {
    let code = endpoint
        .pointer("/connectionType/code")
        .and_then(Value::as_str);
    let system = endpoint
        .pointer("/connectionType/system")
        .and_then(Value::as_str);
    endpoint.get("status").and_then(Value::as_str) == Some("active")
        && code == Some(FHIR_REST_CONNECTION_TYPE)
        && system.is_none_or(|s| s == CONNECTION_TYPE_SYSTEM)
}
