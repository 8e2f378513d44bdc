//! FHIR R4 knowledge for zorgnet, generated from the official definitions.
//!
//! What it is: the R4 type model (from the StructureDefinitions), a validator, the search
//! parameters (from `Bundle-searchParams.json`) compiled to JSON paths, index-value extraction,
//! search-query parsing, the Patient compartment, and OperationOutcome issues.
//! What it is not: storage, HTTP, or a general FHIRPath engine. It does no IO and never panics
//! on input.
#![deny(missing_docs)]

pub mod categories;
pub mod datetime;
pub mod identifiers;
pub mod model;
pub mod outcome;
pub mod search;
pub mod validate;
pub mod xml;

pub use outcome::{Issue, IssueCode, Severity, operation_outcome};
pub use validate::validate_resource;
pub use xml::{XmlError, json_to_xml, xml_to_json};
