//! The viewer's texts: every text of the interface in Dutch (the default) and English, side
//! by side, and the cookie that keeps the language chosen (`zorgnet_web::lang` chooses it).
//! What it is not: a general translation system (two fixed tables, checked at compile time).

/// The cookie that keeps the language chosen.
pub(crate) const LANG_COOKIE: &str = "zorgnet_viewer_taal";

zorgnet_web::texts! {
    switch_label: "English", "Nederlands";
    switch_hint: "Read this page in English", "Lees deze pagina in het Nederlands";
    site_name: "Zorgverlenersinzage", "Professional's viewer";
    skip_link: "Naar de inhoud", "Skip to content";
    nav_label: "Hoofdmenu", "Main menu";
    nav_search: "Patiënt zoeken", "Find a patient";
    nav_patient: "Huidige patiënt", "Current patient";
    nav_emergency: "Noodtoegang", "Emergency access";
    logout: "Uitloggen", "Log out";
    logged_in_as: "Ingelogd als", "Logged in as";
    role_label: "Rol", "Role";
    footer: "Gegevens blijven bij de bronnen: deze inzage haalt ze op via het knooppunt van uw organisatie en bewaart ze niet. Elke inzage wordt vastgelegd.",
        "Data stays at its sources: this viewer fetches it through your organisation's node and does not keep it. Every access is logged.";
    start_title: "Zorgverlenersinzage", "Professional's viewer";
    start_intro: "Kies uw organisatie en log in met de inlogdienst van uw organisatie.",
        "Choose your organisation and log in with your organisation's login service.";
    organisations: "Organisaties", "Organisations";
    login_at: "Inloggen bij", "Log in at";
    search_title: "Patiënt zoeken", "Find a patient";
    search_intro: "Zoek een patiënt op burgerservicenummer (BSN) of, voor wie geen BSN heeft (Caribisch Nederland), op zorgverificatienummer. Het nummer wordt niet in de adresbalk of het logboek gezet.",
        "Find a patient by citizen service number (BSN) or, for someone without a BSN (Caribbean Netherlands), by zorgverificatienummer (care verification number). The number is not put in the address bar or the log.";
    bsn_label: "BSN of zorgverificatienummer", "BSN or zorgverificatienummer";
    bsn_hint: "Een BSN heeft negen cijfers (bijvoorbeeld 123456782), een zorgverificatienummer zestien, beginnend met 9.",
        "A BSN has nine digits (for example 123456782), a zorgverificatienummer sixteen, starting with 9.";
    bsn_invalid: "Dit is geen geldig nummer: een BSN heeft negen cijfers en doorstaat de elfproef, een zorgverificatienummer heeft zestien cijfers met een geldig controlegetal.",
        "This is not a valid number: a BSN is nine digits that pass the 11-check, a zorgverificatienummer sixteen digits with valid check digits.";
    role_choice: "U werkt in de rol", "You act in the role";
    search_button: "Zoeken", "Find";
    patient_title: "Patiëntgegevens", "Patient data";
    patient_bsn: "BSN", "BSN";
    patient_zvn: "Zorgverificatienummer", "Zorgverificatienummer";
    relation_title: "Behandelrelatie", "Treatment relation";
    relation_present: "Uw organisatie heeft een behandelrelatie met deze patiënt.",
        "Your organisation has a treatment relation with this patient.";
    relation_absent: "Uw organisatie heeft nog geen behandelrelatie met deze patiënt. Zonder behandelrelatie (of toestemming) geven andere organisaties geen gegevens.",
        "Your organisation has no treatment relation with this patient yet. Without one (or consent) other organisations share no data.";
    relation_unavailable: "De behandelrelaties konden niet worden opgevraagd bij het landelijk knooppunt.",
        "The treatment relations could not be asked of the hub.";
    relation_kind_label: "Soort behandelrelatie", "Kind of treatment relation";
    relation_register: "Behandelrelatie vastleggen", "Register treatment relation";
    relation_refused: "Het landelijk knooppunt heeft de behandelrelatie niet vastgelegd.",
        "The hub did not register the treatment relation.";
    kind_referral: "Verwijzing", "Referral";
    kind_consultation: "Consult", "Consultation";
    kind_co_treatment: "Medebehandeling", "Co-treatment";
    kind_own_patient: "Eigen patiënt", "Own patient";
    col_status: "Status", "Status";
    col_valid_from: "Geldig vanaf", "Valid from";
    col_valid_until: "Geldig tot", "Valid until";
    sources_title: "Bronnen", "Sources";
    sources_answered: "Gegevens ontvangen van", "Data received from";
    sources_none: "Geen enkele bron gaf gegevens.", "No source gave data.";
    silent_title: "Niet alle bronnen gaven antwoord", "Not every source answered";
    silent_intro: "Gegevens van deze bronnen ontbreken:", "Data from these sources is missing:";
    refused_title: "Niet alles is gedeeld", "Not everything was shared";
    refused_role: "niet beschikbaar voor uw rol", "not available to your role";
    refused_policy: "niet gedeeld: geen toestemming of behandelrelatie", "not shared: no consent or treatment relation";
    withheld_title: "Niet beschikbaar voor uw rol", "Not available to your role";
    withheld_intro: "Deze soorten gegevens van andere organisaties zijn niet beschikbaar voor uw rol:",
        "These kinds of data from other organisations are not available to your role:";
    not_available_role: "Niet beschikbaar voor uw rol (bij andere organisaties).", "Not available to your role (at other organisations).";
    partly_not_available: "Gedeeltelijk niet beschikbaar voor uw rol (bij andere organisaties):",
        "Partly not available to your role (at other organisations):";
    fetch_refused: "Het knooppunt van uw organisatie weigerde de gegevens op te halen:",
        "Your organisation's node refused to fetch the data:";
    fetch_unavailable: "De gegevens konden nu niet worden opgehaald. Probeer het later opnieuw.",
        "The data could not be fetched now. Please try again later.";
    session_expired: "Uw sessie is verlopen. Log opnieuw in.", "Your session has expired. Please log in again.";
    bgz_title: "Basisgegevensset Zorg", "Basic health data set (BgZ)";
    problems: "Problemen", "Problems";
    allergies: "Allergieën en intoleranties", "Allergies and intolerances";
    alerts: "Alerts", "Alerts";
    lab: "Recente laboratoriumuitslagen", "Recent laboratory results";
    contacts: "Contactgegevens", "Contacts";
    none: "Niets vastgelegd.", "Nothing recorded.";
    col_date: "Datum", "Date";
    col_kind: "Soort", "Kind";
    col_description: "Omschrijving", "Description";
    col_details: "Details", "Details";
    col_source: "Bron", "Source";
    col_test: "Bepaling", "Test";
    col_value: "Uitslag", "Result";
    col_range: "Referentiewaarden", "Reference range";
    timeline: "Tijdlijn", "Timeline";
    timeline_intro: "Alles met een datum, van alle bronnen, het nieuwste eerst.", "Everything with a date, from every source, newest first.";
    medication_overview: "Medicatieoverzicht", "Medication overview";
    medication_intro: "Medicatieverklaringen, voorschriften en verstrekkingen van alle bronnen, samengevoegd per geneesmiddel (ATC-code, andere code of naam).",
        "Statements, prescriptions and dispenses from every source, merged per medicine (ATC code, other code or name).";
    col_medication: "Geneesmiddel", "Medicine";
    col_state: "Gebruik", "Use";
    col_period: "Periode", "Period";
    col_last_dispense: "Laatste verstrekking", "Last dispense";
    col_sources: "Bronnen", "Sources";
    med_current: "Actueel", "Current";
    med_stopped: "Gestopt", "Stopped";
    med_dispensed_only: "Alleen verstrekt", "Dispensed only";
    med_records: "Vastleggingen", "Records";
    criticality: "ernst", "criticality";
    unknown_source: "onbekende bron", "unknown source";
    contacts_unknown: "Uw organisatie kent deze patiënt (nog) niet: contactgegevens en huisarts zijn alleen bekend uit het eigen dossier.",
        "Your organisation does not know this patient (yet): contacts and GP are known from your own record only.";
    patient_name: "Naam", "Name";
    birth_date: "Geboortedatum", "Date of birth";
    gp_label: "Huisarts", "General practitioner";
    managing_org_label: "Beherende organisatie", "Managing organisation";
    contact_people: "Contactpersonen", "Contact persons";
    col_relationship: "Relatie", "Relationship";
    col_name: "Naam", "Name";
    col_telecom: "Bereikbaar via", "Reachable at";
    kind_condition: "Probleem", "Problem";
    kind_statement: "Medicatiegebruik", "Medication use";
    kind_request: "Voorschrift", "Prescription";
    kind_dispense: "Verstrekking", "Dispense";
    kind_administration: "Toediening", "Administration";
    kind_allergy: "Allergie", "Allergy";
    kind_observation: "Meting of uitslag", "Measurement or result";
    kind_report: "Verslag", "Report";
    kind_alert: "Alert", "Alert";
    kind_procedure: "Verrichting", "Procedure";
    kind_immunization: "Vaccinatie", "Vaccination";
    kind_document: "Document", "Document";
    kind_imaging: "Beeldvorming", "Imaging";
    kind_other: "Overig", "Other";
    cat_patient_summary: "patiëntsamenvatting (problemen, allergieën, medicatiegebruik, alerts, metingen)",
        "patient summary (problems, allergies, medication use, alerts, measurements)";
    cat_medication: "medicatie", "medication";
    cat_allergies: "allergieën", "allergies";
    cat_lab_results: "laboratoriumuitslagen", "laboratory results";
    cat_imaging: "beeldvorming", "imaging";
    cat_discharge_report: "ontslagbrieven", "discharge reports";
    cat_nursing_transfer: "verpleegkundige overdrachten", "nursing transfers";
    cat_gp_summary: "huisartsensamenvattingen", "GP summaries";
    emergency_title: "Noodtoegang", "Emergency access";
    emergency_intro: "Gebruik noodtoegang alleen als de patiënt acuut zorg nodig heeft en toestemming niet kan worden gevraagd. U ziet dan ook gegevens zonder behandelrelatie. De reden wordt vastgelegd en de patiënt kan zien dat u keek.",
        "Use emergency access only when the patient needs urgent care and consent cannot be asked. You will then see data without a treatment relation. The reason is logged and the patient can see that you looked.";
    emergency_reason_label: "Reden van de noodtoegang (verplicht)", "Reason for the emergency access (required)";
    emergency_reason_hint: "Bijvoorbeeld: bewusteloos binnengebracht op de SEH.", "For example: brought in unconscious at the emergency department.";
    emergency_button: "Noodtoegang gebruiken", "Use emergency access";
    emergency_reason_required: "Vul de reden van de noodtoegang in.", "Fill in the reason for the emergency access.";
    emergency_reason_too_long: "De reden is te lang.", "The reason is too long.";
    emergency_role_refused: "Uw rol mag geen noodtoegang gebruiken.", "Your role may not use emergency access.";
    emergency_banner: "NOODTOEGANG — deze inzage is gedaan zonder behandelrelatie en is vastgelegd met uw reden.",
        "EMERGENCY ACCESS — this access was made without a treatment relation and is logged with your reason.";
    emergency_reason_shown: "Opgegeven reden", "Reason given";
    current_medication: "Actuele medicatie", "Current medication";
    error_title: "Er ging iets mis", "Something went wrong";
    error_not_found: "Deze pagina bestaat niet.", "This page does not exist.";
    error_login: "Inloggen is niet gelukt. Probeer het opnieuw.", "Logging in failed. Please try again.";
    error_provider: "De inlogdienst is nu niet bereikbaar. Probeer het later opnieuw.",
        "The login service cannot be reached now. Please try again later.";
    error_hub: "Het landelijk knooppunt is nu niet bereikbaar. Probeer het later opnieuw.",
        "The hub cannot be reached now. Please try again later.";
    error_no_role: "U heeft geen rol bij deze organisatie in het zorgverlenersregister. Inzage is niet mogelijk.",
        "You hold no role at this organisation in the professional register. You cannot use the viewer here.";
    error_other_org: "Deze pagina hoort bij een andere organisatie dan die waar u bent ingelogd.",
        "This page belongs to another organisation than the one you logged in at.";
    error_busy: "Het is nu te druk. Probeer het over enkele minuten opnieuw.", "It is too busy now. Please try again in a few minutes.";
    error_form: "Het formulier is verlopen. Probeer het opnieuw.", "The form has expired. Please try again.";
    error_bad_request: "Dit verzoek is niet geldig.", "This request is not valid.";
    error_internal: "Er ging iets mis aan onze kant. Probeer het later opnieuw.", "Something went wrong on our side. Please try again later.";
    to_start: "Naar de startpagina", "To the start page";
}
