//! The care-provider directory: organisations with their URA numbers, endpoints,
//! locations, services, practitioners (UZI numbers, AGB codes) and roles, and
//! the affiliations between organisations — the content of an IHE mCSD
//! addressing directory.
//!
//! [`Directory::build`] makes a compact model once per dataset; patients refer to
//! it, and [`Directory::groups`] renders it as FHIR resources on demand. This
//! module does no IO.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::tables::{self, City, Island, OrganizationType, Role};
use crate::{AGB_SYSTEM, URA_SYSTEM, UZI_ROLE_SYSTEM, UZI_SYSTEM};

/// Patients per mainland GP practice (a Dutch practice lists roughly 2,000–2,500).
const PATIENTS_PER_GP_PRACTICE: usize = 2_000;
/// At least this many GP practices, so that small datasets still have a network.
const GP_PRACTICES_MIN: usize = 3;
/// Patients per mainland hospital.
const PATIENTS_PER_HOSPITAL: usize = 50_000;
/// Patients per community pharmacy (the Netherlands has one per ~8,500 people).
const PATIENTS_PER_PHARMACY: usize = 8_000;
/// At least this many pharmacies, so that GP practices share one in small sets.
const PHARMACIES_MIN: usize = 2;
/// Patients per nursing home.
const PATIENTS_PER_NURSING_HOME: usize = 25_000;
/// Huisartsen per mainland GP practice, inclusive range.
const GPS_PER_PRACTICE: (usize, usize) = (2, 4);

/// What kind of care provider an organisation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrgKind {
    /// Huisartsenpraktijk: general practice, the patient's first point of care.
    GpPractice,
    /// Ziekenhuis: general hospital.
    Hospital,
    /// Apotheek: community pharmacy.
    Pharmacy,
    /// Verpleeghuis: nursing home.
    NursingHome,
    /// Island clinic of the Caribbean Netherlands (GP care, dispensing on Saba
    /// and Sint Eustatius).
    IslandClinic,
}

/// A postal address, mainland (with postcode) or Caribbean (without).
#[derive(Clone, Debug)]
pub(crate) struct Address {
    pub line: String,
    pub city: String,
    pub postal_code: Option<String>,
    /// Island name for the Caribbean Netherlands.
    pub district: Option<&'static str>,
    /// ISO 3166 code: "NL", or "BQ" for Bonaire, Sint Eustatius and Saba.
    pub country: &'static str,
}

impl Address {
    /// The FHIR Address with the given `use` ("home", "work").
    pub(crate) fn to_json(&self, address_use: &str) -> Value {
        let mut address = json!({
            "use": address_use,
            "type": "both",
            "line": [self.line],
            "city": self.city,
        });
        if let Some(district) = self.district {
            address["district"] = json!(district);
        }
        if let Some(postal_code) = &self.postal_code {
            address["postalCode"] = json!(postal_code);
        }
        address["country"] = json!(self.country);
        address
    }
}

/// A practitioner and their single role at one organisation.
#[derive(Debug)]
pub(crate) struct Staff {
    /// "Practitioner/prac-…".
    pub practitioner_ref: String,
    practitioner_id: String,
    role_id: String,
    pub role: &'static Role,
    given: &'static str,
    family: String,
    gender: &'static str,
    uzi: String,
    agb: Option<String>,
}

/// One organisation and everything the directory publishes about it.
#[derive(Debug)]
pub(crate) struct Org {
    /// Short unique key such as "gp-003"; resource ids derive from it.
    pub key: String,
    pub kind: OrgKind,
    pub name: String,
    /// "Organization/org-…".
    pub org_ref: String,
    /// "Location/loc-…".
    pub location_ref: String,
    pub address: Address,
    /// City index in [`tables::CITIES`] (mainland) — patients live near their GP.
    pub city: Option<usize>,
    pub staff: Vec<Staff>,
    organization_type: &'static OrganizationType,
    ura: String,
    phone: String,
    slug: String,
}

impl Org {
    /// Staff with this role, or failing that the first doctor (never a nurse
    /// unless the organisation has nobody else).
    pub(crate) fn staff_with_role(&self, role: &Role) -> &Staff {
        self.staff
            .iter()
            .find(|s| s.role.code == role.code)
            .or_else(|| {
                self.staff
                    .iter()
                    .find(|s| s.role.code != tables::ROLE_NURSE.code)
            })
            .unwrap_or(&self.staff[0])
    }

    /// All staff with this role (may be empty).
    pub(crate) fn staff_all_with_role<'a>(
        &'a self,
        role: &'a Role,
    ) -> impl Iterator<Item = &'a Staff> {
        self.staff.iter().filter(move |s| s.role.code == role.code)
    }
}

/// The organisations a patient gets care from.
pub(crate) struct CareNetwork<'a> {
    pub gp: &'a Org,
    pub hospital: &'a Org,
    pub pharmacy: &'a Org,
    pub nursing_home: Option<&'a Org>,
}

/// All organisations of one dataset.
#[derive(Debug)]
pub(crate) struct Directory {
    orgs: Vec<Org>,
    mainland_gps: Vec<usize>,
    hospitals: Vec<usize>,
    pharmacies: Vec<usize>,
    nursing_homes: Vec<usize>,
    /// Indexed like [`tables::ISLANDS`].
    island_clinics: Vec<usize>,
    island_hospital: usize,
    island_pharmacy: usize,
    /// (organisation, participating organisation) index pairs.
    affiliations: Vec<(usize, usize)>,
}

/// Hands out unique random numbers of a fixed width.
struct UniqueNumbers {
    seen: HashSet<String>,
}

impl UniqueNumbers {
    fn next(&mut self, rng: &mut ChaCha8Rng, prefix: &str, digits: u32) -> String {
        let bound = 10u64.pow(digits);
        loop {
            let number = format!(
                "{prefix}{:0width$}",
                rng.random_range(0..bound),
                width = digits as usize
            );
            if self.seen.insert(number.clone()) {
                return number;
            }
        }
    }
}

/// Builds the directory model; every random choice comes from one rng stream.
struct Builder<'r> {
    rng: &'r mut ChaCha8Rng,
    numbers: UniqueNumbers,
    orgs: Vec<Org>,
}

impl Builder<'_> {
    fn add_org(&mut self, spec: OrgSpec, staff_roles: &[&'static Role]) -> usize {
        let key = spec.key;
        let ura = self.numbers.next(self.rng, "", 8);
        let slug = format!("{}-{key}", slugify(&spec.name));
        let mut org = Org {
            org_ref: format!("Organization/org-{key}"),
            location_ref: format!("Location/loc-{key}"),
            key,
            kind: spec.kind,
            name: spec.name,
            address: spec.address,
            city: spec.city,
            staff: Vec::with_capacity(staff_roles.len()),
            organization_type: spec.organization_type,
            ura,
            phone: spec.phone,
            slug,
        };
        for (n, role) in staff_roles.iter().enumerate() {
            let staff = self.staff(&org.key, n + 1, role);
            org.staff.push(staff);
        }
        self.orgs.push(org);
        self.orgs.len() - 1
    }

    fn staff(&mut self, org_key: &str, number: usize, role: &'static Role) -> Staff {
        let female = self.rng.random_bool(0.55);
        let given = pick(
            self.rng,
            if female {
                tables::GIVEN_FEMALE
            } else {
                tables::GIVEN_MALE
            },
        );
        let family = family_name(self.rng);
        let uzi = self.numbers.next(self.rng, "", 9);
        let agb = role
            .agb_prefix
            .map(|prefix| self.numbers.next(self.rng, prefix, 6));
        let practitioner_id = format!("prac-{org_key}-{number:02}");
        Staff {
            practitioner_ref: format!("Practitioner/{practitioner_id}"),
            practitioner_id,
            role_id: format!("role-{org_key}-{number:02}"),
            role,
            given,
            family,
            gender: if female { "female" } else { "male" },
            uzi,
            agb,
        }
    }

    fn mainland(
        &mut self,
        kind: &MainlandKind,
        number: usize,
        city: usize,
        staff: &[&'static Role],
    ) -> usize {
        let spec = OrgSpec {
            key: format!("{}-{number:03}", kind.key_prefix),
            kind: kind.kind,
            name: format!("{} {}", kind.label, cycled_name(kind.names, number - 1)),
            address: mainland_address(self.rng, &tables::CITIES[city]),
            city: Some(city),
            organization_type: kind.organization_type,
            phone: landline(self.rng, &tables::CITIES[city]),
        };
        self.add_org(spec, staff)
    }

    fn caribbean(
        &mut self,
        (key, name, kind): (&str, &str, OrgKind),
        island: &'static Island,
        organization_type: &'static OrganizationType,
        staff: &[&'static Role],
    ) -> usize {
        let spec = OrgSpec {
            key: key.to_owned(),
            kind,
            name: name.to_owned(),
            address: caribbean_address(self.rng, island, 0),
            city: None,
            organization_type,
            phone: caribbean_phone(self.rng, island),
        };
        self.add_org(spec, staff)
    }
}

/// How to name and code one kind of mainland organisation.
struct MainlandKind {
    kind: OrgKind,
    /// Start of the organisation key, e.g. "gp" in "gp-003".
    key_prefix: &'static str,
    /// Dutch word that starts the name, e.g. "Huisartsenpraktijk".
    label: &'static str,
    names: &'static [&'static str],
    organization_type: &'static OrganizationType,
}

const GP_PRACTICE: MainlandKind = MainlandKind {
    kind: OrgKind::GpPractice,
    key_prefix: "gp",
    label: "Huisartsenpraktijk",
    names: tables::PRACTICE_NAMES,
    organization_type: &tables::TYPE_GP_PRACTICE,
};
const HOSPITAL: MainlandKind = MainlandKind {
    kind: OrgKind::Hospital,
    key_prefix: "hosp",
    label: "Ziekenhuis",
    names: tables::HOSPITAL_NAMES,
    organization_type: &tables::TYPE_HOSPITAL,
};
const PHARMACY: MainlandKind = MainlandKind {
    kind: OrgKind::Pharmacy,
    key_prefix: "pharm",
    label: "Apotheek",
    names: tables::PHARMACY_NAMES,
    organization_type: &tables::TYPE_PHARMACY,
};
const NURSING_HOME: MainlandKind = MainlandKind {
    kind: OrgKind::NursingHome,
    key_prefix: "nh",
    label: "Verpleeghuis",
    names: tables::NURSING_HOME_NAMES,
    organization_type: &tables::TYPE_NURSING_HOME,
};

/// What distinguishes one organisation before its numbers are drawn.
struct OrgSpec {
    key: String,
    kind: OrgKind,
    name: String,
    address: Address,
    city: Option<usize>,
    organization_type: &'static OrganizationType,
    phone: String,
}

impl Directory {
    /// The directory for a dataset of `patients` patients; sizes scale with it.
    pub(crate) fn build(rng: &mut ChaCha8Rng, patients: usize) -> Directory {
        let mut builder = Builder {
            rng,
            numbers: UniqueNumbers {
                seen: HashSet::new(),
            },
            orgs: Vec::new(),
        };
        let n_gps = patients
            .div_ceil(PATIENTS_PER_GP_PRACTICE)
            .max(GP_PRACTICES_MIN);
        let n_hospitals = patients.div_ceil(PATIENTS_PER_HOSPITAL).max(1);
        let n_pharmacies = patients.div_ceil(PATIENTS_PER_PHARMACY).max(PHARMACIES_MIN);
        let n_nursing_homes = patients.div_ceil(PATIENTS_PER_NURSING_HOME).max(1);

        // GP practices first: the other organisations sit in the cities of the
        // practices they serve, so GP k's hospital is hospital k % n_hospitals.
        let gp_cities: Vec<usize> = (0..n_gps).map(|_| weighted_city(builder.rng)).collect();
        let mut mainland_gps = Vec::with_capacity(n_gps);
        for (n, &city) in gp_cities.iter().enumerate() {
            let mut staff: Vec<&'static Role> = Vec::new();
            let n_doctors = builder
                .rng
                .random_range(GPS_PER_PRACTICE.0..=GPS_PER_PRACTICE.1);
            staff.extend(std::iter::repeat_n(&tables::ROLE_GP, n_doctors));
            staff.push(&tables::ROLE_NURSE);
            mainland_gps.push(builder.mainland(&GP_PRACTICE, n + 1, city, &staff));
        }
        let hospitals: Vec<usize> = (0..n_hospitals)
            .map(|n| {
                builder.mainland(
                    &HOSPITAL,
                    n + 1,
                    gp_cities[n % n_gps],
                    tables::HOSPITAL_STAFF,
                )
            })
            .collect();
        let pharmacies: Vec<usize> = (0..n_pharmacies)
            .map(|n| {
                let n_pharmacists = builder.rng.random_range(1..=2);
                let staff = vec![&tables::ROLE_PHARMACIST; n_pharmacists];
                builder.mainland(&PHARMACY, n + 1, gp_cities[n % n_gps], &staff)
            })
            .collect();
        let nursing_home_staff = [
            &tables::ROLE_ELDERLY_CARE_PHYSICIAN,
            &tables::ROLE_NURSE,
            &tables::ROLE_NURSE,
        ];
        let nursing_homes: Vec<usize> = (0..n_nursing_homes)
            .map(|n| {
                builder.mainland(
                    &NURSING_HOME,
                    n + 1,
                    gp_cities[n % n_gps],
                    &nursing_home_staff,
                )
            })
            .collect();

        let bonaire = &tables::ISLANDS[0];
        let island_hospital = builder.caribbean(
            ("hosp-bonaire", "Ziekenhuis Bonaire", OrgKind::Hospital),
            bonaire,
            &tables::TYPE_HOSPITAL,
            tables::ISLAND_HOSPITAL_STAFF,
        );
        // Botika is Papiamentu for pharmacy.
        let island_pharmacy = builder.caribbean(
            ("pharm-bonaire", "Botika Kralendijk", OrgKind::Pharmacy),
            bonaire,
            &tables::TYPE_PHARMACY,
            &[&tables::ROLE_PHARMACIST],
        );
        let island_clinics: Vec<usize> = tables::ISLANDS
            .iter()
            .enumerate()
            .map(|(n, island)| {
                let (organization_type, staff): (_, &[&'static Role]) = if n == 0 {
                    (
                        &tables::TYPE_GP_PRACTICE,
                        &[
                            &tables::ROLE_GP,
                            &tables::ROLE_GP,
                            &tables::ROLE_GP,
                            &tables::ROLE_NURSE,
                        ],
                    )
                } else {
                    // The small islands' clinics dispense medicines themselves.
                    (
                        &tables::TYPE_DISPENSING_GP_PRACTICE,
                        &[&tables::ROLE_GP, &tables::ROLE_GP, &tables::ROLE_NURSE],
                    )
                };
                let key = format!("island-{}", island.key);
                let name = if n == 0 {
                    "Huisartsenpraktijk Bonaire".to_owned()
                } else {
                    format!("Eilandkliniek {}", island.name)
                };
                builder.caribbean(
                    (&key, &name, OrgKind::IslandClinic),
                    island,
                    organization_type,
                    staff,
                )
            })
            .collect();

        let mut affiliations = Vec::new();
        for (n, &gp) in mainland_gps.iter().enumerate() {
            affiliations.push((hospitals[n % n_hospitals], gp));
        }
        for (n, &nursing_home) in nursing_homes.iter().enumerate() {
            affiliations.push((hospitals[n % n_hospitals], nursing_home));
        }
        for &clinic in &island_clinics {
            affiliations.push((island_hospital, clinic));
        }

        Directory {
            orgs: builder.orgs,
            mainland_gps,
            hospitals,
            pharmacies,
            nursing_homes,
            island_clinics,
            island_hospital,
            island_pharmacy,
            affiliations,
        }
    }

    /// Number of mainland GP practices.
    pub(crate) fn mainland_gp_count(&self) -> usize {
        self.mainland_gps.len()
    }

    /// The care network of a mainland patient registered with GP practice `gp`
    /// (an index below [`Directory::mainland_gp_count`]).
    pub(crate) fn mainland_network(&self, gp: usize, in_nursing_home: bool) -> CareNetwork<'_> {
        let nursing_home =
            in_nursing_home.then(|| &self.orgs[self.nursing_homes[gp % self.nursing_homes.len()]]);
        CareNetwork {
            gp: &self.orgs[self.mainland_gps[gp]],
            hospital: &self.orgs[self.hospitals[gp % self.hospitals.len()]],
            pharmacy: &self.orgs[self.pharmacies[gp % self.pharmacies.len()]],
            nursing_home,
        }
    }

    /// The care network of a patient living on `island` (index into [`tables::ISLANDS`]).
    pub(crate) fn island_network(&self, island: usize) -> CareNetwork<'_> {
        let clinic = &self.orgs[self.island_clinics[island]];
        let pharmacy = if clinic.organization_type.code == tables::TYPE_DISPENSING_GP_PRACTICE.code
        {
            clinic
        } else {
            &self.orgs[self.island_pharmacy]
        };
        CareNetwork {
            gp: clinic,
            hospital: &self.orgs[self.island_hospital],
            pharmacy,
            nursing_home: None,
        }
    }

    /// The directory as FHIR resources in groups: one group per organisation
    /// (Organization, Endpoint, Location, HealthcareService, then each
    /// Practitioner with its PractitionerRole), then one group of
    /// OrganizationAffiliations. References point backwards or within a group.
    pub(crate) fn groups(&self) -> Vec<Vec<Value>> {
        let mut groups: Vec<Vec<Value>> = self.orgs.iter().map(org_resources).collect();
        let affiliations = self
            .affiliations
            .iter()
            .map(|&(organization, participant)| {
                let (organization, participant) =
                    (&self.orgs[organization], &self.orgs[participant]);
                json!({
                    "resourceType": "OrganizationAffiliation",
                    "id": format!("aff-{}-{}", organization.key, participant.key),
                    "active": true,
                    "organization": { "reference": organization.org_ref },
                    "participatingOrganization": { "reference": participant.org_ref },
                    "code": [{ "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/organization-role",
                        "code": "provider",
                        "display": "Provider",
                    }] }],
                })
            })
            .collect();
        groups.push(affiliations);
        groups
    }
}

/// The FHIR resources of one organisation, Organization first.
fn org_resources(org: &Org) -> Vec<Value> {
    let key = &org.key;
    let endpoint_ref = json!({ "reference": format!("Endpoint/ep-{key}") });
    let location_ref = json!({ "reference": org.location_ref });
    let service_ref = json!({ "reference": format!("HealthcareService/hcs-{key}") });
    let org_ref = json!({ "reference": org.org_ref });
    let phone = json!({ "system": "phone", "value": org.phone, "use": "work" });
    let type_coding = json!({
        "system": tables::ORGANIZATION_TYPE,
        "code": org.organization_type.code,
        "display": org.organization_type.display,
    });
    let (location_code, location_display, service_name) = match org.kind {
        OrgKind::GpPractice | OrgKind::IslandClinic => {
            ("PC", "primary care clinic", "Huisartsenzorg")
        }
        OrgKind::Hospital => (
            "GACH",
            "Hospitals; General Acute Care Hospital",
            "Medisch-specialistische zorg",
        ),
        OrgKind::Pharmacy => ("PHARM", "Pharmacy", "Farmaceutische zorg"),
        OrgKind::NursingHome => (
            "NCCF",
            "Nursing or custodial care facility",
            "Verpleeghuiszorg",
        ),
    };
    let email = format!("info@{}.example", org.slug);
    let mut resources = Vec::with_capacity(4 + 2 * org.staff.len());
    resources.push(json!({
        "resourceType": "Organization",
        "id": format!("org-{key}"),
        "identifier": [{ "system": URA_SYSTEM, "value": org.ura }],
        "active": true,
        "type": [{ "coding": [type_coding] }],
        "name": org.name,
        "telecom": [phone, { "system": "email", "value": email, "use": "work" }],
        "address": [org.address.to_json("work")],
        "endpoint": [endpoint_ref],
    }));
    resources.push(json!({
        "resourceType": "Endpoint",
        "id": format!("ep-{key}"),
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "hl7-fhir-rest",
            "display": "HL7 FHIR",
        },
        "name": format!("FHIR R4 {}", org.name),
        "managingOrganization": org_ref,
        "payloadType": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
            "code": "any",
            "display": "Any",
        }] }],
        "payloadMimeType": ["application/fhir+json"],
        "address": format!("https://fhir.{}.example/fhir", org.slug),
    }));
    resources.push(json!({
        "resourceType": "Location",
        "id": format!("loc-{key}"),
        "status": "active",
        "name": org.name,
        "mode": "instance",
        "type": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
            "code": location_code,
            "display": location_display,
        }] }],
        "telecom": [phone],
        "address": org.address.to_json("work"),
        "physicalType": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
            "code": "bu",
            "display": "Building",
        }] },
        "managingOrganization": org_ref,
    }));
    resources.push(json!({
        "resourceType": "HealthcareService",
        "id": format!("hcs-{key}"),
        "active": true,
        "providedBy": org_ref,
        "type": [{ "coding": [type_coding], "text": service_name }],
        "location": [location_ref],
        "name": format!("{service_name} {}", org.name),
        "telecom": [phone],
        "endpoint": [endpoint_ref],
    }));
    for staff in &org.staff {
        let mut identifiers = vec![json!({ "system": UZI_SYSTEM, "value": staff.uzi })];
        if let Some(agb) = &staff.agb {
            identifiers.push(json!({ "system": AGB_SYSTEM, "value": agb }));
        }
        resources.push(json!({
            "resourceType": "Practitioner",
            "id": staff.practitioner_id,
            "identifier": identifiers,
            "active": true,
            "name": [{
                "use": "official",
                "text": format!("{} {}", staff.given, staff.family),
                "family": staff.family,
                "given": [staff.given],
            }],
            "telecom": [phone],
            "gender": staff.gender,
        }));
        resources.push(json!({
            "resourceType": "PractitionerRole",
            "id": staff.role_id,
            "active": true,
            "practitioner": { "reference": staff.practitioner_ref },
            "organization": org_ref,
            "code": [{ "coding": [{
                "system": UZI_ROLE_SYSTEM,
                "code": staff.role.code,
                "display": staff.role.display,
            }] }],
            "location": [location_ref],
            "healthcareService": [service_ref],
            "telecom": [phone],
            "endpoint": [endpoint_ref],
        }));
    }
    resources
}

/// A uniformly chosen element.
pub(crate) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// A Dutch family name with its prefix ("van der Meer").
pub(crate) fn family_name(rng: &mut ChaCha8Rng) -> String {
    let (prefix, name) = pick(rng, tables::FAMILY);
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix} {name}")
    }
}

/// A city index, weighted by city size.
pub(crate) fn weighted_city(rng: &mut ChaCha8Rng) -> usize {
    let total: u32 = tables::CITIES.iter().map(|c| c.weight).sum();
    let mut target = rng.random_range(0..total);
    for (index, city) in tables::CITIES.iter().enumerate() {
        if target < city.weight {
            return index;
        }
        target -= city.weight;
    }
    tables::CITIES.len() - 1
}

/// A street address in `city` with a postcode in the city's range. Dutch
/// postcodes are four digits, a space and two letters, never SA, SD or SS.
pub(crate) fn mainland_address(rng: &mut ChaCha8Rng, city: &City) -> Address {
    let digits = rng.random_range(city.postcode_first..=city.postcode_last);
    let letters = loop {
        let first = char::from(b'A' + rng.random_range(0..26u8));
        let second = char::from(b'A' + rng.random_range(0..26u8));
        if !(first == 'S' && matches!(second, 'A' | 'D' | 'S')) {
            break format!("{first}{second}");
        }
    };
    let street = pick(rng, tables::STREETS);
    let number = rng.random_range(1..=180);
    Address {
        line: format!("{street} {number}"),
        city: city.name.to_owned(),
        postal_code: Some(format!("{digits} {letters}")),
        district: None,
        country: "NL",
    }
}

/// An address on a Caribbean island; there are no postcodes there. `town`
/// chooses among the island's towns (wrapping).
pub(crate) fn caribbean_address(rng: &mut ChaCha8Rng, island: &Island, town: usize) -> Address {
    let street = pick(rng, island.streets);
    let number = rng.random_range(1..=60);
    Address {
        line: format!("{street} {number}"),
        city: island.towns[town % island.towns.len()].to_owned(),
        postal_code: None,
        district: Some(island.name),
        country: "BQ",
    }
}

/// A landline number in E.164 form: +31, area code, subscriber number (nine
/// digits after +31 in total).
fn landline(rng: &mut ChaCha8Rng, city: &City) -> String {
    let subscriber_digits = 9 - city.area_code.len() as u32;
    let low = 2 * 10u64.pow(subscriber_digits - 1);
    let subscriber = rng.random_range(low..10u64.pow(subscriber_digits));
    format!("+31{}{subscriber}", city.area_code)
}

/// A Caribbean Netherlands number: +599, island prefix, four digits.
pub(crate) fn caribbean_phone(rng: &mut ChaCha8Rng, island: &Island) -> String {
    format!("{}{:04}", island.phone_prefix, rng.random_range(0..10_000))
}

/// `names[n]`, numbered once the list runs out ("De Linde 2").
fn cycled_name(names: &[&str], n: usize) -> String {
    let name = names[n % names.len()];
    match n / names.len() {
        0 => name.to_owned(),
        round => format!("{name} {}", round + 1),
    }
}

/// Longest name part of a slug, so that slug plus key fits a DNS label (63).
const SLUG_NAME_MAX: usize = 40;

/// A DNS-label-safe lower-case slug: letters and digits, dashes between words.
fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        let c = match c {
            'ë' | 'é' | 'è' | 'ê' => 'e',
            'ï' | 'í' => 'i',
            'ö' | 'ó' => 'o',
            'ü' | 'ú' => 'u',
            'á' | 'à' => 'a',
            c => c.to_ascii_lowercase(),
        };
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if c != '\'' && !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(SLUG_NAME_MAX);
    slug.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn slugs() {
        assert_eq!(
            slugify("Verpleeghuis Mariënstein"),
            "verpleeghuis-marienstein"
        );
        assert_eq!(slugify("'s-Hertogenbosch"), "s-hertogenbosch");
        assert_eq!(
            slugify("Huisartsenpraktijk De Linde 2"),
            "huisartsenpraktijk-de-linde-2"
        );
    }

    #[test]
    fn sizes_scale_with_patients() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let small = Directory::build(&mut rng, 10);
        assert_eq!(small.mainland_gps.len(), GP_PRACTICES_MIN);
        assert_eq!(small.hospitals.len(), 1);
        let large = Directory::build(&mut rng, 120_000);
        assert_eq!(large.mainland_gps.len(), 60);
        assert_eq!(large.hospitals.len(), 3);
        assert_eq!(large.pharmacies.len(), 15);
        assert_eq!(large.nursing_homes.len(), 5);
    }

    #[test]
    fn postcodes_and_phones_look_dutch() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for city in tables::CITIES {
            let address = mainland_address(&mut rng, city);
            let postcode = address.postal_code.unwrap_or_default();
            let (digits, letters) = postcode.split_once(' ').unwrap_or_default();
            assert_eq!(digits.len(), 4, "{postcode}");
            assert!(
                letters.len() == 2 && letters.chars().all(|c| c.is_ascii_uppercase()),
                "{postcode}"
            );
            let phone = landline(&mut rng, city);
            assert_eq!(phone.len(), 12, "{phone}");
        }
    }
}
