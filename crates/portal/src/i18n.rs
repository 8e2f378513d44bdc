//! The portal's texts: every text of the interface in Dutch (the default) and English, side
//! by side, and the cookie that keeps the language chosen (`zorgnet_web::lang` chooses it).
//! What it is not: a general translation system (two fixed tables, checked at compile time).

/// The cookie that keeps the language chosen.
pub(crate) const LANG_COOKIE: &str = "taal";

zorgnet_web::texts! {
    switch_label: "English", "Nederlands";
    switch_hint: "Read this page in English", "Lees deze pagina in het Nederlands";
    site_name: "Mijn Gezondheidsoverzicht", "My Health Overview";
    skip_link: "Naar de inhoud", "Skip to content";
    nav_label: "Hoofdmenu", "Main menu";
    nav_overview: "Mijn overzicht", "My overview";
    nav_access_log: "Wie keek naar mijn gegevens", "Who looked at my data";
    nav_choices: "Mijn keuzes", "My choices";
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
    col_report: "Verdacht?", "Suspicious?";
    report_button: "Meld als verdacht", "Report as suspicious";
    report_reason_label: "Reden (niet verplicht)", "Reason (optional)";
    report_confirmed: "Uw melding is doorgegeven aan", "Your report has been passed on to";
    report_refused: "Deze logregel kan niet door u worden gemeld: alleen toegang tot uw eigen gegevens kunt u melden.", "You cannot report this log record: you can only report access to your own data.";
    report_invalid: "De melding is niet doorgegeven: de reden is te lang of ongeldig.", "The report was not passed on: the reason is too long or invalid.";
    report_unavailable: "De melding kon nu niet worden doorgegeven. Probeer het later opnieuw.", "The report could not be passed on right now. Please try again later.";
    choices_title: "Mijn keuzes over het delen van mijn gegevens", "My choices about sharing my data";
    choices_intro: "Zorgverleners kunnen via het netwerk gegevens over u bij elkaar opvragen als dat nodig is voor uw zorg. Hier bepaalt u wat wel en niet gedeeld wordt. Uw keuzes staan in het toestemmingsregister van het netwerk, niet in dit portaal.",
        "Through the network, care providers can ask each other for data about you when your care needs it. Here you decide what is shared and what is not. Your choices are kept in the network's consent register, not in this portal.";
    choices_unavailable: "Uw keuzes over het delen van uw gegevens kunnen hier niet worden beheerd: dit portaal is niet verbonden met het toestemmingsregister. Uw zorgverlener kan uw keuze voor u vastleggen.",
        "Your choices about sharing your data cannot be managed here: this portal is not connected to the consent register. Your care provider can record your choice for you.";
    choices_current: "Uw keuzes nu", "Your choices now";
    choices_none: "Er zijn geen keuzes vastgelegd. Zonder keuzes zien zorgverleners uw gegevens alleen als zij u behandelen, of in een noodsituatie.",
        "No choices have been recorded. Without choices, care providers see your data only when they treat you, or in an emergency.";
    col_choice: "Keuze", "Choice";
    col_since: "Sinds", "Since";
    col_recorded_by: "Vastgelegd door", "Recorded by";
    col_revoked_at: "Ingetrokken op", "Revoked on";
    col_revoked_by: "Ingetrokken door", "Revoked by";
    choices_revoke: "Intrekken", "Revoke";
    choices_revoked: "Ingetrokken keuzes", "Revoked choices";
    choices_times: "Tijden zijn Nederlandse tijd.", "Times are Dutch time.";
    choices_new: "Een keuze vastleggen", "Record a choice";
    choices_no_wins: "Een nee gaat altijd voor: bezwaar tegen delen geldt ook waar u ergens anders toestemming voor gaf.",
        "A no always comes first: an objection to sharing holds even where you gave consent elsewhere.";
    form_all_legend: "Niets delen", "Share nothing";
    form_all_hint: "Zorgverleners kunnen dan via het netwerk geen gegevens over u opvragen, ook niet in een noodsituatie. Wat een zorgverlener zelf over u vastlegt, blijft die zorgverlener zien.",
        "Care providers then cannot ask for any data about you through the network, not even in an emergency. What a care provider records about you, that care provider still sees.";
    form_all_button: "Ik deel niets", "I share nothing";
    form_category_legend: "Over één onderwerp niets delen", "Share nothing about one topic";
    form_category_label: "Onderwerp", "Topic";
    form_category_button: "Dit onderwerp niet delen", "Do not share this topic";
    form_deny_legend: "Niets uitwisselen met één zorgverlener", "Exchange nothing with one care provider";
    form_deny_hint: "Deze zorgverlener mag uw gegevens bij anderen dan niet inzien, en wat hij over u vastlegt wordt niet met anderen gedeeld.",
        "This care provider then may not see your data held by others, and what it records about you is not shared with others.";
    form_deny_button: "Niet uitwisselen met deze zorgverlener", "Do not exchange with this care provider";
    form_permit_legend: "Toestemming geven aan één zorgverlener", "Give one care provider consent";
    form_permit_hint: "Deze zorgverlener mag uw gegevens dan inzien, ook als hij u (nog) niet behandelt.",
        "This care provider may then see your data, even when it does not (yet) treat you.";
    form_permit_button: "Toestemming geven", "Give consent";
    form_organisation_label: "Zorgverlener", "Care provider";
    form_which_label: "Welke gegevens", "Which data";
    form_all_categories: "Alle onderwerpen", "All topics";
    form_no_organisations: "Dit portaal kent geen zorgverleners om uit te kiezen.", "This portal knows no care providers to choose from.";
    form_emergency_legend: "Geen toegang in een noodsituatie", "No access in an emergency";
    form_emergency_hint: "In een noodsituatie mag een zorgverlener die u niet behandelt uw gegevens inzien (dat wordt apart gelogd). Met deze keuze mag dat niet meer. Dat kan gevolgen hebben voor uw zorg in een noodsituatie.",
        "In an emergency, a care provider who does not treat you may see your data (logged separately). With this choice that is no longer allowed. This may affect your care in an emergency.";
    form_emergency_button: "Geen noodtoegang", "No emergency access";
    confirm_recorded: "Uw keuze is vastgelegd:", "Your choice has been recorded:";
    confirm_revoked: "Uw keuze is ingetrokken:", "Your choice has been revoked:";
    choices_effect: "Dit geldt meteen bij de verwijsindex, waar zorgverleners opzoeken wie gegevens over u heeft. Een zorgverlener die gegevens over u bewaart, kan een eerdere beslissing nog even gebruiken: binnen een minuut geldt uw keuze ook daar.",
        "This applies at once at the referral index, where care providers look up who holds data about you. A care provider that keeps data about you may still use an earlier decision for a moment: within a minute your choice applies there too.";
    choice_all: "U deelt geen gegevens via het netwerk, ook niet in een noodsituatie", "You share no data through the network, not even in an emergency";
    choice_category: "U deelt geen gegevens over {category}", "You share no data about {category}";
    choice_about: " over {category}", " about {category}";
    choice_deny: "{organisation} mag uw gegevens{about} niet inzien en niet delen", "{organisation} may not see or share your data{about}";
    choice_permit: "{organisation} mag uw gegevens{about} inzien, ook zonder behandelrelatie", "{organisation} may see your data{about}, even without a treatment relation";
    choice_emergency: "Geen noodtoegang: wie u niet behandelt en geen toestemming van u heeft, mag uw gegevens ook in een noodsituatie niet inzien",
        "No emergency access: whoever does not treat you and has no consent from you may not see your data, even in an emergency";
    choice_unknown: "Een keuze van een soort die dit portaal niet kent", "A choice of a kind this portal does not know";
    choice_from: "vanaf", "from";
    choice_until: "tot", "until";
    organisation_with_ura: "de zorgverlener met URA-nummer", "the care provider with URA number";
    by_provider: "Uw zorgverlener", "Your care provider";
    by_other_provider: "Een zorgverlener met URA-nummer", "A care provider with URA number";
    by_operator: "De beheerder van het netwerk", "The network's operator";
    cat_patient_summary: "de basisgegevens (samenvatting van uw dossier)", "the patient summary";
    cat_medication: "medicatie", "medication";
    cat_allergies: "allergieën", "allergies";
    cat_lab_results: "laboratoriumuitslagen", "laboratory results";
    cat_imaging: "beeldvorming (röntgenfoto's, scans)", "imaging (X-rays, scans)";
    cat_discharge_report: "ontslagbrieven van het ziekenhuis", "hospital discharge reports";
    cat_nursing_transfer: "verpleegkundige overdrachten", "nursing transfers";
    cat_gp_summary: "de waarneemgegevens van de huisarts", "the GP's summary for out-of-hours care";
    error_register_read: "Uw keuzes kunnen nu niet worden opgehaald bij het toestemmingsregister. Probeer het later opnieuw.",
        "Your choices cannot be fetched from the consent register now. Please try again later.";
    error_register_unreachable: "Het toestemmingsregister is nu niet bereikbaar. Er is niets veranderd; probeer het later opnieuw.",
        "The consent register cannot be reached now. Nothing has changed; please try again later.";
    error_register_refused: "Het toestemmingsregister kon dit nu niet verwerken. Er is niets veranderd; probeer het later opnieuw.",
        "The consent register could not process this now. Nothing has changed; please try again later.";
    error_choice_not_found: "Deze keuze bestaat niet (meer). Er is niets veranderd.", "This choice does not exist (any more). Nothing has changed.";
    error_choice_revoked: "Deze keuze was al ingetrokken.", "This choice had already been revoked.";
    error_choice_invalid: "Deze keuze is niet geldig: kies een onderwerp of zorgverlener uit de lijst. Er is niets veranderd.",
        "This choice is not valid: pick a topic or care provider from the list. Nothing has changed.";
    back_to_choices: "Terug naar mijn keuzes", "Back to my choices";
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
