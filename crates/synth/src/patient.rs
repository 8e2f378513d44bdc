//! One synthetic patient and their clinical record, as FHIR R4 resources.
//!
//! A record is a deterministic function of (seed, patient index, directory):
//! it draws from its own ChaCha8 stream and never looks at other patients.
//! Resources come out so that every reference points to the directory or to a
//! resource emitted earlier in the same record. This module does no IO.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::calendar::{
    DAYS_PER_YEAR, Day, MINUTES_PER_DAY, Zone, date, date_time, day_from_civil, year_of,
};
use crate::directory::{self, CareNetwork, Directory, Org, Staff};
use crate::identifiers::{self, mix};
use crate::tables::{
    self, AcuteCondition, Allergy, ChronicCondition, HospitalEpisode, LabTest, Medication, Panel,
    Role, SexFilter, Snomed, Vaccine,
};
use crate::{BSN_SYSTEM, SEDULA_SYSTEM};

/// One in this many patients lives in the Caribbean Netherlands (2 %).
pub(crate) const CARIBBEAN_EVERY: usize = 50;
/// Share of Caribbean patients who also have a BSN (e.g. having lived in the
/// European Netherlands); the others are known by their sédula number only.
const CARIBBEAN_BSN_SHARE: f64 = 0.5;

/// Last day of the dataset; no date lies after it.
pub(crate) const DATA_END: Day = day_from_civil(2026, 10, 31);
/// Records start here, or at birth.
const RECORD_START: Day = day_from_civil(2014, 1, 1);
/// New events stop this many days before the end of a record, so that hospital
/// stays, dispenses and lab reports that follow an event still fit.
const EVENT_MARGIN_DAYS: i32 = 30;
/// Birth dates lie between these days.
const BIRTH_FIRST_YEAR: i32 = 1930;
const BIRTH_LAST_YEAR: i32 = 2024;
/// Birth years before this are drawn less often (fewer people of that age live).
const BIRTH_YEAR_FULL_WEIGHT_FROM: i32 = 1945;
const BIRTH_YEAR_EARLY_WEIGHT: f64 = 0.4;
/// Share of people aged 75 or more at the end of the data who died during it.
const DECEASED_SHARE_75_PLUS: f64 = 0.10;
/// Share of people aged 80 or more living in a nursing home (mainland only).
const NURSING_HOME_SHARE_80_PLUS: f64 = 0.15;
/// Childhood vaccinations are in the record for people born from this year on
/// (the national vaccination register went digital in 2005).
const CHILDHOOD_RECORDS_FROM_YEAR: i32 = 1985;
/// Share of children vaccinated under the national programme.
const CHILDHOOD_VACCINATION_SHARE: f64 = 0.92;
/// A repeat prescription (herhaalrecept) for stable long-term medication covers
/// this many days of dispenses.
const PRESCRIPTION_PERIOD_DAYS: i32 = 365;
/// Dispenses of a chronic medicine are at least this many days apart.
const DISPENSE_INTERVAL_MIN_DAYS: i32 = 84;
/// Most long-term medicines one patient takes over the record (polypharmacy cap).
const MEDICATION_COURSES_MAX: usize = 4;
/// Share of women of fertile age who take the contraceptive pill.
const CONTRACEPTION_SHARE: f64 = 0.35;
/// Ages between which women may take the contraceptive pill.
const CONTRACEPTION_AGES: (u32, u32) = (16, 50);
/// Share of chronic medication courses stopped before the end of the record.
const MEDICATION_STOP_SHARE: f64 = 0.2;
/// Years a cancer is followed up by the specialist after diagnosis.
const CANCER_FOLLOW_UP_YEARS: i32 = 5;
/// Share of GP-treated acute illnesses that get a prescription, when one fits.
const ACUTE_PRESCRIPTION_SHARE: f64 = 0.6;
/// Cancers (SNOMED): followed up for [`CANCER_FOLLOW_UP_YEARS`], then in remission.
const CANCERS: &[&str] = &["363406005", "254837009", "399068003"];
/// Stream offset of patient rng streams; stream 0 is the directory's.
const PATIENT_STREAM_OFFSET: u64 = 1;
/// Seed stream for choosing which index residue lives in the Caribbean.
const CARIBBEAN_STREAM: u64 = 0xCA21;

const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
const MEDICATION_REQUEST_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-category";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ADMIT_SOURCE: &str = "http://terminology.hl7.org/CodeSystem/admit-source";
const DISCHARGE_DISPOSITION: &str = "http://terminology.hl7.org/CodeSystem/discharge-disposition";
const DIAGNOSTIC_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";

/// GP consultations per year by age (upper bound exclusive), before the
/// patient's own care factor.
const GP_VISITS_PER_YEAR: &[(u32, f64)] = &[
    (5, 3.0),
    (18, 1.7),
    (45, 2.1),
    (65, 2.3),
    (80, 2.5),
    (u32::MAX, 2.8),
];
/// Hospital episodes per year by age (upper bound exclusive).
const HOSPITAL_EPISODES_PER_YEAR: &[(u32, f64)] =
    &[(18, 0.03), (50, 0.04), (70, 0.08), (u32::MAX, 0.15)];

/// The patient's Caribbean ordinal if patient `index` lives in the Caribbean
/// Netherlands: one index residue modulo [`CARIBBEAN_EVERY`], chosen by seed.
pub(crate) fn caribbean_ordinal(seed: u64, index: usize) -> Option<u64> {
    let residue = (mix(seed, CARIBBEAN_STREAM) % CARIBBEAN_EVERY as u64) as usize;
    (index % CARIBBEAN_EVERY == residue).then_some((index / CARIBBEAN_EVERY) as u64)
}

/// All resources of patient `index`: the Patient first, then their record.
pub(crate) fn generate(directory: &Directory, seed: u64, index: usize) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(PATIENT_STREAM_OFFSET + index as u64);
    let caribbean = caribbean_ordinal(seed, index);
    let female = rng.random_bool(0.5);
    let birth = birth_day(&mut rng);
    let age_at_end = age_between(birth, DATA_END);
    let death = (age_at_end >= 75 && rng.random_bool(DECEASED_SHARE_75_PLUS)).then(|| {
        let earliest = (birth + years_to_days(75)).max(RECORD_START + 365);
        rng.random_range(earliest.min(DATA_END - 60)..=DATA_END - 60)
    });
    let end = death.unwrap_or(DATA_END);
    let last_event = end - EVENT_MARGIN_DAYS;
    // A patient who changes GP brings their record along (dossieroverdracht),
    // so every record starts at RECORD_START or birth.
    let record_start = birth.max(RECORD_START);

    let (care, island) = match caribbean {
        Some(_) => {
            let island = weighted_island(&mut rng);
            (directory.island_network(island), Some(island))
        }
        None => {
            let in_nursing_home = age_at_end >= 80 && rng.random_bool(NURSING_HOME_SHARE_80_PLUS);
            let gp = rng.random_range(0..directory.mainland_gp_count());
            (directory.mainland_network(gp, in_nursing_home), None)
        }
    };
    let gp_org = care.gp;
    let gps: Vec<&Staff> = gp_org.staff_all_with_role(&tables::ROLE_GP).collect();
    let own_gp = if gps.is_empty() {
        gp_org.staff_with_role(&tables::ROLE_GP)
    } else {
        gps[rng.random_range(0..gps.len())]
    };
    let mut record = Record {
        out: Vec::with_capacity(256),
        key: format!("{index:06}"),
        seq: 0,
        patient_ref: format!("Patient/pat-{index:06}"),
        zone: if caribbean.is_some() {
            Zone::Caribbean
        } else {
            Zone::Netherlands
        },
        female,
        birth,
        end,
        last_event,
        record_start,
        deceased: death.is_some(),
        care,
        own_gp,
        chronic: Vec::new(),
        medications_in_use: Vec::new(),
        yearly_labs: Vec::new(),
        care_factor: rng.random_range(0.6..1.4),
        vaccine_willingness: rng.random_range(0.3..1.3),
        weight_kg_adult: if female { 70.0 } else { 84.0 } + 12.0 * normal(&mut rng),
        display_name: String::new(),
        rng,
    };
    record.patient(seed, index, caribbean, island, death);
    record.allergies();
    record.immunizations();
    record.chronic_conditions();
    record.contraception();
    record.chronic_care();
    record.gp_visits();
    record.hospital_episodes();
    record.nursing_home_care();
    record.out
}

/// A chronic condition on the patient's problem list.
struct ActiveCondition {
    condition: &'static ChronicCondition,
    onset: Day,
    /// "Condition/…".
    reference: String,
}

/// Encounter class (HL7 v3 ActCode).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Ambulatory,
    Emergency,
    Inpatient,
    HomeHealth,
}

impl Class {
    fn coding(self) -> Value {
        let (code, display) = match self {
            Class::Ambulatory => ("AMB", "ambulatory"),
            Class::Emergency => ("EMER", "emergency"),
            Class::Inpatient => ("IMP", "inpatient encounter"),
            Class::HomeHealth => ("HH", "home health"),
        };
        json!({ "system": ACT_CODE, "code": code, "display": display })
    }
}

/// What an Encounter resource needs.
struct EncounterSpec<'a> {
    class: Class,
    kind: Snomed,
    org: &'a Org,
    participants: &'a [&'a Staff],
    start: (Day, u32),
    end: (Day, u32),
    reason: Option<(&'a str, &'a str, &'a str)>,
    /// The problem-list Condition this encounter is about ("Condition/…").
    reason_reference: Option<&'a str>,
    /// Admission source code (HL7 admit-source) for inpatient stays.
    admit_source: Option<(&'a str, &'a str)>,
}

/// Builds one patient's record.
struct Record<'a> {
    rng: ChaCha8Rng,
    out: Vec<Value>,
    /// Zero-padded patient index used in resource ids.
    key: String,
    seq: u32,
    patient_ref: String,
    zone: Zone,
    female: bool,
    birth: Day,
    end: Day,
    last_event: Day,
    record_start: Day,
    deceased: bool,
    care: CareNetwork<'a>,
    own_gp: &'a Staff,
    chronic: Vec<ActiveCondition>,
    medications_in_use: Vec<&'static str>,
    /// Lab panels already ordered for chronic care, by year: one round a year
    /// serves every condition that needs the panel.
    yearly_labs: Vec<(i32, &'static Panel)>,
    /// How often this patient sees a doctor relative to peers.
    care_factor: f64,
    /// Scales the chance of accepting each offered vaccination.
    vaccine_willingness: f64,
    weight_kg_adult: f64,
    display_name: String,
}

impl<'a> Record<'a> {
    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}-{:04}", self.key, self.seq)
    }

    fn push(&mut self, resource: Value) {
        self.out.push(resource);
    }

    fn date_time(&self, day: Day, minute: u32) -> String {
        date_time(day, minute, self.zone)
    }

    /// A time during office hours (08:00–17:30), on a five-minute grid.
    fn office_minute(&mut self) -> u32 {
        8 * 60 + 5 * self.rng.random_range(0..=114)
    }

    fn day_between(&mut self, first: Day, last: Day) -> Day {
        if last <= first {
            first
        } else {
            self.rng.random_range(first..=last)
        }
    }

    fn age_at(&self, day: Day) -> u32 {
        age_between(self.birth, day)
    }

    fn has_condition(&self, code: &str) -> bool {
        self.chronic.iter().any(|c| c.condition.code == code)
    }

    fn patient_reference(&self) -> Value {
        json!({ "reference": self.patient_ref })
    }

    fn patient(
        &mut self,
        seed: u64,
        index: usize,
        caribbean: Option<u64>,
        island: Option<usize>,
        death: Option<Day>,
    ) {
        let mut identifiers = Vec::new();
        let has_bsn = caribbean.is_none() || self.rng.random_bool(CARIBBEAN_BSN_SHARE);
        if has_bsn {
            identifiers.push(json!({
                "use": "official",
                "system": BSN_SYSTEM,
                "value": identifiers::synthetic_bsn(seed, index as u64),
            }));
        }
        if let Some(ordinal) = caribbean {
            identifiers.push(json!({
                "use": if has_bsn { "secondary" } else { "official" },
                "system": SEDULA_SYSTEM,
                "value": identifiers::sedula(self.birth, ordinal),
            }));
        }
        let (given_names, family) = match island {
            Some(_) => {
                let names = if self.female {
                    tables::CARIBBEAN_GIVEN_FEMALE
                } else {
                    tables::CARIBBEAN_GIVEN_MALE
                };
                (
                    names,
                    directory::pick(&mut self.rng, tables::CARIBBEAN_FAMILY).to_owned(),
                )
            }
            None => {
                let names = if self.female {
                    tables::GIVEN_FEMALE
                } else {
                    tables::GIVEN_MALE
                };
                (names, directory::family_name(&mut self.rng))
            }
        };
        let mut given = vec![directory::pick(&mut self.rng, given_names)];
        if self.rng.random_bool(0.4) {
            let second = directory::pick(&mut self.rng, given_names);
            if second != given[0] {
                given.push(second);
            }
        }
        self.display_name = format!("{} {family}", given[0]);

        let (address, phone, language) = match island {
            Some(island) => {
                let island_table = &tables::ISLANDS[island];
                let town = self.rng.random_range(0..island_table.towns.len());
                let language = if island == 0 {
                    ("pap", "Papiamento")
                } else {
                    ("en", "English")
                };
                (
                    directory::caribbean_address(&mut self.rng, island_table, town),
                    directory::caribbean_phone(&mut self.rng, island_table),
                    language,
                )
            }
            None => {
                let address = match self.care.nursing_home {
                    Some(home) => home.address.clone(),
                    None => {
                        let city = self
                            .care
                            .gp
                            .city
                            .unwrap_or_else(|| directory::weighted_city(&mut self.rng));
                        directory::mainland_address(&mut self.rng, &tables::CITIES[city])
                    }
                };
                let phone = format!("+316{:08}", self.rng.random_range(10_000_000..100_000_000));
                (address, phone, ("nl", "Dutch"))
            }
        };
        let mut telecom = vec![json!({ "system": "phone", "value": phone, "use": "mobile" })];
        let age = self.age_at(self.end);
        if age >= 16 && self.rng.random_bool(0.6) {
            let local: String = format!("{}.{}", given[0], family)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect::<String>()
                .to_ascii_lowercase();
            let email = format!("{local}{}@example.com", index % 100);
            telecom.push(json!({ "system": "email", "value": email, "use": "home" }));
        }

        let mut patient = json!({
            "resourceType": "Patient",
            "id": format!("pat-{}", self.key),
            "identifier": identifiers,
            "active": true,
            "name": [{
                "use": "official",
                "text": format!("{} {family}", given.join(" ")),
                "family": family,
                "given": given,
            }],
            "telecom": telecom,
            "gender": if self.female { "female" } else { "male" },
            "birthDate": date(self.birth),
        });
        if let Some(death) = death {
            let minute = self.rng.random_range(0..MINUTES_PER_DAY);
            patient["deceasedDateTime"] = json!(self.date_time(death, minute));
        }
        patient["address"] = json!([address.to_json("home")]);
        if age >= 18 {
            let (code, display) = match self.rng.random_range(0..10) {
                0..=4 => ("M", "Married"),
                5..=7 => ("S", "Never Married"),
                8 => ("D", "Divorced"),
                _ => ("W", "Widowed"),
            };
            patient["maritalStatus"] = json!({ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                "code": code,
                "display": display,
            }] });
        }
        patient["communication"] = json!([{
            "language": {
                "coding": [{
                    "system": "urn:ietf:bcp:47",
                    "code": language.0,
                    "display": language.1,
                }],
            },
            "preferred": true,
        }]);
        patient["generalPractitioner"] = json!([
            { "reference": self.care.gp.org_ref },
            { "reference": self.own_gp.practitioner_ref },
        ]);
        patient["managingOrganization"] = json!({ "reference": self.care.gp.org_ref });
        self.push(patient);
    }

    fn allergies(&mut self) {
        let roll: f64 = self.rng.random();
        let count = match roll {
            r if r < 0.75 => 0,
            r if r < 0.93 => 1,
            r if r < 0.98 => 2,
            _ => 3,
        };
        let mut chosen: Vec<&'static Allergy> = Vec::with_capacity(count);
        for _ in 0..count {
            let allergy = weighted(&mut self.rng, tables::ALLERGIES, |a| a.weight);
            if chosen.iter().any(|c| std::ptr::eq(*c, allergy)) {
                continue;
            }
            chosen.push(allergy);
            let day = self.day_between(self.record_start, self.last_event);
            let minute = self.office_minute();
            let anaphylaxis = allergy.reaction.0 == "39579001";
            let criticality = if anaphylaxis {
                "high"
            } else if self.rng.random_bool(0.1) {
                "unable-to-assess"
            } else {
                "low"
            };
            let severity = if anaphylaxis {
                "severe"
            } else if self.rng.random_bool(0.3) {
                "moderate"
            } else {
                "mild"
            };
            let intolerance = matches!(allergy.category, tables::AllergyCategory::Medication)
                && self.rng.random_bool(0.2);
            let (verification, verification_display) = if self.rng.random_bool(0.8) {
                ("confirmed", "Confirmed")
            } else {
                ("unconfirmed", "Unconfirmed")
            };
            let (substance_code, substance_display) = allergy.substance;
            let (reaction_code, reaction_display) = allergy.reaction;
            let id = self.next_id("alg");
            let resource = json!({
                "resourceType": "AllergyIntolerance",
                "id": id,
                "clinicalStatus": codeable(ALLERGY_CLINICAL, "active", "Active"),
                "verificationStatus":
                    codeable(ALLERGY_VERIFICATION, verification, verification_display),
                "type": if intolerance { "intolerance" } else { "allergy" },
                "category": [allergy.category.code()],
                "criticality": criticality,
                "code":
                    codeable_text(tables::SNOMED, substance_code, substance_display, allergy.text),
                "patient": self.patient_reference(),
                "recordedDate": self.date_time(day, minute),
                "recorder": { "reference": self.own_gp.practitioner_ref },
                "reaction": [{
                    "manifestation": [codeable(tables::SNOMED, reaction_code, reaction_display)],
                    "severity": severity,
                }],
            });
            self.push(resource);
        }
    }

    fn immunizations(&mut self) {
        let birth_year = year_of(self.birth);
        if birth_year >= CHILDHOOD_RECORDS_FROM_YEAR
            && self.rng.random_bool(CHILDHOOD_VACCINATION_SHARE)
        {
            let men_acwy_from = day_from_civil(2018, 5, 1);
            let hpv_from = day_from_civil(2010, 1, 1);
            let hpv_boys_from = day_from_civil(2022, 1, 1);
            for scheduled in tables::CHILDHOOD_SCHEDULE {
                let day = self.birth + scheduled.age_days + self.rng.random_range(0..21);
                if day > self.last_event {
                    break;
                }
                if scheduled.girls_only && (day < hpv_from || (!self.female && day < hpv_boys_from))
                {
                    continue;
                }
                let is_teen_men = std::ptr::eq(scheduled.vaccine, &tables::VACCINE_MEN_ACWY);
                if is_teen_men && day < men_acwy_from {
                    continue;
                }
                let vaccine = if std::ptr::eq(scheduled.vaccine, &tables::VACCINE_MEN_C)
                    && day >= men_acwy_from
                {
                    &tables::VACCINE_MEN_ACWY
                } else {
                    scheduled.vaccine
                };
                self.immunization(vaccine, day, scheduled.dose, None);
            }
        }

        let gp = self.care.gp;
        let first_year = year_of(self.record_start);
        let last_year = year_of(self.last_event);
        for year in first_year..=last_year {
            let day = day_from_civil(year, 10, 15) + self.rng.random_range(0..45);
            if day < self.record_start || day > self.last_event || self.age_at(day) < 60 {
                continue;
            }
            if self.accepts_vaccine(0.65) {
                self.immunization(&tables::VACCINE_INFLUENZA, day, 1, Some(gp));
            }
        }

        if self.age_at(day_from_civil(2021, 6, 1)) >= 18 && self.accepts_vaccine(0.85) {
            let first = self.day_between(day_from_civil(2021, 3, 1), day_from_civil(2021, 7, 15));
            let second = first + self.rng.random_range(35..=42);
            let booster =
                self.day_between(day_from_civil(2021, 12, 10), day_from_civil(2022, 1, 31));
            self.covid_dose(first, 1);
            self.covid_dose(second, 2);
            if self.accepts_vaccine(0.65) {
                self.covid_dose(booster, 3);
            }
            for (dose, year) in (4..).zip(2022..=2025) {
                let day =
                    self.day_between(day_from_civil(year, 10, 1), day_from_civil(year, 11, 20));
                if self.age_at(day) >= 60 && self.accepts_vaccine(0.55) {
                    self.covid_dose(day, dose);
                }
            }
        }

        let pneumococcal = self.day_between(day_from_civil(2020, 10, 1), self.last_event);
        let age = self.age_at(pneumococcal);
        if pneumococcal <= self.last_event && (60..=80).contains(&age) && self.accepts_vaccine(0.3)
        {
            self.immunization(
                &tables::VACCINE_PNEUMOCOCCAL_POLYSACCHARIDE,
                pneumococcal,
                1,
                Some(gp),
            );
        }
        let zoster = self.day_between(self.record_start, self.last_event);
        if self.age_at(zoster) >= 60 && self.accepts_vaccine(0.05) {
            self.immunization(&tables::VACCINE_ZOSTER, zoster, 1, Some(gp));
        }
    }

    fn accepts_vaccine(&mut self, base_share: f64) -> bool {
        self.rng
            .random_bool((base_share * self.vaccine_willingness).min(0.97))
    }

    fn covid_dose(&mut self, day: Day, dose: u32) {
        if day <= self.last_event && day >= self.birth {
            self.immunization(&tables::VACCINE_COVID, day, dose, None);
        }
    }

    fn immunization(&mut self, vaccine: &Vaccine, day: Day, dose: u32, performer: Option<&Org>) {
        let minute = self.office_minute();
        let id = self.next_id("imm");
        let lot = format!(
            "{}{}{:05}",
            char::from(b'A' + self.rng.random_range(0..26u8)),
            char::from(b'A' + self.rng.random_range(0..26u8)),
            self.rng.random_range(0..100_000)
        );
        let mut resource = json!({
            "resourceType": "Immunization",
            "id": id,
            "status": "completed",
            "vaccineCode": codeable_text(tables::ATC, vaccine.atc, vaccine.atc_name, vaccine.text),
            "patient": self.patient_reference(),
            "occurrenceDateTime": self.date_time(day, minute),
            "primarySource": true,
            "lotNumber": lot,
        });
        if let Some(org) = performer {
            resource["performer"] = json!([{ "actor": { "reference": org.org_ref } }]);
        }
        resource["protocolApplied"] = json!([{ "doseNumberPositiveInt": dose }]);
        self.push(resource);
    }

    fn chronic_conditions(&mut self) {
        let age_now = self.age_at(self.end);
        for condition in tables::CHRONIC_CONDITIONS {
            if !sex_matches(condition.sex, self.female) || age_now < condition.onset_age_min {
                continue;
            }
            let span = f64::from((condition.onset_age_max - condition.onset_age_min).max(1));
            let ramp = (f64::from(age_now - condition.onset_age_min) / span).min(1.0);
            if !self.rng.random_bool(condition.prevalence * ramp) {
                continue;
            }
            let onset_age = self
                .rng
                .random_range(condition.onset_age_min..=age_now.min(condition.onset_age_max));
            let onset = (self.birth + years_to_days(onset_age) + self.rng.random_range(0..365))
                .clamp(self.birth, self.last_event);
            self.add_chronic(condition, onset);
        }
    }

    fn add_chronic(&mut self, condition: &'static ChronicCondition, onset: Day) {
        let (org, practitioner) = match condition.specialist {
            Some(role) => (self.care.hospital, self.care.hospital.staff_with_role(role)),
            None => (self.care.gp, self.own_gp),
        };
        let minute = self.office_minute();
        let diagnosed_in_record = onset >= self.record_start;
        let encounter = diagnosed_in_record.then(|| {
            self.encounter(EncounterSpec {
                class: Class::Ambulatory,
                kind: tables::ENCOUNTER_CONSULTATION,
                org,
                participants: &[practitioner],
                start: (onset, minute),
                end: (onset, minute + 20),
                reason: Some((condition.code, condition.display, condition.text)),
                reason_reference: None,
                admit_source: None,
            })
        });
        let is_cancer = CANCERS.contains(&condition.code);
        let in_remission =
            is_cancer && self.end - onset > years_to_days(CANCER_FOLLOW_UP_YEARS as u32);
        let (clinical, clinical_display) = if in_remission {
            ("remission", "Remission")
        } else {
            ("active", "Active")
        };
        let id = self.next_id("cond");
        let mut resource = json!({
            "resourceType": "Condition",
            "id": id,
            "clinicalStatus": codeable(CONDITION_CLINICAL, clinical, clinical_display),
            "verificationStatus": codeable(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
            "category": [codeable(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
            "code": codeable_text(
                tables::SNOMED,
                condition.code,
                condition.display,
                condition.text,
            ),
            "subject": self.patient_reference(),
        });
        if let Some(encounter) = &encounter {
            resource["encounter"] = json!({ "reference": encounter });
        }
        resource["onsetDateTime"] = json!(date(onset));
        resource["recordedDate"] = json!(self.date_time(onset.max(self.record_start), minute));
        resource["recorder"] = json!({ "reference": practitioner.practitioner_ref });
        let reference = format!("Condition/{id}");
        self.push(resource);

        if let Some(encounter) = &encounter {
            for (n, procedure) in condition.diagnosis_procedures.iter().enumerate() {
                let day = (onset + 14 * n as i32).min(self.last_event);
                let minute = self.office_minute();
                self.procedure(
                    *procedure,
                    day,
                    minute,
                    encounter,
                    org,
                    practitioner,
                    Some(&reference),
                );
            }
        }

        let mut prescribed = 0;
        for (n, atc) in condition.medications.iter().enumerate() {
            if prescribed == 2
                || self.medications_in_use.len() == MEDICATION_COURSES_MAX
                || (n > 0 && !self.rng.random_bool(0.4))
                || self.medications_in_use.contains(atc)
            {
                continue;
            }
            let Some(medication) = tables::medication_by_atc(atc) else {
                continue;
            };
            prescribed += 1;
            self.medications_in_use.push(atc);
            let start = (onset + self.rng.random_range(0..30))
                .max(self.record_start)
                .min(self.last_event);
            let prescriber = if is_cancer { practitioner } else { self.own_gp };
            self.medication_course(medication, start, self.end, Some(&reference), prescriber);
        }
        self.chronic.push(ActiveCondition {
            condition,
            onset,
            reference,
        });
    }

    /// The contraceptive pill for some women of fertile age, from the GP.
    fn contraception(&mut self) {
        if !self.female || !self.rng.random_bool(CONTRACEPTION_SHARE) {
            return;
        }
        let first = (self.birth + years_to_days(CONTRACEPTION_AGES.0)).max(self.record_start);
        let last = (self.birth + years_to_days(CONTRACEPTION_AGES.1)).min(self.end);
        if first + 365 > last || first > self.last_event {
            return;
        }
        let start = self.day_between(first, (last - 365).min(self.last_event));
        let stop = self.day_between(start + 365, last);
        if let Some(pill) = tables::medication_by_atc(tables::CONTRACEPTIVE_PILL_ATC) {
            self.medication_course(pill, start, stop, None, self.own_gp);
        }
    }

    /// A long-term medicine: one MedicationStatement, then repeat prescriptions
    /// and the pharmacy's dispenses until the course ends (at `planned_end` at
    /// the latest).
    fn medication_course(
        &mut self,
        medication: &Medication,
        start: Day,
        planned_end: Day,
        reason: Option<&str>,
        prescriber: &Staff,
    ) {
        let stops = self.rng.random_bool(MEDICATION_STOP_SHARE);
        let course_end = if stops {
            (start + self.rng.random_range(90..=5 * 365)).min(planned_end)
        } else {
            planned_end
        };
        let status = if self.deceased {
            "completed"
        } else if course_end < self.end {
            "stopped"
        } else {
            "active"
        };
        let minute = self.office_minute();
        let id = self.next_id("medst");
        let mut period = json!({ "start": date(start) });
        if status != "active" {
            period["end"] = json!(date(course_end));
        }
        let mut resource = json!({
            "resourceType": "MedicationStatement",
            "id": id,
            "status": status,
            "medicationCodeableConcept": medication_concept(medication),
            "subject": self.patient_reference(),
            "effectivePeriod": period,
            "dateAsserted": self.date_time(start, minute),
            "informationSource": { "reference": prescriber.practitioner_ref },
        });
        if let Some(reason) = reason {
            resource["reasonReference"] = json!([{ "reference": reason }]);
        }
        resource["dosage"] = json!([{ "text": medication.dosage }]);
        self.push(resource);

        let interval = i32::try_from(medication.fill_days)
            .unwrap_or(i32::MAX)
            .max(DISPENSE_INTERVAL_MIN_DAYS);
        let fills_per_prescription =
            u32::try_from((PRESCRIPTION_PERIOD_DAYS / interval).max(1)).unwrap_or(1);
        let last = course_end.min(self.last_event);
        let mut day = start;
        while day <= last {
            let next = day + PRESCRIPTION_PERIOD_DAYS + self.rng.random_range(0..=14);
            let still_running = status == "active" && next > last;
            let minute = self.office_minute();
            let request = self.medication_request(
                medication,
                (day, minute),
                prescriber,
                reason,
                None,
                fills_per_prescription - 1,
                if still_running { "active" } else { "completed" },
            );
            for fill in 0..fills_per_prescription {
                let handed_over = day + interval * fill as i32 + self.rng.random_range(0..=3);
                if handed_over > last {
                    break;
                }
                self.dispense(medication, handed_over, &request);
            }
            day = next;
        }
    }

    #[allow(clippy::too_many_arguments)] // mirrors the MedicationRequest fields
    fn medication_request(
        &mut self,
        medication: &Medication,
        (day, minute): (Day, u32),
        requester: &Staff,
        reason: Option<&str>,
        encounter: Option<&str>,
        repeats: u32,
        status: &str,
    ) -> String {
        let id = self.next_id("medrq");
        let mut resource = json!({
            "resourceType": "MedicationRequest",
            "id": id,
            "status": status,
            "intent": "order",
            "category": [codeable(MEDICATION_REQUEST_CATEGORY, "community", "Community")],
            "medicationCodeableConcept": medication_concept(medication),
            "subject": self.patient_reference(),
        });
        if let Some(encounter) = encounter {
            resource["encounter"] = json!({ "reference": encounter });
        }
        resource["authoredOn"] = json!(self.date_time(day, minute));
        resource["requester"] = json!({ "reference": requester.practitioner_ref });
        if let Some(reason) = reason {
            resource["reasonReference"] = json!([{ "reference": reason }]);
        }
        resource["dosageInstruction"] = json!([{ "text": medication.dosage }]);
        resource["dispenseRequest"] = json!({
            "numberOfRepeatsAllowed": repeats,
            "quantity": { "value": medication.fill_amount, "unit": medication.fill_unit },
            "expectedSupplyDuration": days_quantity(medication.fill_days),
        });
        self.push(resource);
        format!("MedicationRequest/{id}")
    }

    fn dispense(&mut self, medication: &Medication, day: Day, request: &str) {
        let pharmacy = self.care.pharmacy;
        let minute = self.office_minute();
        let id = self.next_id("meddisp");
        let resource = json!({
            "resourceType": "MedicationDispense",
            "id": id,
            "status": "completed",
            "medicationCodeableConcept": medication_concept(medication),
            "subject": self.patient_reference(),
            "performer": [{ "actor": { "reference": pharmacy.org_ref } }],
            "location": { "reference": pharmacy.location_ref },
            "authorizingPrescription": [{ "reference": request }],
            "quantity": { "value": medication.fill_amount, "unit": medication.fill_unit },
            "daysSupply": days_quantity(medication.fill_days),
            "whenHandedOver": self.date_time(day, minute),
            "dosageInstruction": [{ "text": medication.dosage }],
        });
        self.push(resource);
    }

    /// Control visits at the GP practice for GP-managed chronic conditions, and
    /// yearly specialist follow-up for the others.
    fn chronic_care(&mut self) {
        let gp_conditions: Vec<usize> = (0..self.chronic.len())
            .filter(|&i| self.chronic[i].condition.specialist.is_none())
            .collect();
        if let Some(first_onset) = gp_conditions.iter().map(|&i| self.chronic[i].onset).min() {
            let visits_per_year = if gp_conditions.len() <= 2 { 2 } else { 3 };
            let mut panels: Vec<&'static Panel> = Vec::new();
            for &i in &gp_conditions {
                for panel in self.chronic[i].condition.panels {
                    if !panels.iter().any(|p| std::ptr::eq(*p, *panel)) {
                        panels.push(panel);
                    }
                }
            }
            let main = self.chronic[gp_conditions[0]].condition;
            let main_reference = self.chronic[gp_conditions[0]].reference.clone();
            let needs_blood_pressure =
                ["38341003", "44054006", "53741008", "709044004", "84114007"]
                    .iter()
                    .any(|code| self.has_condition(code));
            let first = first_onset.max(self.record_start);
            for year in year_of(first)..=year_of(self.last_event) {
                let year_first = day_from_civil(year, 1, 1).max(first);
                let year_last = day_from_civil(year, 12, 31).min(self.last_event);
                if year_first > year_last {
                    continue;
                }
                let slot = ((year_last - year_first + 1) / visits_per_year).max(1);
                for visit in 0..visits_per_year {
                    let day =
                        (year_first + visit * slot + self.rng.random_range(0..slot)).min(year_last);
                    let nurse = self.care.gp.staff_with_role(&tables::ROLE_NURSE);
                    let practitioner = if self.rng.random_bool(0.7) {
                        nurse
                    } else {
                        self.own_gp
                    };
                    let minute = self.office_minute();
                    let encounter = self.encounter(EncounterSpec {
                        class: Class::Ambulatory,
                        kind: tables::ENCOUNTER_FOLLOW_UP,
                        org: self.care.gp,
                        participants: &[practitioner],
                        start: (day, minute),
                        end: (day, minute + 20),
                        reason: Some((main.code, main.display, main.text)),
                        reason_reference: Some(&main_reference),
                        admit_source: None,
                    });
                    if needs_blood_pressure || self.rng.random_bool(0.5) {
                        self.blood_pressure(day, minute, Some(&encounter), practitioner);
                    }
                    if self.rng.random_bool(0.5) {
                        self.body_weight(day, minute, Some(&encounter), practitioner);
                    }
                    if self.rng.random_bool(0.3) {
                        self.heart_rate(day, minute, Some(&encounter), practitioner);
                    }
                    if visit == 0 {
                        for panel in &panels {
                            self.yearly_lab(panel, day, minute, &encounter);
                        }
                    }
                }
            }
        }

        let specialist_conditions: Vec<usize> = (0..self.chronic.len())
            .filter(|&i| self.chronic[i].condition.specialist.is_some())
            .collect();
        for i in specialist_conditions {
            let (condition, onset) = (self.chronic[i].condition, self.chronic[i].onset);
            let reference = self.chronic[i].reference.clone();
            let Some(role) = condition.specialist else {
                continue;
            };
            let is_cancer = CANCERS.contains(&condition.code);
            let follow_up_last = if is_cancer {
                (onset + years_to_days(CANCER_FOLLOW_UP_YEARS as u32)).min(self.last_event)
            } else {
                self.last_event
            };
            let first = (onset + 180).max(self.record_start);
            if first > follow_up_last {
                continue;
            }
            for year in year_of(first)..=year_of(follow_up_last) {
                let day = self.day_between(
                    day_from_civil(year, 1, 1).max(first),
                    day_from_civil(year, 12, 31).min(follow_up_last),
                );
                self.specialist_visit(condition, &reference, role, day);
            }
        }
    }

    fn specialist_visit(
        &mut self,
        condition: &ChronicCondition,
        reference: &str,
        role: &Role,
        day: Day,
    ) {
        let hospital = self.care.hospital;
        let specialist = hospital.staff_with_role(role);
        let minute = self.office_minute();
        let encounter = self.encounter(EncounterSpec {
            class: Class::Ambulatory,
            kind: tables::ENCOUNTER_FOLLOW_UP,
            org: hospital,
            participants: &[specialist],
            start: (day, minute),
            end: (day, minute + 15),
            reason: Some((condition.code, condition.display, condition.text)),
            reason_reference: Some(reference),
            admit_source: None,
        });
        if self.rng.random_bool(0.5) {
            self.blood_pressure(day, minute, Some(&encounter), specialist);
        }
        for panel in condition.panels {
            self.yearly_lab(panel, day, minute.saturating_sub(60), &encounter);
        }
    }

    /// Acute illnesses seen by the GP.
    fn gp_visits(&mut self) {
        for year in year_of(self.record_start)..=year_of(self.last_event) {
            let Some((first, last, fraction)) = self.year_window(year) else {
                continue;
            };
            let rate =
                rate_for_age(GP_VISITS_PER_YEAR, self.age_at(first)) * self.care_factor * fraction;
            let visits = self.count_from_rate(rate);
            for _ in 0..visits {
                let day = self.day_between(first, last);
                let age = self.age_at(day);
                let candidates: Vec<&'static AcuteCondition> = tables::ACUTE_CONDITIONS
                    .iter()
                    .filter(|c| (c.age_min..=c.age_max).contains(&age))
                    .filter(|c| {
                        c.not_before
                            .is_none_or(|(y, m, d)| day >= day_from_civil(y, m, d))
                    })
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let condition = *weighted(&mut self.rng, &candidates, |c| c.weight);
                self.gp_visit(condition, day);
            }
        }
    }

    fn gp_visit(&mut self, condition: &AcuteCondition, day: Day) {
        let gp = self.care.gp;
        let doctor = if self.rng.random_bool(0.8) {
            self.own_gp
        } else {
            gp.staff_with_role(&tables::ROLE_GP)
        };
        let home_visit = self.age_at(day) >= 80 && self.rng.random_bool(0.2);
        let minute = self.office_minute();
        let encounter = self.encounter(EncounterSpec {
            class: if home_visit {
                Class::HomeHealth
            } else {
                Class::Ambulatory
            },
            kind: if home_visit {
                tables::ENCOUNTER_HOME_VISIT
            } else {
                tables::ENCOUNTER_SYMPTOM
            },
            org: gp,
            participants: &[doctor],
            start: (day, minute),
            end: (day, minute + if home_visit { 30 } else { 10 }),
            reason: Some((condition.code, condition.display, condition.text)),
            reason_reference: None,
            admit_source: None,
        });
        let onset = (day - self.rng.random_range(0..5)).max(self.birth);
        let abatement = day + self.rng.random_range(5..=21);
        let condition_ref = self.encounter_diagnosis(
            (condition.code, condition.display, condition.text),
            onset,
            (day, minute),
            abatement,
            &encounter,
            doctor,
        );
        if condition.fever && self.rng.random_bool(0.7) {
            self.body_temperature(day, minute, &encounter, doctor);
        }
        if self.age_at(day) >= 18 && self.rng.random_bool(0.25) {
            self.blood_pressure(day, minute, Some(&encounter), doctor);
        }
        if let Some(procedure) = condition.procedure {
            self.procedure(
                procedure,
                day,
                minute + 5,
                &encounter,
                gp,
                doctor,
                Some(&condition_ref),
            );
        }
        if !condition.medications.is_empty() && self.rng.random_bool(ACUTE_PRESCRIPTION_SHARE) {
            let atc = directory::pick(&mut self.rng, condition.medications);
            if let Some(medication) = tables::medication_by_atc(atc) {
                let request = self.medication_request(
                    medication,
                    (day, minute + 8),
                    doctor,
                    Some(&condition_ref),
                    Some(&encounter),
                    0,
                    "completed",
                );
                if self.rng.random_bool(0.9) {
                    let handed_over = day + self.rng.random_range(0..=1);
                    self.dispense(medication, handed_over, &request);
                }
            }
        }
    }

    /// Emergency visits, admissions and outpatient procedures at the hospital.
    fn hospital_episodes(&mut self) {
        for year in year_of(self.record_start)..=year_of(self.last_event) {
            let Some((first, last, fraction)) = self.year_window(year) else {
                continue;
            };
            let rate = rate_for_age(HOSPITAL_EPISODES_PER_YEAR, self.age_at(first))
                * self.care_factor
                * fraction;
            let episodes = self.count_from_rate(rate);
            for _ in 0..episodes {
                let day = self.day_between(first, last);
                let age = self.age_at(day);
                let candidates: Vec<&'static HospitalEpisode> = tables::HOSPITAL_EPISODES
                    .iter()
                    .filter(|e| {
                        (e.age_min..=e.age_max).contains(&age) && sex_matches(e.sex, self.female)
                    })
                    .filter(|e| (e.years.0..=e.years.1).contains(&year))
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let episode = *weighted(&mut self.rng, &candidates, |e| e.weight);
                self.hospital_episode(episode, day);
            }
        }
    }

    fn hospital_episode(&mut self, episode: &HospitalEpisode, day: Day) {
        let hospital = self.care.hospital;
        let specialist = hospital.staff_with_role(episode.specialist);
        let stay = self
            .rng
            .random_range(episode.stay_days.0..=episode.stay_days.1) as i32;
        let start_minute = if episode.emergency {
            self.rng.random_range(0..MINUTES_PER_DAY)
        } else {
            self.office_minute()
        };
        let (class, kind, admit_source) = match (episode.emergency, stay > 0) {
            (true, true) => (
                Class::Inpatient,
                tables::ENCOUNTER_ADMISSION,
                Some(("emd", "From accident/emergency department")),
            ),
            (true, false) => (Class::Emergency, tables::ENCOUNTER_EMERGENCY, None),
            (false, true) => (
                Class::Inpatient,
                tables::ENCOUNTER_ADMISSION,
                Some(("gp", "General Practitioner referral")),
            ),
            (false, false) => (Class::Ambulatory, tables::ENCOUNTER_CONSULTATION, None),
        };
        let end = if stay > 0 {
            (day + stay, 11 * 60 + 5 * self.rng.random_range(0..24))
        } else {
            let duration = if episode.emergency {
                self.rng.random_range(90..=300)
            } else {
                45
            };
            let end_minute = start_minute + duration;
            (
                day + i32::from(end_minute >= MINUTES_PER_DAY),
                end_minute % MINUTES_PER_DAY,
            )
        };
        let emergency_physician = hospital.staff_with_role(&tables::ROLE_EMERGENCY_PHYSICIAN);
        let participants: Vec<&Staff> =
            if episode.emergency && !std::ptr::eq(emergency_physician, specialist) {
                vec![emergency_physician, specialist]
            } else {
                vec![specialist]
            };
        let condition = episode.condition;
        let encounter = self.encounter(EncounterSpec {
            class,
            kind,
            org: hospital,
            participants: &participants,
            start: (day, start_minute),
            end,
            reason: Some((condition.0, condition.1, episode.text)),
            reason_reference: None,
            admit_source,
        });
        let reason = if episode.diagnosis {
            let abatement = end.0 + self.rng.random_range(7..=42);
            Some(self.encounter_diagnosis(
                (condition.0, condition.1, episode.text),
                day,
                (day, start_minute),
                abatement,
                &encounter,
                specialist,
            ))
        } else {
            None
        };
        if episode.emergency {
            self.blood_pressure(day, start_minute, Some(&encounter), participants[0]);
            self.heart_rate(day, start_minute, Some(&encounter), participants[0]);
        }
        for panel in episode.panels {
            self.lab_panel(panel, day, start_minute, &encounter, hospital);
        }
        for (n, procedure) in episode.procedures.iter().enumerate() {
            let (procedure_day, minute) = if stay > 0 && n > 0 {
                (day + 1, self.office_minute())
            } else {
                (day, start_minute + 30)
            };
            self.procedure(
                *procedure,
                procedure_day,
                minute,
                &encounter,
                hospital,
                specialist,
                reason.as_deref(),
            );
        }
        if stay > 0 || (episode.emergency && self.rng.random_bool(0.5)) {
            let period = ((day, start_minute), end);
            self.letter(episode, stay > 0, period, &encounter, specialist);
        }
    }

    /// A discharge letter (ontslagbrief) or emergency-department letter as a
    /// DocumentReference with the text inline.
    fn letter(
        &mut self,
        episode: &HospitalEpisode,
        admitted: bool,
        (start, end): ((Day, u32), (Day, u32)),
        encounter: &str,
        author: &Staff,
    ) {
        let hospital = self.care.hospital;
        let (loinc, display, title) = if admitted {
            ("18842-5", "Discharge summary", "Ontslagbrief")
        } else {
            ("34111-5", "Emergency department Note", "SEH-brief")
        };
        let procedures: Vec<&str> = episode.procedures.iter().map(|p| p.1).collect();
        let text = format!(
            "{title}\n\nPatiënt: {name}, geboren {birth}.\n\
             {what} {start} tot {end}, {hospital} ({specialism}).\n\
             Reden: {reason}.\nVerrichtingen: {procedures}.\n\
             Beleid: controle volgens afspraak; huisarts geïnformeerd.\n",
            name = self.display_name,
            birth = date(self.birth),
            what = if admitted {
                "Opgenomen van"
            } else {
                "Gezien op de spoedeisende hulp van"
            },
            start = date(start.0),
            end = date(end.0),
            hospital = hospital.name,
            specialism = author.role.display,
            reason = episode.text,
            procedures = if procedures.is_empty() {
                "geen".to_owned()
            } else {
                procedures.join(", ")
            },
        );
        let id = self.next_id("doc");
        let created = self.date_time(end.0, end.1);
        let resource = json!({
            "resourceType": "DocumentReference",
            "id": id,
            "status": "current",
            "docStatus": "final",
            "type": codeable_text(tables::LOINC, loinc, display, title),
            "subject": self.patient_reference(),
            "date": created,
            "author": [{ "reference": author.practitioner_ref }],
            "custodian": { "reference": hospital.org_ref },
            "description": format!("{title} {}", episode.text),
            "content": [{ "attachment": {
                "contentType": "text/plain",
                "language": "nl",
                "data": base64(text.as_bytes()),
                "title": title,
                "creation": created,
            } }],
            "context": {
                "encounter": [{ "reference": encounter }],
                "period": { "start": self.date_time(start.0, start.1), "end": created },
            },
        });
        self.push(resource);
    }

    /// Quarterly visits by the elderly-care physician and monthly weighing for
    /// nursing-home residents.
    fn nursing_home_care(&mut self) {
        let Some(home) = self.care.nursing_home else {
            return;
        };
        let moved_in = (self.end - self.rng.random_range(180..=3 * 365)).max(self.record_start);
        let physician = home.staff_with_role(&tables::ROLE_ELDERLY_CARE_PHYSICIAN);
        let nurse = home.staff_with_role(&tables::ROLE_NURSE);
        let mut day = moved_in;
        let mut month = 0;
        while day <= self.last_event {
            let minute = self.office_minute();
            if month % 3 == 0 {
                let encounter = self.encounter(EncounterSpec {
                    class: Class::Ambulatory,
                    kind: tables::ENCOUNTER_FOLLOW_UP,
                    org: home,
                    participants: &[physician],
                    start: (day, minute),
                    end: (day, minute + 20),
                    reason: None,
                    reason_reference: None,
                    admit_source: None,
                });
                self.blood_pressure(day, minute, Some(&encounter), physician);
            }
            self.body_weight(day, minute, None, nurse);
            day += 28 + self.rng.random_range(0..7);
            month += 1;
        }
    }

    /// The part of `year` inside the record's event window, and its fraction of a year.
    fn year_window(&self, year: i32) -> Option<(Day, Day, f64)> {
        let first = day_from_civil(year, 1, 1).max(self.record_start);
        let last = day_from_civil(year, 12, 31).min(self.last_event);
        (first <= last).then(|| (first, last, f64::from(last - first + 1) / 365.0))
    }

    /// An integer count with expectation `rate`: its floor, plus one with
    /// probability of its fraction.
    fn count_from_rate(&mut self, rate: f64) -> u32 {
        let whole = rate.floor();
        let extra = self.rng.random_bool((rate - whole).clamp(0.0, 1.0));
        whole as u32 + u32::from(extra)
    }

    fn encounter(&mut self, spec: EncounterSpec<'_>) -> String {
        let id = self.next_id("enc");
        let participants: Vec<Value> = spec
            .participants
            .iter()
            .map(|staff| {
                json!({
                    "type": [codeable(PARTICIPATION_TYPE, "PPRF", "primary performer")],
                    "individual": { "reference": staff.practitioner_ref },
                })
            })
            .collect();
        let mut resource = json!({
            "resourceType": "Encounter",
            "id": id,
            "status": "finished",
            "class": spec.class.coding(),
            "type": [codeable(tables::SNOMED, spec.kind.0, spec.kind.1)],
            "subject": self.patient_reference(),
            "participant": participants,
            "period": {
                "start": self.date_time(spec.start.0, spec.start.1),
                "end": self.date_time(spec.end.0, spec.end.1),
            },
        });
        if let Some((code, display, text)) = spec.reason {
            resource["reasonCode"] = json!([codeable_text(tables::SNOMED, code, display, text)]);
        }
        if let Some(reference) = spec.reason_reference {
            resource["reasonReference"] = json!([{ "reference": reference }]);
        }
        if let Some((code, display)) = spec.admit_source {
            resource["hospitalization"] = json!({
                "admitSource": codeable(ADMIT_SOURCE, code, display),
                "dischargeDisposition": codeable(DISCHARGE_DISPOSITION, "home", "Home"),
            });
        }
        resource["location"] = json!([{ "location": { "reference": spec.org.location_ref } }]);
        resource["serviceProvider"] = json!({ "reference": spec.org.org_ref });
        self.push(resource);
        format!("Encounter/{id}")
    }

    /// A diagnosis made during an encounter, resolved on `abatement` if that
    /// lies within the record.
    fn encounter_diagnosis(
        &mut self,
        (code, display, text): (&str, &str, &str),
        onset: Day,
        recorded: (Day, u32),
        abatement: Day,
        encounter: &str,
        recorder: &Staff,
    ) -> String {
        let resolved = abatement <= self.end;
        let (clinical, clinical_display) = if resolved {
            ("resolved", "Resolved")
        } else {
            ("active", "Active")
        };
        let (verification, verification_display) = if self.rng.random_bool(0.9) {
            ("confirmed", "Confirmed")
        } else {
            ("provisional", "Provisional")
        };
        let id = self.next_id("cond");
        let mut resource = json!({
            "resourceType": "Condition",
            "id": id,
            "clinicalStatus": codeable(CONDITION_CLINICAL, clinical, clinical_display),
            "verificationStatus":
                codeable(CONDITION_VERIFICATION, verification, verification_display),
            "category":
                [codeable(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
            "code": codeable_text(tables::SNOMED, code, display, text),
            "subject": self.patient_reference(),
            "encounter": { "reference": encounter },
            "onsetDateTime": date(onset),
        });
        if resolved {
            resource["abatementDateTime"] = json!(date(abatement));
        }
        resource["recordedDate"] = json!(self.date_time(recorded.0, recorded.1));
        resource["recorder"] = json!({ "reference": recorder.practitioner_ref });
        self.push(resource);
        format!("Condition/{id}")
    }

    #[allow(clippy::too_many_arguments)] // mirrors the Procedure fields
    fn procedure(
        &mut self,
        (code, display): Snomed,
        day: Day,
        minute: u32,
        encounter: &str,
        org: &Org,
        performer: &Staff,
        reason: Option<&str>,
    ) {
        let id = self.next_id("proc");
        let mut resource = json!({
            "resourceType": "Procedure",
            "id": id,
            "status": "completed",
            "code": codeable(tables::SNOMED, code, display),
            "subject": self.patient_reference(),
            "encounter": { "reference": encounter },
            "performedDateTime": self.date_time(day, minute),
            "performer": [{
                "actor": { "reference": performer.practitioner_ref },
                "onBehalfOf": { "reference": org.org_ref },
            }],
            "location": { "reference": org.location_ref },
        });
        if let Some(reason) = reason {
            resource["reasonReference"] = json!([{ "reference": reason }]);
        }
        self.push(resource);
    }

    /// `panel` for chronic care, unless it was already done this year; the
    /// hospital laboratory performs it.
    fn yearly_lab(&mut self, panel: &'static Panel, day: Day, minute: u32, encounter: &str) {
        let year = year_of(day);
        if self
            .yearly_labs
            .iter()
            .any(|(y, p)| *y == year && std::ptr::eq(*p, panel))
        {
            return;
        }
        self.yearly_labs.push((year, panel));
        let lab = self.care.hospital;
        self.lab_panel(panel, day, minute, encounter, lab);
    }

    /// The tests of `panel` as Observations, then the DiagnosticReport over them.
    fn lab_panel(&mut self, panel: &Panel, day: Day, minute: u32, encounter: &str, lab: &Org) {
        let effective = self.date_time(day, minute);
        let issued = self.date_time(day, (minute + 180).min(MINUTES_PER_DAY - 1));
        let mut results = Vec::with_capacity(panel.tests.len());
        for loinc in panel.tests {
            let Some(test) = tables::lab_test(loinc) else {
                continue;
            };
            let value = self.lab_value(test);
            let id = self.next_id("obs");
            let interpretation = if value < test.low {
                ("L", "Low")
            } else if value > test.high {
                ("H", "High")
            } else {
                ("N", "Normal")
            };
            let mut range =
                json!({ "high": quantity(test.high, test.decimals, test.unit, test.unit) });
            if test.low > 0.0 {
                range["low"] = quantity(test.low, test.decimals, test.unit, test.unit);
            }
            let resource = json!({
                "resourceType": "Observation",
                "id": id,
                "status": "final",
                "category": [codeable(OBSERVATION_CATEGORY, "laboratory", "Laboratory")],
                "code": codeable(tables::LOINC, test.loinc, test.display),
                "subject": self.patient_reference(),
                "encounter": { "reference": encounter },
                "effectiveDateTime": effective,
                "issued": issued,
                "performer": [{ "reference": lab.org_ref }],
                "valueQuantity": quantity(value, test.decimals, test.unit, test.unit),
                "interpretation": [codeable(INTERPRETATION, interpretation.0, interpretation.1)],
                "referenceRange": [range],
            });
            self.push(resource);
            results.push(json!({ "reference": format!("Observation/{id}") }));
        }
        let id = self.next_id("rep");
        let report = json!({
            "resourceType": "DiagnosticReport",
            "id": id,
            "status": "final",
            "category": [codeable(DIAGNOSTIC_SERVICE, "LAB", "Laboratory")],
            "code": codeable(tables::LOINC, panel.loinc, panel.display),
            "subject": self.patient_reference(),
            "encounter": { "reference": encounter },
            "effectiveDateTime": effective,
            "issued": issued,
            "performer": [{ "reference": lab.org_ref }],
            "result": results,
        });
        self.push(report);
    }

    fn lab_value(&mut self, test: &LabTest) -> f64 {
        let affected = test.affected_by.iter().any(|code| self.has_condition(code));
        let (mean, sd) = if affected {
            (test.affected_mean, test.affected_sd)
        } else {
            (test.mean, test.sd)
        };
        (mean + sd * normal(&mut self.rng)).max(mean * 0.1)
    }

    #[allow(clippy::too_many_arguments)] // an Observation row
    fn vital(
        &mut self,
        (loinc, display): (&str, &str),
        value: Value,
        day: Day,
        minute: u32,
        encounter: Option<&str>,
        performer: &Staff,
        component: bool,
    ) {
        let id = self.next_id("obs");
        let mut resource = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [codeable(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
            "code": codeable(tables::LOINC, loinc, display),
            "subject": self.patient_reference(),
        });
        if let Some(encounter) = encounter {
            resource["encounter"] = json!({ "reference": encounter });
        }
        resource["effectiveDateTime"] = json!(self.date_time(day, minute));
        resource["performer"] = json!([{ "reference": performer.practitioner_ref }]);
        resource[if component {
            "component"
        } else {
            "valueQuantity"
        }] = value;
        self.push(resource);
    }

    fn blood_pressure(
        &mut self,
        day: Day,
        minute: u32,
        encounter: Option<&str>,
        performer: &Staff,
    ) {
        let age = f64::from(self.age_at(day));
        let hypertension = f64::from(u8::from(self.has_condition("38341003")));
        let (systolic, diastolic) = if age < 18.0 {
            (
                100.0 + 8.0 * normal(&mut self.rng),
                62.0 + 6.0 * normal(&mut self.rng),
            )
        } else {
            let aged = (age - 30.0).max(0.0);
            (
                118.0 + 0.45 * aged + 14.0 * hypertension + 10.0 * normal(&mut self.rng),
                76.0 + 0.1 * aged + 8.0 * hypertension + 7.0 * normal(&mut self.rng),
            )
        };
        let component = |loinc: &str, display: &str, value: f64| {
            json!({
                "code": codeable(tables::LOINC, loinc, display),
                "valueQuantity": quantity(value, 0, "mm[Hg]", "mm[Hg]"),
            })
        };
        let components = json!([
            component("8480-6", "Systolic blood pressure", systolic),
            component("8462-4", "Diastolic blood pressure", diastolic),
        ]);
        self.vital(
            ("85354-9", "Blood pressure panel with all children optional"),
            components,
            day,
            minute,
            encounter,
            performer,
            true,
        );
    }

    fn body_weight(&mut self, day: Day, minute: u32, encounter: Option<&str>, performer: &Staff) {
        let age_years = f64::from(day - self.birth) / DAYS_PER_YEAR;
        let base = if age_years < 1.0 {
            3.5 + 6.5 * age_years
        } else if age_years < 18.0 {
            10.0 + 3.2 * (age_years - 1.0)
        } else {
            self.weight_kg_adult
                + if self.has_condition("414916001") {
                    25.0
                } else {
                    0.0
                }
        };
        let weight = (base * (1.0 + 0.02 * normal(&mut self.rng))).max(2.0);
        self.vital(
            ("29463-7", "Body weight"),
            quantity(weight, 1, "kg", "kg"),
            day,
            minute,
            encounter,
            performer,
            false,
        );
    }

    fn heart_rate(&mut self, day: Day, minute: u32, encounter: Option<&str>, performer: &Staff) {
        let mean = if self.age_at(day) < 5 { 105.0 } else { 72.0 };
        let rate = mean + 9.0 * normal(&mut self.rng);
        self.vital(
            ("8867-4", "Heart rate"),
            quantity(rate, 0, "/min", "/min"),
            day,
            minute,
            encounter,
            performer,
            false,
        );
    }

    /// Temperature of a patient with an infection: usually feverish.
    fn body_temperature(&mut self, day: Day, minute: u32, encounter: &str, performer: &Staff) {
        let temperature = 38.2 + 0.7 * normal(&mut self.rng);
        self.vital(
            ("8310-5", "Body temperature"),
            quantity(temperature, 1, "°C", "Cel"),
            day,
            minute,
            Some(encounter),
            performer,
            false,
        );
    }
}

/// Whole years from `birth` to `day`.
fn age_between(birth: Day, day: Day) -> u32 {
    (f64::from((day - birth).max(0)) / DAYS_PER_YEAR) as u32
}

fn years_to_days(years: u32) -> i32 {
    (f64::from(years) * DAYS_PER_YEAR) as i32
}

fn birth_day(rng: &mut ChaCha8Rng) -> Day {
    let year = loop {
        let year = rng.random_range(BIRTH_FIRST_YEAR..=BIRTH_LAST_YEAR);
        if year >= BIRTH_YEAR_FULL_WEIGHT_FROM || rng.random_bool(BIRTH_YEAR_EARLY_WEIGHT) {
            break year;
        }
    };
    let first = day_from_civil(year, 1, 1);
    let last = day_from_civil(year, 12, 31);
    rng.random_range(first..=last)
}

fn weighted_island(rng: &mut ChaCha8Rng) -> usize {
    let total: u32 = tables::ISLANDS.iter().map(|i| i.weight).sum();
    let mut target = rng.random_range(0..total);
    for (index, island) in tables::ISLANDS.iter().enumerate() {
        if target < island.weight {
            return index;
        }
        target -= island.weight;
    }
    tables::ISLANDS.len() - 1
}

/// An element chosen with probability proportional to `weight`; `items` must
/// not be empty.
fn weighted<'t, T>(rng: &mut ChaCha8Rng, items: &'t [T], weight: impl Fn(&T) -> u32) -> &'t T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut target = rng.random_range(0..total.max(1));
    for item in items {
        let w = weight(item);
        if target < w {
            return item;
        }
        target -= w;
    }
    &items[items.len() - 1]
}

fn rate_for_age(table: &[(u32, f64)], age: u32) -> f64 {
    table
        .iter()
        .find(|(below, _)| age < *below)
        .map_or(0.0, |(_, rate)| *rate)
}

fn sex_matches(filter: SexFilter, female: bool) -> bool {
    match filter {
        SexFilter::Any => true,
        SexFilter::Female => female,
        SexFilter::Male => !female,
    }
}

/// Approximately standard normal: the sum of four uniforms, centred and scaled
/// (bounded at ±3.46, which keeps values plausible).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let sum: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
    (sum - 2.0) * 3f64.sqrt()
}

fn codeable(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}

fn codeable_text(system: &str, code: &str, display: &str, text: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }], "text": text })
}

fn medication_concept(medication: &Medication) -> Value {
    codeable_text(
        tables::ATC,
        medication.atc,
        medication.atc_name,
        medication.text,
    )
}

/// A UCUM duration in days.
fn days_quantity(days: u32) -> Value {
    json!({ "value": days, "unit": "dag", "system": tables::UCUM, "code": "d" })
}

/// A UCUM quantity rounded to `decimals` (whole numbers as JSON integers).
fn quantity(value: f64, decimals: u32, unit: &str, code: &str) -> Value {
    let number = if decimals == 0 {
        json!(value.round() as i64)
    } else {
        let scale = 10f64.powi(decimals as i32);
        json!((value * scale).round() / scale)
    };
    json!({ "value": number, "unit": unit, "system": tables::UCUM, "code": code })
}

/// Standard base64 with padding (RFC 4648), for Attachment.data.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn caribbean_share_is_one_in_fifty() {
        let n = (0..10_000)
            .filter(|&i| caribbean_ordinal(3, i).is_some())
            .count();
        assert_eq!(n, 10_000 / CARIBBEAN_EVERY);
    }

    #[test]
    fn every_table_code_resolves() {
        for condition in tables::CHRONIC_CONDITIONS {
            for atc in condition.medications {
                assert!(tables::medication_by_atc(atc).is_some(), "{atc}");
            }
            for panel in condition.panels {
                for loinc in panel.tests {
                    assert!(tables::lab_test(loinc).is_some(), "{loinc}");
                }
            }
        }
        for condition in tables::ACUTE_CONDITIONS {
            for atc in condition.medications {
                assert!(tables::medication_by_atc(atc).is_some(), "{atc}");
            }
        }
        for episode in tables::HOSPITAL_EPISODES {
            for panel in episode.panels {
                for loinc in panel.tests {
                    assert!(tables::lab_test(loinc).is_some(), "{loinc}");
                }
            }
        }
    }
}
