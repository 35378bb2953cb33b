//! The daemon's layering, checked from its source: which module may name which.
//!
//! Every `crate::…` path (in `use` lines and inline alike) and every `super::…` path that
//! climbs out of its top-level module is read from `daemon/src`, outside comments,
//! string literals and `#[cfg(test)]` items (a test beside the code may assemble any
//! layers it checks). Each [`RULES`] entry forbids some modules to name others; a broken
//! rule fails with the file and line of each offending path.
//!
//! A rule that the code does not obey yet is named in [`NOT_YET_IN_FORCE`]: it is checked
//! all the same, but only reported. Once it holds, the test fails until its name is
//! taken off the list, so the list only ever shrinks.

use std::path::{Path, PathBuf};

/// Which modules a rule constrains: those named (a name covers its submodules), or all
/// but those named.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Modules(&'static [&'static str]),
    AllBut(&'static [&'static str]),
}

impl Scope {
    fn covers(self, module: &[String]) -> bool {
        let named = |names: &[&str]| names.iter().any(|n| is_within(module, n));
        match self {
            Scope::Modules(names) => named(names),
            Scope::AllBut(names) => !named(names),
        }
    }
}

/// Whether `module` (a path from the crate root) is the module `name` (`a::b`) or inside it.
fn is_within(module: &[String], name: &str) -> bool {
    let name: Vec<&str> = name.split("::").collect();
    module.len() >= name.len() && module.iter().zip(&name).all(|(m, n)| m == n)
}

/// One layering rule: modules in `scope` never name the modules in `never` (nor their
/// submodules).
#[derive(Debug)]
struct Rule {
    name: &'static str,
    scope: Scope,
    never: &'static [&'static str],
}

/// The layering of the daemon (DECISIONS.md, "Structure"; CONVENTIONS.md).
const RULES: &[Rule] = &[
    Rule {
        name: "reload never imports the command line",
        scope: Scope::Modules(&["reload"]),
        never: &["commands"],
    },
    Rule {
        name: "the command line is the top layer: no other module imports it",
        scope: Scope::AllBut(&["commands"]),
        never: &["commands"],
    },
    Rule {
        name: "config never imports provider modules",
        scope: Scope::Modules(&["config"]),
        never: &["provider", "factory"],
    },
    Rule {
        name: "providers never import config or server",
        scope: Scope::Modules(&["provider"]),
        never: &["config", "server", "factory", "resilience"],
    },
    Rule {
        name: "settings, shared by config and providers, imports neither",
        scope: Scope::Modules(&["settings"]),
        never: &["config", "provider", "factory", "server"],
    },
    Rule {
        name: "credentials never import the server",
        scope: Scope::Modules(&["credentials"]),
        never: &["server"],
    },
];

/// Rules the code does not obey yet, by name (none since the provider table broke the
/// config ↔ provider cycle); a rule added here is reported, not enforced, until it holds.
const NOT_YET_IN_FORCE: &[&str] = &[];

/// One path from a module to another, where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reference {
    /// The path as written after `crate::` (or resolved from `super::`), e.g.
    /// `config::load::load_config`.
    path: String,
    line: usize,
}

impl Reference {
    /// The module it names at the top of the crate.
    fn top(&self) -> &str {
        self.path.split("::").next().unwrap_or_default()
    }
}

/// A source file of the crate: its module path and its text.
struct SourceFile {
    file: PathBuf,
    module: Vec<String>,
    text: String,
}

/// The module path of a file under `src`: `provider/http.rs` is `provider::http`,
/// `commands/mod.rs` is `commands`, `lib.rs` the root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
        if stem != "mod" && stem != "lib" {
            parts.push(stem);
        }
    }
    parts
}

/// Every `.rs` file of the library under `src` (the binary's `main.rs` is the command
/// line's entry point, not a module).
fn library_sources(src: &Path) -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the source directory") {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| f.strip_prefix(src).unwrap() != Path::new("main.rs"))
        .map(|path| {
            let relative = path.strip_prefix(src).unwrap();
            SourceFile {
                module: module_of(relative),
                text: std::fs::read_to_string(&path).expect("read a source file"),
                file: Path::new("daemon/src").join(relative),
            }
        })
        .collect()
}

/// `text` with comments, string and character literals and `#[cfg(test)]` items blanked
/// out (line breaks kept, so line numbers stay right).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closes =
                |k: usize| chars[k] == '"' && (1..=hashes).all(|h| chars.get(k + h) == Some(&'#'));
            while j < chars.len() && !closes(j) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), or else a lifetime.
            let end = if next == Some('\\') {
                (i + 2..chars.len())
                    .find(|&k| chars[k] == '\'')
                    .map(|k| k + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(chars[i..end].iter().map(|&c| blank(c)));
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    without_test_items(&out)
}

/// Blanks every item under `#[cfg(test)]`: up to its `;`, or through its braces.
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut chars: Vec<char> = code.chars().collect();
    let text: String = chars.iter().collect();
    let starts: Vec<usize> = text
        .match_indices(MARK)
        .map(|(byte, _)| text[..byte].chars().count())
        .collect();
    for start in starts {
        let mut i = start;
        let mut depth = 0usize;
        while i < chars.len() {
            let c = chars[i];
            if c == '{' {
                depth += 1;
            } else if c == '}' {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    i += 1;
                    break;
                }
            } else if c == ';' && depth == 0 {
                i += 1;
                break;
            }
            i += 1;
        }
        for c in &mut chars[start..i] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    }
    chars.into_iter().collect()
}

/// The paths `code` (from [`code_only`]) names from the crate root, with `super::`
/// resolved against `module`. Groups (`crate::{a, b::c}`) give one path each.
fn references(module: &[String], code: &str) -> Vec<Reference> {
    let chars: Vec<char> = code.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\n' {
            line += 1;
        }
        let at_word = i == 0 || !is_ident(chars[i - 1]);
        let rest: String = chars[i..(i + 7).min(chars.len())].iter().collect();
        let (base, skip) = if at_word && rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if at_word && rest.starts_with("super::") && !module.is_empty() {
            // `super::super::x`: climb once per `super::`.
            let mut base = module.to_vec();
            let mut j = i;
            while chars[j..].iter().collect::<String>().starts_with("super::") {
                base.pop();
                j += 7;
            }
            (base, j - i)
        } else {
            i += 1;
            continue;
        };
        let (paths, end) = path_tree(&chars, i + skip);
        for path in paths {
            let mut full = base.clone();
            full.extend(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            // A `super::` path that stays inside its own top-level module names nothing
            // across layers.
            let crosses = base.is_empty() || full.first() != module.first();
            if crosses && !full.is_empty() && full[0] != "self" {
                found.push(Reference {
                    path: full.join("::"),
                    line,
                });
            }
        }
        line += chars[i..end].iter().filter(|&&c| c == '\n').count();
        i = end.max(i + 1);
    }
    found
}

/// Reads a path tail at `at` (`a::b::C`, or a group `{a, b::{c, d}}`), giving each path
/// it spells and where it ends.
fn path_tree(chars: &[char], at: usize) -> (Vec<String>, usize) {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_space(at);
    let mut prefix = String::new();
    loop {
        if chars.get(i) == Some(&'{') {
            let mut paths = Vec::new();
            i += 1;
            loop {
                i = skip_space(i);
                match chars.get(i) {
                    None => return (paths, i),
                    Some('}') => return (paths, i + 1),
                    Some(',') => i += 1,
                    Some(_) => {
                        let (inner, end) = path_tree(chars, i);
                        paths.extend(inner.into_iter().map(|p| format!("{prefix}{p}")));
                        // Past an `as name` or anything else up to the next item.
                        i = end;
                        while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                            i += 1;
                        }
                    }
                }
            }
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i == start {
            return (vec![prefix.trim_end_matches("::").to_owned()], i);
        }
        prefix.extend(&chars[start..i]);
        let after = skip_space(i);
        if chars.get(after) == Some(&':') && chars.get(after + 1) == Some(&':') {
            prefix.push_str("::");
            i = skip_space(after + 2);
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Each breach of `rule` in `files`: file, line and path.
fn breaches(rule: &Rule, files: &[SourceFile]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files.iter().filter(|f| rule.scope.covers(&f.module)) {
        for r in references(&f.module, &code_only(&f.text)) {
            if rule.never.iter().any(|n| r.top() == *n) {
                out.push(format!(
                    "{}:{}: crate::{}",
                    f.file.display(),
                    r.line,
                    r.path
                ));
            }
        }
    }
    out
}

fn sources() -> Vec<SourceFile> {
    library_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn the_daemon_keeps_its_layering() {
    for name in NOT_YET_IN_FORCE {
        assert!(
            RULES.iter().any(|r| r.name == *name),
            "NOT_YET_IN_FORCE names no rule: {name}"
        );
    }
    let files = sources();
    assert!(
        files.iter().any(|f| f.module == ["reload"]),
        "the sources were found"
    );
    let mut broken = Vec::new();
    let mut now_hold = Vec::new();
    for rule in RULES {
        let found = breaches(rule, &files);
        let pending = NOT_YET_IN_FORCE.contains(&rule.name);
        match (pending, found.is_empty()) {
            (false, false) => broken.push(format!("{}:\n  {}", rule.name, found.join("\n  "))),
            (true, true) => now_hold.push(rule.name),
            (true, false) => println!(
                "not yet in force: {} ({} paths, e.g. {})",
                rule.name,
                found.len(),
                found[0]
            ),
            (false, true) => {}
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
    assert!(
        now_hold.is_empty(),
        "these rules hold now: take them off NOT_YET_IN_FORCE in {}: {now_hold:?}",
        file!()
    );
}

#[test]
fn lib_rs_lists_every_module_with_a_line_of_its_own() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    let docs: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("//!")).collect();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    assert!(modules.contains(&"server"), "modules found: {modules:?}");
    for m in &modules {
        // Private modules are named without a link (rustdoc cannot link to them).
        let lines = docs
            .iter()
            .map(|d| d.trim_start())
            .filter(|d| {
                d.starts_with(&format!("- [`{m}`]:")) || d.starts_with(&format!("- `{m}`:"))
            })
            .count();
        assert_eq!(
            lines, 1,
            "lib.rs lists `{m}` on one line of its own: - [`{m}`]: what it is for"
        );
    }
}

// ---- the checker itself ------------------------------------------------------------

fn file(module: &str, text: &str) -> SourceFile {
    SourceFile {
        file: PathBuf::from(format!("{}.rs", module.replace("::", "/"))),
        module: module.split("::").map(str::to_owned).collect(),
        text: text.to_owned(),
    }
}

fn paths(module: &str, text: &str) -> Vec<String> {
    let f = file(module, text);
    references(&f.module, &code_only(&f.text))
        .into_iter()
        .map(|r| format!("{}@{}", r.path, r.line))
        .collect()
}

#[test]
fn paths_are_read_from_use_lines_groups_and_inline_code() {
    let text = "use crate::config::{self, Config};\n\
                use crate::{server::Daemon, shutdown::{Shutdown, Signals as S}};\n\
                fn f() { let c = crate::commands::load_config(None); }\n\
                use provd_client::message;\n";
    assert_eq!(
        paths("reload", text),
        [
            "config::self@1",
            "config::Config@1",
            "server::Daemon@2",
            "shutdown::Shutdown@2",
            "shutdown::Signals@2",
            "commands::load_config@3",
        ]
    );
}

#[test]
fn comments_strings_and_test_items_are_not_paths() {
    let text = "// crate::commands::x\n\
                /// [`crate::commands::y`]\n\
                /* crate::commands /* nested */ crate::commands */\n\
                const S: &str = \"crate::commands::z\";\n\
                const R: &str = r#\"crate::commands\"#;\n\
                const C: char = '\"'; fn g<'a>(x: &'a str) {}\n\
                #[cfg(test)]\nmod tests {\n    use crate::commands::w;\n    fn t() { {} }\n}\n\
                #[cfg(test)]\nuse crate::commands::v;\n\
                use crate::server::after;\n";
    assert_eq!(paths("reload", text), ["server::after@14"]);
}

#[test]
fn super_paths_count_only_when_they_leave_their_top_module() {
    let text = "use super::http::Pump;\nuse super::super::config::Config;\n\
                use super::{sse, ndjson::Splitter};\nfn f() { super::super::server::x(); }\n";
    assert_eq!(
        paths("provider::openai", text),
        ["config::Config@2", "server::x@4"]
    );
    assert_eq!(paths("provider", "use super::config;\n"), ["config@1"]);
}

#[test]
fn a_broken_rule_is_reported_with_its_file_and_line() {
    let files = [
        file(
            "reload",
            "use crate::config::Config;\nfn f() { crate::commands::serve_socket(); }\n",
        ),
        file("commands::serve", "use crate::reload::Reloader;\n"),
        file("provider::gemini", "use crate::config::ProviderKind;\n"),
        file("config::load", "use super::Config;\n"),
    ];
    assert_eq!(
        breaches(&RULES[0], &files),
        ["reload.rs:2: crate::commands::serve_socket"]
    );
    assert_eq!(
        breaches(&RULES[1], &files).len(),
        1,
        "commands may name itself"
    );
    assert_eq!(breaches(&RULES[2], &files), Vec::<String>::new());
    assert_eq!(
        breaches(&RULES[3], &files),
        ["provider/gemini.rs:1: crate::config::ProviderKind"]
    );
    assert_eq!(
        module_of(Path::new("commands/mod.rs")),
        ["commands"],
        "mod.rs is its directory's module"
    );
    assert_eq!(module_of(Path::new("config/load.rs")), ["config", "load"]);
}
