//! The holder's side of the exchange: the node that knows the person's BSN (or ZVN)
//! blinds it before anything leaves the node, sends the blinded input to the PRS, and
//! hands the PRS's answer together with its blinding factor to the recipient as an
//! [`ExchangeToken`](crate::ExchangeToken).
//! The holder never learns a pseudonym and the PRS never sees the number in clear.
//! No network calls here: the hub and node crates move these values.

use std::fmt;

use curve25519_dalek::Scalar;
use rand_core::OsRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use voprf::{BlindedElement, OprfClient, Ristretto255};
use zeroize::{Zeroize, Zeroizing};

use crate::b64::{protocol_decode_32, protocol_encode};
use crate::error::{Error, Result};
use crate::identifier::PersonalId;

/// The holder's secret random scalar `r` of one blinding. It goes to the recipient inside
/// the exchange token (the recipient needs it to unblind) and nowhere else. Wiped on drop;
/// `Debug` does not print it.
#[derive(Clone)]
pub struct BlindFactor(pub(crate) Scalar);

impl BlindFactor {
    /// Base64url of the 32-byte little-endian scalar, padded as the national protocol
    /// writes it. Wiped on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut bytes = self.0.to_bytes();
        let text = Zeroizing::new(protocol_encode(&bytes));
        bytes.zeroize();
        text
    }

    /// Parses base64url (padded or not) of a canonical, non-zero scalar.
    pub fn from_base64(text: &str) -> Result<Self> {
        let mut bytes = protocol_decode_32(text, "blind factor is not 32 bytes of base64url")?;
        let scalar: Option<Scalar> = Scalar::from_canonical_bytes(bytes).into();
        bytes.zeroize();
        match scalar {
            Some(scalar) if scalar != Scalar::ZERO => Ok(Self(scalar)),
            _ => Err(Error::Malformed(
                "blind factor is not a non-zero canonical scalar",
            )),
        }
    }
}

impl Drop for BlindFactor {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for BlindFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindFactor(<redacted>)")
    }
}

impl Serialize for BlindFactor {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for BlindFactor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        BlindFactor::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// The blinded OPRF input `r·H(input)`: a ristretto255 element, sent to the PRS.
/// It reveals nothing about the person without the blinding factor.
#[derive(Clone, Debug)]
pub struct BlindedInput(pub(crate) BlindedElement<Ristretto255>);

impl BlindedInput {
    /// Base64url of the 32-byte element, padded as the national protocol writes it
    /// (the `encryptedPersonalId` of its `/oprf/eval` request).
    pub fn to_base64(&self) -> String {
        protocol_encode(&self.0.serialize())
    }

    /// Parses base64url (padded or not) of a valid, non-identity ristretto255 element.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = protocol_decode_32(text, "blinded input is not 32 bytes of base64url")?;
        BlindedElement::deserialize(&bytes)
            .map(Self)
            .map_err(|_| Error::InvalidElement)
    }
}

/// Blinds a person's number for the PRS (RFC 9497 `Blind`, ristretto255-SHA512).
/// A fresh random blinding factor is drawn every time, so two blindings of one number
/// cannot be linked. Keep the [`BlindFactor`] for the exchange token; send the
/// [`BlindedInput`] to the PRS.
pub fn blind(person: &PersonalId) -> Result<(BlindFactor, BlindedInput)> {
    let input = person.oprf_input();
    let result = OprfClient::<Ristretto255>::blind(&input, &mut OsRng)
        .map_err(|_| Error::Malformed("OPRF input"))?;
    let mut bytes: [u8; 32] = result.state.serialize().into();
    let scalar: Option<Scalar> = Scalar::from_canonical_bytes(bytes).into();
    bytes.zeroize();
    // voprf serialises its blind as a canonical non-zero scalar.
    let scalar = scalar.ok_or(Error::Malformed("OPRF blind"))?;
    Ok((BlindFactor(scalar), BlindedInput(result.message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::Bsn;

    #[test]
    fn blinding_is_randomised_and_round_trips() {
        let person = PersonalId::Bsn(Bsn::parse("123456782").unwrap());
        let (r1, b1) = blind(&person).unwrap();
        let (r2, b2) = blind(&person).unwrap();
        assert_ne!(b1.to_base64(), b2.to_base64());
        assert_ne!(*r1.to_base64(), *r2.to_base64());
        let text = b1.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(BlindedInput::from_base64(&text).unwrap().to_base64(), text);
        assert_eq!(
            BlindedInput::from_base64(text.trim_end_matches('='))
                .unwrap()
                .to_base64(),
            text
        );
        let again = BlindFactor::from_base64(&r1.to_base64()).unwrap();
        assert_eq!(again.0, r1.0);
        assert!(!format!("{r1:?}").contains(r1.to_base64().as_str()));
    }

    #[test]
    fn refuses_bad_elements_and_scalars() {
        let identity = protocol_encode(&[0u8; 32]);
        assert!(matches!(
            BlindedInput::from_base64(&identity),
            Err(Error::InvalidElement)
        ));
        // Not a canonical ristretto255 encoding (high bit set).
        let not_a_point = protocol_encode(&[0xff; 32]);
        assert!(matches!(
            BlindedInput::from_base64(&not_a_point),
            Err(Error::InvalidElement)
        ));
        for bad in ["", "***", "AAAA", &protocol_encode(&[1u8; 33])] {
            assert!(
                matches!(BlindedInput::from_base64(bad), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
        assert!(BlindFactor::from_base64(&identity).is_err());
        assert!(BlindFactor::from_base64(&protocol_encode(&[0xff; 32])).is_err());
    }
}
