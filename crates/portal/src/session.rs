//! The portal's memory of who is logged in: sessions (keyed by a random 256-bit id that the
//! browser holds in a cookie) and logins under way (keyed by another random id, holding the
//! PKCE verifier, `state` and `nonce` until the provider sends the citizen back).
//! Both are bounded ([`SESSIONS_MAX`], [`PENDING_LOGINS_MAX`]) and expire.
//! What it is not: persistent (a restart logs everybody out) or shared between processes.

use crate::choices::Confirmation;
use crate::citizen::CitizenId;
use crate::{LOGIN_LIFETIME, PENDING_LOGINS_MAX, SESSIONS_MAX};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Random bytes in a session id, a login id, a CSRF token, `state`, `nonce` and the PKCE
/// verifier (256 bits).
pub(crate) const RANDOM_BYTES: usize = 32;

/// 256 random bits from the thread's CSPRNG (ChaCha seeded by the operating system), in
/// base64url.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; RANDOM_BYTES]>())
}

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
    /// When the session ends.
    pub(crate) expires: Instant,
    /// The change to consent the citizen just made, shown once on the next page.
    pub(crate) confirmation: Option<Confirmation>,
}

/// A login under way.
pub(crate) struct PendingLogin {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    pub(crate) started: Instant,
}

/// The sessions and logins under way.
#[derive(Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

impl Sessions {
    /// Keeps `session`; answers its id.
    pub(crate) fn open(&self, session: Session) -> String {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= SESSIONS_MAX
            && let Some(first) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&first);
        }
        let id = random_token();
        sessions.insert(id.clone(), session);
        id
    }

    /// The session `id` names, while it lasts.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Keeps `confirmation` in session `id` until [`Sessions::take_confirmation`].
    pub(crate) fn confirm(&self, id: &str, confirmation: Confirmation) {
        if let Some(session) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            session.confirmation = Some(confirmation);
        }
    }

    /// The confirmation session `id` keeps, taken (shown once).
    pub(crate) fn take_confirmation(&self, id: &str) -> Option<Confirmation> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
            .and_then(|session| session.confirmation.take())
    }

    /// Keeps a login under way; answers its id, or `None` when too many are waiting.
    pub(crate) fn start_login(&self, login: PendingLogin) -> Option<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, l| l.started.elapsed() < LOGIN_LIFETIME);
        if pending.len() >= PENDING_LOGINS_MAX {
            return None;
        }
        let id = random_token();
        pending.insert(id.clone(), login);
        Some(id)
    }

    /// Takes the login `id` (once), while it lasts.
    pub(crate) fn take_login(&self, id: &str) -> Option<PendingLogin> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .filter(|l| l.started.elapsed() < LOGIN_LIFETIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(expires: Instant) -> Session {
        Session {
            citizen: CitizenId::of_claims(Some("123456782"), None).unwrap(),
            name: None,
            access_token: "t".into(),
            csrf: "c".into(),
            expires,
            confirmation: None,
        }
    }

    #[test]
    fn sessions_expire_and_close() {
        let sessions = Sessions::default();
        let later = Instant::now() + Duration::from_secs(60);
        let id = sessions.open(session(later));
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), RANDOM_BYTES);
        assert!(sessions.get(&id).is_some());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        let gone = sessions.open(session(Instant::now()));
        assert!(sessions.get(&gone).is_none());
        assert_ne!(sessions.open(session(later)), sessions.open(session(later)));
    }

    #[test]
    fn a_login_is_taken_once() {
        let sessions = Sessions::default();
        let id = sessions
            .start_login(PendingLogin {
                state: "s".into(),
                nonce: "n".into(),
                verifier: "v".into(),
                started: Instant::now(),
            })
            .unwrap();
        assert!(sessions.take_login(&id).is_some());
        assert!(sessions.take_login(&id).is_none());
    }
}
