//! The policy for callers with an OpenID Connect token, whom [`crate::authn`] verified and
//! put in the request's extensions as a [`Caller`]:
//! - **Staff** (the organisation's professionals and systems) are served like the
//!   organisation's administrator, within their SMART scopes (`user/…`, `system/…`): a
//!   read or search of a type needs a scope that reads it, a create, update or delete one
//!   that writes it. What may touch any type needs a wildcard scope (`user/*.read` for a
//!   whole-system search or history, `$everything`, `$localize` and `$fetch`; every
//!   interaction for a batch or transaction and other operations), and so does a search
//!   that reaches other types (`_include`, `_revinclude`, `_has`, chains). A professional's
//!   `$fetch` or `$localize` acts for the professional the token names: a `uzi` parameter
//!   must be theirs. Anything else is a 403.
//! - **Citizens** read their own data and nothing else: the requests another organisation
//!   may make (one named patient, [`classify`]), of any resource type, where every local
//!   Patient the request names is the citizen (the BSN, or the zorgverificatienummer the
//!   hub derives from a sédula number and birth date, equals the token's). Their token's
//!   `patient/` or `user/` scopes must permit reading the types asked (a wildcard for
//!   `$everything`, `_include`, `_revinclude`). The answer is filtered like another
//!   organisation's (only the citizen's resources and the reference data they refer to)
//!   but nothing is withheld by category, and there is no consent question: the citizen
//!   may always read their own data. Writes, history, counts and anyone else's data get
//!   the same 403 as another organisation's refusals ([`NOT_PERMITTED`] when the patient
//!   is not theirs or unknown).

use super::*;
use crate::authn::Caller;
use std::sync::LazyLock;
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_store::PersonIdentity;
use zorgnet_trust::oidc::{CITIZEN_CONTEXTS, CitizenIdentity, StaffIdentity};
use zorgnet_trust::smart::Interaction;

const SCOPE_NOT_PERMITTED: &str = "the token's SMART scopes do not permit this";
const NOT_YOUR_PROFESSIONAL: &str =
    "a professional's token acts for that professional: the uzi parameter must be theirs";

/// Seals the paging cursors given to citizens (a key per process, bound to the citizen).
static CITIZEN_CURSORS: LazyLock<CursorSeal> = LazyLock::new(CursorSeal::new);

/// Applies the policy for `caller` (see the module documentation).
pub(super) async fn serve_oidc_caller(
    state: &AppState,
    caller: Caller,
    request: Request,
    next: Next,
) -> Response {
    let served = match caller {
        Caller::Staff(staff) => serve_staff(&staff, request, next).await,
        Caller::Citizen(citizen) => serve_citizen(state, &citizen, request, next).await,
    };
    served.unwrap_or_else(IntoResponse::into_response)
}

/// What a request needs of a professional's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    /// `interaction` on one type.
    On(String, Interaction),
    /// `interaction` on every type (a wildcard scope).
    EveryType(Interaction),
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::On(resource_type, interaction) => write!(f, "{interaction:?} on {resource_type}"),
            Need::EveryType(interaction) => write!(f, "{interaction:?} on every type (*)"),
        }
    }
}

async fn serve_staff(
    staff: &StaffIdentity,
    request: Request,
    next: Next,
) -> Result<Response, AccessError> {
    let (request, pairs) = with_search_pairs(request).await?;
    let (needs, acts_for_professional) =
        staff_needs(request.method(), request.uri().path(), &pairs)?;
    if let Some(missing) = needs.iter().find(|need| match need {
        Need::On(resource_type, interaction) => !staff.permits(resource_type, *interaction),
        Need::EveryType(interaction) => !staff.permits_every_type(*interaction),
    }) {
        tracing::info!(subject = %staff.subject, need = %missing, "refused a request outside the token's scopes");
        return Err(AccessError::Forbidden(format!(
            "{SCOPE_NOT_PERMITTED}: it needs {missing}"
        )));
    }
    if acts_for_professional
        && let Some(uzi) = &staff.uzi
        && pairs
            .iter()
            .any(|(name, value)| name == "uzi" && value != uzi)
    {
        return Err(AccessError::Forbidden(NOT_YOUR_PROFESSIONAL.into()));
    }
    Ok(next.run(request).await)
}

/// The decoded path segments.
fn segments(path: &str) -> Result<Vec<String>, AccessError> {
    path.split('/')
        .skip(1)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| AccessError::Invalid("the path is not UTF-8".into()))
}

/// What a request needs of a professional's scopes, and whether it is a network operation
/// that acts for a professional.
fn staff_needs(
    method: &Method,
    path: &str,
    pairs: &[(String, String)],
) -> Result<(Vec<Need>, bool), AccessError> {
    use Interaction::{Create, Delete, Read, Search, Update};
    let segments = segments(path)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let every = |interactions: &[Interaction]| -> Vec<Need> {
        interactions.iter().map(|i| Need::EveryType(*i)).collect()
    };
    let on = |t: &str, i: Interaction| vec![Need::On(t.to_string(), i)];
    let write = |t: &str| -> Option<Vec<Need>> {
        match *method {
            Method::PUT | Method::PATCH => Some(on(t, Update)),
            Method::DELETE => Some(on(t, Delete)),
            _ => None,
        }
    };
    let operation = |s: &str| s.starts_with('$');
    let mut needs = match segments.as_slice() {
        ["health"] | ["fhir", "metadata"] if reading => Vec::new(),
        ["fhir"] if reading => every(&[Search]),
        ["fhir"] if *method == Method::POST => every(&Interaction::ALL),
        ["fhir", "_history"] if reading => every(&[Read]),
        ["fhir", "$localize" | "$fetch"] if reading || *method == Method::POST => {
            return Ok((every(&[Search]), true));
        }
        ["fhir", "Patient", _, "$everything"] if reading || *method == Method::POST => {
            every(&[Read, Search])
        }
        ["fhir", rest @ ..] if rest.iter().any(|s| operation(s)) => every(&Interaction::ALL),
        ["fhir", t] if reading => on(t, Search),
        ["fhir", t] if *method == Method::POST => on(t, Create),
        ["fhir", t, "_search"] if *method == Method::POST => on(t, Search),
        ["fhir", t, "_history"] if reading => on(t, Read),
        ["fhir", t, _] | ["fhir", t, _, "_history"] | ["fhir", t, _, "_history", _] if reading => {
            on(t, Read)
        }
        ["fhir", t] | ["fhir", t, _] => write(t).ok_or_else(|| {
            AccessError::Forbidden(format!("{method} {path} is not a FHIR interaction"))
        })?,
        _ => {
            return Err(AccessError::Forbidden(format!(
                "{method} {path} is not a FHIR interaction"
            )));
        }
    };
    let searches = needs
        .iter()
        .any(|n| matches!(n, Need::On(_, Search) | Need::EveryType(Search)));
    let reaches_other_types = pairs.iter().any(|(name, _)| {
        ["_include", "_revinclude", "_has"]
            .iter()
            .any(|p| name.starts_with(p))
            || (!name.starts_with('_') && name.contains('.'))
    });
    if searches && reaches_other_types {
        needs.push(Need::EveryType(Search));
    }
    Ok((needs, false))
}

async fn serve_citizen(
    state: &AppState,
    citizen: &CitizenIdentity,
    request: Request,
    next: Next,
) -> Result<Response, AccessError> {
    let (request, pairs) = with_search_pairs(request).await?;
    let method = request.method().clone();
    let refused = |e: AccessError| {
        tracing::info!(subject = %citizen.subject, method = %method, "refused a citizen's request that is not a read of their own data");
        e
    };
    let scope = match classify(
        Requester::Citizen,
        request.method(),
        request.uri().path(),
        &pairs,
    ) {
        Ok(Target::Open) => return Ok(next.run(request).await),
        Ok(Target::Patient(scope)) => scope,
        Err(e) => return Err(refused(e)),
    };
    let interaction = if scope.kind == Kind::Read {
        Interaction::Read
    } else {
        Interaction::Search
    };
    let scoped = if scope.wide {
        citizen
            .scopes
            .permits_every_type(&CITIZEN_CONTEXTS, interaction)
    } else {
        scope.types.iter().all(|t| citizen.permits(t, interaction))
    };
    if !scoped {
        return Err(refused(AccessError::Forbidden(SCOPE_NOT_PERMITTED.into())));
    }
    if scope.kind == Kind::Search {
        check_search(&state.store.registry(), &scope.types[0], &pairs).map_err(refused)?;
    }
    if scope.kind != Kind::Read && refuses_counts(&pairs) {
        return Err(refused(AccessError::Forbidden(NO_COUNTS.into())));
    }
    let patients = local_patients(state, &scope.patient).await?;
    super::note_patients(&request, patients.iter().map(|(id, _)| id.clone()));
    if patients.is_empty() || !is_the_citizen(state, citizen, &patients).await? {
        return Err(refused(AccessError::Forbidden(NOT_PERMITTED.into())));
    }
    let registry = state.store.registry();
    let policy = Policy {
        registry: &registry,
        allowed: patients.iter().map(|(id, _)| id.clone()).collect(),
        decisions: BTreeMap::new(),
        notice: BTreeSet::new(),
        every_category: true,
    };
    let (mut request, mut pairs) = (request, pairs);
    super::by_local_ids(&mut request, &mut pairs, &policy.allowed)?;
    if scope.kind == Kind::Read {
        let response = next.run(request).await;
        return read_response(response, &policy, scope.named_id()).await;
    }
    let requester = format!("citizen {} {}", citizen.issuer, citizen.subject);
    serve_search(
        request,
        pairs,
        &scope,
        &policy,
        &CITIZEN_CURSORS,
        &requester,
        next,
    )
    .await
}

/// Whether every one of `patients` is the citizen: its BSN, or the zorgverificatienummer
/// the hub derives from its sédula number and birth date, is the token's.
pub(super) async fn is_the_citizen(
    state: &AppState,
    citizen: &CitizenIdentity,
    patients: &[(String, Value)],
) -> Result<bool, AccessError> {
    for (_, patient) in patients {
        let person = match PersonIdentity::of_patient(patient) {
            Some(PersonIdentity::Bsn(bsn)) => Bsn::parse(&bsn).ok().map(PersonalId::Bsn),
            Some(identity @ PersonIdentity::Sedula { .. }) => {
                match (&citizen.person, &state.network) {
                    (PersonalId::Zvn(_), Some(network)) => {
                        crate::hub_client::person_of(&network.hub, &identity).await?
                    }
                    _ => None,
                }
            }
            None => None,
        };
        if person.as_ref() != Some(&citizen.person) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interaction::{Create, Delete, Read, Search, Update};

    fn needs(method: Method, path: &str, query: &str) -> Result<Vec<Need>, AccessError> {
        let pairs = zorgnet_rest::interactions::query_pairs(Some(query));
        staff_needs(&method, path, &pairs).map(|(needs, _)| needs)
    }

    fn on(t: &str, i: Interaction) -> Vec<Need> {
        vec![Need::On(t.into(), i)]
    }

    #[test]
    fn each_interaction_needs_its_scope() {
        let ok = |method, path, query, expected: Vec<Need>| {
            assert_eq!(
                needs(method, path, query).unwrap(),
                expected,
                "{path}?{query}"
            );
        };
        ok(Method::GET, "/fhir/metadata", "", vec![]);
        ok(
            Method::GET,
            "/fhir/Observation",
            "patient=1",
            on("Observation", Search),
        );
        ok(
            Method::POST,
            "/fhir/Observation/_search",
            "",
            on("Observation", Search),
        );
        ok(
            Method::GET,
            "/fhir/Observation/1",
            "",
            on("Observation", Read),
        );
        ok(
            Method::GET,
            "/fhir/Observation/1/_history/2",
            "",
            on("Observation", Read),
        );
        ok(
            Method::GET,
            "/fhir/Observation/_history",
            "",
            on("Observation", Read),
        );
        ok(
            Method::POST,
            "/fhir/Observation",
            "",
            on("Observation", Create),
        );
        ok(
            Method::PUT,
            "/fhir/Observation/1",
            "",
            on("Observation", Update),
        );
        ok(
            Method::PUT,
            "/fhir/Observation",
            "code=x",
            on("Observation", Update),
        );
        ok(
            Method::PATCH,
            "/fhir/Observation/1",
            "",
            on("Observation", Update),
        );
        ok(
            Method::DELETE,
            "/fhir/Observation/1",
            "",
            on("Observation", Delete),
        );
        ok(
            Method::POST,
            "/fhir",
            "",
            Interaction::ALL
                .iter()
                .map(|i| Need::EveryType(*i))
                .collect(),
        );
        ok(
            Method::GET,
            "/fhir/_history",
            "",
            vec![Need::EveryType(Read)],
        );
        ok(
            Method::GET,
            "/fhir/Patient/1/$everything",
            "",
            vec![Need::EveryType(Read), Need::EveryType(Search)],
        );
        ok(
            Method::GET,
            "/fhir/Observation",
            "_include=Observation:subject",
            vec![
                Need::On("Observation".into(), Search),
                Need::EveryType(Search),
            ],
        );
        ok(
            Method::GET,
            "/fhir/Observation",
            "subject.name=x",
            vec![
                Need::On("Observation".into(), Search),
                Need::EveryType(Search),
            ],
        );
        assert!(needs(Method::POST, "/fhir/Observation/1", "").is_err());
        assert!(needs(Method::GET, "/admin", "").is_err());
        let (_, acts) = staff_needs(&Method::GET, "/fhir/$fetch", &[]).unwrap();
        assert!(acts);
    }
}
