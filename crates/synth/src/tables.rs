//! Static tables: Dutch places and names, and the clinical codes (SNOMED CT,
//! LOINC, ATC, UZI role codes) the generator picks from.
//!
//! Only data lives here, no logic. The codes are real codes with their official
//! (English) display; the `text` fields are the Dutch wording a Dutch record
//! system would show. The lists are a plausible sample, not a terminology server.

/// SNOMED CT.
pub(crate) const SNOMED: &str = "http://snomed.info/sct";
/// LOINC.
pub(crate) const LOINC: &str = "http://loinc.org";
/// UCUM units.
pub(crate) const UCUM: &str = "http://unitsofmeasure.org";
/// WHO ATC (Anatomical Therapeutic Chemical) classification.
pub(crate) const ATC: &str = "http://www.whocc.no/atc";
/// Dutch organisation types (RoleCodeNL, OID 2.16.840.1.113883.2.4.15.1060).
pub(crate) const ORGANIZATION_TYPE: &str = "http://nictiz.nl/fhir/NamingSystem/organization-type";

/// A Dutch municipality with its real postcode range and telephone area code.
pub(crate) struct City {
    pub name: &'static str,
    pub postcode_first: u16,
    pub postcode_last: u16,
    /// Area code without the trunk 0, e.g. "20" for Amsterdam.
    pub area_code: &'static str,
    /// Relative size (roughly population in ten thousands), for weighted picks.
    pub weight: u32,
}

const fn city(
    name: &'static str,
    postcode_first: u16,
    postcode_last: u16,
    area_code: &'static str,
    weight: u32,
) -> City {
    City {
        name,
        postcode_first,
        postcode_last,
        area_code,
        weight,
    }
}

pub(crate) const CITIES: &[City] = &[
    city("Amsterdam", 1011, 1109, "20", 93),
    city("Rotterdam", 3011, 3089, "10", 66),
    city("Den Haag", 2491, 2597, "70", 56),
    city("Utrecht", 3511, 3585, "30", 37),
    city("Eindhoven", 5611, 5658, "40", 24),
    city("Groningen", 9711, 9747, "50", 24),
    city("Tilburg", 5011, 5049, "13", 23),
    city("Almere", 1311, 1364, "36", 22),
    city("Breda", 4811, 4839, "76", 19),
    city("Nijmegen", 6511, 6546, "24", 18),
    city("Apeldoorn", 7311, 7339, "55", 17),
    city("Haarlem", 2011, 2037, "23", 16),
    city("Arnhem", 6811, 6846, "26", 16),
    city("Enschede", 7511, 7548, "53", 16),
    city("Amersfoort", 3811, 3829, "33", 16),
    city("'s-Hertogenbosch", 5211, 5237, "73", 16),
    city("Zwolle", 8011, 8043, "38", 13),
    city("Leiden", 2311, 2334, "71", 13),
    city("Maastricht", 6211, 6229, "43", 12),
    city("Dordrecht", 3311, 3329, "78", 12),
    city("Leeuwarden", 8911, 8939, "58", 12),
    city("Alkmaar", 1811, 1827, "72", 11),
    city("Delft", 2611, 2629, "15", 10),
    city("Deventer", 7411, 7429, "570", 10),
    city("Emmen", 7811, 7828, "591", 10),
    city("Assen", 9401, 9409, "592", 7),
    city("Middelburg", 4331, 4339, "118", 5),
];

pub(crate) const STREETS: &[&str] = &[
    "Dorpsstraat",
    "Kerkstraat",
    "Schoolstraat",
    "Molenweg",
    "Stationsweg",
    "Julianastraat",
    "Beatrixlaan",
    "Wilhelminastraat",
    "Nieuwstraat",
    "Hoofdstraat",
    "Kastanjelaan",
    "Eikenlaan",
    "Lindelaan",
    "Berkenlaan",
    "Parallelweg",
    "Emmastraat",
    "Oranjestraat",
    "Prins Bernhardstraat",
    "Prinses Irenestraat",
    "Sportlaan",
    "Vondelstraat",
    "Rembrandtlaan",
    "Merelstraat",
    "Tulpstraat",
    "Rozenstraat",
    "Industrieweg",
    "Burgemeester de Withstraat",
    "Willem de Zwijgerlaan",
    "Van Goghstraat",
    "Zuiderzeestraat",
];

/// One of the three islands of the Caribbean Netherlands (BES islands).
pub(crate) struct Island {
    /// Short key used in resource ids.
    pub key: &'static str,
    pub name: &'static str,
    pub towns: &'static [&'static str],
    pub streets: &'static [&'static str],
    /// Telephone prefix including country code 599; four more digits follow.
    pub phone_prefix: &'static str,
    /// Relative population, for weighted picks.
    pub weight: u32,
}

pub(crate) const ISLANDS: &[Island] = &[
    Island {
        key: "bonaire",
        name: "Bonaire",
        towns: &["Kralendijk", "Rincon"],
        streets: &[
            "Kaya Grandi",
            "Kaya Gobernador N. Debrot",
            "Kaya Nikiboko Zuid",
            "Kaya Korona",
            "Kaya Amsterdam",
            "Kaya Internashonal",
        ],
        phone_prefix: "+599717",
        weight: 83,
    },
    Island {
        key: "statia",
        name: "Sint Eustatius",
        towns: &["Oranjestad"],
        streets: &[
            "Fort Oranjestraat",
            "Van Tonningenweg",
            "De Windtweg",
            "Prinsesweg",
        ],
        phone_prefix: "+599318",
        weight: 10,
    },
    Island {
        key: "saba",
        name: "Saba",
        towns: &["The Bottom", "Windwardside", "St. Johns", "Zion's Hill"],
        streets: &["The Road", "Fort Bay Road", "Booby Hill", "Mountain Road"],
        phone_prefix: "+599416",
        weight: 7,
    },
];

pub(crate) const GIVEN_MALE: &[&str] = &[
    "Jan", "Pieter", "Kees", "Henk", "Willem", "Johannes", "Cornelis", "Gerrit", "Daan", "Sem",
    "Lucas", "Levi", "Noah", "Finn", "Bram", "Thijs", "Ruben", "Jesse", "Lars", "Tim", "Mohamed",
    "Youssef", "Stefan", "Mark", "Erik", "Dirk", "Bas", "Joost", "Wouter", "Hendrik", "Mehmet",
    "Jeroen", "Sander", "Niels", "Teun", "Luuk",
];

pub(crate) const GIVEN_FEMALE: &[&str] = &[
    "Maria",
    "Johanna",
    "Anna",
    "Cornelia",
    "Wilhelmina",
    "Emma",
    "Julia",
    "Sophie",
    "Tess",
    "Sara",
    "Fenna",
    "Lotte",
    "Anouk",
    "Sanne",
    "Lisa",
    "Eva",
    "Femke",
    "Inge",
    "Ingrid",
    "Els",
    "Marieke",
    "Fatima",
    "Noor",
    "Yara",
    "Mila",
    "Ilse",
    "Petra",
    "Linda",
    "Anke",
    "Marloes",
    "Ayse",
    "Romy",
    "Nina",
    "Hanna",
    "Esther",
    "Joke",
];

/// Family names as (voorvoegsel, name): the Dutch prefix ("van", "de", "van der")
/// is part of the family name string but is sorted on the name after it.
pub(crate) const FAMILY: &[(&str, &str)] = &[
    ("de", "Jong"),
    ("", "Jansen"),
    ("de", "Vries"),
    ("van den", "Berg"),
    ("van", "Dijk"),
    ("", "Bakker"),
    ("", "Janssen"),
    ("", "Visser"),
    ("", "Smit"),
    ("", "Meijer"),
    ("de", "Boer"),
    ("", "Mulder"),
    ("de", "Groot"),
    ("", "Bos"),
    ("", "Vos"),
    ("", "Peters"),
    ("", "Hendriks"),
    ("van", "Leeuwen"),
    ("", "Dekker"),
    ("", "Brouwer"),
    ("de", "Wit"),
    ("", "Dijkstra"),
    ("", "Smits"),
    ("de", "Graaf"),
    ("van der", "Meer"),
    ("van der", "Linden"),
    ("", "Kok"),
    ("", "Jacobs"),
    ("de", "Haan"),
    ("", "Vermeulen"),
    ("van den", "Heuvel"),
    ("van der", "Veen"),
    ("van den", "Broek"),
    ("de", "Bruijn"),
    ("van der", "Heijden"),
    ("", "Schouten"),
    ("van", "Beek"),
    ("", "Willems"),
    ("van", "Vliet"),
    ("van de", "Ven"),
    ("", "Hoekstra"),
    ("", "Maas"),
    ("", "Verhoeven"),
    ("", "Koster"),
    ("van", "Dam"),
    ("van der", "Wal"),
    ("", "Prins"),
    ("", "Blom"),
    ("", "Huisman"),
    ("", "Yilmaz"),
    ("", "El Amrani"),
    ("", "Kramer"),
];

pub(crate) const CARIBBEAN_GIVEN_MALE: &[&str] = &[
    "Edsel", "Gregory", "Rignald", "Franklin", "Elvis", "Norwin", "Shurandy", "Glenbert", "Jurick",
    "Carl", "James", "Randall",
];

pub(crate) const CARIBBEAN_GIVEN_FEMALE: &[&str] = &[
    "Jeanette",
    "Ruthsel",
    "Jolanda",
    "Marisela",
    "Yolanda",
    "Glenda",
    "Ramona",
    "Shurenska",
    "Judith",
    "Vanessa",
    "Carmen",
    "Ruby",
];

pub(crate) const CARIBBEAN_FAMILY: &[&str] = &[
    "Martis", "Cicilia", "Thode", "Winklaar", "Everts", "Frans", "Anthony", "Spanner", "Berkel",
    "Gibbs", "Merkman", "Hassell", "Johnson", "Every", "Zagers", "Peterson", "Simmons", "Janga",
];

pub(crate) const PRACTICE_NAMES: &[&str] = &[
    "De Linde",
    "De Eik",
    "Het Anker",
    "De Brug",
    "Het Kompas",
    "De Vaart",
    "De Poort",
    "Centrum",
    "De Hoven",
    "Het Baken",
    "De Meander",
    "De Wilgen",
    "De Kastanje",
    "Lindenhof",
    "De Bongerd",
    "Het Plein",
];

pub(crate) const HOSPITAL_NAMES: &[&str] = &[
    "Polderzicht",
    "Zeeburcht",
    "Heuvelzoom",
    "Maasdelta",
    "Duinrand",
    "IJsselzicht",
    "Veenland",
    "Kempenhof",
    "Lindeveld",
    "Waterzoom",
];

pub(crate) const PHARMACY_NAMES: &[&str] = &[
    "De Gaper",
    "Het Hert",
    "De Vijzel",
    "De Roos",
    "De Pelikaan",
    "De Ooievaar",
    "Het Hoefijzer",
    "De Kroon",
    "De Zwaan",
    "De Eenhoorn",
];

pub(crate) const NURSING_HOME_NAMES: &[&str] = &[
    "Avondlicht",
    "De Wingerd",
    "Het Zonnehof",
    "De Beukenhof",
    "Mariënstein",
    "De Rozenhof",
    "Het Lindenhuis",
];

/// An organisation type from RoleCodeNL.
#[derive(Debug)]
pub(crate) struct OrganizationType {
    pub code: &'static str,
    pub display: &'static str,
}

pub(crate) const TYPE_GP_PRACTICE: OrganizationType = OrganizationType {
    code: "Z3",
    display: "Huisartspraktijk (zelfstandig of groepspraktijk)",
};
pub(crate) const TYPE_DISPENSING_GP_PRACTICE: OrganizationType = OrganizationType {
    code: "K3",
    display: "Apotheekhoudende huisartspraktijk",
};
pub(crate) const TYPE_HOSPITAL: OrganizationType = OrganizationType {
    code: "V6",
    display: "Algemeen ziekenhuis",
};
pub(crate) const TYPE_PHARMACY: OrganizationType = OrganizationType {
    code: "J8",
    display: "Openbare apotheek",
};
pub(crate) const TYPE_NURSING_HOME: OrganizationType = OrganizationType {
    code: "R5",
    display: "Verpleeghuis",
};

/// A professional role from the UZI register (UZI rolcode) with the two-digit
/// AGB "zorgverlenersoort" prefix we give that profession (None: no AGB code).
#[derive(Debug)]
pub(crate) struct Role {
    pub code: &'static str,
    pub display: &'static str,
    pub agb_prefix: Option<&'static str>,
}

pub(crate) const ROLE_GP: Role = Role {
    code: "01.015",
    display: "Huisarts",
    agb_prefix: Some("01"),
};
pub(crate) const ROLE_PHARMACIST: Role = Role {
    code: "17.000",
    display: "Apotheker",
    agb_prefix: Some("02"),
};
pub(crate) const ROLE_NURSE: Role = Role {
    code: "30.000",
    display: "Verpleegkundige",
    agb_prefix: None,
};
pub(crate) const ROLE_CARDIOLOGIST: Role = Role {
    code: "01.010",
    display: "Cardioloog",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_SURGEON: Role = Role {
    code: "01.014",
    display: "Chirurg",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_INTERNIST: Role = Role {
    code: "01.016",
    display: "Internist",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_GERIATRICIAN: Role = Role {
    code: "01.022",
    display: "Klinisch geriater",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_PULMONOLOGIST: Role = Role {
    code: "01.023",
    display: "Longarts",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_NEUROLOGIST: Role = Role {
    code: "01.026",
    display: "Neuroloog",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_ORTHOPAEDIC_SURGEON: Role = Role {
    code: "01.032",
    display: "Orthopedisch chirurg",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_RHEUMATOLOGIST: Role = Role {
    code: "01.041",
    display: "Reumatoloog",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_UROLOGIST: Role = Role {
    code: "01.045",
    display: "Uroloog",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_GYNAECOLOGIST: Role = Role {
    code: "01.046",
    display: "Gynaecoloog",
    agb_prefix: Some("03"),
};
pub(crate) const ROLE_ELDERLY_CARE_PHYSICIAN: Role = Role {
    code: "01.047",
    display: "Specialist ouderengeneeskunde",
    agb_prefix: Some("01"),
};
pub(crate) const ROLE_EMERGENCY_PHYSICIAN: Role = Role {
    code: "01.071",
    display: "Spoedeisende hulp arts",
    agb_prefix: Some("03"),
};

/// Staff of a mainland hospital, one practitioner per entry.
pub(crate) const HOSPITAL_STAFF: &[&Role] = &[
    &ROLE_EMERGENCY_PHYSICIAN,
    &ROLE_INTERNIST,
    &ROLE_CARDIOLOGIST,
    &ROLE_PULMONOLOGIST,
    &ROLE_NEUROLOGIST,
    &ROLE_SURGEON,
    &ROLE_ORTHOPAEDIC_SURGEON,
    &ROLE_RHEUMATOLOGIST,
    &ROLE_UROLOGIST,
    &ROLE_GYNAECOLOGIST,
    &ROLE_GERIATRICIAN,
    &ROLE_NURSE,
    &ROLE_NURSE,
];

/// Staff of the small hospital on Bonaire; other specialisms fall back to the internist.
pub(crate) const ISLAND_HOSPITAL_STAFF: &[&Role] = &[
    &ROLE_EMERGENCY_PHYSICIAN,
    &ROLE_INTERNIST,
    &ROLE_SURGEON,
    &ROLE_GYNAECOLOGIST,
    &ROLE_NURSE,
];

/// A medicine with its ATC code and Dutch prescription wording.
pub(crate) struct Medication {
    pub atc: &'static str,
    /// WHO ATC name (the code's display).
    pub atc_name: &'static str,
    /// Dutch product text, as on a Dutch prescription.
    pub text: &'static str,
    /// Dutch dosage instruction ("gebruiksvoorschrift").
    pub dosage: &'static str,
    /// Amount handed out per dispense, and its unit.
    pub fill_amount: u32,
    pub fill_unit: &'static str,
    /// Days one dispense lasts.
    pub fill_days: u32,
}

const fn medication(
    atc: &'static str,
    atc_name: &'static str,
    text: &'static str,
    dosage: &'static str,
    fill_amount: u32,
    fill_unit: &'static str,
    fill_days: u32,
) -> Medication {
    Medication {
        atc,
        atc_name,
        text,
        dosage,
        fill_amount,
        fill_unit,
        fill_days,
    }
}

#[rustfmt::skip]
pub(crate) const MEDICATIONS: &[Medication] = &[
    medication("A10BA02", "metformin", "Metformine 500mg tablet", "3 maal daags 1 tablet bij de maaltijd", 270, "tablet", 90),
    medication("A10BB09", "gliclazide", "Gliclazide 80mg tablet", "1 maal daags 1 tablet bij het ontbijt", 90, "tablet", 90),
    medication("A10AE04", "insulin glargine", "Insuline glargine 100E/ml injectievloeistof (pen)", "1 maal daags 20 eenheden subcutaan voor het slapen", 15, "ml", 90),
    medication("A10AB05", "insulin aspart", "Insuline aspart 100E/ml injectievloeistof (pen)", "3 maal daags volgens schema subcutaan bij de maaltijd", 15, "ml", 90),
    medication("C09AA02", "enalapril", "Enalapril 10mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C09CA01", "losartan", "Losartan 50mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C03AA03", "hydrochlorothiazide", "Hydrochloorthiazide 12,5mg tablet", "1 maal daags 1 tablet 's ochtends", 90, "tablet", 90),
    medication("C08CA01", "amlodipine", "Amlodipine 5mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C07AB02", "metoprolol", "Metoprololsuccinaat 47,5mg tablet met gereguleerde afgifte", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C07AB07", "bisoprolol", "Bisoprolol 5mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C03DA01", "spironolactone", "Spironolacton 25mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C03CA01", "furosemide", "Furosemide 40mg tablet", "1 maal daags 1 tablet 's ochtends", 90, "tablet", 90),
    medication("C01AA05", "digoxin", "Digoxine 0,125mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("C10AA01", "simvastatin", "Simvastatine 40mg tablet", "1 maal daags 1 tablet 's avonds", 90, "tablet", 90),
    medication("C10AA05", "atorvastatin", "Atorvastatine 20mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("B01AC06", "acetylsalicylic acid", "Acetylsalicylzuur 80mg dispertablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("B01AF01", "rivaroxaban", "Rivaroxaban 20mg tablet", "1 maal daags 1 tablet bij de avondmaaltijd", 90, "tablet", 90),
    medication("B01AA07", "acenocoumarol", "Acenocoumarol 1mg tablet", "volgens doseerschema van de trombosedienst", 100, "tablet", 90),
    medication("R03AC02", "salbutamol", "Salbutamol 100microg/dosis aerosol", "zo nodig 1 tot 2 inhalaties, maximaal 8 per dag", 1, "stuk", 90),
    medication("R03BA02", "budesonide", "Budesonide 200microg/dosis inhalatiepoeder", "2 maal daags 1 inhalatie", 1, "stuk", 100),
    medication("R03BB04", "tiotropium bromide", "Tiotropium 2,5microg/dosis inhalatievloeistof", "1 maal daags 2 inhalaties", 3, "stuk", 90),
    medication("N06AB06", "sertraline", "Sertraline 50mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("N06AB04", "citalopram", "Citalopram 20mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("N06AB10", "escitalopram", "Escitalopram 10mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("N05BA04", "oxazepam", "Oxazepam 10mg tablet", "zo nodig 1 tablet, maximaal 3 per dag", 30, "tablet", 30),
    medication("L04AX03", "methotrexate", "Methotrexaat 2,5mg tablet", "1 maal per week 6 tabletten op dezelfde dag", 78, "tablet", 91),
    medication("B03BB01", "folic acid", "Foliumzuur 5mg tablet", "1 maal per week 1 tablet, de dag na methotrexaat", 13, "tablet", 91),
    medication("H02AB06", "prednisolone", "Prednisolon 5mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("N02BE01", "paracetamol", "Paracetamol 500mg tablet", "zo nodig 1 tot 2 tabletten, maximaal 6 per dag", 100, "tablet", 30),
    medication("M01AE01", "ibuprofen", "Ibuprofen 400mg tablet", "zo nodig 1 tablet, maximaal 3 per dag", 30, "tablet", 10),
    medication("A02BC01", "omeprazole", "Omeprazol 20mg maagsapresistente capsule", "1 maal daags 1 capsule voor het ontbijt", 90, "capsule", 90),
    medication("A02BC02", "pantoprazole", "Pantoprazol 40mg maagsapresistente tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("H03AA01", "levothyroxine sodium", "Levothyroxine 50microg tablet", "1 maal daags 1 tablet, 30 minuten voor het ontbijt", 90, "tablet", 90),
    medication("N06DA02", "donepezil", "Donepezil 10mg tablet", "1 maal daags 1 tablet voor het slapen", 90, "tablet", 90),
    medication("M05BA04", "alendronic acid", "Alendroninezuur 70mg tablet", "1 maal per week 1 tablet, nuchter met een glas water", 12, "tablet", 84),
    medication("A12AX", "calcium, combinations with vitamin D and/or other drugs", "Calciumcarbonaat/colecalciferol 1,25g/880IE bruisgranulaat", "1 maal daags 1 sachet", 90, "sachet", 90),
    medication("N02CC01", "sumatriptan", "Sumatriptan 50mg tablet", "bij een migraineaanval 1 tablet, zo nodig na 2 uur herhalen", 12, "tablet", 90),
    medication("L02BA01", "tamoxifen", "Tamoxifen 20mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("L02BG03", "anastrozole", "Anastrozol 1mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("L02AE02", "leuprorelin", "Leuproreline 22,5mg depotinjectie", "1 maal per 3 maanden 1 injectie subcutaan", 1, "stuk", 90),
    medication("J01CA04", "amoxicillin", "Amoxicilline 500mg capsule", "3 maal daags 1 capsule gedurende 7 dagen", 21, "capsule", 7),
    medication("J01AA02", "doxycycline", "Doxycycline 100mg tablet", "eerste dag 2 tabletten, daarna 1 maal daags 1 tablet", 8, "tablet", 7),
    medication("J01XE01", "nitrofurantoin", "Nitrofurantoïne 100mg capsule met gereguleerde afgifte", "2 maal daags 1 capsule gedurende 5 dagen", 10, "capsule", 5),
    medication("D07AC01", "betamethasone", "Betamethason 1mg/g crème", "1 maal daags dun aanbrengen", 30, "g", 14),
    medication("D07AB02", "hydrocortisone butyrate", "Hydrocortisonbutyraat 1mg/g crème", "1 maal daags dun aanbrengen", 30, "g", 14),
    medication("S01AA01", "chloramphenicol", "Chlooramfenicol 5mg/ml oogdruppels", "4 maal daags 1 druppel in het aangedane oog", 10, "ml", 7),
    medication("B03AA07", "ferrous fumarate", "Ferrofumaraat 200mg tablet", "1 maal daags 1 tablet", 90, "tablet", 90),
    medication("A06AD65", "macrogol, combinations", "Macrogol/elektrolyten poeder voor drank", "1 tot 2 maal daags 1 sachet", 20, "sachet", 14),
    medication("M04AC01", "colchicine", "Colchicine 0,5mg tablet", "3 maal daags 1 tablet gedurende 3 dagen", 9, "tablet", 3),
    medication("G03AA07", "levonorgestrel and ethinylestradiol", "Levonorgestrel/ethinylestradiol 150/30microg tablet", "1 maal daags 1 tablet gedurende 21 dagen, dan 7 dagen stoppen", 63, "tablet", 84),
    medication("R06AE07", "cetirizine", "Cetirizine 10mg tablet", "1 maal daags 1 tablet", 30, "tablet", 30),
];

/// ATC code of the contraceptive pill prescribed to women of fertile age.
pub(crate) const CONTRACEPTIVE_PILL_ATC: &str = "G03AA07";

/// The medication with this ATC code, if the table has it.
pub(crate) fn medication_by_atc(atc: &str) -> Option<&'static Medication> {
    MEDICATIONS.iter().find(|m| m.atc == atc)
}

/// A quantitative laboratory test with its UCUM unit and value model.
pub(crate) struct LabTest {
    pub loinc: &'static str,
    pub display: &'static str,
    pub unit: &'static str,
    pub low: f64,
    pub high: f64,
    pub mean: f64,
    pub sd: f64,
    pub decimals: u32,
    /// Chronic conditions (SNOMED) that move the value to `affected_mean`.
    pub affected_by: &'static [&'static str],
    pub affected_mean: f64,
    pub affected_sd: f64,
}

#[allow(clippy::too_many_arguments)] // a table row; named fields would triple the table
const fn lab(
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    (low, high): (f64, f64),
    (mean, sd): (f64, f64),
    decimals: u32,
    affected_by: &'static [&'static str],
    (affected_mean, affected_sd): (f64, f64),
) -> LabTest {
    LabTest {
        loinc,
        display,
        unit,
        low,
        high,
        mean,
        sd,
        decimals,
        affected_by,
        affected_mean,
        affected_sd,
    }
}

const DIABETES: &[&str] = &["44054006", "46635009"];
const KIDNEY: &[&str] = &["709044004"];
const LIPIDS: &[&str] = &["55822004"];
const NONE: &[&str] = &[];

#[rustfmt::skip]
pub(crate) const LAB_TESTS: &[LabTest] = &[
    lab("15074-8", "Glucose [Moles/volume] in Blood", "mmol/L", (4.0, 7.8), (5.6, 0.7), 1, DIABETES, (8.6, 2.0)),
    lab("59261-8", "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol", "mmol/mol", (20.0, 42.0), (37.0, 3.0), 0, DIABETES, (56.0, 9.0)),
    lab("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", (50.0, 110.0), (80.0, 14.0), 0, KIDNEY, (165.0, 40.0)),
    lab("62238-1", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI)", "mL/min/{1.73_m2}", (60.0, 140.0), (86.0, 12.0), 0, KIDNEY, (38.0, 10.0)),
    lab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", (3.5, 5.0), (4.2, 0.35), 1, NONE, (4.2, 0.35)),
    lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", (135.0, 145.0), (140.0, 2.5), 0, NONE, (140.0, 2.5)),
    lab("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", (0.0, 5.0), (5.1, 0.9), 1, LIPIDS, (6.8, 1.0)),
    lab("22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma", "mmol/L", (0.0, 3.0), (3.0, 0.8), 1, LIPIDS, (4.6, 0.9)),
    lab("14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma", "mmol/L", (1.0, 3.0), (1.4, 0.3), 1, NONE, (1.4, 0.3)),
    lab("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L", (0.0, 2.0), (1.4, 0.5), 1, LIPIDS, (2.6, 0.8)),
    lab("59260-0", "Hemoglobin [Moles/volume] in Blood", "mmol/L", (7.5, 11.0), (8.7, 0.6), 1, KIDNEY, (7.3, 0.6)),
    lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*9/L", (4.0, 10.0), (7.0, 1.6), 1, NONE, (7.0, 1.6)),
    lab("777-3", "Platelets [#/volume] in Blood by Automated count", "10*9/L", (150.0, 400.0), (260.0, 50.0), 0, NONE, (260.0, 50.0)),
    lab("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", (0.0, 10.0), (3.0, 2.0), 0, &["69896004"], (18.0, 10.0)),
    lab("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", (0.0, 45.0), (24.0, 8.0), 0, NONE, (24.0, 8.0)),
    lab("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", (0.0, 40.0), (25.0, 7.0), 0, NONE, (25.0, 7.0)),
    lab("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "mU/L", (0.4, 4.0), (1.9, 0.7), 1, &["40930008"], (5.5, 2.0)),
    lab("33762-6", "Natriuretic peptide.B prohormone N-Terminal [Mass/volume] in Serum or Plasma", "pg/mL", (0.0, 125.0), (70.0, 30.0), 0, &["84114007"], (1400.0, 600.0)),
];

/// The lab test with this LOINC code, if the table has it.
pub(crate) fn lab_test(loinc: &str) -> Option<&'static LabTest> {
    LAB_TESTS.iter().find(|t| t.loinc == loinc)
}

/// A lab order reported as one DiagnosticReport.
pub(crate) struct Panel {
    pub loinc: &'static str,
    pub display: &'static str,
    pub tests: &'static [&'static str],
}

/// LOINC "Laboratory report", for single tests that have no panel code.
const LAB_REPORT: (&str, &str) = ("11502-2", "Laboratory report");

pub(crate) const PANEL_DIABETES: Panel = Panel {
    loinc: "55399-0",
    display: "Diabetes tracking panel",
    tests: &["15074-8", "59261-8"],
};
pub(crate) const PANEL_RENAL: Panel = Panel {
    loinc: "24362-6",
    display: "Renal function 2000 panel - Serum or Plasma",
    tests: &["14682-9", "62238-1", "2823-3", "2951-2"],
};
pub(crate) const PANEL_LIPID: Panel = Panel {
    loinc: "24331-1",
    display: "Lipid 1996 panel - Serum or Plasma",
    tests: &["14647-2", "22748-8", "14646-4", "14927-8"],
};
pub(crate) const PANEL_CBC: Panel = Panel {
    loinc: "58410-2",
    display: "CBC panel - Blood by Automated count",
    tests: &["59260-0", "6690-2", "777-3"],
};
pub(crate) const PANEL_LIVER: Panel = Panel {
    loinc: "24325-3",
    display: "Hepatic function 2000 panel - Serum or Plasma",
    tests: &["1742-6", "1920-8"],
};
pub(crate) const PANEL_CRP: Panel = Panel {
    loinc: LAB_REPORT.0,
    display: LAB_REPORT.1,
    tests: &["1988-5"],
};
pub(crate) const PANEL_TSH: Panel = Panel {
    loinc: LAB_REPORT.0,
    display: LAB_REPORT.1,
    tests: &["3016-3"],
};
pub(crate) const PANEL_NT_PRO_BNP: Panel = Panel {
    loinc: LAB_REPORT.0,
    display: LAB_REPORT.1,
    tests: &["33762-6"],
};

/// A SNOMED CT concept with its display.
pub(crate) type Snomed = (&'static str, &'static str);

/// Which sex a table row applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SexFilter {
    Any,
    Female,
    Male,
}

/// A chronic condition that stays on the problem list and drives medication,
/// control visits and lab work.
pub(crate) struct ChronicCondition {
    pub code: &'static str,
    pub display: &'static str,
    pub text: &'static str,
    pub onset_age_min: u32,
    pub onset_age_max: u32,
    /// Share of people older than `onset_age_max` who have it; rises linearly
    /// from zero at `onset_age_min`.
    pub prevalence: f64,
    pub sex: SexFilter,
    /// ATC codes, first-line first.
    pub medications: &'static [&'static str],
    pub panels: &'static [&'static Panel],
    /// Hospital specialism that follows the condition up yearly; None: the GP does.
    pub specialist: Option<&'static Role>,
    /// Procedures around the diagnosis.
    pub diagnosis_procedures: &'static [Snomed],
}

pub(crate) const CHRONIC_CONDITIONS: &[ChronicCondition] = &[
    ChronicCondition {
        code: "44054006",
        display: "Diabetes mellitus type 2",
        text: "Diabetes mellitus type 2",
        onset_age_min: 35,
        onset_age_max: 80,
        prevalence: 0.14,
        sex: SexFilter::Any,
        medications: &["A10BA02", "A10BB09", "A10AE04"],
        panels: &[&PANEL_DIABETES, &PANEL_RENAL, &PANEL_LIPID],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "46635009",
        display: "Diabetes mellitus type 1",
        text: "Diabetes mellitus type 1",
        onset_age_min: 3,
        onset_age_max: 30,
        prevalence: 0.005,
        sex: SexFilter::Any,
        medications: &["A10AE04", "A10AB05"],
        panels: &[&PANEL_DIABETES, &PANEL_RENAL],
        specialist: Some(&ROLE_INTERNIST),
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "38341003",
        display: "Hypertensive disorder, systemic arterial",
        text: "Hypertensie",
        onset_age_min: 30,
        onset_age_max: 80,
        prevalence: 0.35,
        sex: SexFilter::Any,
        medications: &["C09AA02", "C03AA03", "C08CA01", "C09CA01"],
        panels: &[&PANEL_RENAL],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "55822004",
        display: "Hyperlipidemia",
        text: "Hyperlipidemie",
        onset_age_min: 35,
        onset_age_max: 75,
        prevalence: 0.22,
        sex: SexFilter::Any,
        medications: &["C10AA01", "C10AA05"],
        panels: &[&PANEL_LIPID, &PANEL_LIVER],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "53741008",
        display: "Coronary arteriosclerosis",
        text: "Coronaire hartziekte",
        onset_age_min: 45,
        onset_age_max: 85,
        prevalence: 0.10,
        sex: SexFilter::Any,
        medications: &["B01AC06", "C10AA05", "C07AB02"],
        panels: &[&PANEL_LIPID],
        specialist: Some(&ROLE_CARDIOLOGIST),
        diagnosis_procedures: &[("415070008", "Percutaneous coronary intervention")],
    },
    ChronicCondition {
        code: "49436004",
        display: "Atrial fibrillation",
        text: "Atriumfibrilleren",
        onset_age_min: 55,
        onset_age_max: 90,
        prevalence: 0.09,
        sex: SexFilter::Any,
        medications: &["B01AF01", "C07AB02", "B01AA07", "C01AA05"],
        panels: &[&PANEL_RENAL, &PANEL_CBC],
        specialist: Some(&ROLE_CARDIOLOGIST),
        diagnosis_procedures: &[("29303009", "Electrocardiographic procedure")],
    },
    ChronicCondition {
        code: "84114007",
        display: "Heart failure",
        text: "Hartfalen",
        onset_age_min: 60,
        onset_age_max: 90,
        prevalence: 0.07,
        sex: SexFilter::Any,
        medications: &["C03CA01", "C09AA02", "C07AB07", "C03DA01"],
        panels: &[&PANEL_RENAL, &PANEL_NT_PRO_BNP],
        specialist: Some(&ROLE_CARDIOLOGIST),
        diagnosis_procedures: &[
            ("29303009", "Electrocardiographic procedure"),
            ("399208008", "Plain X-ray of chest"),
        ],
    },
    ChronicCondition {
        code: "709044004",
        display: "Chronic kidney disease",
        text: "Chronische nierschade",
        onset_age_min: 55,
        onset_age_max: 90,
        prevalence: 0.10,
        sex: SexFilter::Any,
        medications: &["C09CA01"],
        panels: &[&PANEL_RENAL, &PANEL_CBC],
        specialist: Some(&ROLE_INTERNIST),
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "195967001",
        display: "Asthma",
        text: "Astma",
        onset_age_min: 3,
        onset_age_max: 40,
        prevalence: 0.07,
        sex: SexFilter::Any,
        medications: &["R03AC02", "R03BA02"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[("127783003", "Spirometry")],
    },
    ChronicCondition {
        code: "13645005",
        display: "Chronic obstructive lung disease",
        text: "COPD",
        onset_age_min: 45,
        onset_age_max: 80,
        prevalence: 0.08,
        sex: SexFilter::Any,
        medications: &["R03BB04", "R03AC02"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[("127783003", "Spirometry")],
    },
    ChronicCondition {
        code: "35489007",
        display: "Depressive disorder",
        text: "Depressie",
        onset_age_min: 15,
        onset_age_max: 70,
        prevalence: 0.09,
        sex: SexFilter::Any,
        medications: &["N06AB06", "N06AB04"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "197480006",
        display: "Anxiety disorder",
        text: "Angststoornis",
        onset_age_min: 15,
        onset_age_max: 60,
        prevalence: 0.06,
        sex: SexFilter::Any,
        medications: &["N06AB10", "N05BA04"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "69896004",
        display: "Rheumatoid arthritis",
        text: "Reumatoïde artritis",
        onset_age_min: 30,
        onset_age_max: 70,
        prevalence: 0.01,
        sex: SexFilter::Any,
        medications: &["L04AX03", "B03BB01", "H02AB06"],
        panels: &[&PANEL_CBC, &PANEL_CRP, &PANEL_LIVER],
        specialist: Some(&ROLE_RHEUMATOLOGIST),
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "396275006",
        display: "Osteoarthritis",
        text: "Artrose",
        onset_age_min: 45,
        onset_age_max: 85,
        prevalence: 0.25,
        sex: SexFilter::Any,
        medications: &["N02BE01", "A02BC01"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "40930008",
        display: "Hypothyroidism",
        text: "Hypothyreoïdie",
        onset_age_min: 25,
        onset_age_max: 80,
        prevalence: 0.05,
        sex: SexFilter::Any,
        medications: &["H03AA01"],
        panels: &[&PANEL_TSH],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "26929004",
        display: "Alzheimer's disease",
        text: "Ziekte van Alzheimer",
        onset_age_min: 65,
        onset_age_max: 95,
        prevalence: 0.12,
        sex: SexFilter::Any,
        medications: &["N06DA02"],
        panels: &[],
        specialist: Some(&ROLE_GERIATRICIAN),
        diagnosis_procedures: &[("113091000", "Magnetic resonance imaging")],
    },
    ChronicCondition {
        code: "64859006",
        display: "Osteoporosis",
        text: "Osteoporose",
        onset_age_min: 50,
        onset_age_max: 85,
        prevalence: 0.15,
        sex: SexFilter::Female,
        medications: &["M05BA04", "A12AX"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "414916001",
        display: "Obesity",
        text: "Obesitas",
        onset_age_min: 18,
        onset_age_max: 60,
        prevalence: 0.14,
        sex: SexFilter::Any,
        medications: &[],
        panels: &[&PANEL_LIPID],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "37796009",
        display: "Migraine",
        text: "Migraine",
        onset_age_min: 10,
        onset_age_max: 45,
        prevalence: 0.08,
        sex: SexFilter::Any,
        medications: &["N02CC01"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "235595009",
        display: "Gastroesophageal reflux disease",
        text: "Refluxziekte",
        onset_age_min: 25,
        onset_age_max: 75,
        prevalence: 0.08,
        sex: SexFilter::Any,
        medications: &["A02BC01", "A02BC02"],
        panels: &[],
        specialist: None,
        diagnosis_procedures: &[],
    },
    ChronicCondition {
        code: "363406005",
        display: "Malignant neoplasm of colon",
        text: "Coloncarcinoom",
        onset_age_min: 50,
        onset_age_max: 85,
        prevalence: 0.03,
        sex: SexFilter::Any,
        medications: &[],
        panels: &[&PANEL_CBC, &PANEL_LIVER],
        specialist: Some(&ROLE_INTERNIST),
        diagnosis_procedures: &[("73761001", "Colonoscopy"), ("23968004", "Colectomy")],
    },
    ChronicCondition {
        code: "254837009",
        display: "Malignant neoplasm of breast",
        text: "Mammacarcinoom",
        onset_age_min: 35,
        onset_age_max: 80,
        prevalence: 0.05,
        sex: SexFilter::Female,
        medications: &["L02BA01", "L02BG03"],
        panels: &[&PANEL_CBC],
        specialist: Some(&ROLE_SURGEON),
        diagnosis_procedures: &[("392021009", "Lumpectomy of breast")],
    },
    ChronicCondition {
        code: "399068003",
        display: "Malignant tumor of prostate",
        text: "Prostaatcarcinoom",
        onset_age_min: 50,
        onset_age_max: 85,
        prevalence: 0.06,
        sex: SexFilter::Male,
        medications: &["L02AE02"],
        panels: &[],
        specialist: Some(&ROLE_UROLOGIST),
        diagnosis_procedures: &[("90470006", "Prostatectomy")],
    },
];

/// A short illness seen by the GP.
pub(crate) struct AcuteCondition {
    pub code: &'static str,
    pub display: &'static str,
    pub text: &'static str,
    pub age_min: u32,
    pub age_max: u32,
    pub weight: u32,
    /// ATC codes of which one may be prescribed.
    pub medications: &'static [&'static str],
    pub procedure: Option<Snomed>,
    /// Whether the GP measures body temperature (infections).
    pub fever: bool,
    /// First day (year, month, day) the condition can occur, e.g. COVID-19.
    pub not_before: Option<(i32, u32, u32)>,
}

#[allow(clippy::too_many_arguments)] // a table row
const fn acute(
    code: &'static str,
    display: &'static str,
    text: &'static str,
    (age_min, age_max): (u32, u32),
    weight: u32,
    medications: &'static [&'static str],
    procedure: Option<Snomed>,
    fever: bool,
) -> AcuteCondition {
    AcuteCondition {
        code,
        display,
        text,
        age_min,
        age_max,
        weight,
        medications,
        procedure,
        fever,
        not_before: None,
    }
}

#[rustfmt::skip]
pub(crate) const ACUTE_CONDITIONS: &[AcuteCondition] = &[
    acute("54150009", "Upper respiratory infection", "Bovensteluchtweginfectie", (0, 120), 10, &[], None, true),
    acute("444814009", "Viral sinusitis", "Sinusitis, viraal", (5, 120), 4, &[], None, false),
    acute("36971009", "Sinusitis", "Sinusitis", (12, 120), 3, &["J01AA02"], None, true),
    acute("195662009", "Acute viral pharyngitis", "Acute keelontsteking", (2, 120), 4, &[], None, true),
    acute("43878008", "Streptococcal sore throat", "Streptokokkenangina", (3, 60), 1, &["J01CA04"], None, true),
    acute("65363002", "Otitis media", "Otitis media acuta", (0, 12), 6, &["J01CA04"], None, true),
    acute("10509002", "Acute bronchitis", "Acute bronchitis", (0, 120), 4, &["J01AA02"], None, true),
    acute("68566005", "Urinary tract infectious disease", "Urineweginfectie", (15, 120), 6, &["J01XE01"], None, false),
    acute("6142004", "Influenza", "Influenza", (0, 120), 3, &[], None, true),
    AcuteCondition { not_before: Some((2020, 3, 1)), ..acute("840539006", "COVID-19", "COVID-19", (0, 120), 3, &[], None, true) },
    acute("279039007", "Low back pain", "Lage rugpijn", (18, 120), 6, &["N02BE01", "M01AE01"], None, false),
    acute("57676002", "Joint pain", "Gewrichtspijn", (12, 120), 3, &["N02BE01"], None, false),
    acute("25064002", "Headache", "Hoofdpijn", (6, 120), 3, &["N02BE01"], None, false),
    acute("271807003", "Eruption of skin", "Huiduitslag", (0, 120), 3, &["D07AC01"], None, false),
    acute("24079001", "Atopic dermatitis", "Constitutioneel eczeem", (0, 40), 3, &["D07AB02"], None, false),
    acute("40275004", "Contact dermatitis", "Contacteczeem", (5, 120), 2, &["D07AC01"], None, false),
    acute("9826008", "Conjunctivitis", "Conjunctivitis", (0, 120), 3, &["S01AA01"], None, false),
    acute("62315008", "Diarrhea", "Diarree", (0, 120), 3, &[], None, false),
    acute("21522001", "Abdominal pain", "Buikpijn", (3, 120), 3, &[], None, false),
    acute("14760008", "Constipation", "Obstipatie", (0, 120), 2, &["A06AD65"], None, false),
    acute("44465007", "Sprain of ankle", "Enkeldistorsie", (8, 75), 3, &["N02BE01"], None, false),
    acute("125643001", "Open wound", "Open wond", (2, 120), 2, &[], Some(("225358003", "Wound care")), false),
    acute("29857009", "Chest pain", "Pijn op de borst", (30, 120), 2, &[], Some(("29303009", "Electrocardiographic procedure")), false),
    acute("267036007", "Dyspnea", "Kortademigheid", (40, 120), 2, &[], None, false),
    acute("271737000", "Anemia", "Anemie", (15, 120), 1, &["B03AA07"], None, false),
    acute("90560007", "Gout", "Jicht", (30, 120), 1, &["M04AC01"], None, false),
    acute("61582004", "Allergic rhinitis", "Allergische rinitis (hooikoorts)", (5, 70), 3, &["R06AE07"], None, false),
];

/// A reason to go to hospital: an emergency visit, an admission, or an
/// outpatient procedure.
pub(crate) struct HospitalEpisode {
    pub condition: Snomed,
    pub text: &'static str,
    pub age_min: u32,
    pub age_max: u32,
    pub sex: SexFilter,
    pub weight: u32,
    /// Starts at the emergency department (else planned).
    pub emergency: bool,
    /// Length of stay in days; (0, 0) means the patient goes home the same day.
    pub stay_days: (u32, u32),
    pub specialist: &'static Role,
    pub procedures: &'static [Snomed],
    pub panels: &'static [&'static Panel],
    /// The window (first, last year) in which the episode can happen.
    pub years: (i32, i32),
    /// Whether `condition` is a diagnosis to record as a Condition (false for
    /// a reason that is itself a procedure, such as screening).
    pub diagnosis: bool,
}

/// Years without a restriction on hospital episodes.
const ANY_YEAR: (i32, i32) = (1900, 2100);

pub(crate) const HOSPITAL_EPISODES: &[HospitalEpisode] = &[
    HospitalEpisode {
        condition: ("22298006", "Myocardial infarction"),
        text: "Hartinfarct",
        age_min: 40,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 3,
        emergency: true,
        stay_days: (3, 7),
        specialist: &ROLE_CARDIOLOGIST,
        procedures: &[
            ("29303009", "Electrocardiographic procedure"),
            ("415070008", "Percutaneous coronary intervention"),
        ],
        panels: &[&PANEL_CBC, &PANEL_RENAL],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("230690007", "Cerebrovascular accident"),
        text: "Herseninfarct (CVA)",
        age_min: 50,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 3,
        emergency: true,
        stay_days: (5, 14),
        specialist: &ROLE_NEUROLOGIST,
        procedures: &[("77477000", "Computerized axial tomography")],
        panels: &[&PANEL_CBC, &PANEL_RENAL],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("233604007", "Pneumonia"),
        text: "Pneumonie",
        age_min: 0,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 4,
        emergency: true,
        stay_days: (3, 7),
        specialist: &ROLE_PULMONOLOGIST,
        procedures: &[("399208008", "Plain X-ray of chest")],
        panels: &[&PANEL_CBC, &PANEL_CRP],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("65966004", "Fracture of forearm"),
        text: "Onderarmfractuur",
        age_min: 5,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 4,
        emergency: true,
        stay_days: (0, 0),
        specialist: &ROLE_SURGEON,
        procedures: &[("168537006", "Plain radiography")],
        panels: &[],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("71620000", "Fracture of femur"),
        text: "Heupfractuur",
        age_min: 70,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 3,
        emergency: true,
        stay_days: (5, 10),
        specialist: &ROLE_ORTHOPAEDIC_SURGEON,
        procedures: &[
            ("168537006", "Plain radiography"),
            ("52734007", "Total replacement of hip"),
        ],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("62106007", "Concussion injury of brain"),
        text: "Hersenschudding",
        age_min: 5,
        age_max: 85,
        sex: SexFilter::Any,
        weight: 2,
        emergency: true,
        stay_days: (0, 1),
        specialist: &ROLE_NEUROLOGIST,
        procedures: &[("77477000", "Computerized axial tomography")],
        panels: &[],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("74400008", "Appendicitis"),
        text: "Appendicitis",
        age_min: 5,
        age_max: 60,
        sex: SexFilter::Any,
        weight: 3,
        emergency: true,
        stay_days: (2, 4),
        specialist: &ROLE_SURGEON,
        procedures: &[("80146002", "Appendectomy")],
        panels: &[&PANEL_CBC, &PANEL_CRP],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("235919008", "Cholelithiasis"),
        text: "Galstenen",
        age_min: 30,
        age_max: 85,
        sex: SexFilter::Any,
        weight: 3,
        emergency: false,
        stay_days: (1, 2),
        specialist: &ROLE_SURGEON,
        procedures: &[("45595009", "Laparoscopic cholecystectomy")],
        panels: &[&PANEL_LIVER],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("239873007", "Osteoarthritis of knee"),
        text: "Knieartrose",
        age_min: 55,
        age_max: 90,
        sex: SexFilter::Any,
        weight: 3,
        emergency: false,
        stay_days: (2, 4),
        specialist: &ROLE_ORTHOPAEDIC_SURGEON,
        procedures: &[("609588000", "Total knee replacement")],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("239872002", "Osteoarthritis of hip"),
        text: "Heupartrose",
        age_min: 55,
        age_max: 90,
        sex: SexFilter::Any,
        weight: 3,
        emergency: false,
        stay_days: (2, 4),
        specialist: &ROLE_ORTHOPAEDIC_SURGEON,
        procedures: &[("52734007", "Total replacement of hip")],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("29857009", "Chest pain"),
        text: "Pijn op de borst",
        age_min: 30,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 4,
        emergency: true,
        stay_days: (0, 0),
        specialist: &ROLE_CARDIOLOGIST,
        procedures: &[("29303009", "Electrocardiographic procedure")],
        panels: &[&PANEL_RENAL],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("275978004", "Screening for malignant neoplasm of colon"),
        text: "Bevolkingsonderzoek darmkanker, positieve FIT",
        age_min: 55,
        age_max: 76,
        sex: SexFilter::Any,
        weight: 3,
        emergency: false,
        stay_days: (0, 0),
        specialist: &ROLE_INTERNIST,
        procedures: &[("73761001", "Colonoscopy")],
        panels: &[],
        years: (2014, 2100),
        diagnosis: false,
    },
    HospitalEpisode {
        condition: ("267036007", "Dyspnea"),
        text: "Kortademigheid, analyse",
        age_min: 40,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 2,
        emergency: false,
        stay_days: (0, 0),
        specialist: &ROLE_PULMONOLOGIST,
        procedures: &[
            ("127783003", "Spirometry"),
            ("399208008", "Plain X-ray of chest"),
        ],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("84114007", "Heart failure"),
        text: "Hartfalen, decompensatie",
        age_min: 65,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 2,
        emergency: true,
        stay_days: (4, 10),
        specialist: &ROLE_CARDIOLOGIST,
        procedures: &[
            ("399208008", "Plain X-ray of chest"),
            ("29303009", "Electrocardiographic procedure"),
        ],
        panels: &[&PANEL_RENAL, &PANEL_NT_PRO_BNP],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("840539006", "COVID-19"),
        text: "COVID-19",
        age_min: 50,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 2,
        emergency: true,
        stay_days: (4, 12),
        specialist: &ROLE_PULMONOLOGIST,
        procedures: &[("399208008", "Plain X-ray of chest")],
        panels: &[&PANEL_CBC, &PANEL_CRP],
        years: (2020, 2022),
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("49436004", "Atrial fibrillation"),
        text: "Atriumfibrilleren",
        age_min: 50,
        age_max: 120,
        sex: SexFilter::Any,
        weight: 2,
        emergency: true,
        stay_days: (0, 0),
        specialist: &ROLE_CARDIOLOGIST,
        procedures: &[("29303009", "Electrocardiographic procedure")],
        panels: &[&PANEL_RENAL],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("77386006", "Pregnancy"),
        text: "Zwangerschap, bevalling",
        age_min: 20,
        age_max: 42,
        sex: SexFilter::Female,
        weight: 4,
        emergency: false,
        stay_days: (1, 3),
        specialist: &ROLE_GYNAECOLOGIST,
        procedures: &[],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
    HospitalEpisode {
        condition: ("77386006", "Pregnancy"),
        text: "Zwangerschap, sectio caesarea",
        age_min: 20,
        age_max: 42,
        sex: SexFilter::Female,
        weight: 1,
        emergency: false,
        stay_days: (3, 5),
        specialist: &ROLE_GYNAECOLOGIST,
        procedures: &[("11466000", "Cesarean section")],
        panels: &[&PANEL_CBC],
        years: ANY_YEAR,
        diagnosis: true,
    },
];

/// What an allergy is to.
#[derive(Clone, Copy)]
pub(crate) enum AllergyCategory {
    Medication,
    Food,
    Environment,
}

impl AllergyCategory {
    /// The FHIR `AllergyIntolerance.category` code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            AllergyCategory::Medication => "medication",
            AllergyCategory::Food => "food",
            AllergyCategory::Environment => "environment",
        }
    }
}

pub(crate) struct Allergy {
    pub substance: Snomed,
    pub text: &'static str,
    pub category: AllergyCategory,
    pub reaction: Snomed,
    pub weight: u32,
}

#[rustfmt::skip]
pub(crate) const ALLERGIES: &[Allergy] = &[
    Allergy { substance: ("764146007", "Penicillin"), text: "Penicilline", category: AllergyCategory::Medication, reaction: ("126485001", "Urticaria"), weight: 6 },
    Allergy { substance: ("372687004", "Amoxicillin"), text: "Amoxicilline", category: AllergyCategory::Medication, reaction: ("271807003", "Eruption of skin"), weight: 3 },
    Allergy { substance: ("387406002", "Sulfamethoxazole"), text: "Sulfamethoxazol", category: AllergyCategory::Medication, reaction: ("271807003", "Eruption of skin"), weight: 2 },
    Allergy { substance: ("387207008", "Ibuprofen"), text: "Ibuprofen", category: AllergyCategory::Medication, reaction: ("126485001", "Urticaria"), weight: 2 },
    Allergy { substance: ("387458008", "Aspirin"), text: "Acetylsalicylzuur", category: AllergyCategory::Medication, reaction: ("267036007", "Dyspnea"), weight: 1 },
    Allergy { substance: ("256349002", "Peanut"), text: "Pinda", category: AllergyCategory::Food, reaction: ("39579001", "Anaphylaxis"), weight: 3 },
    Allergy { substance: ("227493005", "Cashew nut"), text: "Cashewnoot", category: AllergyCategory::Food, reaction: ("39579001", "Anaphylaxis"), weight: 1 },
    Allergy { substance: ("3718001", "Cow's milk"), text: "Koemelk", category: AllergyCategory::Food, reaction: ("62315008", "Diarrhea"), weight: 2 },
    Allergy { substance: ("102263004", "Eggs"), text: "Kippenei", category: AllergyCategory::Food, reaction: ("126485001", "Urticaria"), weight: 1 },
    Allergy { substance: ("288328004", "Bee venom"), text: "Bijengif", category: AllergyCategory::Environment, reaction: ("39579001", "Anaphylaxis"), weight: 1 },
    Allergy { substance: ("111088007", "Latex"), text: "Latex", category: AllergyCategory::Environment, reaction: ("126485001", "Urticaria"), weight: 1 },
    Allergy { substance: ("256277009", "Grass pollen"), text: "Graspollen", category: AllergyCategory::Environment, reaction: ("61582004", "Allergic rhinitis"), weight: 5 },
    Allergy { substance: ("260147004", "House dust mite"), text: "Huisstofmijt", category: AllergyCategory::Environment, reaction: ("61582004", "Allergic rhinitis"), weight: 4 },
    Allergy { substance: ("264287008", "Animal dander"), text: "Huidschilfers van dieren", category: AllergyCategory::Environment, reaction: ("61582004", "Allergic rhinitis"), weight: 2 },
];

/// A vaccine, coded with ATC as in the Dutch vaccination register.
pub(crate) struct Vaccine {
    pub atc: &'static str,
    pub atc_name: &'static str,
    pub text: &'static str,
}

pub(crate) const VACCINE_HEXAVALENT: Vaccine = Vaccine {
    atc: "J07CA09",
    atc_name: "diphtheria-hemophilus influenzae B-pertussis-poliomyelitis-tetanus-hepatitis B",
    text: "DKTP-Hib-HepB",
};
pub(crate) const VACCINE_PNEUMOCOCCAL_CONJUGATE: Vaccine = Vaccine {
    atc: "J07AL52",
    atc_name: "pneumococcus purified polysaccharides antigen and haemophilus influenzae, conjugated",
    text: "Pneumokokken (PCV10)",
};
pub(crate) const VACCINE_MMR: Vaccine = Vaccine {
    atc: "J07BD52",
    atc_name: "measles, combinations with mumps and rubella, live attenuated",
    text: "BMR",
};
pub(crate) const VACCINE_MEN_ACWY: Vaccine = Vaccine {
    atc: "J07AH08",
    atc_name: "meningococcus A, C, Y, W-135, tetravalent purified polysaccharides antigen conjugated",
    text: "MenACWY",
};
pub(crate) const VACCINE_MEN_C: Vaccine = Vaccine {
    atc: "J07AH07",
    atc_name: "meningococcus C, purified polysaccharides antigen conjugated",
    text: "MenC",
};
pub(crate) const VACCINE_DTAP_IPV: Vaccine = Vaccine {
    atc: "J07CA02",
    atc_name: "diphtheria-pertussis-poliomyelitis-tetanus",
    text: "DKTP",
};
pub(crate) const VACCINE_DT_IPV: Vaccine = Vaccine {
    atc: "J07CA01",
    atc_name: "diphtheria-poliomyelitis-tetanus",
    text: "DTP",
};
pub(crate) const VACCINE_HPV: Vaccine = Vaccine {
    atc: "J07BM02",
    atc_name: "papillomavirus (human types 16, 18)",
    text: "HPV",
};
pub(crate) const VACCINE_INFLUENZA: Vaccine = Vaccine {
    atc: "J07BB02",
    atc_name: "influenza, inactivated, split virus or surface antigen",
    text: "Griepvaccin",
};
pub(crate) const VACCINE_COVID: Vaccine = Vaccine {
    atc: "J07BN01",
    atc_name: "covid-19, RNA-based vaccine",
    text: "COVID-19 mRNA-vaccin",
};
pub(crate) const VACCINE_PNEUMOCOCCAL_POLYSACCHARIDE: Vaccine = Vaccine {
    atc: "J07AL01",
    atc_name: "pneumococcus, purified polysaccharides antigen",
    text: "Pneumokokken (PPV23)",
};
pub(crate) const VACCINE_ZOSTER: Vaccine = Vaccine {
    atc: "J07BK03",
    atc_name: "zoster, purified antigen",
    text: "Gordelroosvaccin",
};

/// When a dose of the national immunisation programme (Rijksvaccinatieprogramma) is due.
pub(crate) struct ScheduledDose {
    pub age_days: i32,
    pub vaccine: &'static Vaccine,
    pub dose: u32,
    /// Only for girls (HPV before boys were included in 2022).
    pub girls_only: bool,
}

const fn dose(age_days: i32, vaccine: &'static Vaccine, dose: u32) -> ScheduledDose {
    ScheduledDose {
        age_days,
        vaccine,
        dose,
        girls_only: false,
    }
}

/// The childhood programme; MenC is swapped for MenACWY after 2018 in code.
pub(crate) const CHILDHOOD_SCHEDULE: &[ScheduledDose] = &[
    dose(91, &VACCINE_HEXAVALENT, 1),
    dose(91, &VACCINE_PNEUMOCOCCAL_CONJUGATE, 1),
    dose(152, &VACCINE_HEXAVALENT, 2),
    dose(152, &VACCINE_PNEUMOCOCCAL_CONJUGATE, 2),
    dose(335, &VACCINE_HEXAVALENT, 3),
    dose(335, &VACCINE_PNEUMOCOCCAL_CONJUGATE, 3),
    dose(426, &VACCINE_MMR, 1),
    dose(426, &VACCINE_MEN_C, 1),
    dose(4 * 365 + 30, &VACCINE_DTAP_IPV, 4),
    dose(9 * 365 + 60, &VACCINE_DT_IPV, 5),
    dose(9 * 365 + 60, &VACCINE_MMR, 2),
    ScheduledDose {
        girls_only: true,
        ..dose(12 * 365 + 90, &VACCINE_HPV, 1)
    },
    ScheduledDose {
        girls_only: true,
        ..dose(12 * 365 + 270, &VACCINE_HPV, 2)
    },
    dose(14 * 365 + 100, &VACCINE_MEN_ACWY, 2),
];

/// Encounter types (SNOMED CT procedures).
pub(crate) const ENCOUNTER_SYMPTOM: Snomed = ("185345009", "Encounter for symptom");
pub(crate) const ENCOUNTER_FOLLOW_UP: Snomed = ("390906007", "Follow-up encounter");
pub(crate) const ENCOUNTER_HOME_VISIT: Snomed = ("439708006", "Home visit");
pub(crate) const ENCOUNTER_EMERGENCY: Snomed = ("50849002", "Emergency room admission");
pub(crate) const ENCOUNTER_ADMISSION: Snomed = ("32485007", "Hospital admission");
pub(crate) const ENCOUNTER_CONSULTATION: Snomed = ("11429006", "Consultation");
