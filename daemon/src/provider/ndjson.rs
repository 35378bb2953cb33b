//! An incremental splitter for newline-delimited JSON (Ollama's streaming format).
//!
//! Bytes arrive split anywhere; complete lines come out. A line ends with LF (a CR before
//! it is dropped); blank lines are skipped. Lines are handed out as bytes for
//! `serde_json::from_slice`, which validates UTF-8 itself, so a character split across
//! reads is never decoded half.

/// Cap on one line. Ollama's lines are a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// A line exceeded [`MAX_LINE_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an NDJSON line exceeds {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

/// The splitter's state between reads.
#[derive(Debug, Default)]
pub struct NdjsonSplitter {
    partial: Vec<u8>,
}

impl NdjsonSplitter {
    /// A splitter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete, non-blank lines are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), LineTooLong> {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            if self.partial.len() + end > MAX_LINE_BYTES {
                return Err(LineTooLong);
            }
            self.partial.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                out.push(line);
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// At the end of the stream: the last line if it had no newline (servers usually end
    /// with one; a missing one is tolerated, the JSON still has to parse).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.partial);
        line.iter()
            .any(|b| !b.is_ascii_whitespace())
            .then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "{\"message\":{\"content\":\"Hé\"},\"done\":false}\n\
        \n\
        {\"message\":{\"content\":\"llo 😀\"},\"done\":false}\r\n\
        {\"done\":true,\"eval_count\":2}\n";

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = NdjsonSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out).unwrap();
        }
        out.extend(s.finish());
        out.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn split_at_every_position_gives_the_same_lines() {
        let whole = lines_of(&[STREAM.as_bytes()]);
        assert_eq!(whole.len(), 3);
        assert!(whole[1].ends_with("false}"), "CR stripped: {:?}", whole[1]);
        let b = STREAM.as_bytes();
        for cut in 0..=b.len() {
            assert_eq!(lines_of(&[&b[..cut], &b[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_last_line_without_newline_comes_out_at_finish() {
        assert_eq!(
            lines_of(&[b"{\"a\":1}\n{\"b\":2}"]),
            ["{\"a\":1}", "{\"b\":2}"]
        );
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..10)) {
            let b = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([b.len()]) {
                chunks.push(&b[start..cut.max(start)]);
                start = cut.max(start);
            }
            prop_assert_eq!(lines_of(&chunks), lines_of(&[b]));
        }
    }
}
