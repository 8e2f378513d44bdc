//! What zorgnet's server-rendered web front-ends share: the citizen portal (`zorgnet-portal`)
//! and the professionals' viewer (`zorgnet-viewer`) are written on these pieces, so that each
//! is one behaviour, written once.
//!
//! What it is:
//! - [`oidc`]: the OpenID Connect authorization-code client of a public client: the
//!   provider's discovery document (read once, its issuer checked, its endpoints `https`
//!   when the issuer is), PKCE `S256`, `state` and `nonce`, the code exchange, and the ID
//!   token verified through `zorgnet_trust::oidc` with its `nonce` checked; who the token
//!   names is the front-end's to judge.
//! - [`session`]: the in-memory sessions and logins under way: random 256-bit ids, bounded
//!   ([`session::SESSIONS_MAX`], [`session::PENDING_LOGINS_MAX`]) and expiring.
//! - [`lang`]: the interface's two languages (Dutch by default, English), chosen with
//!   `?lang=` and kept in a cookie, and [`texts!`], which defines a front-end's own table of
//!   texts in both.
//! - [`page`]: what every answer carries (a Content-Security-Policy without scripts,
//!   `Cache-Control: no-store` unless the handler chose otherwise), cookies read and built,
//!   tokens compared in constant time, redirects, the stylesheet, and [`page::PageRequest`]:
//!   the language, path and query of a page's request, and its rendering.
//! - [`client`]: the HTTP client toward providers and nodes (no redirects followed) and
//!   answers read to a bound.
//! - [`record`]: a line of a record as both front-ends show it, and the FHIR dates and
//!   strings it is made of.
//!
//! What it is not: a front-end (no routes, no templates, no texts of its own), an access
//! policy (the nodes and the hub decide), or a store: nothing here outlives the process.
#![deny(missing_docs)]

pub mod client;
pub mod lang;
pub mod oidc;
pub mod page;
pub mod record;
pub mod session;

pub use lang::Lang;
