//! PEM armour (RFC 7468) for every file the tools write.

use crate::error::Malformed;

/// Encodes `bytes` under `label`.
pub fn encode(label: &str, bytes: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, bytes)
        .unwrap_or_else(|e| format!("<cannot armour: {e}>"))
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
        let text = encode("ZTSSH REVOCATION LIST", &[]);
        let e = decode(text.as_bytes()).expect_err("an empty body");
        assert!(
            e.to_string().starts_with("not a PEM-armoured ztssh file: "),
            "{e}"
        );
    }

    #[test]
    fn round_trip_and_wrong_label() {
        let text = encode("ZTSSH LICENCE", b"hello");
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
