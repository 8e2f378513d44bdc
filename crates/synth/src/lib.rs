//! Deterministic synthetic Dutch health data as FHIR R4 JSON, for demos, tests
//! and benchmarks.
//!
//! A [`Generator`] turns a [`SynthConfig`] (patient count and seed) into a care
//! network and its patients:
//!
//! - a directory in the shape of an IHE mCSD addressing directory: GP practices
//!   (huisartsenpraktijken), hospitals (ziekenhuizen), pharmacies (apotheken),
//!   nursing homes (verpleeghuizen), and clinics on Bonaire, Sint Eustatius and
//!   Saba, each with a URA number, an Endpoint, a Location and a
//!   HealthcareService, plus Practitioners with UZI numbers and AGB codes,
//!   PractitionerRoles with UZI role codes, and OrganizationAffiliations;
//! - patients with valid, unique BSNs (burgerservicenummers, the Dutch citizen
//!   service number), Dutch names and addresses, and a record spread over the
//!   years 2014–2026: encounters, conditions, medication statements, requests
//!   and dispenses, allergies, lab results and vital signs, immunisations,
//!   procedures, diagnostic reports and discharge letters, coded with SNOMED CT,
//!   LOINC, ATC and UCUM. One patient in fifty lives in the Caribbean
//!   Netherlands; those carry a sédula number (their identity-card number) and
//!   about half of them have no BSN.
//!
//! The same configuration gives byte-identical output. A patient depends only on
//! the seed, their index and the directory (which the seed and the patient
//! count determine), never on other patients, so patients can be generated in
//! parallel or resumed. Every
//! reference points to a resource in the same dataset that comes earlier in
//! [`Generator::resources`] order, or to one in the same organisation group of
//! the directory (an Organization and its Endpoint refer to each other).
//!
//! Generating 1,000,000 resources (5,000 patients) takes 9–12 s on one core of
//! the (shared) development machine, serialising them as NDJSON about 1 s more; run
//! `cargo run -p zorgnet-synth --release --example throughput` to measure.
//!
//! What this crate is not: a clinical simulation (the records are plausible,
//! not medically coherent), a validator, or a source of real identifiers. A
//! synthetic BSN passes the 11-check and can equal a real person's BSN, so
//! never look generated people up in a real system. It does no IO except
//! [`write()`], which writes to the `Write` it is given.

#![deny(missing_docs)]

mod calendar;
mod directory;
mod identifiers;
mod output;
mod patient;
mod tables;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::directory::Directory;

pub use crate::identifiers::{BSN_CAPACITY, bsn_is_valid, synthetic_bsn};
pub use crate::output::{
    BUNDLE_FULL_URL_BASE, MAX_ENTRIES_PER_BUNDLE, OutputFormat, transaction_bundle, write,
};

/// Identifier system of the BSN (burgerservicenummer).
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// Identifier system of the URA (UZI-register abonneenummer), the number of a
/// care organisation.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
/// Identifier system of the UZI number of a care professional.
pub const UZI_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers";
/// Identifier system of the AGB code (Algemeen GegevensBeheer zorgverleners),
/// the Vektis code of a care professional.
pub const AGB_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/agb-z";
/// Code system of UZI role codes (rolcodes), e.g. `01.015` huisarts.
pub const UZI_ROLE_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/uzi-rolcode";
/// Identifier system zorgnet uses for the sédula number, the identity-card
/// number of residents of Bonaire, Sint Eustatius and Saba. There is no
/// national NamingSystem for it; the synthetic value is the birth date
/// `YYYYMMDD` followed by a serial of at least four digits.
pub const SEDULA_SYSTEM: &str = "http://zorgnet.nl/fhir/NamingSystem/sedula";

/// Mean number of resources per patient (directory excluded). Measured with
/// `examples/throughput.rs` over 5,000 patients for seeds 1–3: mean 198–201,
/// 10th percentile ≈ 65, median ≈ 125, 90th ≈ 455, 99th ≈ 660, smallest ≈ 10
/// (infants), largest ≈ 800–900 (old, multimorbid). 5,000 patients give about
/// 1,000,000 resources.
pub const RESOURCES_PER_PATIENT_MEAN: u64 = 200;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of patients; the directory scales with it (one GP practice per
    /// 2,000 patients, at least three; one hospital per 50,000; …).
    pub patients: usize,
    /// Seed of all randomness; equal seeds give identical datasets.
    pub seed: u64,
}

/// Generates a dataset. Building one makes the directory model; resources are
/// rendered on demand.
#[derive(Debug)]
pub struct Generator {
    config: SynthConfig,
    directory: Directory,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: SynthConfig) -> Generator {
        // Stream 0 of the seed is the directory's; patient i uses stream i + 1.
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let directory = Directory::build(&mut rng, config.patients);
        Generator { config, directory }
    }

    /// The configuration this generator was made with.
    pub fn config(&self) -> SynthConfig {
        self.config
    }

    /// Organisations (with URA identifiers), their Endpoints, Locations,
    /// HealthcareServices, Practitioners (UZI numbers, AGB codes),
    /// PractitionerRoles (UZI role codes) and OrganizationAffiliations.
    pub fn directory_resources(&self) -> Vec<Value> {
        self.directory_groups().into_iter().flatten().collect()
    }

    /// The directory in groups that must stay together in one transaction: one
    /// per organisation, then the affiliations.
    pub(crate) fn directory_groups(&self) -> Vec<Vec<Value>> {
        self.directory.groups()
    }

    /// Patient number `index` and all of their clinical resources, the Patient
    /// first. Deterministic for (configuration, index) and independent of other
    /// indexes, so generation can run in parallel or resume. Indexes at or beyond
    /// `patients` also give valid patients, but they are not part of
    /// [`Generator::resources`].
    pub fn patient_resources(&self, index: usize) -> Vec<Value> {
        patient::generate(&self.directory, self.config.seed, index)
    }

    /// All resources: the directory, then each patient in index order.
    pub fn resources(&self) -> impl Iterator<Item = Value> + '_ {
        self.directory_resources()
            .into_iter()
            .chain((0..self.config.patients).flat_map(move |index| self.patient_resources(index)))
    }

    /// Expected total number of resources, for sizing a progress bar; the
    /// directory is counted exactly, patients at [`RESOURCES_PER_PATIENT_MEAN`].
    pub fn estimated_resource_count(&self) -> u64 {
        let directory: usize = self.directory_groups().iter().map(Vec::len).sum();
        directory as u64 + self.config.patients as u64 * RESOURCES_PER_PATIENT_MEAN
    }
}
