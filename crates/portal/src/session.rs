//! What the portal keeps of a logged-in citizen: a [`Session`] in `zorgnet_web`'s store
//! (random 256-bit ids in a cookie, bounded and expiring, with the logins under way).
//! What it is not: persistent (a restart logs everybody out) or shared between processes.

use crate::choices::Confirmation;
use crate::citizen::CitizenId;

/// The portal's sessions and logins under way.
pub(crate) type Sessions = zorgnet_web::session::Sessions<Session>;

/// A logged-in citizen.
#[derive(Clone)]
pub(crate) struct Session {
    /// The citizen's BSN or zorgverificatienummer, from the verified ID token.
    pub(crate) citizen: CitizenId,
    /// The name the provider gave, if any.
    pub(crate) name: Option<String>,
    /// The access token the nodes verify; never leaves the server but to a source.
    pub(crate) access_token: String,
    /// The token every form must carry (logout, the choices).
    pub(crate) csrf: String,
    /// The change to consent the citizen just made, shown once on the next page.
    pub(crate) confirmation: Option<Confirmation>,
}
