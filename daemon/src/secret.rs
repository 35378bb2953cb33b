//! Secrets in memory: API keys and tokens.
//!
//! A [`Secret`] is zeroed when dropped, prints as `Secret(***)` in Debug and Display, and
//! has no `Serialize`, so it cannot reach a log line, an error message or a reply by
//! accident. The only way to the bytes is [`Secret::expose`], which is easy to grep for.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string, zeroed on drop and redacted when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Takes ownership of a secret; trailing whitespace (a newline from a file or a pipe)
    /// is removed, since no API key ends with it.
    pub fn new(mut value: String) -> Secret {
        // Only whitespace is cut, so nothing secret is left behind in the spare capacity.
        let trimmed = value.trim_end().len();
        value.truncate(trimmed);
        Secret(Zeroizing::new(value))
    }

    /// The secret itself, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret\n".into());
        assert_eq!(s.expose(), "sk-very-secret");
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "Secret(***) *** Some(Secret(***))"
        );
    }
}
