//! A front-end's memory of who is logged in: sessions (keyed by a random 256-bit id that the
//! browser holds in a cookie) and logins under way (keyed by another random id, holding the
//! PKCE verifier, `state`, `nonce` and what the front-end keeps with them until the provider
//! sends the user back). Both are bounded ([`SESSIONS_MAX`], [`PENDING_LOGINS_MAX`]) and
//! expire; what a session holds is the front-end's own type.
//! What it is not: persistent (a restart logs everybody out) or shared between processes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Random bytes in a session id, a login id, a CSRF token, `state`, `nonce` and the PKCE
/// verifier (256 bits).
pub const RANDOM_BYTES: usize = 32;
/// Sessions kept at once; the one closest to expiry goes first beyond this.
pub const SESSIONS_MAX: usize = 10_000;
/// Logins started and not yet completed, kept at once; beyond, new logins wait.
pub const PENDING_LOGINS_MAX: usize = 10_000;
/// Longest a session lasts, whatever the access token's lifetime.
pub const SESSION_LIFETIME_MAX: Duration = Duration::from_secs(60 * 60);
/// How long a user may take at the provider's login page.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// 256 random bits from the thread's CSPRNG (ChaCha seeded by the operating system), in
/// base64url.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; RANDOM_BYTES]>())
}

/// How long a session of an access token that lasts `expires_in_s` (the token endpoint's
/// `expires_in`) is kept: as long as the token, at most [`SESSION_LIFETIME_MAX`].
pub fn session_lifetime(expires_in_s: Option<u64>) -> Duration {
    expires_in_s
        .map(Duration::from_secs)
        .unwrap_or(SESSION_LIFETIME_MAX)
        .min(SESSION_LIFETIME_MAX)
}

/// A login under way (no `Debug`: it holds the login's secrets).
pub struct PendingLogin<P = ()> {
    /// The `state` sent to the provider; the callback must bring it back.
    pub state: String,
    /// The `nonce` sent to the provider; the ID token must carry it.
    pub nonce: String,
    /// The PKCE verifier; the provider got its `S256` challenge.
    pub verifier: String,
    /// When the login started.
    pub started: Instant,
    /// What the front-end keeps with the login (the viewer: the organisation).
    pub context: P,
}

impl<P> PendingLogin<P> {
    /// A login starting now, with fresh random `state`, `nonce` and verifier.
    pub fn new(context: P) -> PendingLogin<P> {
        PendingLogin {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            started: Instant::now(),
            context,
        }
    }

    fn lasts(&self) -> bool {
        self.started.elapsed() < LOGIN_LIFETIME
    }
}

/// A session and when it ends.
struct Kept<S> {
    session: S,
    expires: Instant,
}

/// The sessions (of the front-end's type `S`) and the logins under way (keeping a `P` each).
pub struct Sessions<S, P = ()> {
    sessions: Mutex<HashMap<String, Kept<S>>>,
    pending: Mutex<HashMap<String, PendingLogin<P>>>,
}

impl<S, P> Default for Sessions<S, P> {
    fn default() -> Self {
        Sessions {
            sessions: Mutex::default(),
            pending: Mutex::default(),
        }
    }
}

impl<S: Clone, P> Sessions<S, P> {
    /// Keeps `session` until `expires`; answers its id. Beyond [`SESSIONS_MAX`], the session
    /// closest to expiry is forgotten.
    pub fn open(&self, session: S, expires: Instant) -> String {
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
        sessions.insert(id.clone(), Kept { session, expires });
        id
    }

    /// The session `id` names, while it lasts.
    pub fn get(&self, id: &str) -> Option<S> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            Some(kept) if kept.expires > Instant::now() => Some(kept.session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Changes the session `id` with `change`, while it lasts; what `change` answered, or
    /// `None` when the session is gone.
    pub fn update<R>(&self, id: &str, change: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(id) {
            Some(kept) if kept.expires > Instant::now() => Some(change(&mut kept.session)),
            _ => None,
        }
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Keeps a login under way; answers its id, or `None` when [`PENDING_LOGINS_MAX`] are
    /// waiting.
    pub fn start_login(&self, login: PendingLogin<P>) -> Option<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, l| l.lasts());
        if pending.len() >= PENDING_LOGINS_MAX {
            return None;
        }
        let id = random_token();
        pending.insert(id.clone(), login);
        Some(id)
    }

    /// Takes the login `id` (once), while it lasts ([`LOGIN_LIFETIME`]).
    pub fn take_login(&self, id: &str) -> Option<PendingLogin<P>> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .filter(PendingLogin::lasts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_change_and_close() {
        let sessions: Sessions<Option<&str>> = Sessions::default();
        let later = Instant::now() + Duration::from_secs(60);
        let id = sessions.open(None, later);
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), RANDOM_BYTES);
        assert_eq!(sessions.update(&id, |s| s.replace("123456782")), Some(None));
        assert_eq!(sessions.get(&id), Some(Some("123456782")));
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        assert!(sessions.update(&id, |_| {}).is_none());
        let gone = sessions.open(None, Instant::now());
        assert!(sessions.get(&gone).is_none());
        assert!(sessions.update(&gone, |_| {}).is_none());
        assert_ne!(sessions.open(None, later), sessions.open(None, later));
    }

    #[test]
    fn a_login_is_taken_once() {
        let sessions: Sessions<(), &str> = Sessions::default();
        let login = PendingLogin::new("00000022");
        assert_ne!(login.state, login.nonce);
        let id = sessions.start_login(login).unwrap();
        assert_eq!(sessions.take_login(&id).unwrap().context, "00000022");
        assert!(sessions.take_login(&id).is_none());
    }

    #[test]
    fn a_session_lasts_as_long_as_its_token_at_most_an_hour() {
        assert_eq!(session_lifetime(Some(60)), Duration::from_secs(60));
        assert_eq!(session_lifetime(Some(86_400)), SESSION_LIFETIME_MAX);
        assert_eq!(session_lifetime(None), SESSION_LIFETIME_MAX);
    }
}
