//! Strings a client or an upstream chose (a hello's `client`, model names, provider ids,
//! method names, token ids, error messages that quote them), made safe to log.
//!
//! The log is read line by line (by people, `journalctl`, log shippers), so a newline in
//! a logged value would let whoever chose it write a line of their own (`… ERROR forged`),
//! and an ESC byte would let them recolour or rewrite the terminal that shows it. Every
//! log site that carries such a string formats it through [`untrusted`], which writes
//! control characters (and the Unicode line separators and bidirectional overrides) as
//! escapes and cuts what is very long. Values logged with tracing's `?` or as bare `&str`
//! fields are escaped by their `Debug` form already; `%` (Display) fields and message
//! text are not, hence this.

use std::fmt::{self, Write};

/// The most characters of one untrusted value written to the log; the rest is cut
/// (`…`), so a client cannot make the daemon log megabytes for one request.
pub const MAX_LOGGED_CHARS: usize = 512;

/// `value`, displayed with control characters escaped and cut at
/// [`MAX_LOGGED_CHARS`]. For `%` fields of tracing calls: `client = %untrusted(&name)`.
pub fn untrusted<T: fmt::Display>(value: T) -> Untrusted<T> {
    Untrusted(value)
}

/// See [`untrusted`].
#[derive(Clone, Copy, Debug)]
pub struct Untrusted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Escaping {
            inner: f,
            written: 0,
            cut: false,
        };
        // Writing stops with an error once the value is cut; that error is ours.
        match write!(out, "{}", self.0) {
            Err(_) if out.cut => out.inner.write_char('…'),
            other => other,
        }
    }
}

struct Escaping<'a, 'b> {
    inner: &'a mut fmt::Formatter<'b>,
    written: usize,
    cut: bool,
}

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.written == MAX_LOGGED_CHARS {
                self.cut = true;
                return Err(fmt::Error);
            }
            self.written += 1;
            match c {
                '\n' => self.inner.write_str("\\n")?,
                '\r' => self.inner.write_str("\\r")?,
                '\t' => self.inner.write_str("\\t")?,
                c if needs_escape(c) => write!(self.inner, "\\u{{{:x}}}", u32::from(c))?,
                c => self.inner.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1: newlines, ESC, BEL, …), the Unicode line and
/// paragraph separators, and the bidirectional overrides that can make a line read
/// other than it is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_cannot_start_a_line_or_colour_one() {
        let forged = "x\n2026-01-01T00:00:00Z ERROR forged\r\x1b[31mred\x1b[0m\u{2028}\u{202e}";
        let shown = untrusted(forged).to_string();
        assert_eq!(
            shown,
            "x\\n2026-01-01T00:00:00Z ERROR forged\\r\\u{1b}[31mred\\u{1b}[0m\\u{2028}\\u{202e}"
        );
        assert!(!shown.chars().any(needs_escape));
    }

    #[test]
    fn ordinary_text_is_unchanged_and_long_text_is_cut() {
        assert_eq!(
            untrusted("claude-sonnet-4-5 «ok»").to_string(),
            "claude-sonnet-4-5 «ok»"
        );
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        let shown = untrusted(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            untrusted("é".repeat(MAX_LOGGED_CHARS))
                .to_string()
                .chars()
                .count(),
            MAX_LOGGED_CHARS
        );
    }

    #[test]
    fn any_display_value_is_escaped() {
        let e = provd_client::WireError::new(
            provd_client::ErrorCode::NotFound,
            "model 'a\nb' not found",
        );
        assert_eq!(untrusted(&e.message).to_string(), "model 'a\\nb' not found");
    }
}
