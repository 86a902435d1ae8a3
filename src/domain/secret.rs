//! A secret the process is given (a token, a signing secret): kept as
//! text, never printed. `Debug` and `Display` show `***`, so a settings
//! struct logged whole, or an error that formats one, leaks nothing.

use std::fmt;
use std::str::FromStr;

/// A secret value; [`Secret::expose`] is the one way to its text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place that uses it (a signature, a
    /// token comparison).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty or blank (an unset variable given as `""`).
    #[must_use]
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(
            format!("{:?}", Some(vec![s.clone()])),
            "Some([Secret(***)])"
        );
        assert_eq!(s.expose(), "hunter2");
        assert!(Secret::from(" ").is_blank());
    }
}
