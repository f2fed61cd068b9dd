//! The unique pupil number: 13 characters, a mod-23 check letter first (docs/domain.md §6).

use std::fmt;
use std::str::FromStr;

use crate::id_error::IdError;

/// The check-letter alphabet (no I, O or S).
const ALPHABET: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// A valid UPN. Its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Upn(String);

impl Upn {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The check letter for characters 2..=13, or `None` if one of them is not allowed there.
    pub fn check_letter(rest: &[u8]) -> Option<u8> {
        if rest.len() != 12 {
            return None;
        }
        let mut sum = 0u32;
        for (i, &c) in rest.iter().enumerate() {
            let position = i as u32 + 2;
            let value = match c {
                b'0'..=b'9' => u32::from(c - b'0'),
                // A letter is allowed only last (a temporary UPN) and counts as its alphabet index.
                b'A'..=b'Z' if position == 13 => ALPHABET.iter().position(|&a| a == c)? as u32,
                _ => return None,
            };
            sum += position * value;
        }
        Some(ALPHABET[(sum % 23) as usize])
    }
}

impl FromStr for Upn {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim().to_ascii_uppercase();
        let bytes = s.as_bytes();
        if bytes.len() != 13 {
            return Err(IdError::new("UPN", "must be 13 characters"));
        }
        let Some(check) = Self::check_letter(&bytes[1..]) else {
            return Err(IdError::new(
                "UPN",
                "characters 2 to 12 must be digits, the 13th a digit or a check-alphabet letter",
            ));
        };
        if bytes[0] != check {
            return Err(IdError::new("UPN", "check letter does not match"));
        }
        Ok(Self(s))
    }
}

impl TryFrom<String> for Upn {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<Upn> for String {
    fn from(u: Upn) -> String {
        u.0
    }
}

impl fmt::Display for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upn(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_vectors() {
        assert!("B801200005001".parse::<Upn>().is_ok());
        assert!("P207000016049".parse::<Upn>().is_ok());
        let err = "Q207000016049".parse::<Upn>().unwrap_err();
        assert!(err.to_string().contains("check letter"), "{err}");
    }

    #[test]
    fn shape_errors() {
        assert!(
            "B80120000500"
                .parse::<Upn>()
                .unwrap_err()
                .to_string()
                .contains("13 characters")
        );
        assert!("B8012000X5001".parse::<Upn>().is_err());
    }

    proptest! {
        #[test]
        fn computed_check_letter_always_validates(digits in "[0-9]{11}", last in "[0-9A-HJ-NP-RT-Z]") {
            let rest = format!("{digits}{last}");
            let check = Upn::check_letter(rest.as_bytes()).unwrap();
            let upn = format!("{}{rest}", check as char);
            prop_assert!(upn.parse::<Upn>().is_ok());
        }
    }
}
