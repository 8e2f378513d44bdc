//! The node's side of addressing (IHE mCSD): the node as an mCSD update supplier for its own
//! Organization and Endpoint, a reader of another server's `_history` (used by the node's
//! cache and by the hub's update consumer), and [`AddressBookCache`], the node's local copy of
//! the hub's address book, so that finding another organisation's FHIR endpoint works while
//! the hub is unreachable.
//!
//! What it is not: the address book itself (that is the hub's `addressing` module) or a
//! general FHIR client. The cache keeps only what [`AddressBookCache::endpoint_for`] needs:
//! Organizations and Endpoints.

use serde_json::{Value, json};
use std::time::Duration;
use zorgnet_db::sql::SqlValue;
use zorgnet_db::{Database, DbError, Migration};
use zorgnet_store::{Store, StoreError, WriteOp};

use crate::NodeIdentity;
use zorgnet_rest::mcsd::{
    CONNECTION_TYPE_SYSTEM, Change, FHIR_REST_CONNECTION_TYPE, HistoryPager, PAYLOAD_TYPE_SYSTEM,
    PollError, URA_SYSTEM, is_active_fhir_rest, ura_of,
};

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

    /// The same cache, reaching the hub over `tls`
    /// (`zorgnet_trust::tls::client_config`).
    pub fn with_tls(self, tls: rustls::ClientConfig) -> Result<AddressBookCache, CacheError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(HUB_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CacheError::Task(format!("HTTP client: {e}")))?;
        Ok(AddressBookCache { client, ..self })
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
