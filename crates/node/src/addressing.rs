//! The node's side of addressing (IHE mCSD): the node as an mCSD update supplier for its own
//! Organization and Endpoint, a reader of another server's `_history` (used by the node's
//! cache and by the hub's update consumer), and [`AddressBookCache`], the node's local copy of
//! the hub's address book, so that finding another organisation's FHIR endpoint works while
//! the hub is unreachable.
//!
//! What it is not: the address book itself (that is the hub's `addressing` module) or a
//! general FHIR client. The cache keeps only what [`AddressBookCache::endpoint_for`] needs:
//! Organizations and Endpoints.

use reqwest::Url;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use zorgnet_db::sql::SqlValue;
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_fhir::datetime::{format_instant, parse_date_range};
use zorgnet_store::{Store, StoreError, WriteOp};

use crate::NodeIdentity;

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
/// Time limit of one HTTP request of the cache to the hub.
pub const HUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The resource types the cache keeps.
pub const CACHED_TYPES: [&str; 2] = ["Organization", "Endpoint"];

/// Stable id of the node's own Organization.
pub fn own_organization_id(ura: &str) -> String {
    format!("ura-{ura}")
}

/// Stable id of the node's own FHIR Endpoint.
pub fn own_endpoint_id(ura: &str) -> String {
    format!("ura-{ura}-fhir")
}

/// The node's own Organization and FHIR Endpoint, as published to the address book.
pub fn own_entries(identity: &NodeIdentity, fhir_base_url: &str) -> [Value; 2] {
    let organization_id = own_organization_id(&identity.ura);
    let endpoint_id = own_endpoint_id(&identity.ura);
    let organization = json!({
        "resourceType": "Organization",
        "id": organization_id,
        "identifier": [{"system": URA_SYSTEM, "value": identity.ura}],
        "active": true,
        "name": identity.name,
        "endpoint": [{"reference": format!("Endpoint/{endpoint_id}")}],
    });
    let endpoint = json!({
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPE_SYSTEM, "code": FHIR_REST_CONNECTION_TYPE},
        "name": format!("FHIR R4 server of {}", identity.name),
        "managingOrganization": {"reference": format!("Organization/{organization_id}")},
        "payloadType": [{"coding": [{"system": PAYLOAD_TYPE_SYSTEM, "code": "any"}]}],
        "payloadMimeType": ["application/fhir+json"],
        "address": fhir_base_url.trim_end_matches('/'),
    });
    [organization, endpoint]
}

/// Makes sure the node's own Organization and FHIR Endpoint are in its store, under stable
/// ids, so that its `_history` serves them to the hub's update consumer. Idempotent: when
/// nothing changed, no new version is written.
pub async fn publish_own_entries(
    store: &Store,
    identity: &NodeIdentity,
    fhir_base_url: &str,
) -> Result<(), StoreError> {
    let ops = own_entries(identity, fhir_base_url)
        .into_iter()
        .map(|resource| {
            let id = resource["id"].as_str().unwrap_or_default().to_string();
            WriteOp::Update {
                resource,
                id,
                if_match: None,
            }
        })
        .collect();
    store.transaction(ops).await?;
    Ok(())
}

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

/// The cache's migrations.
pub const CACHE_MIGRATIONS: &[Migration] = &[Migration {
    component: "address-cache",
    version: 1,
    sql: "
CREATE TABLE address_cache_resources (
    res_type {text} NOT NULL,
    id {text} NOT NULL,
    ura {text},
    organization_id {text},
    content {text} NOT NULL,
    PRIMARY KEY (res_type, id)
);
CREATE INDEX address_cache_resources_ura ON address_cache_resources (ura);
CREATE INDEX address_cache_resources_organization ON address_cache_resources (organization_id);
CREATE TABLE address_cache_marks (
    res_type {text} PRIMARY KEY,
    mark_ms {int} NOT NULL,
    synced_at_ms {int} NOT NULL
)",
}];

/// Why the cache could not sync or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Reading the hub's address book failed.
    #[error("address book cache: {0}")]
    Poll(#[from] PollError),
    /// The node's database failed.
    #[error("address book cache: database: {0}")]
    Database(#[from] DbError),
    /// A blocking task failed.
    #[error("address book cache: {0}")]
    Task(String),
}

/// What one sync of the cache did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSyncReport {
    /// Resources stored or replaced.
    pub stored: usize,
    /// Resources removed.
    pub removed: usize,
}

/// Where to reach an organisation, as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationAddress {
    /// URA number.
    pub ura: String,
    /// Organisation name.
    pub name: String,
    /// Base URLs of its active FHIR REST endpoints (sorted; empty when it has none).
    pub fhir_base_urls: Vec<String>,
}

/// The node's local copy of the hub's address book (Organizations and Endpoints), kept in
/// the node's own database.
#[derive(Clone)]
pub struct AddressBookCache {
    db: Database,
    client: reqwest::Client,
}

impl AddressBookCache {
    /// Opens the cache in `db` (the node's database: `store.database()`), creating its tables
    /// on first use. Blocking.
    pub fn open(db: Database) -> Result<AddressBookCache, CacheError> {
        db.migrate(CACHE_MIGRATIONS)?;
        let client = reqwest::Client::builder()
            .timeout(HUB_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CacheError::Task(format!("HTTP client: {e}")))?;
        Ok(AddressBookCache { db, client })
    }

    /// Brings the cache up to date with the hub at `hub_base` (`https://hub.example`),
    /// authenticating with the organisation's `key`. Each resource type's changes are stored
    /// page by page; its mark moves only once every page was read, so an interrupted sync is
    /// simply repeated.
    pub async fn sync(&self, hub_base: &str, key: &str) -> Result<CacheSyncReport, CacheError> {
        let base = format!("{}/addressing/fhir", hub_base.trim_end_matches('/'));
        let mut report = CacheSyncReport::default();
        for resource_type in CACHED_TYPES {
            let mark = self.mark(resource_type).await?;
            let mut pager = HistoryPager::new(&self.client, &base, resource_type, mark, Some(key))?;
            while let Some(changes) = pager.next_page().await? {
                let db = self.db.clone();
                let resource_type = resource_type.to_string();
                let (stored, removed) =
                    blocking(move || store_changes(&db, &resource_type, changes)).await?;
                report.stored += stored;
                report.removed += removed;
            }
            if let Some(newest) = pager.newest_ms() {
                let db = self.db.clone();
                let resource_type = resource_type.to_string();
                blocking(move || save_mark(&db, &resource_type, newest)).await?;
            }
        }
        Ok(report)
    }

    /// The name and FHIR base URLs of the organisation with this URA, from the cache only
    /// (no network): `None` when the cache knows no active Organization with that URA.
    pub async fn endpoint_for(&self, ura: &str) -> Result<Option<OrganisationAddress>, CacheError> {
        let db = self.db.clone();
        let ura = ura.to_string();
        blocking(move || lookup(&db, &ura)).await
    }

    async fn mark(&self, resource_type: &str) -> Result<Option<i64>, CacheError> {
        let db = self.db.clone();
        let resource_type = resource_type.to_string();
        blocking(move || {
            let sql = format!(
                "SELECT mark_ms FROM address_cache_marks WHERE res_type = {}",
                db.dialect().placeholder(1)
            );
            let rows = db.with_reader(|conn| conn.query(&sql, &[resource_type.into()]))?;
            Ok(rows.first().map(|row| row[0].int()))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Task(format!("blocking task: {e}")))?
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

/// The id in a relative reference `Type/id` of the expected type.
fn referenced_id<'v>(reference: Option<&'v Value>, resource_type: &str) -> Option<&'v str> {
    let (t, id) = reference?.get("reference")?.as_str()?.split_once('/')?;
    (t == resource_type).then_some(id)
}

fn store_changes(
    db: &Database,
    resource_type: &str,
    changes: Vec<Change>,
) -> Result<(usize, usize), CacheError> {
    db.write_transaction(|conn| -> Result<(usize, usize), CacheError> {
        let d = conn.dialect();
        let upsert = format!(
            "INSERT INTO address_cache_resources (res_type, id, ura, organization_id, content) \
             VALUES ({}, {}, {}, {}, {}) ON CONFLICT (res_type, id) DO UPDATE SET \
             ura = excluded.ura, organization_id = excluded.organization_id, content = excluded.content",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4),
            d.placeholder(5)
        );
        let delete = format!(
            "DELETE FROM address_cache_resources WHERE res_type = {} AND id = {}",
            d.placeholder(1),
            d.placeholder(2)
        );
        let (mut stored, mut removed) = (0, 0);
        for change in changes {
            match change {
                Change::Upsert(resource) => {
                    let Some(id) = resource.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    let text = |v: Option<&str>| v.map_or(SqlValue::Null, SqlValue::from);
                    let ura = text(ura_of(&resource).filter(|_| resource_type == "Organization"));
                    let organization = text(referenced_id(
                        resource.get("managingOrganization"),
                        "Organization",
                    ));
                    conn.execute(
                        &upsert,
                        &[
                            resource_type.into(),
                            id.into(),
                            ura,
                            organization,
                            resource.to_string().into(),
                        ],
                    )?;
                    stored += 1;
                }
                Change::Delete { id } => {
                    removed += conn.execute(&delete, &[resource_type.into(), id.into()])? as usize;
                }
            }
        }
        Ok((stored, removed))
    })
}

fn save_mark(db: &Database, resource_type: &str, mark_ms: i64) -> Result<(), CacheError> {
    db.write_transaction(|conn| -> Result<(), CacheError> {
        let d = conn.dialect();
        let sql = format!(
            "INSERT INTO address_cache_marks (res_type, mark_ms, synced_at_ms) VALUES ({}, {}, {}) \
             ON CONFLICT (res_type) DO UPDATE SET mark_ms = excluded.mark_ms, synced_at_ms = excluded.synced_at_ms",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3)
        );
        conn.execute(
            &sql,
            &[resource_type.into(), mark_ms.into(), zorgnet_db::now_ms().into()],
        )?;
        Ok(())
    })
}

fn lookup(db: &Database, ura: &str) -> Result<Option<OrganisationAddress>, CacheError> {
    let d = db.dialect();
    let organizations = format!(
        "SELECT id, content FROM address_cache_resources WHERE res_type = 'Organization' AND ura = {} ORDER BY id",
        d.placeholder(1)
    );
    let by_organization = format!(
        "SELECT content FROM address_cache_resources WHERE res_type = 'Endpoint' AND organization_id = {}",
        d.placeholder(1)
    );
    let by_id = format!(
        "SELECT content FROM address_cache_resources WHERE res_type = 'Endpoint' AND id = {}",
        d.placeholder(1)
    );
    db.with_reader(|conn| {
        let rows = conn.query(&organizations, &[ura.into()])?;
        let Some((organization_id, organization)) = rows.into_iter().find_map(|mut row| {
            let organization: Value = serde_json::from_str(&row[1].take_text()).ok()?;
            let active = organization.get("active").and_then(Value::as_bool) != Some(false);
            active.then(|| (row[0].take_text(), organization))
        }) else {
            return Ok(None);
        };
        let mut endpoints = conn.query(&by_organization, &[organization_id.as_str().into()])?;
        let listed = organization
            .get("endpoint")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| referenced_id(Some(r), "Endpoint"));
        for id in listed {
            endpoints.extend(conn.query(&by_id, &[id.into()])?);
        }
        let mut urls: Vec<String> = endpoints
            .into_iter()
            .filter_map(|mut row| serde_json::from_str::<Value>(&row[0].take_text()).ok())
            .filter(is_active_fhir_rest)
            .filter_map(|e| e.get("address").and_then(Value::as_str).map(String::from))
            .collect();
        urls.sort();
        urls.dedup();
        Ok(Some(OrganisationAddress {
            ura: ura.to_string(),
            name: organization
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            fhir_base_urls: urls,
        }))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> NodeIdentity {
        NodeIdentity {
            ura: "12345678".into(),
            name: "Huisartsenpraktijk De Linde".into(),
        }
    }

    #[test]
    fn own_entries_are_valid_and_link_each_other() {
        let [organization, endpoint] = own_entries(&identity(), "https://linde.example/fhir/");
        assert_eq!(zorgnet_fhir::validate_resource(&organization), vec![]);
        assert_eq!(zorgnet_fhir::validate_resource(&endpoint), vec![]);
        assert_eq!(ura_of(&organization), Some("12345678"));
        assert_eq!(endpoint["address"], "https://linde.example/fhir");
        assert_eq!(
            referenced_id(endpoint.get("managingOrganization"), "Organization"),
            organization["id"].as_str()
        );
        assert!(is_active_fhir_rest(&endpoint));
    }

    #[tokio::test]
    async fn publishing_twice_writes_one_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(
            &dir.path().join("node.sqlite"),
            zorgnet_fhir::search::SearchRegistry::r4(),
        )
        .unwrap();
        for _ in 0..2 {
            publish_own_entries(&store, &identity(), "https://linde.example/fhir")
                .await
                .unwrap();
        }
        let history = store
            .history(zorgnet_store::HistoryScope::System, None, 10, None)
            .await
            .unwrap();
        assert_eq!(history.entries.len(), 2);
    }

    #[test]
    fn inactive_or_other_endpoints_are_not_fhir_rest() {
        let [_, endpoint] = own_entries(&identity(), "https://x.example/fhir");
        let mut off = endpoint.clone();
        off["status"] = json!("off");
        assert!(!is_active_fhir_rest(&off));
        let mut dicom = endpoint;
        dicom["connectionType"]["code"] = json!("dicom-wado-rs");
        assert!(!is_active_fhir_rest(&dicom));
    }
}
