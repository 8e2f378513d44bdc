//! The portal's two languages: Dutch (the default) and English, chosen with `?lang=` (kept in a
//! cookie) and every text of the interface in both, side by side.
//! What it is not: a general translation system (two fixed tables, checked at compile time).

/// A language of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Nl,
    En,
}

/// The cookie that keeps the language chosen.
pub(crate) const LANG_COOKIE: &str = "taal";

impl Lang {
    /// The language a `lang` parameter or cookie value names.
    pub(crate) fn parse(value: &str) -> Option<Lang> {
        match value {
            "nl" => Some(Lang::Nl),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::Nl => "nl",
            Lang::En => "en",
        }
    }

    pub(crate) fn other(self) -> Lang {
        match self {
            Lang::Nl => Lang::En,
            Lang::En => Lang::Nl,
        }
    }

    pub(crate) fn texts(self) -> &'static Texts {
        match self {
            Lang::Nl => &NL,
            Lang::En => &EN,
        }
    }
}

/// Defines [`Texts`] and its Dutch and English tables from `name: "Dutch", "English";`.
macro_rules! texts {
    ($($name:ident: $nl:literal, $en:literal;)*) => {
        /// Every text of the interface in one language.
        pub(crate) struct Texts {
            $(pub(crate) $name: &'static str,)*
        }
        const NL: Texts = Texts { $($name: $nl,)* };
        const EN: Texts = Texts { $($name: $en,)* };
    };
}

texts! {
    switch_label: "English", "Nederlands";
    switch_hint: "Read this page in English", "Lees deze pagina in het Nederlands";
    site_name: "Mijn Gezondheidsoverzicht", "My Health Overview";
    skip_link: "Naar de inhoud", "Skip to content";
    nav_label: "Hoofdmenu", "Main menu";
    nav_overview: "Mijn overzicht", "My overview";
    nav_access_log: "Wie keek naar mijn gegevens", "Who looked at my data";
    nav_print: "Afdrukken", "Print";
    nav_download: "Downloaden (FHIR JSON)", "Download (FHIR JSON)";
    logout: "Uitloggen", "Log out";
    footer: "Uw gegevens blijven bij uw zorgverleners: dit portaal haalt ze op als u erom vraagt en bewaart ze niet.",
        "Your data stays with your care providers: this portal fetches it when you ask and does not keep it.";
    start_title: "Welkom bij Mijn Gezondheidsoverzicht", "Welcome to My Health Overview";
    start_intro: "Zie in één overzicht wat uw zorgverleners over u hebben vastgelegd, en wie uw gegevens heeft bekeken.",
        "See in one overview what your care providers have recorded about you, and who looked at your data.";
    start_login_hint: "U logt in bij de inlogdienst; daarna komt u hier terug.",
        "You log in at the login service; afterwards you come back here.";
    login_button: "Inloggen", "Log in";
    start_logged_in: "U bent ingelogd.", "You are logged in.";
    to_overview: "Naar mijn overzicht", "Go to my overview";
    logged_in_as: "Ingelogd als", "Logged in as";
    overview_title: "Mijn gezondheidsoverzicht", "My health overview";
    overview_intro: "Hieronder staat wat uw zorgverleners over u hebben vastgelegd, met bij elk gegeven de bron en de datum.",
        "Below is what your care providers have recorded about you, each item with its source and date.";
    topics_label: "Onderwerpen", "Topics";
    partial_title: "Dit overzicht is niet compleet", "This overview is not complete";
    partial_intro: "Niet alle zorgverleners gaven antwoord. Gegevens van deze bronnen ontbreken:",
        "Not every care provider answered. Data from these sources is missing:";
    failure_timeout: "antwoordde niet op tijd", "did not answer in time";
    failure_unreachable: "was niet bereikbaar", "could not be reached";
    failure_status: "antwoordde met een fout, HTTP-status", "answered with an error, HTTP status";
    failure_invalid: "gaf een onleesbaar antwoord", "gave an unreadable answer";
    truncated_intro: "Niet alles is getoond (te veel gegevens) van:", "Not everything is shown (too much data) from:";
    no_bsn: "U bent ingelogd zonder burgerservicenummer. Uw gegevens kunnen nog niet worden opgezocht met alleen een zorgverificatienummer.",
        "You logged in without a citizen service number (BSN). Your data cannot yet be looked up with a zorgverificatienummer alone.";
    timeline: "Tijdlijn", "Timeline";
    timeline_intro: "Alles met een datum, het nieuwste eerst.", "Everything with a date, newest first.";
    problems: "Problemen en diagnoses", "Problems and diagnoses";
    medication: "Medicatie", "Medication";
    allergies: "Allergieën en intoleranties", "Allergies and intolerances";
    lab: "Laboratoriumuitslagen", "Laboratory results";
    charts: "Verloop van uitslagen", "Results over time";
    vaccinations: "Vaccinaties", "Vaccinations";
    encounters: "Contacten", "Encounters";
    documents: "Documenten", "Documents";
    col_date: "Datum", "Date";
    col_kind: "Soort", "Kind";
    col_description: "Omschrijving", "Description";
    col_details: "Details", "Details";
    col_source: "Bron", "Source";
    col_test: "Bepaling", "Test";
    col_value: "Uitslag", "Result";
    col_range: "Referentiewaarden", "Reference range";
    none: "Niets vastgelegd.", "Nothing recorded.";
    chart_measurements: "metingen", "measurements";
    chart_from: "van", "from";
    chart_to: "tot en met", "to";
    chart_lowest: "laagste waarde", "lowest value";
    chart_highest: "hoogste waarde", "highest value";
    chart_table: "De waarden als tabel", "The values as a table";
    kind_condition: "Probleem", "Problem";
    kind_medication: "Medicatie", "Medication";
    kind_allergy: "Allergie", "Allergy";
    kind_lab: "Labuitslag", "Lab result";
    kind_observation: "Meting", "Measurement";
    kind_immunization: "Vaccinatie", "Vaccination";
    kind_encounter: "Contact", "Encounter";
    kind_document: "Document", "Document";
    kind_procedure: "Verrichting", "Procedure";
    kind_report: "Verslag", "Report";
    kind_other: "Overig", "Other";
    print_title: "Mijn gezondheidsoverzicht — afdruk", "My health overview — print";
    print_hint: "Gebruik de afdrukfunctie van uw browser om deze pagina af te drukken of als PDF op te slaan.",
        "Use your browser's print function to print this page or save it as a PDF.";
    printed_at: "Opgehaald op", "Fetched on";
    log_title: "Wie keek naar mijn gegevens", "Who looked at my data";
    log_intro: "Elke zorgverlener legt vast wie uw gegevens opvraagt. Hier staan die logboeken samen, het nieuwste eerst.",
        "Every care provider records who asks for your data. Here are those logs together, newest first.";
    log_emergency_note: "Toegang in een noodsituatie (zonder uw eerdere toestemming) is gemarkeerd met het woord NOODTOEGANG.",
        "Access in an emergency (without your prior consent) is marked with the word EMERGENCY.";
    log_empty: "Er is nog niets vastgelegd.", "Nothing has been recorded yet.";
    col_when: "Wanneer", "When";
    col_who: "Wie", "Who";
    col_role: "Rol", "Role";
    col_organisation: "Organisatie", "Organisation";
    col_what: "Wat", "What";
    col_why: "Waarom", "Why";
    col_outcome: "Resultaat", "Outcome";
    col_proof: "Bewijs", "Proof";
    proof_link: "Controleer", "Verify";
    proof_link_hint: "Controleer het bewijs van deze logregel", "Verify the proof of this log record";
    you: "U zelf", "You";
    via_portal: "via dit portaal of een andere app", "through this portal or another app";
    professional: "Zorgverlener", "Professional";
    system: "Systeem van de organisatie", "The organisation's system";
    purpose_treatment: "Behandeling", "Treatment";
    purpose_emergency: "NOODTOEGANG", "EMERGENCY";
    outcome_ok: "Gelukt", "Succeeded";
    outcome_refused: "Geweigerd", "Refused";
    outcome_failed: "Mislukt", "Failed";
    proof_title: "Bewijs van een logregel", "Proof of a log record";
    proof_verified: "Geverifieerd tegen het ondertekende controlepunt van de node.",
        "Verified against the node's signed checkpoint.";
    proof_verified_detail: "De regel staat ongewijzigd in het logboek dat de zorgverlener heeft ondertekend; de handtekening is gecontroleerd met de sleutel van die zorgverlener.",
        "The record is unchanged in the log the care provider signed; the signature was checked with that care provider's key.";
    proof_unsigned: "De regel staat in het logboek van het controlepunt van de node, maar de handtekening van het controlepunt kon niet worden gecontroleerd: de sleutel van deze zorgverlener is onbekend.",
        "The record is in the log of the node's checkpoint, but the checkpoint's signature could not be checked: this care provider's key is unknown.";
    proof_failed: "Het bewijs klopt NIET.", "The proof does NOT hold.";
    proof_unavailable: "Het bewijs kon niet worden opgehaald.", "The proof could not be fetched.";
    proof_record: "De logregel", "The log record";
    proof_checkpoint: "Het controlepunt", "The checkpoint";
    proof_position: "Positie in het logboek", "Position in the log";
    proof_size: "Regels in het controlepunt", "Records in the checkpoint";
    proof_signed: "Ondertekend op", "Signed on";
    back_to_log: "Terug naar wie keek naar mijn gegevens", "Back to who looked at my data";
    error_title: "Er ging iets mis", "Something went wrong";
    error_not_found: "Deze pagina bestaat niet.", "This page does not exist.";
    error_login: "Inloggen is niet gelukt. Probeer het opnieuw.", "Logging in failed. Please try again.";
    error_provider: "De inlogdienst is nu niet bereikbaar. Probeer het later opnieuw.",
        "The login service cannot be reached now. Please try again later.";
    error_busy: "Het is nu te druk. Probeer het over enkele minuten opnieuw.", "It is too busy now. Please try again in a few minutes.";
    error_form: "Het formulier is verlopen. Probeer het opnieuw.", "The form has expired. Please try again.";
    error_bad_request: "Dit verzoek is niet geldig.", "This request is not valid.";
    error_internal: "Er ging iets mis aan onze kant. Probeer het later opnieuw.", "Something went wrong on our side. Please try again later.";
    to_start: "Naar de startpagina", "To the start page";
}
