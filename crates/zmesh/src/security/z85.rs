//! Z85 (ZeroMQ RFC 32): 4 bytes to 5 printable characters. The text form of CURVE keys.

/// The RFC 32 alphabet.
const ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Text that is not valid Z85.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Z85Error {
    /// Z85 text comes in groups of 5 characters (and data in groups of 4 bytes).
    #[error("length {0} is not a multiple of {1}")]
    Length(usize, usize),
    /// A character outside the Z85 alphabet.
    #[error("character {ch:?} at position {pos} is not Z85")]
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        pos: usize,
    },
    /// A group decodes to more than 32 bits.
    #[error("group at position {0} overflows 32 bits")]
    Overflow(usize),
}

fn value_of(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Encode bytes (length a multiple of 4).
///
/// ```
/// use zmesh::security::z85;
/// assert_eq!(z85::encode(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]).unwrap(), "HelloWorld");
/// ```
pub fn encode(data: &[u8]) -> Result<String, Z85Error> {
    if !data.len().is_multiple_of(4) {
        return Err(Z85Error::Length(data.len(), 4));
    }
    let mut out = String::with_capacity(data.len() / 4 * 5);
    for chunk in data.chunks(4) {
        let mut v = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut group = [0u8; 5];
        for slot in group.iter_mut().rev() {
            *slot = ALPHABET[(v % 85) as usize];
            v /= 85;
        }
        out.extend(group.iter().map(|&b| b as char));
    }
    Ok(out)
}

/// Decode Z85 text (length a multiple of 5).
pub fn decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(5) {
        return Err(Z85Error::Length(bytes.len(), 5));
    }
    let mut out = Vec::with_capacity(bytes.len() / 5 * 4);
    for (g, chunk) in bytes.chunks(5).enumerate() {
        let mut v: u64 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let d = value_of(c).ok_or(Z85Error::BadChar {
                ch: c as char,
                pos: g * 5 + i,
            })?;
            v = v * 85 + u64::from(d);
        }
        let v = u32::try_from(v).map_err(|_| Z85Error::Overflow(g * 5))?;
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc32_test_vector() {
        let data = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(encode(&data).unwrap(), "HelloWorld");
        assert_eq!(decode("HelloWorld").unwrap(), data);
    }

    #[test]
    fn curve_key_known_answer() {
        // The libzmq test server public key (tests/testutil_security.cpp), as bytes.
        let z = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let raw = decode(z).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(encode(&raw).unwrap(), z);
        assert_eq!(&raw[..4], &[0x54, 0xfc, 0xba, 0x24]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(decode("abcd"), Err(Z85Error::Length(4, 5)));
        assert_eq!(decode("abc d"), Err(Z85Error::BadChar { ch: ' ', pos: 3 }));
        assert_eq!(decode("#####"), Err(Z85Error::Overflow(0)));
        assert_eq!(encode(&[1, 2, 3]), Err(Z85Error::Length(3, 4)));
    }

    #[test]
    fn round_trips_every_byte_pattern() {
        let data: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode(&encode(&data).unwrap()).unwrap(), data);
    }
}
