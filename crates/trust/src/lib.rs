//! Identity and trust in a zorgnet network: who a caller is, and how that is proven.
//!
//! What it is: the access-token format the hub issues and the nodes verify ([`token`]), the
//! shape of UZI role codes and numbers ([`is_role_code`], [`is_uzi_number`]), which roles
//! may see which data ([`roles`]), API keys and secret files ([`secret`]), the network's CA
//! ([`pki`]), how its certificates name an organisation ([`certificate`]), and mutual TLS
//! with them ([`tls`]: configurations, a verifier with a replaceable revocation list, an
//! accept loop), and the verification of OpenID Connect tokens of professionals and
//! citizens ([`oidc`]) with their SMART on FHIR scopes ([`smart`]). One definition for the issuer and every verifier, used by the node, the
//! hub and the command line.
//! What it is not: a policy (who may see what is decided by the node's access layer and
//! the hub's consent register), an application server or a store.
#![deny(missing_docs)]

pub mod certificate;
pub mod oidc;
pub mod pki;
pub mod roles;
pub mod secret;
pub mod smart;
pub mod tls;
pub mod token;

/// Whether `role` has the shape of a UZI role code (`01.015`: two digits, a dot, three).
pub fn is_role_code(role: &str) -> bool {
    let bytes = role.as_bytes();
    bytes.len() == 6
        && bytes[2] == b'.'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 2 || b.is_ascii_digit())
}

/// Whether `uzi` has the shape of a UZI number of a person: nine digits.
pub fn is_uzi_number(uzi: &str) -> bool {
    uzi.len() == 9 && uzi.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_codes_have_the_uzi_shape() {
        for good in ["01.015", "17.000", "30.000"] {
            assert!(is_role_code(good), "{good}");
        }
        for bad in [
            "", "01015", "1.015", "01.01", "01.0155", "ab.cde", "01-015", "01.01ä",
        ] {
            assert!(!is_role_code(bad), "{bad}");
        }
    }

    #[test]
    fn uzi_numbers_are_nine_digits() {
        assert!(is_uzi_number("123456789"));
        for bad in ["", "12345678", "1234567890", "12345678a", "١٢٣٤٥٦٧٨٩"] {
            assert!(!is_uzi_number(bad), "{bad}");
        }
    }
}
