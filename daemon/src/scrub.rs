//! Scrubbing: the one step that cuts the daemon's keys out of any text that came from an
//! upstream or an error path before it goes anywhere (a reply, a `--json` line, a log
//! field).
//!
//! An upstream may echo what it was sent: a gateway quoting the refused key, a debugging
//! proxy echoing the request's headers, a hostile server. Whatever it sends back is
//! scrubbed *whole*, after its pieces are assembled (an error body, an SSE event, an NDJSON
//! line) and before anything cuts it short, so that neither a key split across body
//! chunks nor one straddling a cut leaves a prefix behind. Model text is not scrubbed: it
//! is the answer, and the key never reaches the model.
//!
//! Which keys: every key the daemon holds. The [`KeyRing`] is process-wide because the
//! keys are: sealed keys (kept current by the credential vault on every change) and the
//! keys of every configured provider's environment variable (kept current by the provider
//! factory on start and reload). A provider's transport adds its own key on top. Keys
//! shorter than [`MIN_KEY_BYTES`] are not scrubbed (any eight-character word would be
//! cut out of every message otherwise); a warning names their provider once, never the
//! key.
//!
//! A key is also looked for in the spellings an upstream is likely to quote it in: JSON
//! escaped (`\/` for `/`, as PHP servers write it) and percent-encoded (a URL in an error
//! message).
//!
//! Matches are collected for every key first and replaced as merged ranges, so keys that
//! overlap or contain one another are removed whole. Text without any key is returned
//! borrowed: nothing is allocated on the common path.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// What a key is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Keys shorter than this are not scrubbed (and are warned about): matching them would
/// cut ordinary words out of every message.
pub const MIN_KEY_BYTES: usize = 8;

/// A fixed set of keys to cut out of text. Cheap to clone (the keys are shared), zeroed
/// when the last clone goes, and printed without its keys.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Every spelling of every key, longest first, without duplicates.
    needles: Arc<[Zeroizing<String>]>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} spellings of keys)", self.needles.len())
    }
}

impl Scrubber {
    /// A scrubber for `keys`; keys shorter than [`MIN_KEY_BYTES`] are left out.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut needles: Vec<Zeroizing<String>> = Vec::new();
        for key in keys {
            if key.len() < MIN_KEY_BYTES {
                continue;
            }
            for spelling in spellings(key) {
                if !needles.iter().any(|n| **n == *spelling) {
                    needles.push(spelling);
                }
            }
        }
        // Longest first: of two keys matching at the same place, the range of the longer
        // is the one kept (the merge would keep it anyway; this keeps merging cheap).
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Scrubber {
            needles: needles.into(),
        }
    }

    /// A scrubber for one key, if there is one.
    pub fn for_key(key: Option<&Secret>) -> Scrubber {
        Scrubber::new(key.map(Secret::expose))
    }

    /// Whether it cuts nothing.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every key replaced by [`REDACTED`]; borrowed when there was none.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        scrub_with(text, self.needles.iter().map(|n| n.as_str()))
    }

    /// `text` with the keys of `self` and of `also` replaced, in one pass (so a key of
    /// one that overlaps a key of the other is still removed whole).
    pub fn scrub_also<'t>(&self, text: &'t str, also: &Scrubber) -> Cow<'t, str> {
        scrub_with(
            text,
            self.needles
                .iter()
                .chain(also.needles.iter())
                .map(|n| n.as_str()),
        )
    }
}

/// The ways an upstream may write `key`: as is, JSON-escaped (with and without `\/`),
/// percent-encoded. Each is a zeroizing copy.
fn spellings(key: &str) -> Vec<Zeroizing<String>> {
    let mut out = vec![Zeroizing::new(key.to_owned())];
    let mut add = |s: Zeroizing<String>| {
        if !out.iter().any(|o| **o == *s) {
            out.push(s);
        }
    };
    // serde_json escapes `"`, `\` and control characters; PHP also escapes `/`.
    let mut json = Zeroizing::new(String::with_capacity(key.len() + 8));
    for c in key.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if c.is_control() => json.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => json.push(c),
        }
    }
    if key.contains('/') {
        add(Zeroizing::new(json.replace('/', "\\/")));
    }
    add(json);
    let mut percent = Zeroizing::new(String::with_capacity(key.len() * 3));
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            percent.push(char::from(b));
        } else {
            percent.push_str(&format!("%{b:02X}"));
        }
    }
    add(percent);
    out
}

/// The replacement of every (possibly overlapping) occurrence of the needles.
fn scrub_with<'t, 'n>(text: &'t str, needles: impl Iterator<Item = &'n str>) -> Cow<'t, str> {
    // Allocated only at the first match.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for needle in needles {
        let mut from = 0;
        while let Some(at) = text[from..].find(needle) {
            let start = from + at;
            ranges.push((start, start + needle.len()));
            // The next search starts one character on, so overlapping occurrences of a
            // periodic key are all found. A match of a valid UTF-8 needle starts on a
            // character boundary, so the next one is too.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut written = 0;
    let mut iter = ranges.into_iter().peekable();
    while let Some((start, mut end)) = iter.next() {
        // Merge every range that overlaps or touches this one.
        while let Some(&(next_start, next_end)) = iter.peek() {
            if next_start > end {
                break;
            }
            end = end.max(next_end);
            iter.next();
        }
        out.push_str(&text[written..start]);
        out.push_str(REDACTED);
        written = end;
    }
    out.push_str(&text[written..]);
    Cow::Owned(out)
}

/// Where a set of keys comes from; each is replaced whole when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeySource {
    /// The sealed credential store.
    Sealed,
    /// The daemon's environment (each configured provider's `api_key_env` or its type's
    /// default variable).
    Environment,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeySource::Sealed => "sealed",
            KeySource::Environment => "environment",
        })
    }
}

/// A key the daemon holds, with the name it is known by (a provider id, a variable),
/// which is what a warning about it may print.
#[derive(Clone, Debug)]
pub struct HeldKey {
    /// A provider id or variable name; never the key.
    pub name: String,
    /// The key.
    pub secret: Secret,
}

/// Every key the daemon holds, by source, and the scrubber made of them.
#[derive(Default)]
pub struct KeyRing {
    sealed: Vec<HeldKey>,
    environment: Vec<HeldKey>,
    /// Keys already warned about as too short, by source and name.
    warned_short: BTreeSet<(KeySource, String)>,
    current: Scrubber,
}

static RING: LazyLock<RwLock<KeyRing>> = LazyLock::new(|| RwLock::new(KeyRing::default()));

impl KeyRing {
    /// Replaces the keys of `source`, warns once about each that is too short to be
    /// scrubbed, and rebuilds the scrubber.
    fn set(&mut self, source: KeySource, keys: Vec<HeldKey>) {
        for key in &keys {
            let id = (source, key.name.clone());
            if key.secret.expose().len() < MIN_KEY_BYTES && !self.warned_short.contains(&id) {
                tracing::warn!(
                    source = %source,
                    key = %key.name,
                    min_bytes = MIN_KEY_BYTES,
                    "a key shorter than {MIN_KEY_BYTES} bytes cannot be scrubbed from upstream errors and logs; no real API key is this short: check it"
                );
                self.warned_short.insert(id);
            }
        }
        match source {
            KeySource::Sealed => self.sealed = keys,
            KeySource::Environment => self.environment = keys,
        }
        self.current = Scrubber::new(
            self.sealed
                .iter()
                .chain(&self.environment)
                .map(|k| k.secret.expose()),
        );
    }
}

/// Puts `keys` in force as every key of `source` (the vault after each change, the
/// factory on start and reload).
pub fn set_keys(source: KeySource, keys: Vec<HeldKey>) {
    RING.write()
        .expect("key ring lock poisoned")
        .set(source, keys);
}

/// The scrubber of every key the daemon holds now.
pub fn current() -> Scrubber {
    RING.read().expect("key ring lock poisoned").current.clone()
}

/// `text` without any key the daemon holds.
pub fn scrub(text: &str) -> Cow<'_, str> {
    current().scrub(text)
}

/// `text` without any key the daemon holds nor any of `own`'s.
pub fn scrub_also<'t>(text: &'t str, own: &Scrubber) -> Cow<'t, str> {
    current().scrub_also(text, own)
}

/// Scrubs `text` in place, allocating only when it holds a key.
pub fn scrub_in_place(text: &mut String, own: &Scrubber) {
    if let Cow::Owned(scrubbed) = scrub_also(text, own) {
        *text = scrubbed;
    }
}

/// A value displayed scrubbed, for log fields that quote upstream text
/// (`error = %Scrubbed(&e)`).
pub struct Scrubbed<T>(pub T);

impl<T: fmt::Display> fmt::Display for Scrubbed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&scrub(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(keys: &[&str], text: &str) -> String {
        Scrubber::new(keys.iter().copied()).scrub(text).into_owned()
    }

    #[test]
    fn every_occurrence_is_replaced() {
        assert_eq!(
            s(
                &["sk-abcdefghijkl"],
                "bad key sk-abcdefghijkl, again sk-abcdefghijkl"
            ),
            "bad key [REDACTED], again [REDACTED]"
        );
    }

    #[test]
    fn text_without_a_key_is_borrowed() {
        let scrubber = Scrubber::new(["sk-abcdefghijkl"]);
        assert!(matches!(scrubber.scrub("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(Scrubber::default().scrub("x"), Cow::Borrowed(_)));
    }

    #[test]
    fn keys_shorter_than_eight_bytes_are_not_scrubbed() {
        let scrubber = Scrubber::new(["1234567", "short"]);
        assert!(scrubber.is_empty());
        assert_eq!(scrubber.scrub("1234567 short"), "1234567 short");
        assert_eq!(s(&["12345678"], "a12345678b"), "a[REDACTED]b");
    }

    #[test]
    fn overlapping_keys_are_removed_whole() {
        // Replacing one key first would leave the other's tail behind.
        let text = "x abcdefgh12345678yz x";
        assert_eq!(s(&["abcdefgh1234", "12345678yz"], text), "x [REDACTED] x");
        assert_eq!(s(&["12345678yz", "abcdefgh1234"], text), "x [REDACTED] x");
    }

    #[test]
    fn keys_that_are_prefixes_of_each_other_leave_nothing() {
        let keys = ["sk-prefix-0000", "sk-prefix-0000-and-more"];
        assert_eq!(
            s(&keys, "a sk-prefix-0000-and-more b sk-prefix-0000 c"),
            "a [REDACTED] b [REDACTED] c"
        );
        assert_eq!(
            s(
                &["sk-prefix-0000-and-more", "sk-prefix-0000"],
                "sk-prefix-0000-and-more"
            ),
            "[REDACTED]"
        );
    }

    #[test]
    fn overlapping_occurrences_of_a_periodic_key_are_all_removed() {
        assert_eq!(s(&["abcabcabc"], "abcabcabcabc!"), "[REDACTED]!");
        assert_eq!(s(&["aaaaaaaa"], "aaaaaaaaaaa"), "[REDACTED]");
    }

    #[test]
    fn adjacent_keys_merge_into_one_redaction() {
        assert_eq!(
            s(&["sk-1111111111"], "sk-1111111111sk-1111111111"),
            "[REDACTED]"
        );
    }

    #[test]
    fn utf8_around_and_inside_keys_is_kept_intact() {
        assert_eq!(s(&["clé-secrète-ü"], "é→clé-secrète-ü←ü"), "é→[REDACTED]←ü");
        // A multi-byte character right before a partial match.
        assert_eq!(s(&["ééééé"], "éééééé"), "[REDACTED]");
        assert_eq!(s(&["sk-abcdefgh"], "日本sk-abcdefg"), "日本sk-abcdefg");
    }

    #[test]
    fn escaped_spellings_of_a_key_are_removed() {
        let key = "sk/ab+cd\"ef==";
        let text = format!(
            "raw {key} json {} php {} url {}",
            r#"sk/ab+cd\"ef=="#, r#"sk\/ab+cd\"ef=="#, "sk%2Fab%2Bcd%22ef%3D%3D"
        );
        assert_eq!(
            s(&[key], &text),
            "raw [REDACTED] json [REDACTED] php [REDACTED] url [REDACTED]"
        );
    }

    #[test]
    fn a_key_split_across_pieces_is_found_once_they_are_assembled() {
        let key = "sk-split-across-two-chunks";
        let body = format!("{{\"error\": \"bad key {key}\"}}");
        let scrubber = Scrubber::new([key]);
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            let whole = format!("{a}{b}");
            assert!(
                !scrubber.scrub(&whole).contains("split-across"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn two_scrubbers_apply_in_one_pass() {
        let ring = Scrubber::new(["abcdefgh1234"]);
        let own = Scrubber::new(["12345678yz"]);
        assert_eq!(ring.scrub_also("abcdefgh12345678yz", &own), "[REDACTED]");
    }

    #[test]
    fn debug_shows_no_key() {
        let scrubber = Scrubber::new(["sk-do-not-print-me"]);
        let shown = format!("{scrubber:?}");
        assert!(!shown.contains("do-not-print"), "{shown}");
    }

    #[test]
    fn the_ring_scrubs_sealed_and_environment_keys_and_follows_changes() {
        let held = |name: &str, key: &str| HeldKey {
            name: name.into(),
            secret: Secret::new(key.into()),
        };
        set_keys(KeySource::Sealed, vec![held("a", "sk-sealed-ring-test")]);
        set_keys(
            KeySource::Environment,
            vec![held("B_KEY", "sk-env-ring-test"), held("C_KEY", "short")],
        );
        assert_eq!(
            scrub("sk-sealed-ring-test sk-env-ring-test short"),
            "[REDACTED] [REDACTED] short"
        );
        set_keys(KeySource::Sealed, Vec::new());
        assert_eq!(scrub("sk-sealed-ring-test"), "sk-sealed-ring-test");
        assert_eq!(
            format!("{}", Scrubbed("key sk-env-ring-test")),
            "key [REDACTED]"
        );
        set_keys(KeySource::Environment, Vec::new());
    }

    proptest! {
        /// Whatever the text and however the keys overlap it, each other and the text's
        /// UTF-8, no key survives and the rest is kept in order.
        #[test]
        fn no_key_survives_in_any_text(
            keys in proptest::collection::vec("[a-cé]{8,12}", 1..4),
            pieces in proptest::collection::vec(("[a-cé ]{0,6}", 0usize..4), 0..8),
        ) {
            let mut text = String::new();
            for (filler, key) in &pieces {
                text.push_str(filler);
                if let Some(key) = keys.get(*key) {
                    text.push_str(key);
                }
            }
            let scrubber = Scrubber::new(keys.iter().map(String::as_str));
            let out = scrubber.scrub(&text);
            for key in &keys {
                prop_assert!(!out.contains(key.as_str()), "{key} in {out}");
            }
            // Removing the placeholders leaves a subsequence of the original text.
            let rest = out.replace(REDACTED, "");
            let mut original = text.chars();
            prop_assert!(rest.chars().all(|c| original.any(|o| o == c)));
        }
    }
}
