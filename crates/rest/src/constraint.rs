//! What an access layer in front of the handlers may narrow a search to, handed over as a
//! request extension (HAPI FHIR's interceptors narrow searches the same way): the search
//! handler ANDs it with the client's parameters, so the store returns only what the caller
//! may see, page by page, and reads and writes the paging cursors through the layer's
//! [`CursorCodec`], so that the links hold only what the layer made of them.
//!
//! Nothing here decides who may see what: the layer does, and sets a [`SearchConstraint`]
//! only when its policy can be said this way; otherwise it filters the handler's answers.

use crate::error::FhirError;
use std::sync::Arc;
use zorgnet_fhir::Issue;
use zorgnet_fhir::categories::CategorySet;

/// How the paging cursors of a constrained search travel in its links.
pub trait CursorCodec: Send + Sync {
    /// The text a link carries for the store's `cursor`.
    fn seal(&self, cursor: &str) -> Result<String, FhirError>;
    /// The store's cursor from the text of a link, or the refusal to give to the caller.
    fn open(&self, sealed: &str) -> Result<String, FhirError>;
}

/// A limit on one search of one resource type, set by the access layer as a request
/// extension. A search so limited is not counted: its Bundle carries no `total`, as a
/// filtered one does not.
#[derive(Clone)]
pub struct SearchConstraint {
    /// Matches only from the compartments of these Patients (see
    /// [`zorgnet_fhir::search::SearchQuery::within_compartments`]).
    pub compartments_of: Vec<String>,
    /// Matches only resources of at least one category and of none outside this set (see
    /// [`zorgnet_fhir::search::SearchQuery::within_categories`]); `None`: of any or none.
    pub categories: Option<CategorySet>,
    /// Issues for the Bundle's outcome entry, such as what the layer withholds.
    pub notices: Vec<Issue>,
    /// The cursors of the links.
    pub cursors: Arc<dyn CursorCodec>,
}
