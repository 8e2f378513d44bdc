//! How a certificate of the network names its holder, and reading that name back from a
//! verified peer certificate.
//!
//! An organisation's certificate carries its URA number the way a UZI-register server
//! certificate ("UZI-servercertificaat") does, in the subject alternative name, twice:
//! - an `otherName` of type `2.5.5.5` whose value is an IA5String
//!   `<OID CA>-<version>-<UZI number>-<card type>-<subscriber number>-<role>-<AGB code>`,
//!   card type `S` (server) and the URA as subscriber number ("abonneenummer"), e.g.
//!   `2.16.528.1.1003.1.3.5.5.2-1-00000000-S-12345678-00.000-00000000`: what the
//!   UZI-register's readers (`uzireader`, PUZI) parse;
//! - an RFC 4043 `permanentIdentifier` (`1.3.6.1.5.5.7.8.3`) whose value is the URA and whose
//!   assigner is the URA's OID `2.16.528.1.1007.3.3`: what UZI server certificates carry
//!   besides since November 2023.
//!
//! The network CA issues no UZI numbers to systems, so that field is zeros, as are the role
//! and the AGB code. The subject is `C=NL, O=<name>, CN=<name>`; the subject's
//! `serialNumber` (a UZI server certificate's own UZI number) is left out. Only the issuer's
//! signature makes these fields true: read them only from a certificate the TLS layer has
//! verified against the network's trust anchor.
//!
//! What it is not: a verifier (that is [`crate::tls`]) or an issuer (that is [`crate::pki`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use yasna::Tag;
use yasna::models::ObjectIdentifier;

/// Digits in a URA number (UZI-register abonneenummer of a care organisation).
pub const URA_DIGITS: usize = 8;
/// Longest organisation name put into a certificate, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The `otherName` type of the UZI-register's compound identifier string.
pub const UZI_OTHER_NAME_OID: &[u64] = &[2, 5, 5, 5];
/// RFC 4043 `id-on-permanentIdentifier`.
pub const PERMANENT_IDENTIFIER_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 8, 3];
/// The OID of URA numbers, the assigner in a `permanentIdentifier`.
pub const URA_ASSIGNER_OID: &[u64] = &[2, 16, 528, 1, 1007, 3, 3];
/// First field of the compound string: the OID of the UZI server CA, as the UZI-register's
/// test certificates carry it. Readers must trust the certificate's issuer, not this field.
pub const UZI_SERVER_CA_OID: &str = "2.16.528.1.1003.1.3.5.5.2";
/// Card type of a server certificate in the compound string.
const SERVER_CARD_TYPE: &str = "S";
/// Fields of the compound string.
const UZI_FIELDS: usize = 7;
/// Index of the card type, and of the subscriber number (the URA), in the compound string.
const CARD_TYPE_FIELD: usize = 3;
const SUBSCRIBER_FIELD: usize = 4;

/// The subject alternative name extension's OID.
pub(crate) const SUBJECT_ALT_NAME_OID: &[u64] = &[2, 5, 29, 17];

/// Why a certificate does not name a holder, or a name cannot go into one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Not a URA number: eight digits.
    #[error("a URA number is {URA_DIGITS} digits")]
    InvalidUra,
    /// An organisation name that is empty, too long or has control characters.
    #[error("an organisation name is 1 to {MAX_NAME_CHARS} characters without control characters")]
    InvalidName,
    /// Neither an IP address nor a DNS name.
    #[error("{0:?} is neither an IP address nor a DNS name")]
    InvalidHost(String),
    /// The certificate is not DER X.509.
    #[error("the certificate cannot be parsed")]
    Unparsable,
    /// The certificate names its holder in a way this network does not issue.
    #[error("the certificate's holder name is malformed: {0}")]
    Malformed(&'static str),
}

/// Whether `ura` is a URA number: eight ASCII digits.
pub fn is_ura(ura: &str) -> bool {
    ura.len() == URA_DIGITS && ura.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an organisation name for a certificate subject.
pub(crate) fn check_name(name: &str) -> Result<(), NameError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(NameError::InvalidName);
    }
    Ok(())
}

/// A name a TLS server is reached by: what goes into the certificate's subject alternative
/// name as `dNSName` or `iPAddress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// A DNS name (`localhost`, `node.example.nl`).
    Dns(String),
    /// An IP address (`127.0.0.1`, `::1`).
    Ip(IpAddr),
}

impl std::str::FromStr for HostName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostName::Ip(ip));
        }
        match rustls::pki_types::DnsName::try_from(s) {
            Ok(_) => Ok(HostName::Dns(s.to_ascii_lowercase())),
            Err(_) => Err(NameError::InvalidHost(s.to_string())),
        }
    }
}

/// The compound UZI string naming a server of the organisation `ura`.
fn uzi_server_string(ura: &str) -> String {
    format!("{UZI_SERVER_CA_OID}-1-00000000-{SERVER_CARD_TYPE}-{ura}-00.000-00000000")
}

/// The DER value of the subject alternative name extension: the hosts, then (for an
/// organisation) the URA as the two `otherName`s described in the module documentation.
pub(crate) fn subject_alt_name_der(ura: Option<&str>, hosts: &[HostName]) -> Vec<u8> {
    yasna::construct_der(|writer| {
        writer.write_sequence(|names| {
            for host in hosts {
                match host {
                    HostName::Dns(name) => names
                        .next()
                        .write_tagged_implicit(Tag::context(2), |w| w.write_ia5_string(name)),
                    HostName::Ip(IpAddr::V4(ip)) => names
                        .next()
                        .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&ip.octets())),
                    HostName::Ip(IpAddr::V6(ip)) => names
                        .next()
                        .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&ip.octets())),
                }
            }
            if let Some(ura) = ura {
                names.next().write_tagged_implicit(Tag::context(0), |w| {
                    w.write_sequence(|other| {
                        other
                            .next()
                            .write_oid(&ObjectIdentifier::from_slice(UZI_OTHER_NAME_OID));
                        other.next().write_tagged(Tag::context(0), |w| {
                            w.write_ia5_string(&uzi_server_string(ura))
                        });
                    })
                });
                names.next().write_tagged_implicit(Tag::context(0), |w| {
                    w.write_sequence(|other| {
                        other
                            .next()
                            .write_oid(&ObjectIdentifier::from_slice(PERMANENT_IDENTIFIER_OID));
                        other.next().write_tagged(Tag::context(0), |w| {
                            w.write_sequence(|identifier| {
                                identifier.next().write_utf8_string(ura);
                                identifier
                                    .next()
                                    .write_oid(&ObjectIdentifier::from_slice(URA_ASSIGNER_OID));
                            })
                        });
                    })
                });
            }
        })
    })
}

/// Who is at the other end of a verified TLS connection, read from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The organisation's URA number; `None` for the network's own services (the hub),
    /// whose certificates name no organisation.
    pub ura: Option<String>,
    /// The subject's organisation name (`O`, else `CN`).
    pub name: String,
    /// The certificate's serial number, lowercase hexadecimal without leading zeros.
    pub serial: String,
    /// The certificate's `x5t#S256` thumbprint (RFC 8705 §3.1): base64url, unpadded, of the
    /// SHA-256 of its DER. What an access token bound to this certificate names in `cnf`.
    pub thumbprint: String,
}

impl PeerIdentity {
    /// Reads the identity from a certificate's DER. Checks nothing about trust: call it on
    /// certificates the TLS layer has verified.
    pub fn from_certificate(der: &[u8]) -> Result<Self, NameError> {
        let (rest, certificate) =
            X509Certificate::from_der(der).map_err(|_| NameError::Unparsable)?;
        if !rest.is_empty() {
            return Err(NameError::Unparsable);
        }
        let name = certificate
            .subject()
            .iter_organization()
            .chain(certificate.subject().iter_common_name())
            .find_map(|attribute| attribute.as_str().ok())
            .ok_or(NameError::Malformed("no organisation or common name"))?
            .to_string();
        Ok(PeerIdentity {
            ura: ura_of(&certificate)?,
            name,
            serial: serial_hex(certificate.raw_serial()),
            thumbprint: thumbprint(der),
        })
    }
}

/// The `x5t#S256` thumbprint of a certificate's DER (RFC 8705 §3.1).
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// A serial number's bytes as lowercase hexadecimal, without leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "00".into() } else { hex }
}

/// The URA a certificate names, from either `otherName`; both present must agree.
fn ura_of(certificate: &X509Certificate<'_>) -> Result<Option<String>, NameError> {
    let Ok(Some(alt_names)) = certificate.subject_alternative_name() else {
        return Ok(None);
    };
    let uzi_type = x509_parser::der_parser::oid::Oid::from(UZI_OTHER_NAME_OID)
        .map_err(|_| NameError::Malformed("OID"))?;
    let permanent_type = x509_parser::der_parser::oid::Oid::from(PERMANENT_IDENTIFIER_OID)
        .map_err(|_| NameError::Malformed("OID"))?;
    let mut found: Option<String> = None;
    for name in &alt_names.value.general_names {
        let GeneralName::OtherName(kind, value) = name else {
            continue;
        };
        let ura = if *kind == uzi_type {
            ura_of_uzi_string(value)?
        } else if *kind == permanent_type {
            match ura_of_permanent_identifier(value)? {
                Some(ura) => ura,
                None => continue,
            }
        } else {
            continue;
        };
        match &found {
            Some(earlier) if *earlier != ura => {
                return Err(NameError::Malformed("two different URA numbers"));
            }
            _ => found = Some(ura),
        }
    }
    Ok(found)
}

/// The subscriber number of a server's compound UZI string (`[0] EXPLICIT IA5String`).
fn ura_of_uzi_string(value: &[u8]) -> Result<String, NameError> {
    let text = yasna::parse_der(value, |r| {
        r.read_tagged(Tag::context(0), |r| r.read_ia5_string())
    })
    .map_err(|_| NameError::Malformed("UZI otherName is not an IA5String"))?;
    let fields: Vec<&str> = text.split('-').collect();
    if fields.len() != UZI_FIELDS {
        return Err(NameError::Malformed("UZI otherName has not seven fields"));
    }
    if fields[CARD_TYPE_FIELD] != SERVER_CARD_TYPE {
        return Err(NameError::Malformed("UZI otherName is not a server's"));
    }
    let ura = fields[SUBSCRIBER_FIELD];
    if !is_ura(ura) {
        return Err(NameError::Malformed(
            "UZI subscriber number is not a URA number",
        ));
    }
    Ok(ura.to_string())
}

/// The URA of a `permanentIdentifier` whose assigner is the URA OID; `None` for another
/// assigner's identifier.
fn ura_of_permanent_identifier(value: &[u8]) -> Result<Option<String>, NameError> {
    let (identifier, assigner) = yasna::parse_der(value, |r| {
        r.read_tagged(Tag::context(0), |r| {
            r.read_sequence(|r| {
                let identifier = r.read_optional(|r| r.read_utf8string())?;
                let assigner = r.read_optional(|r| r.read_oid())?;
                Ok((identifier, assigner))
            })
        })
    })
    .map_err(|_| NameError::Malformed("permanentIdentifier"))?;
    if assigner != Some(ObjectIdentifier::from_slice(URA_ASSIGNER_OID)) {
        return Ok(None);
    }
    match identifier {
        Some(ura) if is_ura(&ura) => Ok(Some(ura)),
        _ => Err(NameError::Malformed(
            "permanentIdentifier is not a URA number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ura_numbers_are_eight_digits() {
        assert!(is_ura("12345678"));
        for bad in ["", "1234567", "123456789", "1234567a", "１２３４５６７８"] {
            assert!(!is_ura(bad), "{bad}");
        }
    }

    #[test]
    fn host_names_are_ip_addresses_or_dns_names() {
        assert_eq!(
            "127.0.0.1".parse::<HostName>(),
            Ok(HostName::Ip([127, 0, 0, 1].into()))
        );
        assert_eq!(
            "Node.Example.nl".parse::<HostName>(),
            Ok(HostName::Dns("node.example.nl".into()))
        );
        for bad in ["", "a b", "node..nl", "-"] {
            assert!(bad.parse::<HostName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_without_control_characters() {
        assert!(check_name("Huisartsenpraktijk De Linde").is_ok());
        assert!(check_name("Ziekenhuis Ééntje").is_ok());
        for bad in [String::new(), "a\nb".into(), "x".repeat(MAX_NAME_CHARS + 1)] {
            assert_eq!(check_name(&bad), Err(NameError::InvalidName));
        }
    }

    #[test]
    fn serials_are_minimal_hex() {
        assert_eq!(serial_hex(&[0, 0x1f, 0xa0]), "1fa0");
        assert_eq!(serial_hex(&[0]), "00");
    }

    #[test]
    fn the_compound_string_has_the_uzi_shape() {
        assert_eq!(
            uzi_server_string("12345678"),
            "2.16.528.1.1003.1.3.5.5.2-1-00000000-S-12345678-00.000-00000000"
        );
    }

    #[test]
    fn the_uzi_string_is_read_back_and_checked() {
        let encode = |s: &str| {
            yasna::construct_der(|w| w.write_tagged(Tag::context(0), |w| w.write_ia5_string(s)))
        };
        assert_eq!(
            ura_of_uzi_string(&encode(&uzi_server_string("87654321"))).unwrap(),
            "87654321"
        );
        for bad in [
            "2.16.528.1.1003.1.3.5.5.2-1-11111111-Z-90000111-01.015-00000000",
            "2.16.528.1.1003.1.3.5.5.2-1-11111111-S-9000011-00.000-00000000",
            "2.16.528.1.1003.1.3.5.5.2-1-S-90000111",
        ] {
            assert!(ura_of_uzi_string(&encode(bad)).is_err(), "{bad}");
        }
    }
}
