//! What the viewer keeps of a logged-in professional: a [`Session`], bound to one
//! organisation, in `zorgnet_web`'s store (random 256-bit ids in a cookie scoped to the
//! organisation's pages, bounded and expiring), with the logins under way, each keeping the
//! organisation it was started at.
//! What it is not: persistent (a restart logs everybody out) or shared between processes.

/// The viewer's sessions, and its logins under way with the organisation's URA each.
pub(crate) type Sessions = zorgnet_web::session::Sessions<Session, String>;

/// A logged-in professional, bound to one organisation.
#[derive(Clone)]
pub(crate) struct Session {
    /// The organisation the professional logged in at; the session serves its pages only.
    pub(crate) ura: String,
    /// The professional's UZI number, from the verified ID token.
    pub(crate) uzi: String,
    /// The professional's name (the professional register's, else the provider's).
    pub(crate) name: String,
    /// The professional's UZI role codes at the organisation, from the professional register.
    pub(crate) roles: Vec<String>,
    /// The role the professional acts in (one of `roles`).
    pub(crate) role: String,
    /// The access token the organisation's node verifies; sent to that node only.
    pub(crate) access_token: String,
    /// The token every form must carry.
    pub(crate) csrf: String,
    /// The BSN or zorgverificatienummer of the patient being looked at (validated), when one
    /// was found.
    pub(crate) patient: Option<String>,
}
