//! The NHS number: ten digits, mod-11 check digit (docs/domain.md §6). The consistent child identifier.

use std::fmt;
use std::str::FromStr;

use crate::id_error::IdError;

/// A valid NHS number. Its `Debug` hides the digits so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NhsNumber(String);

impl NhsNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The check digit for nine leading digits, or `None` when the remainder makes the number invalid.
    pub fn check_digit(first_nine: &[u8; 9]) -> Option<u8> {
        let sum: u32 = first_nine
            .iter()
            .zip((2..=10).rev())
            .map(|(d, w)| u32::from(*d) * w)
            .sum();
        match 11 - (sum % 11) {
            11 => Some(0),
            10 => None,
            check => Some(check as u8),
        }
    }
}

impl FromStr for NhsNumber {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        let compact: String = s.chars().filter(|c| *c != ' ').collect();
        if compact.len() != 10 || !compact.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::new("NHS number", "must be 10 digits"));
        }
        let digits: Vec<u8> = compact.bytes().map(|b| b - b'0').collect();
        let first_nine: [u8; 9] = digits[..9].try_into().expect("ten digits");
        match Self::check_digit(&first_nine) {
            None => Err(IdError::new(
                "NHS number",
                "check digit would be 10, so no such number exists",
            )),
            Some(check) if check != digits[9] => {
                Err(IdError::new("NHS number", "check digit does not match"))
            }
            Some(_) => Ok(Self(compact)),
        }
    }
}

impl TryFrom<String> for NhsNumber {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<NhsNumber> for String {
    fn from(n: NhsNumber) -> String {
        n.0
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_vectors() {
        for valid in ["9434765919", "9434765870", "9990000018"] {
            assert!(valid.parse::<NhsNumber>().is_ok(), "{valid} should be valid");
        }
        let err = "9876544321".parse::<NhsNumber>().unwrap_err();
        assert!(err.to_string().contains("NHS number"), "{err}");
    }

    #[test]
    fn shape_errors_name_the_problem() {
        assert!(
            "123"
                .parse::<NhsNumber>()
                .unwrap_err()
                .to_string()
                .contains("10 digits")
        );
        assert!(
            "94347659x9"
                .parse::<NhsNumber>()
                .unwrap_err()
                .to_string()
                .contains("10 digits")
        );
        assert_eq!(
            "943 476 5919".parse::<NhsNumber>().unwrap().as_str(),
            "9434765919"
        );
    }

    #[test]
    fn debug_hides_the_number() {
        let n: NhsNumber = "9434765919".parse().unwrap();
        assert!(!format!("{n:?}").contains("9434"));
    }

    proptest! {
        #[test]
        fn exactly_one_last_digit_is_valid_unless_none(first in proptest::array::uniform9(0u8..10)) {
            let prefix: String = first.iter().map(|d| char::from(b'0' + d)).collect();
            let n_valid = (0..10).filter(|d| format!("{prefix}{d}").parse::<NhsNumber>().is_ok()).count();
            let expected = usize::from(NhsNumber::check_digit(&first).is_some());
            prop_assert_eq!(n_valid, expected);
        }
    }
}
