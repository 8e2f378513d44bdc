//! Asking the care providers' nodes: every [`Source`] in parallel with the citizen's access
//! token, each within the configured timeout; a source that does not answer in time, cannot
//! be reached or answers with an error becomes a [`SourceFailure`] naming it, never an error
//! of the whole page.
//! At each source the citizen's Patients are found by the citizen's identifier, a BSN or a
//! zorgverificatienummer (`Patient?identifier={system}|{value}`, [`CitizenId`]), then their
//! `$everything` is read (or their access log, `AuditEvent?patient=…`), following `next`
//! links that stay at the source, up to a named number of pages.
//! What it is not: a cache (every page asks again) or a judge of access (the nodes are).

use crate::citizen::CitizenId;
use crate::{
    AUDIT_PAGES_PER_SOURCE_MAX, Inner, PAGES_PER_PATIENT_MAX, PATIENTS_PER_SOURCE_MAX,
    RESPONSE_BYTES_MAX, Source,
};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use zorgnet_web::client::read_body;

/// Entries asked per page of the access log.
const AUDIT_PAGE_SIZE: usize = 200;

/// What to read at each source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Question {
    /// The citizen's record (`$everything` of each of their Patients).
    Record,
    /// The access log of their Patients.
    AccessLog,
    /// The resources of one type in their Patients' compartments, by a search of that type
    /// alone (`{type}?patient.identifier=…`, `Patient?identifier=…`): what a token whose
    /// scopes permit that type but not every type may ask a node (`fhir_api`).
    Search(&'static str),
}

/// Why a source is missing from a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It did not answer within the timeout.
    Timeout,
    /// It could not be reached.
    Unreachable,
    /// It answered with this HTTP status.
    Status(u16),
    /// It answered something that is not the FHIR expected.
    Invalid,
}

/// A source that is missing from a page, and why.
#[derive(Debug, Clone)]
pub(crate) struct SourceFailure {
    pub(crate) source: String,
    pub(crate) failure: Failure,
}

/// A resource found, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The index of its source in the configuration.
    pub(crate) source: usize,
    /// Its URL at the source.
    pub(crate) full_url: String,
    pub(crate) resource: Value,
}

/// What the sources answered.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub(crate) found: Vec<Found>,
    pub(crate) failures: Vec<SourceFailure>,
    /// Sources whose answer was cut short at the page limit.
    pub(crate) truncated: Vec<String>,
}

/// What one source answered.
#[derive(Default)]
struct FromSource {
    found: Vec<Found>,
    truncated: bool,
}

/// Asks every source `question` about the citizen named by `citizen`, in parallel.
pub(crate) async fn gather(
    inner: &Arc<Inner>,
    token: &str,
    citizen: &CitizenId,
    question: Question,
) -> Gathered {
    let identifier = citizen.search_token();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..inner.config.sources.len() {
        let inner = inner.clone();
        let (token, identifier) = (token.to_string(), identifier.clone());
        tasks.spawn(async move {
            let source = &inner.config.sources[index];
            let asked = ask(&inner.http, index, source, &token, &identifier, question);
            let answer = match tokio::time::timeout(inner.config.source_timeout, asked).await {
                Ok(answer) => answer,
                Err(_) => Err(Failure::Timeout),
            };
            (index, answer)
        });
    }
    let mut answers = Vec::with_capacity(inner.config.sources.len());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(index, _)| *index);
    let mut gathered = Gathered::default();
    let answered: HashSet<usize> = answers.iter().map(|(index, _)| *index).collect();
    for (index, answer) in answers {
        let name = inner.config.sources[index].name.clone();
        match answer {
            Ok(from) => {
                if from.truncated {
                    gathered.truncated.push(name);
                }
                gathered.found.extend(from.found);
            }
            Err(failure) => {
                tracing::warn!(source = %name, ?failure, ?question, "a source did not answer");
                gathered.failures.push(SourceFailure {
                    source: name,
                    failure,
                });
            }
        }
    }
    // A task that panicked is a source that did not answer.
    for (index, source) in inner.config.sources.iter().enumerate() {
        if !answered.contains(&index) {
            gathered.failures.push(SourceFailure {
                source: source.name.clone(),
                failure: Failure::Invalid,
            });
        }
    }
    gathered
}

async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<serde_json::Value, Failure> {
    let answer = http
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Unreachable
            }
        })?;
    let status = answer.status();
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    let body = read_body(answer, RESPONSE_BYTES_MAX)
        .await
        .map_err(|_| Failure::Invalid)?;
    serde_json::from_slice(&body).map_err(|_| Failure::Invalid)
}

/// The `next` link of a searchset `bundle`, when it stays at `source`.
fn next_link(bundle: &Value, source: &Source) -> Option<String> {
    let next = bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")?["url"]
        .as_str()?;
    // The token goes only to its source: a link elsewhere is not followed.
    let stays = next
        .strip_prefix(source.fhir_base.as_str())
        .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'));
    stays.then(|| next.to_string())
}

fn entries(bundle: &Value) -> Result<&[Value], Failure> {
    if bundle["resourceType"] != "Bundle" {
        return Err(Failure::Invalid);
    }
    Ok(bundle["entry"].as_array().map_or(&[], Vec::as_slice))
}

/// The citizen's Patients at `source`, found by `identifier` (the citizen's, `system|value`).
async fn patients(
    http: &reqwest::Client,
    source: &Source,
    token: &str,
    identifier: &str,
) -> Result<Vec<Value>, Failure> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("identifier", identifier)
        .finish();
    let bundle = get_json(
        http,
        &format!("{}/Patient?{query}", source.fhir_base),
        token,
    )
    .await?;
    Ok(entries(&bundle)?
        .iter()
        .map(|entry| &entry["resource"])
        .filter(|resource| resource["resourceType"] == "Patient" && resource["id"].is_string())
        .take(PATIENTS_PER_SOURCE_MAX)
        .cloned()
        .collect())
}

/// `question` at one source about the citizen named by `identifier` (`system|value`).
async fn ask(
    http: &reqwest::Client,
    index: usize,
    source: &Source,
    token: &str,
    identifier: &str,
    question: Question,
) -> Result<FromSource, Failure> {
    if let Question::Search(resource_type) = question {
        return search_type(http, index, source, token, identifier, resource_type).await;
    }
    let patients = patients(http, source, token, identifier).await?;
    let ids: Vec<String> = patients
        .iter()
        .filter_map(|p| p["id"].as_str().map(String::from))
        .collect();
    let mut from = FromSource::default();
    let mut seen = HashSet::new();
    let mut keep = |from: &mut FromSource, resource: &Value| {
        let (Some(resource_type), Some(id)) =
            (resource["resourceType"].as_str(), resource["id"].as_str())
        else {
            return;
        };
        if resource_type == "OperationOutcome" {
            return;
        }
        let full_url = format!("{}/{resource_type}/{id}", source.fhir_base);
        if seen.insert(full_url.clone()) {
            from.found.push(Found {
                source: index,
                full_url,
                resource: resource.clone(),
            });
        }
    };
    match question {
        Question::Record => {
            for patient in &patients {
                keep(&mut from, patient);
            }
            for id in &ids {
                let mut url = Some(format!("{}/Patient/{id}/$everything", source.fhir_base));
                let mut pages = 0;
                while let Some(page) = url.take() {
                    if pages == PAGES_PER_PATIENT_MAX {
                        from.truncated = true;
                        break;
                    }
                    pages += 1;
                    let bundle = get_json(http, &page, token).await?;
                    for entry in entries(&bundle)? {
                        keep(&mut from, &entry["resource"]);
                    }
                    url = next_link(&bundle, source);
                }
            }
        }
        Question::AccessLog => {
            if ids.is_empty() {
                return Ok(from);
            }
            let patient = ids
                .iter()
                .map(|id| format!("Patient/{id}"))
                .collect::<Vec<_>>()
                .join(",");
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("patient", &patient)
                .append_pair("_count", &AUDIT_PAGE_SIZE.to_string())
                .finish();
            let mut url = Some(format!("{}/AuditEvent?{query}", source.fhir_base));
            let mut pages = 0;
            while let Some(page) = url.take() {
                if pages == AUDIT_PAGES_PER_SOURCE_MAX {
                    from.truncated = true;
                    break;
                }
                pages += 1;
                let bundle = get_json(http, &page, token).await?;
                for entry in entries(&bundle)? {
                    keep(&mut from, &entry["resource"]);
                }
                url = next_link(&bundle, source);
            }
        }
        Question::Search(_) => {}
    }
    Ok(from)
}

/// [`Question::Search`] at one source: the resources of `resource_type` of the citizen named
/// by `identifier` (`system|value`), page by page (at most [`PAGES_PER_PATIENT_MAX`]).
async fn search_type(
    http: &reqwest::Client,
    index: usize,
    source: &Source,
    token: &str,
    identifier: &str,
    resource_type: &str,
) -> Result<FromSource, Failure> {
    let parameter = if resource_type == "Patient" {
        "identifier"
    } else {
        "patient.identifier"
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(parameter, identifier)
        .finish();
    let mut from = FromSource::default();
    let mut seen = HashSet::new();
    let mut url = Some(format!("{}/{resource_type}?{query}", source.fhir_base));
    let mut pages = 0;
    while let Some(page) = url.take() {
        if pages == PAGES_PER_PATIENT_MAX {
            from.truncated = true;
            break;
        }
        pages += 1;
        let bundle = get_json(http, &page, token).await?;
        for entry in entries(&bundle)? {
            let resource = &entry["resource"];
            let Some(id) = resource["id"].as_str() else {
                continue;
            };
            if resource["resourceType"] != resource_type {
                continue;
            }
            let full_url = format!("{}/{resource_type}/{id}", source.fhir_base);
            if seen.insert(full_url.clone()) {
                from.found.push(Found {
                    source: index,
                    full_url,
                    resource: resource.clone(),
                });
            }
        }
        url = next_link(&bundle, source);
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_links_are_followed_only_at_their_source() {
        let source = Source {
            name: "GP".into(),
            ura: "1".into(),
            fhir_base: "https://gp.example/fhir".into(),
        };
        let bundle = |url: &str| json!({"link": [{"relation": "next", "url": url}]});
        assert_eq!(
            next_link(
                &bundle("https://gp.example/fhir/Patient/1/$everything?_cursor=2"),
                &source
            )
            .as_deref(),
            Some("https://gp.example/fhir/Patient/1/$everything?_cursor=2")
        );
        for elsewhere in [
            "https://gp.example/fhirx/Patient",
            "https://gp.example.evil/fhir/Patient",
            "https://evil.example/fhir/Patient",
        ] {
            assert_eq!(next_link(&bundle(elsewhere), &source), None, "{elsewhere}");
        }
    }
}
