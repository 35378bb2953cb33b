//! Errors as a terminal shows them: on one line (an upstream's multi-line message has its
//! line breaks replaced by ` / `), except a configuration parser's caret diagram, which
//! points at the fault and means nothing flattened. The CLI prints its own errors this
//! way, and `serve --daemon`'s waiting parent the daemon's start-up error.

/// Whether `text` holds a parser's caret diagram (`  |     ^^^`): a reload's
/// configuration error arrives from the daemon as text, not as a `ConfigError`.
pub fn has_caret_diagram(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with('|') && line.contains('^')
    })
}

/// `text` with each run of line breaks (and the blanks around it) replaced by ` / `.
pub fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `text` as a terminal should show it: kept whole when it holds a caret diagram, else
/// on one line.
pub fn for_terminal(text: &str) -> String {
    if has_caret_diagram(text) {
        text.to_owned()
    } else {
        one_line(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_become_one_separator_and_caret_diagrams_stay() {
        assert_eq!(for_terminal("a\r\n\n  b\nc"), "a / b / c");
        let diagram =
            "TOML parse error at line 1, column 8\n  |\n1 | [daemon\n  |        ^\nunclosed table";
        assert_eq!(for_terminal(diagram), diagram);
    }
}
