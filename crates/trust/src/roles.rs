//! What a professional's UZI role lets them see: which data categories, and whether they
//! may ask for an emergency (break-the-glass) read. One table, for every source.
//!
//! A UZI role code (the UZI register's role code list, code system
//! `urn:oid:2.16.840.1.113883.2.4.15.111`) is `PP.SSS`: a profession `PP` (the Wet BIG
//! profession) and a specialty `SSS` (`000` for none). Examples: `01.015` huisarts,
//! `01.016` and `01.018` medical specialists, `02.000` tandarts, `17.000` apotheker,
//! `30.000` verpleegkundige. The rule is per profession, following SYSTEM.md
//! ("Authorisation", rule 3):
//!
//! | profession | code | may see | emergency |
//! |---|---|---|---|
//! | physician (arts: huisarts, medical specialists, emergency physicians) | `01` | every category | yes |
//! | dentist (tandarts) | `02` | patient summary, medication, allergies | no |
//! | pharmacist (apotheker) | `17` | medication, allergies, lab results (for dosing) | no |
//! | nurse (verpleegkundige, ambulance nurses included) | `30` | patient summary, medication, allergies, lab results, nursing transfer | yes |
//! | any other profession | | nothing | no |
//!
//! The role list does not tell an emergency physician from another specialist, nor an
//! ambulance nurse from another nurse, so emergency reads are open to every physician and
//! nurse; the break-the-glass reason and the audit log say why each one happened.
//!
//! What it is not: proof that someone holds a role (the hub checks a token's role against
//! its professional register before issuing the token), the consent policy (opt-outs and
//! the basis of a read are the consent register's), or a mapping of resources to
//! categories (that is `zorgnet_fhir::categories`; categories are named here by their wire
//! codes so this crate needs no FHIR knowledge).

/// A professional's UZI role, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Role {
    profession: Profession,
}

/// The professions the network's rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profession {
    /// `01`: arts (huisarts `01.015`, medical specialists such as `01.016`, `01.018`).
    Physician,
    /// `02`: tandarts.
    Dentist,
    /// `17`: apotheker.
    Pharmacist,
    /// `30`: verpleegkundige.
    Nurse,
    /// Any other profession of the role list (verloskundige `03`, fysiotherapeut `04`, …):
    /// sees nothing of other organisations' patients.
    Other,
}

/// The data-category codes a physician may see: all of them.
const PHYSICIAN_CATEGORIES: [&str; 8] = [
    "patient-summary",
    "medication",
    "allergies",
    "lab-results",
    "imaging",
    "discharge-report",
    "nursing-transfer",
    "gp-summary",
];
const DENTIST_CATEGORIES: [&str; 3] = ["patient-summary", "medication", "allergies"];
const PHARMACIST_CATEGORIES: [&str; 3] = ["medication", "allergies", "lab-results"];
const NURSE_CATEGORIES: [&str; 5] = [
    "patient-summary",
    "medication",
    "allergies",
    "lab-results",
    "nursing-transfer",
];

impl Role {
    /// The role of a UZI role code (`01.015`); `None` when `code` does not have the shape
    /// of one ([`crate::is_role_code`]).
    pub fn parse(code: &str) -> Option<Role> {
        if !crate::is_role_code(code) {
            return None;
        }
        let profession = match &code[..2] {
            "01" => Profession::Physician,
            "02" => Profession::Dentist,
            "17" => Profession::Pharmacist,
            "30" => Profession::Nurse,
            _ => Profession::Other,
        };
        Some(Role { profession })
    }

    /// The role's profession.
    pub fn profession(self) -> Profession {
        self.profession
    }

    /// The data categories (by wire code, e.g. `lab-results`) this role may see.
    pub fn categories(self) -> &'static [&'static str] {
        match self.profession {
            Profession::Physician => &PHYSICIAN_CATEGORIES,
            Profession::Dentist => &DENTIST_CATEGORIES,
            Profession::Pharmacist => &PHARMACIST_CATEGORIES,
            Profession::Nurse => &NURSE_CATEGORIES,
            Profession::Other => &[],
        }
    }

    /// Whether this role may see the category with wire code `category`; an unknown code is
    /// never seen.
    pub fn may_see(self, category: &str) -> bool {
        self.categories().contains(&category)
    }

    /// Whether this role may ask for an emergency (break-the-glass) read.
    pub fn may_ask_emergency(self) -> bool {
        matches!(self.profession, Profession::Physician | Profession::Nurse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profession_sees_its_categories_and_no_other() {
        let role = |code| Role::parse(code).unwrap();
        for category in PHYSICIAN_CATEGORIES {
            assert!(role("01.015").may_see(category), "huisarts: {category}");
            assert!(role("01.018").may_see(category), "specialist: {category}");
        }
        let pharmacist = role("17.000");
        assert!(pharmacist.may_see("medication"));
        assert!(pharmacist.may_see("allergies"));
        assert!(pharmacist.may_see("lab-results"));
        for hidden in [
            "discharge-report",
            "patient-summary",
            "imaging",
            "gp-summary",
            "nursing-transfer",
        ] {
            assert!(!pharmacist.may_see(hidden), "apotheker: {hidden}");
        }
        assert!(role("30.000").may_see("nursing-transfer"));
        assert!(!role("30.000").may_see("discharge-report"));
        assert!(role("02.000").may_see("allergies"));
        assert!(!role("02.000").may_see("lab-results"));
        assert!(role("04.000").categories().is_empty(), "fysiotherapeut");
        assert!(!role("01.015").may_see("curiosity"), "unknown categories");
    }

    #[test]
    fn only_physicians_and_nurses_may_break_the_glass() {
        for code in ["01.015", "01.016", "01.018", "30.000"] {
            assert!(Role::parse(code).unwrap().may_ask_emergency(), "{code}");
        }
        for code in ["02.000", "03.000", "17.000", "04.000", "99.999"] {
            assert!(!Role::parse(code).unwrap().may_ask_emergency(), "{code}");
        }
    }

    #[test]
    fn only_role_codes_parse() {
        assert_eq!(
            Role::parse("17.000").map(Role::profession),
            Some(Profession::Pharmacist)
        );
        for bad in ["", "17", "17.0", "huisarts", "01-015", "01.0150"] {
            assert_eq!(Role::parse(bad), None, "{bad}");
        }
    }
}
