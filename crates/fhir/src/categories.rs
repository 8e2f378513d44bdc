//! Data categories: the unit in which the network localises data (referral index), records
//! opt-outs and consent (consent register) and authorises reads.
//!
//! The categories follow the EHDS priority categories plus the Dutch exchanges (see
//! SYSTEM.md). Each maps to a fixed rule over FHIR resources: a resource type, sometimes
//! narrowed by its category or document type code. One resource can belong to several
//! categories (an AllergyIntolerance is both `allergies` and part of the `patient-summary`).
//!
//! | category | resources |
//! |---|---|
//! | `patient-summary` (BgZ, Basisgegevensset Zorg) | Condition, Procedure, Immunization, AllergyIntolerance, MedicationStatement, Observation with category `vital-signs` or `social-history`, Flag, DeviceUseStatement |
//! | `medication` | MedicationStatement, MedicationRequest, MedicationDispense, MedicationAdministration |
//! | `allergies` | AllergyIntolerance |
//! | `lab-results` | Observation with category `laboratory`; DiagnosticReport with category `LAB` |
//! | `imaging` | ImagingStudy; Observation with category `imaging`; DiagnosticReport with category `RAD` |
//! | `discharge-report` | DocumentReference / Composition typed LOINC 18842-5 (discharge summary) |
//! | `nursing-transfer` (eOverdracht) | DocumentReference / Composition typed LOINC 34745-0 (nurse discharge summary) |
//! | `gp-summary` (huisartswaarneemgegevens) | DocumentReference / Composition typed LOINC 60591-5 (patient summary document) |

use serde_json::Value;

/// LOINC, the code system of document types.
const LOINC: &str = "http://loinc.org";

/// A data category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataCategory {
    /// Basisgegevensset Zorg: the patient summary.
    PatientSummary,
    /// Medication: prescriptions, dispenses, use.
    Medication,
    /// Allergies and intolerances.
    Allergies,
    /// Laboratory results.
    LabResults,
    /// Imaging studies and reports.
    Imaging,
    /// Hospital discharge reports.
    DischargeReport,
    /// Nursing transfer (eOverdracht).
    NursingTransfer,
    /// The GP's summary for out-of-hours care.
    GpSummary,
}

impl DataCategory {
    /// Every category, in a stable order.
    pub const ALL: [DataCategory; 8] = [
        DataCategory::PatientSummary,
        DataCategory::Medication,
        DataCategory::Allergies,
        DataCategory::LabResults,
        DataCategory::Imaging,
        DataCategory::DischargeReport,
        DataCategory::NursingTransfer,
        DataCategory::GpSummary,
    ];

    /// The code used on the wire.
    pub fn code(self) -> &'static str {
        match self {
            DataCategory::PatientSummary => "patient-summary",
            DataCategory::Medication => "medication",
            DataCategory::Allergies => "allergies",
            DataCategory::LabResults => "lab-results",
            DataCategory::Imaging => "imaging",
            DataCategory::DischargeReport => "discharge-report",
            DataCategory::NursingTransfer => "nursing-transfer",
            DataCategory::GpSummary => "gp-summary",
        }
    }

    /// The category with this code.
    pub fn from_code(code: &str) -> Option<DataCategory> {
        DataCategory::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The resource types that can belong to this category (a type may need a matching
    /// category or document type code as well; see [`categories_of`]).
    pub fn resource_types(self) -> &'static [&'static str] {
        match self {
            DataCategory::PatientSummary => &[
                "Condition",
                "Procedure",
                "Immunization",
                "AllergyIntolerance",
                "MedicationStatement",
                "Observation",
                "Flag",
                "DeviceUseStatement",
            ],
            DataCategory::Medication => &[
                "MedicationStatement",
                "MedicationRequest",
                "MedicationDispense",
                "MedicationAdministration",
            ],
            DataCategory::Allergies => &["AllergyIntolerance"],
            DataCategory::LabResults => &["Observation", "DiagnosticReport"],
            DataCategory::Imaging => &["ImagingStudy", "Observation", "DiagnosticReport"],
            DataCategory::DischargeReport
            | DataCategory::NursingTransfer
            | DataCategory::GpSummary => &["DocumentReference", "Composition"],
        }
    }
}

impl std::fmt::Display for DataCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Parses a list of category codes, naming the first unknown one.
pub fn parse_categories<'a>(
    codes: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<DataCategory>, String> {
    let mut categories = Vec::new();
    for code in codes {
        let category = DataCategory::from_code(code.trim()).ok_or_else(|| {
            format!(
                "unknown data category {code:?}; known: {}",
                DataCategory::ALL.map(DataCategory::code).join(", ")
            )
        })?;
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    Ok(categories)
}

/// How the categories of a resource type follow from its content.
enum Rule {
    /// Every resource of the type belongs to these.
    Always(&'static [DataCategory]),
    /// A resource belongs to the category of each of its `category` codes listed (any system).
    ByCategory(&'static [(&'static str, DataCategory)]),
    /// A resource belongs to the category of each of its LOINC `type` codes listed.
    ByLoincType(&'static [(&'static str, DataCategory)]),
}

/// The rule of `resource_type`; `None` for a type of no category.
fn rule(resource_type: &str) -> Option<Rule> {
    use DataCategory as C;
    Some(match resource_type {
        "Condition" | "Procedure" | "Immunization" | "Flag" | "DeviceUseStatement" => {
            Rule::Always(&[C::PatientSummary])
        }
        "AllergyIntolerance" => Rule::Always(&[C::PatientSummary, C::Allergies]),
        "MedicationStatement" => Rule::Always(&[C::PatientSummary, C::Medication]),
        "MedicationRequest" | "MedicationDispense" | "MedicationAdministration" => {
            Rule::Always(&[C::Medication])
        }
        "Observation" => Rule::ByCategory(&[
            ("vital-signs", C::PatientSummary),
            ("social-history", C::PatientSummary),
            ("laboratory", C::LabResults),
            ("imaging", C::Imaging),
        ]),
        "DiagnosticReport" => Rule::ByCategory(&[("LAB", C::LabResults), ("RAD", C::Imaging)]),
        "ImagingStudy" => Rule::Always(&[C::Imaging]),
        "DocumentReference" | "Composition" => Rule::ByLoincType(&[
            ("18842-5", C::DischargeReport),
            ("34745-0", C::NursingTransfer),
            ("60591-5", C::GpSummary),
        ]),
        _ => return None,
    })
}

/// The categories a resource belongs to (none for directory and administrative resources).
pub fn categories_of(resource: &Value) -> Vec<DataCategory> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Vec::new();
    let mut add = |category: DataCategory| {
        if !out.contains(&category) {
            out.push(category);
        }
    };
    match rule(resource_type) {
        None => {}
        Some(Rule::Always(categories)) => categories.iter().copied().for_each(add),
        Some(Rule::ByCategory(table)) => {
            for (code, category) in table {
                if codes(resource.get("category")).any(|(_, c)| c == *code) {
                    add(*category);
                }
            }
        }
        Some(Rule::ByLoincType(table)) => {
            for (code, category) in table {
                if codes(resource.get("type")).any(|(system, c)| system == LOINC && c == *code) {
                    add(*category);
                }
            }
        }
    }
    out
}

/// The version of the rules above. A store that keeps each resource's categories beside it
/// recomputes them when this changes; change it with any rule.
pub const RULES_VERSION: i64 = 1;

/// The categories the access policy reads a resource as: a Patient resource as the patient
/// summary (it is the summary's subject), anything else as [`categories_of`].
pub fn access_categories_of(resource: &Value) -> CategorySet {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => CategorySet::of([DataCategory::PatientSummary]),
        _ => CategorySet::of(categories_of(resource)),
    }
}

/// A set of categories as bits, the way a store keeps them in a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(u16);

impl CategorySet {
    /// No category.
    pub const EMPTY: CategorySet = CategorySet(0);

    /// The set of `categories`.
    pub fn of(categories: impl IntoIterator<Item = DataCategory>) -> CategorySet {
        CategorySet(categories.into_iter().fold(0, |bits, c| bits | c.bit()))
    }

    /// The set with these bits; bits of no category are dropped.
    pub fn from_bits(bits: i64) -> CategorySet {
        let all = CategorySet::of(DataCategory::ALL).0;
        CategorySet(u16::try_from(bits & i64::from(all)).unwrap_or(0))
    }

    /// The bits, for a column.
    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }

    /// Every category not in this set.
    pub fn complement(self) -> CategorySet {
        CategorySet(!self.0 & CategorySet::of(DataCategory::ALL).0)
    }

    /// Whether `category` is in the set.
    pub fn contains(self, category: DataCategory) -> bool {
        self.0 & category.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The categories in the set, in [`DataCategory::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = DataCategory> {
        DataCategory::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl DataCategory {
    /// This category's bit in a [`CategorySet`].
    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// `(system, code)` of every coding in a CodeableConcept or an array of them.
fn codes(value: Option<&Value>) -> impl Iterator<Item = (&str, &str)> {
    let concepts: Vec<&Value> = match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(concept @ Value::Object(_)) => vec![concept],
        _ => Vec::new(),
    };
    concepts
        .into_iter()
        .filter_map(|concept| concept.get("coding").and_then(Value::as_array))
        .flatten()
        .map(|coding| {
            (
                coding.get("system").and_then(Value::as_str).unwrap_or(""),
                coding.get("code").and_then(Value::as_str).unwrap_or(""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_category_set_keeps_each_category_in_a_bit_of_its_own() {
        for category in DataCategory::ALL {
            let one = CategorySet::of([category]);
            assert_eq!(one.iter().collect::<Vec<_>>(), vec![category]);
            assert_eq!(CategorySet::from_bits(one.bits()), one);
            assert!(!one.complement().contains(category));
            assert_eq!(one.complement().iter().count(), DataCategory::ALL.len() - 1);
        }
        let all = CategorySet::of(DataCategory::ALL);
        assert_eq!(all.complement(), CategorySet::EMPTY);
        assert_eq!(
            CategorySet::from_bits(-1),
            all,
            "bits of no category are dropped"
        );
    }

    #[test]
    fn the_access_policy_reads_a_patient_as_the_patient_summary() {
        let patient = json!({"resourceType": "Patient", "id": "p"});
        assert_eq!(categories_of(&patient), Vec::new());
        assert_eq!(
            access_categories_of(&patient),
            CategorySet::of([DataCategory::PatientSummary])
        );
        let lab = json!({"resourceType": "Observation",
            "category": [{"coding": [{"code": "laboratory"}]}]});
        assert_eq!(
            access_categories_of(&lab),
            CategorySet::of(categories_of(&lab))
        );
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_named() {
        for category in DataCategory::ALL {
            assert_eq!(DataCategory::from_code(category.code()), Some(category));
        }
        let error = parse_categories(["medication", "x-rays"]).unwrap_err();
        assert!(error.contains("\"x-rays\""), "{error}");
        assert_eq!(
            parse_categories(["medication", "medication", "allergies"]).unwrap(),
            vec![DataCategory::Medication, DataCategory::Allergies]
        );
    }

    #[test]
    fn resources_map_to_their_categories() {
        let lab = json!({"resourceType": "Observation", "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]});
        assert_eq!(categories_of(&lab), vec![DataCategory::LabResults]);
        let vitals = json!({"resourceType": "Observation", "category": [{"coding": [{"code": "vital-signs"}]}]});
        assert_eq!(categories_of(&vitals), vec![DataCategory::PatientSummary]);
        let uncategorised = json!({"resourceType": "Observation"});
        assert!(categories_of(&uncategorised).is_empty());
        let statement = json!({"resourceType": "MedicationStatement"});
        assert_eq!(
            categories_of(&statement),
            vec![DataCategory::PatientSummary, DataCategory::Medication]
        );
        let letter = json!({"resourceType": "DocumentReference", "type": {"coding": [{
            "system": "http://loinc.org", "code": "18842-5"}]}});
        assert_eq!(categories_of(&letter), vec![DataCategory::DischargeReport]);
        assert!(categories_of(&json!({"resourceType": "Organization"})).is_empty());
        for category in DataCategory::ALL {
            assert!(!category.resource_types().is_empty());
        }
    }
}
