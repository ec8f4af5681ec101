//! Settings that take one name of a closed set (`auth`, `backend.type`,
//! `expire_type`, methods, ...). The set is a serde enum; the setting is read
//! as a [`Choice`]: the text as written plus the variant it names. A name
//! outside the set does not stop parsing (that would hide every other problem
//! of the file): the compiler reports it, located, with the accepted names,
//! taken from the enum itself, and a suggestion.

use super::error::{err, ConfigError};
use super::locate::{backticked, did_you_mean};
use serde::de::{value::StrDeserializer, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A closed set of names: a unit-variant serde enum.
pub trait Closed: DeserializeOwned + Copy {
    /// The written name as the set compares it: exact by default. Settings
    /// that have always accepted any case (or surrounding blanks) say so here.
    fn normalize(written: &str) -> Cow<'_, str> {
        Cow::Borrowed(written)
    }
}

/// Any case, blanks around ignored, compared in lower case.
pub fn lower_trimmed(written: &str) -> Cow<'_, str> {
    Cow::Owned(written.trim().to_ascii_lowercase())
}

/// Any case, blanks around ignored, compared in upper case.
pub fn upper_trimmed(written: &str) -> Cow<'_, str> {
    Cow::Owned(written.trim().to_ascii_uppercase())
}

/// A closed-set setting as written, and the variant it names.
///
/// It also reads as the written text (`Deref<Target = str>`, `Display`,
/// `Debug`, `Hash`, `Serialize`), exactly as the `String` it replaces: the
/// runtime constructors that still match the text, counter identities and
/// config fingerprints see what they saw before. New code asks [`Choice::get`].
#[derive(Clone)]
pub struct Choice<T> {
    written: String,
    /// The variant, or serde's refusal (which lists the accepted names).
    value: Result<T, String>,
}

impl<T: Closed> Choice<T> {
    pub fn parse(written: impl Into<String>) -> Choice<T> {
        let written = written.into();
        let value = {
            let normalized = T::normalize(&written);
            T::deserialize(StrDeserializer::<serde::de::value::Error>::new(&normalized))
                .map_err(|e| e.to_string())
        };
        Choice { written, value }
    }

    /// The variant, when the written name is one of the set.
    pub fn get(&self) -> Option<T> {
        self.value.as_ref().ok().copied()
    }

    /// The variant, or the problem of a name outside the set, for `field`:
    /// `auth "jwtt" is not one of none, hmac, …; did you mean "jwt"?`.
    /// An empty `field` leaves the name out (the location names it).
    pub fn value(&self, field: &str) -> Result<T, String> {
        let refusal = match &self.value {
            Ok(v) => return Ok(*v),
            Err(refusal) => refusal,
        };
        let written = &self.written;
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("{field} ")
        };
        let words = backticked(refusal);
        let expected = words.get(1..).unwrap_or_default();
        if !refusal.starts_with("unknown variant") || expected.is_empty() {
            return Err(format!("{field}{written:?}: {refusal}"));
        }
        Err(format!(
            "{field}{written:?} is not one of {}{}",
            expected.join(", "),
            suggestion(&T::normalize(written), expected)
        ))
    }

    /// The problem of a name outside the set, for `field` (see [`Choice::value`]).
    pub fn problem(&self, field: &str) -> Option<String> {
        self.value(field).err()
    }

    /// The variant, or `None` with the problem recorded at `at`.
    pub fn check(&self, at: &str, field: &str, e: &mut Vec<ConfigError>) -> Option<T> {
        if let Some(m) = self.problem(field) {
            e.push(err(at, m));
        }
        self.get()
    }
}

/// `; did you mean "X"?`: a name that differs only in case first, else the
/// closest one.
fn suggestion(word: &str, names: &[&str]) -> String {
    match names.iter().find(|n| n.eq_ignore_ascii_case(word)) {
        Some(n) => format!("; did you mean {n:?}?"),
        None => did_you_mean(word, names.iter().copied()),
    }
}

impl<T> Choice<T> {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl<'de, T: Closed> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Anything but a string is a shape error, as for any text field.
        String::deserialize(d).map(Choice::parse)
    }
}

impl<T> Serialize for Choice<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

impl<T> std::ops::Deref for Choice<T> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.written
    }
}

impl<T> fmt::Display for Choice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl<T> fmt::Debug for Choice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl<T> Hash for Choice<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.written.hash(h)
    }
}

impl<T> PartialEq for Choice<T> {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}
impl<T> Eq for Choice<T> {}

impl<T> PartialEq<str> for Choice<T> {
    fn eq(&self, other: &str) -> bool {
        self.written == other
    }
}

impl<T> PartialEq<&str> for Choice<T> {
    fn eq(&self, other: &&str) -> bool {
        self.written == *other
    }
}

impl<T: Closed> From<&str> for Choice<T> {
    fn from(s: &str) -> Self {
        Choice::parse(s)
    }
}

impl<T: Closed> From<String> for Choice<T> {
    fn from(s: String) -> Self {
        Choice::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Color {
        Red,
        Green,
        #[serde(alias = "azure")]
        Blue,
    }
    impl Closed for Color {}

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Loose {
        White,
        Black,
    }
    impl Closed for Loose {
        fn normalize(w: &str) -> Cow<'_, str> {
            lower_trimmed(w)
        }
    }

    #[test]
    fn names_aliases_and_case_rules() {
        assert_eq!(Choice::<Color>::parse("red").get(), Some(Color::Red));
        assert_eq!(Choice::<Color>::parse("azure").get(), Some(Color::Blue));
        assert_eq!(Choice::<Color>::parse("Red").get(), None);
        assert_eq!(Choice::<Loose>::parse(" White ").get(), Some(Loose::White));
        let c = Choice::<Loose>::parse(" White ");
        assert_eq!(&*c, " White ", "reads as written");
        assert_eq!(format!("{c:?}"), format!("{:?}", " White "));
    }

    #[test]
    fn a_wrong_name_lists_the_set_and_suggests() {
        let c = Choice::<Color>::parse("gren");
        assert_eq!(
            c.problem("color").as_deref(),
            // Every accepted spelling is listed, aliases too.
            Some("color \"gren\" is not one of red, green, azure, blue; did you mean \"green\"?")
        );
        assert_eq!(
            Choice::<Color>::parse("RED").problem("").as_deref(),
            Some("\"RED\" is not one of red, green, azure, blue; did you mean \"red\"?")
        );
        assert_eq!(
            Choice::<Loose>::parse("grey").problem("mode").as_deref(),
            Some("mode \"grey\" is not one of white, black")
        );
        let mut e = vec![];
        assert_eq!(
            Choice::<Color>::parse("red").check("x", "c", &mut e),
            Some(Color::Red)
        );
        assert!(e.is_empty());
        assert_eq!(Choice::<Color>::parse("x").check("at", "c", &mut e), None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].location, "at");
    }

    #[test]
    fn only_strings_parse() {
        #[derive(Deserialize)]
        struct T {
            #[allow(dead_code)]
            c: Choice<Color>,
        }
        assert!(toml::from_str::<T>("c = \"purple\"").is_ok());
        assert!(toml::from_str::<T>("c = 1").is_err());
    }
}
