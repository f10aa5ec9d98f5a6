//! Phone numbers: normalised to E.164 and hashed on the device. The number itself goes to
//! the relay once per registration, for the verification code; everything else names it
//! by its hash.

use crate::error::{CoreError, CoreResult};

/// Normalises `number` to E.164 (`+` and 8–15 digits), accepting spaces, dashes, dots and
/// parentheses as separators.
pub fn normalize(number: &str) -> CoreResult<String> {
    let trimmed = number.trim();
    let Some(rest) = trimmed.strip_prefix('+') else {
        return Err(CoreError::InvalidArgument(
            "phone number must be in international form, starting with +".into(),
        ));
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(CoreError::InvalidArgument(
                    "phone number has invalid characters".into(),
                ))
            }
        }
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(CoreError::InvalidArgument(
            "phone number must have 8 to 15 digits".into(),
        ));
    }
    Ok(format!("+{digits}"))
}

/// The relay's name for a phone number: SHA-256 of its E.164 form, lowercase hex (computed
/// by the protocol crate, as the relay computes it for a verification request).
pub fn phone_hash(number: &str) -> CoreResult<String> {
    let normalized = normalize(number)?;
    let number = privcomm_protocol::PhoneNumber::parse(&normalized)
        .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
    Ok(number.hash().as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_of_one_number_hash_alike() {
        let a = phone_hash("+49 30 1234-5678").unwrap();
        let b = phone_hash("+493012345678").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(privcomm_protocol::PhoneHash::parse(&a).is_ok());
        assert!(phone_hash("030 1234 5678").is_err());
        assert!(phone_hash("+12").is_err());
        assert!(phone_hash("+49abc12345678").is_err());
    }
}
