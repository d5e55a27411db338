//! A component's digest: `sha256:` and 64 lowercase hex digits, the one form a version
//! is named by. A digest that arrives from outside (a recording, an API parameter, a
//! store row the CLI reads back) is parsed into a [`Digest`] before anything uses it, so
//! what is built from one (a compile-cache file name) can never name another place.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a digest: expected sha256: followed by 64 lowercase hex digits")]
pub struct DigestError(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits alone: only `[0-9a-f]`, safe in a file name.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        let valid = text.strip_prefix(PREFIX).is_some_and(|hex| {
            hex.len() == HEX_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if valid {
            Ok(Digest(text.to_owned()))
        } else {
            // Bounded, so a hostile value cannot flood a log line or an answer.
            let shown: String = text.chars().take(80).collect();
            Err(DigestError(shown))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(text: String) -> Result<Digest, DigestError> {
        text.parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, valid: bool) {
        assert_eq!(text.parse::<Digest>().is_ok(), valid, "{text:?}");
    }

    #[test]
    fn only_sha256_and_64_lowercase_hex_digits_parse() {
        let good = Digest::of(b"component");
        check(good.as_str(), true);
        assert_eq!(good.hex().len(), 64);
        check(&good.as_str().to_uppercase(), false);
        check(&format!("sha256:{}", good.hex().to_uppercase()), false);
        check(good.hex(), false);
        check(&format!("{good}0"), false);
        check(&good.as_str()[..70], false);
        check("sha256:../../x", false);
        check("/etc/passwd", false);
        check(&format!("sha256:../{}", &good.hex()[3..]), false);
        check(&format!("sha512:{}", good.hex()), false);
        check(&format!(" {good}"), false);
        check("", false);
    }

    #[test]
    fn serde_refuses_what_parsing_refuses() {
        let good = Digest::of(b"x");
        let json = serde_json::to_string(&good).expect("json");
        assert_eq!(serde_json::from_str::<Digest>(&json).expect("reads back"), good);
        let error = serde_json::from_str::<Digest>("\"sha256:../../x\"").expect_err("refused");
        assert!(error.to_string().contains("not a digest"), "{error}");
    }
}
