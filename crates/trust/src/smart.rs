//! SMART on FHIR scopes: what an OAuth2 token says its holder may do with which resource
//! types.
//!
//! Both versions of the grammar are read:
//! - v1: `{context}/{type}.{read|write|*}`, e.g. `user/Observation.read`, `patient/*.read`,
//!   `system/*.*`. `read` is read and search, `write` is create, update and delete, `*` all.
//! - v2: `{context}/{type}.{c}{r}{u}{d}{s}`, at least one letter, in that order, e.g.
//!   `patient/*.rs`, `system/Patient.cruds`.
//!
//! The context is `patient` (the data of the patient in context), `user` (what the user may
//! see) or `system` (a backend service); the type is a FHIR resource type or `*`. A v2 scope
//! with a search restriction (`patient/Observation.rs?category=laboratory`) grants
//! nothing here: the restriction could not be enforced, so the scope is kept as
//! unrecognised rather than widened. Other scopes (`openid`, `fhirUser`, `launch`,
//! `offline_access`, anything unknown) are kept as [`Scopes::other`] and grant nothing.
//! What it is not: the policy. Which contexts count for which caller (a professional's
//! `user`/`system`, a citizen's `patient`/`user`) and whose data a context reaches is the
//! node's access layer's to decide.

/// Most scopes read from one token; more is a malformed token.
pub const MAX_SCOPES: usize = 100;
/// Longest resource type name in a scope, in characters (the longest R4 type has 35).
pub const MAX_SCOPE_TYPE_CHARS: usize = 64;

/// Whose data a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    /// The patient in context (for a citizen: themself).
    Patient,
    /// Whatever the user may see.
    User,
    /// A backend system, without a user.
    System,
}

impl ScopeContext {
    fn parse(text: &str) -> Option<ScopeContext> {
        match text {
            "patient" => Some(ScopeContext::Patient),
            "user" => Some(ScopeContext::User),
            "system" => Some(ScopeContext::System),
            _ => None,
        }
    }

    /// The prefix on the wire.
    pub fn code(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// One FHIR interaction as SMART v2 names them (`c`, `r`, `u`, `d`, `s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `c`: create.
    Create,
    /// `r`: read (and vread, history of one resource).
    Read,
    /// `u`: update (and patch).
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search.
    Search,
}

impl Interaction {
    /// Every interaction, in the v2 letter order.
    pub const ALL: [Interaction; 5] = [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
    ];

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }

    fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }

    /// Whether the interaction changes data.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create | Interaction::Update | Interaction::Delete
        )
    }
}

/// A set of interactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interactions(u8);

impl Interactions {
    /// v1 `read`: read and search.
    pub const READ: Interactions = Interactions(2 | 16);
    /// v1 `write`: create, update and delete.
    pub const WRITE: Interactions = Interactions(1 | 4 | 8);
    /// v1 `*`, v2 `cruds`: everything.
    pub const ALL: Interactions = Interactions(31);

    /// Whether `interaction` is in the set.
    pub fn contains(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    /// The v2 letters of the set, in order (`rs`).
    pub fn letters(self) -> String {
        Interaction::ALL
            .iter()
            .filter(|i| self.contains(**i))
            .map(|i| i.letter())
            .collect()
    }

    /// v2 letters (`cruds` or an ordered subset, at least one).
    fn parse_v2(text: &str) -> Option<Interactions> {
        let mut bits = 0u8;
        let mut letters = Interaction::ALL.iter();
        for c in text.chars() {
            let interaction = letters.find(|i| i.letter() == c)?;
            bits |= interaction.bit();
        }
        (bits != 0).then_some(Interactions(bits))
    }
}

/// One resource scope: a context, a resource type (`None` for `*`) and interactions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    /// Whose data.
    pub context: ScopeContext,
    /// The resource type; `None` is every type (`*`).
    pub resource_type: Option<String>,
    /// What may be done.
    pub interactions: Interactions,
}

impl ResourceScope {
    /// Parses one scope; `None` when it is not a (usable) resource scope.
    pub fn parse(scope: &str) -> Option<ResourceScope> {
        let (context, rest) = scope.split_once('/')?;
        let context = ScopeContext::parse(context)?;
        let (resource_type, access) = rest.split_once('.')?;
        let resource_type = match resource_type {
            "*" => None,
            t if is_resource_type_name(t) => Some(t.to_string()),
            _ => return None,
        };
        let interactions = match access {
            "read" => Interactions::READ,
            "write" => Interactions::WRITE,
            "*" => Interactions::ALL,
            letters => Interactions::parse_v2(letters)?,
        };
        Some(ResourceScope {
            context,
            resource_type,
            interactions,
        })
    }

    /// Whether this scope lets `interaction` on `resource_type` happen in `context`.
    pub fn permits(
        &self,
        context: ScopeContext,
        resource_type: &str,
        interaction: Interaction,
    ) -> bool {
        self.context == context
            && self
                .resource_type
                .as_deref()
                .is_none_or(|t| t == resource_type)
            && self.interactions.contains(interaction)
    }
}

impl std::fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.context.code(),
            self.resource_type.as_deref().unwrap_or("*"),
            self.interactions.letters()
        )
    }
}

/// A FHIR resource type's name: an upper-case ASCII letter, then letters.
fn is_resource_type_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && text.len() <= MAX_SCOPE_TYPE_CHARS
        && chars.all(|c| c.is_ascii_alphabetic())
}

/// Why a scope string is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// More than [`MAX_SCOPES`] scopes.
    #[error("more than {MAX_SCOPES} scopes")]
    TooMany,
}

/// The scopes of one token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    /// The resource scopes.
    pub resources: Vec<ResourceScope>,
    /// Every other scope, as written (`openid`, `fhirUser`, restricted v2 scopes, …).
    pub other: Vec<String>,
}

impl Scopes {
    /// Parses a space-separated scope string (OAuth2's `scope`).
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        Scopes::from_list(text.split_ascii_whitespace())
    }

    /// Parses a list of scopes (a token's `scp` array).
    pub fn from_list<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Result<Scopes, ScopeError> {
        let mut parsed = Scopes::default();
        for (count, scope) in scopes.into_iter().enumerate() {
            if count >= MAX_SCOPES {
                return Err(ScopeError::TooMany);
            }
            match ResourceScope::parse(scope) {
                Some(resource) => parsed.resources.push(resource),
                None => parsed.other.push(scope.to_string()),
            }
        }
        Ok(parsed)
    }

    /// Whether a scope of one of `contexts` lets `interaction` on `resource_type` happen.
    pub fn permits(
        &self,
        contexts: &[ScopeContext],
        resource_type: &str,
        interaction: Interaction,
    ) -> bool {
        self.resources.iter().any(|scope| {
            contexts
                .iter()
                .any(|&context| scope.permits(context, resource_type, interaction))
        })
    }

    /// Whether a wildcard scope of one of `contexts` lets `interaction` happen on every
    /// resource type (what a request that may touch any type needs: a batch, a
    /// whole-system search).
    pub fn permits_every_type(&self, contexts: &[ScopeContext], interaction: Interaction) -> bool {
        self.resources.iter().any(|scope| {
            scope.resource_type.is_none()
                && contexts.contains(&scope.context)
                && scope.interactions.contains(interaction)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAFF: [ScopeContext; 2] = [ScopeContext::User, ScopeContext::System];

    #[test]
    fn v1_scopes_read_and_write() {
        let scopes =
            Scopes::parse("openid user/Observation.read system/Patient.write patient/*.read")
                .unwrap();
        assert_eq!(scopes.other, vec!["openid".to_string()]);
        assert!(scopes.permits(&STAFF, "Observation", Interaction::Read));
        assert!(scopes.permits(&STAFF, "Observation", Interaction::Search));
        assert!(!scopes.permits(&STAFF, "Observation", Interaction::Update));
        assert!(!scopes.permits(&STAFF, "Condition", Interaction::Read));
        assert!(scopes.permits(&STAFF, "Patient", Interaction::Create));
        assert!(scopes.permits(&STAFF, "Patient", Interaction::Delete));
        assert!(!scopes.permits(&STAFF, "Patient", Interaction::Read));
        assert!(!scopes.permits(&STAFF, "MedicationRequest", Interaction::Read));
        assert!(scopes.permits(
            &[ScopeContext::Patient],
            "MedicationRequest",
            Interaction::Read
        ));
        assert!(!scopes.permits_every_type(&STAFF, Interaction::Read));
        assert!(scopes.permits_every_type(&[ScopeContext::Patient], Interaction::Search));
    }

    #[test]
    fn wildcards_grant_everything_in_their_context() {
        let scopes = Scopes::parse("system/*.*").unwrap();
        for interaction in Interaction::ALL {
            assert!(scopes.permits(&STAFF, "Condition", interaction));
            assert!(scopes.permits_every_type(&STAFF, interaction));
            assert!(!scopes.permits(&[ScopeContext::Patient], "Condition", interaction));
        }
        let write = Scopes::parse("user/*.write").unwrap();
        assert!(write.permits(&STAFF, "Observation", Interaction::Create));
        assert!(!write.permits(&STAFF, "Observation", Interaction::Read));
    }

    #[test]
    fn v2_letters_in_order() {
        let scopes =
            Scopes::parse("patient/*.rs user/Observation.cruds system/Patient.cud").unwrap();
        let patient = [ScopeContext::Patient];
        assert!(scopes.permits(&patient, "Condition", Interaction::Read));
        assert!(scopes.permits(&patient, "Condition", Interaction::Search));
        assert!(!scopes.permits(&patient, "Condition", Interaction::Create));
        for interaction in Interaction::ALL {
            assert!(scopes.permits(&STAFF, "Observation", interaction));
        }
        assert!(scopes.permits(&STAFF, "Patient", Interaction::Update));
        assert!(!scopes.permits(&STAFF, "Patient", Interaction::Read));
    }

    #[test]
    fn malformed_and_restricted_scopes_grant_nothing() {
        for odd in [
            "patient/*.sr",
            "patient/*.rr",
            "patient/*.",
            "patient/*.x",
            "admin/*.read",
            "user/observation.read",
            "user/Obs3rvation.read",
            "user/*read",
            "patient/Observation.rs?category=laboratory",
            "user/*.read/extra",
            "launch/patient",
        ] {
            let scopes = Scopes::parse(odd).unwrap();
            assert!(scopes.resources.is_empty(), "{odd}");
            assert_eq!(scopes.other, vec![odd.to_string()]);
            for interaction in Interaction::ALL {
                assert!(
                    !scopes.permits(
                        &[ScopeContext::Patient, ScopeContext::User],
                        "Observation",
                        interaction
                    ),
                    "{odd}"
                );
            }
        }
    }

    #[test]
    fn too_many_scopes_are_refused() {
        let many = vec!["openid"; MAX_SCOPES + 1].join(" ");
        assert_eq!(Scopes::parse(&many), Err(ScopeError::TooMany));
        let enough = vec!["openid"; MAX_SCOPES].join(" ");
        assert!(Scopes::parse(&enough).is_ok());
    }

    fn context() -> impl Strategy<Value = ScopeContext> {
        prop_oneof![
            Just(ScopeContext::Patient),
            Just(ScopeContext::User),
            Just(ScopeContext::System)
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}") {
            let _ = Scopes::parse(&text);
        }

        #[test]
        fn a_written_scope_reads_back_and_grants_exactly_its_letters(
            context in context(),
            wildcard in any::<bool>(),
            resource_type in "[A-Z][a-zA-Z]{0,20}",
            bits in 1u8..32,
        ) {
            let scope = ResourceScope {
                context,
                resource_type: (!wildcard).then_some(resource_type.clone()),
                interactions: Interactions(bits),
            };
            let parsed = ResourceScope::parse(&scope.to_string());
            prop_assert_eq!(parsed.as_ref(), Some(&scope));
            for interaction in Interaction::ALL {
                prop_assert_eq!(
                    scope.permits(context, &resource_type, interaction),
                    bits & interaction.bit() != 0
                );
                prop_assert!(!scope.permits(context, "Other", interaction) || wildcard || resource_type == "Other");
            }
        }
    }
}
