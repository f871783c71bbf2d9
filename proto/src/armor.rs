//! PEM armour (RFC 7468) for every file the tools write.

use crate::error::Malformed;

/// A document that cannot be armoured: its label is not one RFC 7468
/// allows (every label the tools use is, `labels::pem`'s tests show), or
/// it is too long to encode.
#[derive(Debug, thiserror::Error)]
#[error("cannot armour a {label:?} document: {why}")]
pub struct EncodeError {
    label: String,
    why: String,
}

/// Encodes `bytes` under `label`.
pub fn encode(label: &str, bytes: &[u8]) -> Result<String, EncodeError> {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, bytes).map_err(|e| EncodeError {
        label: label.chars().take(64).collect(),
        why: e.to_string(),
    })
}

/// Decodes a PEM document, returning its label and contents.
pub fn decode(text: &[u8]) -> Result<(String, Vec<u8>), Malformed> {
    let (label, bytes) =
        pem_rfc7468::decode_vec(trim(text)).map_err(|e| Malformed::Armor(e.to_string()))?;
    Ok((label.to_owned(), bytes))
}

/// Decodes a PEM document that must carry `label`.
pub fn decode_expect(label: &'static str, text: &[u8]) -> Result<Vec<u8>, Malformed> {
    let (found, bytes) = decode(text)?;
    if found != label {
        return Err(Malformed::Armor(format!(
            "expected a {label:?} file, found {found:?}"
        )));
    }
    Ok(bytes)
}

fn trim(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    text.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_armour_is_a_clear_error() {
        let text = encode("ZTSSH REVOCATION LIST", &[]).expect("armour");
        let e = decode(text.as_bytes()).expect_err("an empty body");
        assert!(
            e.to_string().starts_with("not a PEM-armoured ztssh file: "),
            "{e}"
        );
    }

    #[test]
    fn round_trip_and_wrong_label() {
        let text = encode("ZTSSH LICENCE", b"hello").expect("armour");
        assert_eq!(
            decode_expect("ZTSSH LICENCE", format!("\n{text}\n\n").as_bytes()),
            Ok(b"hello".to_vec())
        );
        assert!(matches!(
            decode_expect("ZTSSH ROOT KEY", text.as_bytes()),
            Err(Malformed::Armor(_))
        ));
        assert!(decode(b"garbage").is_err());
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::labels::pem;

    #[test]
    fn every_label_the_tools_write_encodes_and_decodes_back() {
        for label in [
            pem::ROOT_KEY,
            pem::ROOT_PUBLIC,
            pem::SUBCA_KEY,
            pem::NOISE_KEY,
            pem::REQUEST,
            pem::LICENCE,
            pem::CLIENT_CERT,
            pem::CRL,
            pem::ACCESS,
            pem::DELEGATION,
            pem::DELEGATED_KEY,
            pem::DELEGATED_PUBLIC,
        ] {
            let text = encode(label, b"\x00\x01 bytes").expect(label);
            assert_eq!(
                decode_expect_any(&text),
                (label.to_owned(), b"\x00\x01 bytes".to_vec())
            );
        }
    }

    fn decode_expect_any(text: &str) -> (String, Vec<u8>) {
        decode(text.as_bytes()).expect("decode")
    }

    #[test]
    fn a_label_rfc_7468_refuses_is_an_error_not_a_placeholder_document() {
        for bad in ["NEW\nLINE", "NUL\0LABEL", "NON-ASCII \u{e4}"] {
            let e = encode(bad, b"x").expect_err(bad);
            assert!(e.to_string().starts_with("cannot armour a"), "{e}");
        }
    }
}
