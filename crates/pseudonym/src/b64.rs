//! Base64url helpers: strict unpadded form for JOSE parts (RFC 7515 §2), and a lenient
//! form for the values the national PRS protocol exchanges, which its Python reference
//! writes with `=` padding. Not a general encoding module.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Error, Result};

/// JOSE parts: unpadded on output, padding refused on input.
const JOSE: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Protocol values (blinded input, evaluated element, blinding factor): padded on output,
/// as the reference implementation writes them, and accepted with or without padding.
const PROTOCOL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn jose_encode(bytes: &[u8]) -> String {
    JOSE.encode(bytes)
}

pub(crate) fn jose_decode(text: &str, what: &'static str) -> Result<Vec<u8>> {
    JOSE.decode(text).map_err(|_| Error::Malformed(what))
}

pub(crate) fn protocol_encode(bytes: &[u8]) -> String {
    PROTOCOL.encode(bytes)
}

/// Decodes exactly 32 bytes (a ristretto255 element or scalar).
pub(crate) fn protocol_decode_32(text: &str, what: &'static str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    // 32 bytes take 44 characters padded; a longer input cannot be a 32-byte value.
    if text.len() > 44 {
        return Err(Error::Malformed(what));
    }
    let mut buffer = [0u8; 33];
    let n = PROTOCOL
        .decode_slice(text, &mut buffer)
        .map_err(|_| Error::Malformed(what))?;
    if n != 32 {
        return Err(Error::Malformed(what));
    }
    out.copy_from_slice(&buffer[..32]);
    zeroize::Zeroize::zeroize(&mut buffer);
    Ok(out)
}
