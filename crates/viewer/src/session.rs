//! The viewer's memory of who is logged in: sessions (keyed by a random 256-bit id that the
//! browser holds in a cookie scoped to the organisation's pages) and logins under way (keyed
//! by another random id, holding the PKCE verifier, `state`, `nonce` and the organisation
//! until the provider sends the professional back). Both are bounded ([`SESSIONS_MAX`],
//! [`PENDING_LOGINS_MAX`]) and expire.
//! What it is not: persistent (a restart logs everybody out) or shared between processes.

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
    /// When the session ends.
    pub(crate) expires: Instant,
}

/// A login under way.
pub(crate) struct PendingLogin {
    pub(crate) ura: String,
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

    /// Changes the session `id` with `change`, while it lasts; false when it is gone.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut Session)) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(id) {
            Some(session) if session.expires > Instant::now() => {
                change(session);
                true
            }
            _ => false,
        }
    }

    /// Ends the session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
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
            ura: "00000022".into(),
            uzi: "900000015".into(),
            name: "Dr. Jansen".into(),
            roles: vec!["01.016".into()],
            role: "01.016".into(),
            access_token: "t".into(),
            csrf: "c".into(),
            patient: None,
            expires,
        }
    }

    #[test]
    fn sessions_expire_change_and_close() {
        let sessions = Sessions::default();
        let later = Instant::now() + Duration::from_secs(60);
        let id = sessions.open(session(later));
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), RANDOM_BYTES);
        assert!(sessions.update(&id, |s| s.patient = Some("123456782".into())));
        assert_eq!(
            sessions.get(&id).unwrap().patient.as_deref(),
            Some("123456782")
        );
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        assert!(!sessions.update(&id, |_| {}));
        let gone = sessions.open(session(Instant::now()));
        assert!(sessions.get(&gone).is_none());
        assert_ne!(sessions.open(session(later)), sessions.open(session(later)));
    }

    #[test]
    fn a_login_is_taken_once() {
        let sessions = Sessions::default();
        let id = sessions
            .start_login(PendingLogin {
                ura: "00000022".into(),
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
