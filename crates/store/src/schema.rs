//! The resource store's schema migrations (component `store`), applied by `zorgnet-db`.
//!
//! Migrations are numbered and never edited once released; a new change is a new number.

use zorgnet_db::Migration;

/// The store's migrations, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "store",
        version: 1,
        sql: "
CREATE TABLE resources (
    rid {id},
    res_type {text} NOT NULL,
    id {text} NOT NULL,
    version {int} NOT NULL,
    last_updated {int} NOT NULL,
    deleted {int} NOT NULL,
    current_seq {int} NOT NULL,
    UNIQUE (res_type, id)
);
CREATE TABLE versions (
    seq {id},
    rid {int} NOT NULL,
    res_type {text} NOT NULL,
    id {text} NOT NULL,
    version {int} NOT NULL,
    last_updated {int} NOT NULL,
    method {text} NOT NULL,
    content TEXT,
    UNIQUE (rid, version)
);
CREATE INDEX versions_by_type ON versions (res_type, seq);
CREATE INDEX versions_by_time ON versions (last_updated);
CREATE TABLE search_params (
    param_id {id},
    res_type {text} NOT NULL,
    code {text} NOT NULL,
    UNIQUE (res_type, code)
);
CREATE TABLE idx_token (rid {int} NOT NULL, param_id {int} NOT NULL, system {text} NOT NULL, code {text} NOT NULL,
    PRIMARY KEY (rid, param_id, system, code)) {without_rowid};
CREATE INDEX idx_token_lookup ON idx_token (param_id, code, system);
CREATE TABLE idx_string (rid {int} NOT NULL, param_id {int} NOT NULL, normalized {text} NOT NULL, exact {text} NOT NULL,
    PRIMARY KEY (rid, param_id, exact)) {without_rowid};
CREATE INDEX idx_string_lookup ON idx_string (param_id, normalized);
CREATE TABLE idx_date (rid {int} NOT NULL, param_id {int} NOT NULL, low_ms {int} NOT NULL, high_ms {int} NOT NULL,
    PRIMARY KEY (rid, param_id, low_ms, high_ms)) {without_rowid};
CREATE INDEX idx_date_lookup ON idx_date (param_id, low_ms, high_ms);
CREATE TABLE idx_reference (rid {int} NOT NULL, param_id {int} NOT NULL, target_type {text} NOT NULL, target_id {text} NOT NULL,
    PRIMARY KEY (rid, param_id, target_type, target_id)) {without_rowid};
CREATE INDEX idx_reference_lookup ON idx_reference (param_id, target_id, target_type);
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type);
CREATE TABLE idx_number (rid {int} NOT NULL, param_id {int} NOT NULL, value {real} NOT NULL,
    PRIMARY KEY (rid, param_id, value)) {without_rowid};
CREATE INDEX idx_number_lookup ON idx_number (param_id, value);
CREATE TABLE idx_quantity (rid {int} NOT NULL, param_id {int} NOT NULL, value {real} NOT NULL, system {text} NOT NULL, code {text} NOT NULL,
    PRIMARY KEY (rid, param_id, value, system, code)) {without_rowid};
CREATE INDEX idx_quantity_lookup ON idx_quantity (param_id, value);
CREATE TABLE idx_uri (rid {int} NOT NULL, param_id {int} NOT NULL, value {text} NOT NULL,
    PRIMARY KEY (rid, param_id, value)) {without_rowid};
CREATE INDEX idx_uri_lookup ON idx_uri (param_id, value);
CREATE TABLE compartment (patient_id {text} NOT NULL, rid {int} NOT NULL,
    PRIMARY KEY (patient_id, rid)) {without_rowid};
CREATE INDEX compartment_by_rid ON compartment (rid);
",
    },
    Migration {
        component: "store",
        version: 2,
        // No query looks references up by target without the parameter (those use
        // idx_reference_lookup); the index only cost every write a B-tree insert.
        sql: "DROP INDEX IF EXISTS idx_reference_target;",
    },
    Migration {
        component: "store",
        version: 3,
        // What the access policy needs of each current resource, beside it in its row (see
        // `crate::PolicyFacts`): how many Patients' compartments hold it, the one Patient when
        // there is one, and its data categories as bits. NULL until the store fills them in
        // when it opens; `policy_facts` names the category rules they were computed with.
        sql: "
ALTER TABLE resources ADD COLUMN compartment_size {int};
ALTER TABLE resources ADD COLUMN sole_patient {text};
ALTER TABLE resources ADD COLUMN categories {int};
CREATE TABLE policy_facts (rules_version {int} NOT NULL);
",
    },
    Migration {
        component: "store",
        version: 4,
        // The stored SearchParameters the store indexes (see `custom_params`): per resource
        // type and code, the definition the rows were made from, and whether they are
        // complete.
        sql: "
CREATE TABLE custom_search_params (
    res_type {text} NOT NULL,
    code {text} NOT NULL,
    fingerprint {text} NOT NULL,
    ready {int} NOT NULL,
    UNIQUE (res_type, code)
);
",
    },
    Migration {
        component: "store",
        version: 5,
        // A type's resources in row order: a search without criteria or sort (the first page
        // of `GET Observation`, every page of a bulk export, a reindex) reads a page here
        // instead of sorting all the type's rows for each page.
        sql: "CREATE INDEX resources_by_type ON resources (res_type, rid);",
    },
];
