//! RFC 8785 JSON canonicalisation (JCS), for the bytes that event hashes cover.
//!
//! Ledger payloads carry amounts as strings, so only integers appear as numbers; anything
//! else (a float, an integer beyond 2^53) is refused rather than risk a second encoding.

use serde_json::Value;

/// Largest integer that ECMAScript, and so RFC 8785, prints exactly.
const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("number {0} is not an integer within ±2^53; amounts must be strings")]
    UnsupportedNumber(String),
}

/// The canonical text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// SHA-256 of the canonical bytes of `value`: how a document (a retirement certificate) is
/// hashed so anyone can recompute the hash from the JSON alone.
pub fn canonical_sha256(value: &Value) -> Result<[u8; 32], CanonicalError> {
    use sha2::{Digest, Sha256};
    Ok(Sha256::digest(to_canonical_string(value)?.as_bytes()).into())
}

fn write_value(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // RFC 8785 orders keys by their UTF-16 code units, not by UTF-8 bytes.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_number(number: &serde_json::Number, out: &mut String) -> Result<(), CanonicalError> {
    if let Some(unsigned) = number.as_u64() {
        if unsigned <= SAFE_INTEGER_MAX {
            out.push_str(&unsigned.to_string());
            return Ok(());
        }
    } else if let Some(signed) = number.as_i64() {
        if signed.unsigned_abs() <= SAFE_INTEGER_MAX {
            out.push_str(&signed.to_string());
            return Ok(());
        }
    }
    Err(CanonicalError::UnsupportedNumber(number.to_string()))
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            control if (control as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", control as u32));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let value = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 0, "y": -5}});
        assert_eq!(to_canonical_string(&value).unwrap(), r#"{"a":[true,null,"x"],"b":1,"c":{"y":-5,"z":0}}"#);
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+1F600 is a surrogate pair (0xD83D...) and sorts before U+FB01 in UTF-16,
        // though after it in UTF-8 byte order.
        let value = json!({"\u{fb01}": 1, "\u{1f600}": 2});
        assert_eq!(to_canonical_string(&value).unwrap(), "{\"\u{1f600}\":2,\"\u{fb01}\":1}");
    }

    #[test]
    fn strings_escape_as_rfc_8785_says() {
        let value = json!("q\"b\\n\n\u{1}é/\u{2028}");
        assert_eq!(to_canonical_string(&value).unwrap(), "\"q\\\"b\\\\n\\n\\u0001é/\u{2028}\"");
    }

    #[test]
    fn floats_and_huge_integers_are_refused() {
        assert!(to_canonical_string(&json!(1.5)).is_err());
        assert!(to_canonical_string(&json!(9_007_199_254_740_992u64)).is_err());
        assert_eq!(to_canonical_string(&json!(9_007_199_254_740_991u64)).unwrap(), "9007199254740991");
    }

    #[test]
    fn canonical_text_is_a_fixed_point() {
        let value = json!({"payload": {"Deposited": {"amount": "10.00"}}, "sequence": 3});
        let once = to_canonical_string(&value).unwrap();
        let twice = to_canonical_string(&serde_json::from_str(&once).unwrap()).unwrap();
        assert_eq!(once, twice);
    }
}
