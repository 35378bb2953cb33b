//! Importing API keys from a `.env` file: which variable belongs to which configured
//! provider.
//!
//! The file is parsed by the `dotenvy` crate (quotes, escapes, `export`, comments,
//! multi-line values), one logical line at a time so that errors can name their line.
//! Variables map to providers as follows, given the configuration:
//!
//! | variable | goes to |
//! |---|---|
//! | `PROVD_<ID>_API_KEY` | provider `<id>` (upper-cased, `-` as `_`); the most specific, wins over the rest |
//! | the provider's `api_key_env` | that provider |
//! | the key variables of a type (the provider table's `key_env`, `provider/registry.rs`: `ANTHROPIC_API_KEY` for `anthropic`, …) | every provider of that type without its own `api_key_env`, and a provider whose id is the type's name; where a type lists two (`GEMINI_API_KEY`, then `GOOGLE_API_KEY`), the first wins, as in the daemon's environment lookup (`credentials/keys.rs`) |
//! | `<ID>_API_BASE`, `PROVD_<ID>_API_BASE` | a base URL override for provider `<id>` (not a secret) |
//!
//! Anything else is returned as unknown, and variables that are known but unusable (empty,
//! shadowed by a more specific one, ambiguous between two providers, a malformed URL) are
//! returned as skipped with the reason: both are reports, not errors. When a variable is
//! set twice the last value counts, as when the file is sourced by a shell.
//!
//! Variable substitution (`$VAR`, `${VAR}`) is refused in the variables imported:
//! dotenvy would fill it from the daemon's own environment, so a crafted file could copy
//! `$SECRET_KEY` or another provider's key into a credential sent to a base URL of its
//! choosing. Single-quoted values are literal and always fine.
//!
//! Errors name the file and line and never contain a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::Config;
use crate::provider::registry;
use crate::secret::Secret;

/// The largest `.env` file read, bytes.
pub const MAX_DOTENV_BYTES: usize = 1024 * 1024;

/// An API key found for a provider.
#[derive(Debug)]
pub struct ImportedCredential {
    /// The provider id.
    pub provider: String,
    /// The key (redacted in Debug).
    pub secret: Secret,
    /// The variable it came from.
    pub variable: String,
}

/// A base URL found for a provider (configuration, not a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrlOverride {
    /// The provider id.
    pub provider: String,
    /// The URL, as written.
    pub base_url: String,
    /// The variable it came from.
    pub variable: String,
}

/// Why a known variable was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its value is empty.
    Empty,
    /// A more specific variable gave this provider its key.
    Shadowed {
        /// The provider.
        provider: String,
        /// The variable that won.
        by: String,
    },
    /// Its name fits more than one provider (ids `a-b` and `a_b` both give `A_B`).
    Ambiguous {
        /// The providers it could mean.
        providers: Vec<String>,
    },
    /// A base URL that does not start with `http://` or `https://`.
    InvalidBaseUrl,
}

/// A known variable that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedVariable {
    /// The variable.
    pub variable: String,
    /// Why.
    pub reason: SkipReason,
}

/// What a `.env` file holds for the configured providers.
#[derive(Debug, Default)]
pub struct DotenvImport {
    /// One key per provider, sorted by provider id.
    pub credentials: Vec<ImportedCredential>,
    /// One base URL per provider, sorted by provider id.
    pub base_urls: Vec<BaseUrlOverride>,
    /// Variables that mean nothing to provd, sorted.
    pub unknown: Vec<String>,
    /// Known variables not used, sorted by variable.
    pub skipped: Vec<SkippedVariable>,
}

/// A `.env` file that cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file, or a directory above it, could be changed by a user other than the
    /// daemon's and root, who could then point a provider at their own server.
    #[error("env file {}: refused, only root and the daemon's user may be able to change it: {reason}", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// The path that broke the rule, its owner and mode, and the rule.
        reason: provd_client::trust::Untrusted,
    },
    /// The file is larger than any `.env` file should be.
    #[error("{}: larger than {MAX_DOTENV_BYTES} bytes, not a .env file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8.
    #[error("{}: line {line}: not valid UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line of the first invalid byte.
        line: usize,
    },
    /// A line is not `KEY=value` (or its value is malformed: an unclosed quote, an
    /// unknown escape). The line is not shown: it may hold a secret.
    #[error(
        "{}: line {line}: cannot parse (expected KEY=value with balanced quotes; the line is not shown because it may hold a secret)",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line where the entry starts.
        line: usize,
    },
    /// An imported variable uses `$` substitution.
    #[error(
        "{}: line {line}: {variable} uses $ substitution, which is not allowed for imported variables (it would read the daemon's environment); write the value itself, in single quotes if it contains $",
        path.display()
    )]
    Substitution {
        /// The file.
        path: PathBuf,
        /// The line where the entry starts.
        line: usize,
        /// The variable.
        variable: String,
    },
}

/// Reads `path` and maps its variables to the providers of `config`.
pub fn read_dotenv(path: &Path, config: &Config) -> Result<DotenvImport, DotenvError> {
    let read_err = |source| DotenvError::Read {
        path: path.to_owned(),
        source,
    };
    // The same rule as the configuration file's: the env file decides keys and base URLs.
    let mut file = provd_client::trust::open_trusted_file(path, crate::sys::effective_uid())
        .map_err(|e| match e {
            provd_client::trust::TrustError::Untrusted(reason) => DotenvError::Untrusted {
                path: path.to_owned(),
                reason,
            },
            io => read_err(io.to_io_error()),
        })?;
    let bytes = super::read_bounded(&mut file, MAX_DOTENV_BYTES)
        .map_err(read_err)?
        .ok_or_else(|| DotenvError::TooLarge {
            path: path.to_owned(),
        })?;
    parse_dotenv(&bytes, path, config)
}

/// Maps the variables of `.env` content to the providers of `config`; `path` only names
/// the file in errors.
pub fn parse_dotenv(
    bytes: &[u8],
    path: &Path,
    config: &Config,
) -> Result<DotenvImport, DotenvError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DotenvError::NotUtf8 {
        path: path.to_owned(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let uses = variable_uses(config);

    // Last value wins; values of known variables go straight into zeroizing types.
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    let mut unknown = Vec::new();
    for entry in logical_lines(text) {
        for item in dotenvy::from_read_iter(entry.text.as_bytes()) {
            // The error carries the line's text: drop it, report only the line number.
            let (name, value) = item.map_err(|_| DotenvError::Parse {
                path: path.to_owned(),
                line: entry.line,
            })?;
            let value = Zeroizing::new(value);
            let Some(use_) = uses.get(&name) else {
                unknown.push(name);
                continue;
            };
            if has_substitution(entry.text) {
                return Err(DotenvError::Substitution {
                    path: path.to_owned(),
                    line: entry.line,
                    variable: name,
                });
            }
            let value = match use_ {
                Use::Base(..) => Value::Plain(value.to_string()),
                _ => Value::Secret(Secret::new(value.to_string())),
            };
            values.insert(name, value);
        }
    }
    unknown.sort();
    unknown.dedup();

    let mut import = DotenvImport {
        unknown,
        ..DotenvImport::default()
    };
    // provider → its most specific variable so far (rank, variable, value).
    let mut keys: BTreeMap<String, Pick<Secret>> = BTreeMap::new();
    let mut bases: BTreeMap<String, Pick<String>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, value) in values {
        let skip = |reason| SkippedVariable {
            variable: name.clone(),
            reason,
        };
        match (&uses[&name], value) {
            (Use::Ambiguous(providers), _) => skipped.push(skip(SkipReason::Ambiguous {
                providers: providers.clone(),
            })),
            (Use::Base(provider, rank), Value::Plain(url)) => {
                if url.is_empty() {
                    skipped.push(skip(SkipReason::Empty));
                } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                    skipped.push(skip(SkipReason::InvalidBaseUrl));
                } else {
                    pick(&mut bases, &mut skipped, provider, *rank, &name, url);
                }
            }
            (Use::Keys(targets), Value::Secret(secret)) => {
                if secret.is_empty() {
                    skipped.push(skip(SkipReason::Empty));
                    continue;
                }
                for (provider, rank) in targets {
                    pick(
                        &mut keys,
                        &mut skipped,
                        provider,
                        *rank,
                        &name,
                        secret.clone(),
                    );
                }
            }
            // A variable's value kind follows its use, set above.
            (Use::Base(..), Value::Secret(_)) | (Use::Keys(_), Value::Plain(_)) => {}
        }
    }
    import.credentials = keys
        .into_iter()
        .map(|(provider, (_, variable, secret))| ImportedCredential {
            provider,
            secret,
            variable,
        })
        .collect();
    import.base_urls = bases
        .into_iter()
        .map(|(provider, (_, variable, base_url))| BaseUrlOverride {
            provider,
            base_url,
            variable,
        })
        .collect();
    skipped.sort_by(|a, b| a.variable.cmp(&b.variable));
    import.skipped = skipped;
    Ok(import)
}

/// The variable chosen for a provider so far: (rank, variable, value).
type Pick<T> = (u8, String, T);

/// Keeps the more specific of `provider`'s current variable and `name` (the current one
/// on a tie: variables arrive in name order, and a tie only happens between equals),
/// recording the other as shadowed.
fn pick<T>(
    chosen: &mut BTreeMap<String, Pick<T>>,
    skipped: &mut Vec<SkippedVariable>,
    provider: &str,
    rank: u8,
    name: &str,
    value: T,
) {
    let shadowed = |variable: String, by: String| SkippedVariable {
        variable,
        reason: SkipReason::Shadowed {
            provider: provider.to_owned(),
            by,
        },
    };
    match chosen.get_mut(provider) {
        None => {
            chosen.insert(provider.to_owned(), (rank, name.to_owned(), value));
        }
        Some(current) if current.0 <= rank => {
            skipped.push(shadowed(name.to_owned(), current.1.clone()));
        }
        Some(current) => {
            let loser = std::mem::replace(current, (rank, name.to_owned(), value));
            skipped.push(shadowed(loser.1, name.to_owned()));
        }
    }
}

/// A parsed value, kept in the type its use needs.
enum Value {
    Secret(Secret),
    Plain(String),
}

/// What a variable name means for the configuration.
#[derive(Debug, PartialEq, Eq)]
enum Use {
    /// An API key for these providers, each with a rank (lower is more specific).
    Keys(Vec<(String, u8)>),
    /// A base URL for this provider, with a rank.
    Base(String, u8),
    /// A name that fits several providers in a way that cannot be resolved.
    Ambiguous(Vec<String>),
}

/// Whether a variable claims to be a key or a base URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Key,
    Base,
}

/// Ranks of variables: the `PROVD_` variable of a provider beats the configured or typed
/// one, which beats an alternative name.
const RANK_PROVD: u8 = 0;
const RANK_PRIMARY: u8 = 1;
const RANK_ALTERNATIVE: u8 = 2;

/// The variable-name form of a provider id.
fn env_name(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}

/// Every variable name that means something for `config`.
fn variable_uses(config: &Config) -> BTreeMap<String, Use> {
    let mut claims: BTreeMap<String, Vec<(String, Role, u8)>> = BTreeMap::new();
    let mut claim = |name: String, provider: &str, role: Role, rank: u8| {
        let list = claims.entry(name).or_default();
        match list
            .iter_mut()
            .find(|(p, r, _)| p == provider && *r == role)
        {
            Some(existing) => existing.2 = existing.2.min(rank),
            None => list.push((provider.to_owned(), role, rank)),
        }
    };
    for (id, p) in &config.providers {
        let upper = env_name(id);
        claim(format!("PROVD_{upper}_API_KEY"), id, Role::Key, RANK_PROVD);
        claim(
            format!("PROVD_{upper}_API_BASE"),
            id,
            Role::Base,
            RANK_PROVD,
        );
        claim(format!("{upper}_API_BASE"), id, Role::Base, RANK_PRIMARY);
        if let Some(var) = &p.api_key_env {
            claim(var.clone(), id, Role::Key, RANK_PRIMARY);
            continue;
        }
        // A provider named after a type takes that type's variables too.
        let by_id = registry::by_name(id).map_or(&[][..], |t| t.key_env);
        let own = registry::row(p.kind).key_env;
        for vars in [own, by_id] {
            for (i, var) in vars.iter().enumerate() {
                // A type's first variable is its primary name, the others alternatives.
                let rank = if i == 0 {
                    RANK_PRIMARY
                } else {
                    RANK_ALTERNATIVE
                };
                claim((*var).to_owned(), id, Role::Key, rank);
            }
        }
    }
    claims
        .into_iter()
        .map(|(name, list)| {
            let mut providers: Vec<String> = list.iter().map(|(p, ..)| p.clone()).collect();
            providers.sort();
            providers.dedup();
            let all_keys = list.iter().all(|(_, role, _)| *role == Role::Key);
            // A typed or configured variable may feed several providers; a `PROVD_` key
            // or a base URL claimed by two providers, or a name that is both a key and a
            // URL, cannot be resolved.
            let use_ = match list.as_slice() {
                [(provider, Role::Base, rank)] => Use::Base(provider.clone(), *rank),
                _ if all_keys
                    && (providers.len() == 1
                        || list.iter().all(|(_, _, rank)| *rank != RANK_PROVD)) =>
                {
                    Use::Keys(list.into_iter().map(|(p, _, r)| (p, r)).collect())
                }
                _ => Use::Ambiguous(providers),
            };
            (name, use_)
        })
        .collect()
}

/// One entry of the file as dotenvy reads it: one line, or several when a quoted value
/// spans lines.
struct LogicalLine<'a> {
    /// The 1-based line where it starts.
    line: usize,
    /// Its raw text, newlines included, exactly as dotenvy's reader would collect it.
    text: &'a str,
}

/// The state of dotenvy 0.15's line reader (`iter.rs`, `QuotedLines`), which decides
/// where an entry ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Complete,
    Escape,
    StrongOpen,
    StrongOpenEscape,
    WeakOpen,
    WeakOpenEscape,
    Comment,
    WhiteSpace,
}

/// dotenvy's `eval_end_state`, reproduced so that entries split here exactly where
/// dotenvy splits them (a test checks the two agree): feeding each piece to dotenvy alone
/// then gives the same entries as the whole file, plus the line each starts on.
fn end_state(mut state: Quote, segment: &str) -> Quote {
    for c in segment.chars() {
        state = match state {
            Quote::WhiteSpace => match c {
                '#' => return Quote::Comment,
                '\\' => Quote::Escape,
                '"' => Quote::WeakOpen,
                '\'' => Quote::StrongOpen,
                _ => Quote::Complete,
            },
            Quote::Escape => Quote::Complete,
            Quote::Complete => match c {
                c if c.is_whitespace() && c != '\n' && c != '\r' => Quote::WhiteSpace,
                '\\' => Quote::Escape,
                '"' => Quote::WeakOpen,
                '\'' => Quote::StrongOpen,
                _ => Quote::Complete,
            },
            Quote::WeakOpen => match c {
                '\\' => Quote::WeakOpenEscape,
                '"' => Quote::Complete,
                _ => Quote::WeakOpen,
            },
            Quote::WeakOpenEscape => Quote::WeakOpen,
            Quote::StrongOpen => match c {
                '\\' => Quote::StrongOpenEscape,
                '\'' => Quote::Complete,
                _ => Quote::StrongOpen,
            },
            Quote::StrongOpenEscape => Quote::StrongOpen,
            Quote::Comment => return Quote::Comment,
        };
    }
    state
}

/// Splits the file into dotenvy's entries.
fn logical_lines(text: &str) -> Vec<LogicalLine<'_>> {
    let mut out = Vec::new();
    let (mut start, mut pos) = (0, 0);
    let mut start_line = 1;
    let mut state = Quote::Complete;
    for (index, physical) in text.split_inclusive('\n').enumerate() {
        pos += physical.len();
        // dotenvy ends an entry at once when it starts with a comment.
        state = if text[start..pos].trim_start().starts_with('#') {
            Quote::Complete
        } else {
            end_state(state, physical)
        };
        if matches!(state, Quote::Complete | Quote::Comment) {
            out.push(LogicalLine {
                line: start_line,
                text: &text[start..pos],
            });
            start = pos;
            start_line = index + 2;
            state = Quote::Complete;
        }
    }
    if start < text.len() {
        // An unfinished entry at the end: dotenvy reports it as an error.
        out.push(LogicalLine {
            line: start_line,
            text: &text[start..],
        });
    }
    out
}

/// Whether an entry could be subject to dotenvy's `$` substitution: a `$` outside single
/// quotes and before a comment. Errs on the side of "yes" (an escaped `\$` counts), never
/// on the side of "no": quotes and escapes are followed as dotenvy's value parser does,
/// and only a `#` after an unquoted, unescaped space or tab starts a comment.
fn has_substitution(entry: &str) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut after_blank = true;
    for c in entry.chars() {
        if single {
            single = c != '\'';
            continue;
        }
        if c == '$' {
            return true;
        }
        if escaped {
            escaped = false;
            after_blank = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if double {
            double = c != '"';
            continue;
        }
        match c {
            '\'' => single = true,
            '"' => double = true,
            '#' if after_blank => return false,
            _ => {}
        }
        after_blank = c == ' ' || c == '\t';
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIG: &str = r#"
[providers.anthropic]
type = "anthropic"

[providers.claude-work]
type = "anthropic"

[providers.claude-team]
type = "anthropic"
api_key_env = "TEAM_CLAUDE_KEY"

[providers.openai]
type = "openai"

[providers.gemini]
type = "gemini"

[providers.local-llm]
type = "openai-compatible"
base_url = "http://localhost:8080/v1"

[providers.mock]
type = "mock"
"#;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    fn import(env: &str) -> DotenvImport {
        parse_dotenv(env.as_bytes(), Path::new("/p/.env"), &config(CONFIG)).unwrap()
    }

    fn error(env: &str) -> DotenvError {
        parse_dotenv(env.as_bytes(), Path::new("/p/.env"), &config(CONFIG)).unwrap_err()
    }

    fn keys(i: &DotenvImport) -> Vec<(&str, &str, &str)> {
        i.credentials
            .iter()
            .map(|c| (c.provider.as_str(), c.secret.expose(), c.variable.as_str()))
            .collect()
    }

    #[test]
    fn well_known_variables_go_to_every_provider_of_their_type() {
        let i = import(
            "ANTHROPIC_API_KEY=sk-ant\nOPENAI_API_KEY='sk-oai'\nexport GEMINI_API_KEY=\"AIza\"\n",
        );
        assert_eq!(
            keys(&i),
            [
                ("anthropic", "sk-ant", "ANTHROPIC_API_KEY"),
                ("claude-work", "sk-ant", "ANTHROPIC_API_KEY"),
                ("gemini", "AIza", "GEMINI_API_KEY"),
                ("openai", "sk-oai", "OPENAI_API_KEY"),
            ]
        );
        assert!(i.unknown.is_empty() && i.skipped.is_empty() && i.base_urls.is_empty());
    }

    #[test]
    fn a_type_added_to_the_provider_table_gets_its_key_from_a_dotenv_with_no_edit_here() {
        let config = config("[providers.az]\ntype = \"azure-openai\"\n");
        let i = parse_dotenv(
            b"AZURE_OPENAI_API_KEY=az-key-0123456789\n",
            Path::new("/p/.env"),
            &config,
        )
        .unwrap();
        assert_eq!(
            keys(&i),
            [("az", "az-key-0123456789", "AZURE_OPENAI_API_KEY")]
        );
    }

    #[test]
    fn per_provider_variables_win_and_configured_names_are_honoured() {
        let i = import(
            "ANTHROPIC_API_KEY=sk-shared\n\
             PROVD_CLAUDE_WORK_API_KEY=sk-work\n\
             TEAM_CLAUDE_KEY=sk-team\n\
             PROVD_LOCAL_LLM_API_KEY=local-token\n",
        );
        assert_eq!(
            keys(&i),
            [
                ("anthropic", "sk-shared", "ANTHROPIC_API_KEY"),
                ("claude-team", "sk-team", "TEAM_CLAUDE_KEY"),
                ("claude-work", "sk-work", "PROVD_CLAUDE_WORK_API_KEY"),
                ("local-llm", "local-token", "PROVD_LOCAL_LLM_API_KEY"),
            ]
        );
        assert_eq!(
            i.skipped,
            [SkippedVariable {
                variable: "ANTHROPIC_API_KEY".into(),
                reason: SkipReason::Shadowed {
                    provider: "claude-work".into(),
                    by: "PROVD_CLAUDE_WORK_API_KEY".into()
                }
            }]
        );
    }

    #[test]
    fn gemini_prefers_its_own_variable_over_google_s() {
        let i = import("GOOGLE_API_KEY=g\nGEMINI_API_KEY=gem\n");
        assert_eq!(keys(&i), [("gemini", "gem", "GEMINI_API_KEY")]);
        assert_eq!(i.skipped.len(), 1);
        assert_eq!(i.skipped[0].variable, "GOOGLE_API_KEY");
        let i = import("GOOGLE_API_KEY=g\n");
        assert_eq!(keys(&i), [("gemini", "g", "GOOGLE_API_KEY")]);
    }

    #[test]
    fn base_urls_are_returned_apart_and_checked() {
        let i = import(
            "LOCAL_LLM_API_BASE=http://127.0.0.1:9000/v1\n\
             PROVD_OPENAI_API_BASE=https://proxy.example/v1\n\
             OPENAI_API_BASE=https://plain.example/v1\n\
             GEMINI_API_BASE=ftp://nope\n",
        );
        assert!(i.credentials.is_empty());
        assert_eq!(
            i.base_urls,
            [
                BaseUrlOverride {
                    provider: "local-llm".into(),
                    base_url: "http://127.0.0.1:9000/v1".into(),
                    variable: "LOCAL_LLM_API_BASE".into()
                },
                BaseUrlOverride {
                    provider: "openai".into(),
                    base_url: "https://proxy.example/v1".into(),
                    variable: "PROVD_OPENAI_API_BASE".into()
                },
            ]
        );
        assert_eq!(i.skipped[0].reason, SkipReason::InvalidBaseUrl);
        assert_eq!(
            i.skipped[1],
            SkippedVariable {
                variable: "OPENAI_API_BASE".into(),
                reason: SkipReason::Shadowed {
                    provider: "openai".into(),
                    by: "PROVD_OPENAI_API_BASE".into()
                }
            }
        );
    }

    #[test]
    fn unknown_empty_and_repeated_variables_are_reported() {
        let i = import(
            "# a comment\nDATABASE_URL=postgres://x\nPATH=$PATH:/x\n\
             OPENAI_API_KEY=first\nOPENAI_API_KEY=second # trailing comment\n\
             ANTHROPIC_API_KEY=\nPROVD_NOPE_API_KEY=x\nSECRET_KEY=abc\n",
        );
        assert_eq!(keys(&i), [("openai", "second", "OPENAI_API_KEY")]);
        assert_eq!(
            i.unknown,
            ["DATABASE_URL", "PATH", "PROVD_NOPE_API_KEY", "SECRET_KEY"]
        );
        assert_eq!(
            i.skipped,
            [SkippedVariable {
                variable: "ANTHROPIC_API_KEY".into(),
                reason: SkipReason::Empty
            }]
        );
    }

    #[test]
    fn ids_that_share_a_variable_name_are_ambiguous() {
        let c =
            config("[providers.my-llm]\ntype = \"mock\"\n[providers.my_llm]\ntype = \"mock\"\n");
        let i = parse_dotenv(
            b"PROVD_MY_LLM_API_KEY=x\nMY_LLM_API_BASE=http://h\n",
            Path::new("e"),
            &c,
        )
        .unwrap();
        assert!(i.credentials.is_empty() && i.base_urls.is_empty());
        let reasons: Vec<_> = i.skipped.iter().map(|s| &s.reason).collect();
        let both = SkipReason::Ambiguous {
            providers: vec!["my-llm".into(), "my_llm".into()],
        };
        assert_eq!(reasons, [&both, &both]);
    }

    #[test]
    fn an_api_key_env_shared_by_two_providers_feeds_both() {
        let c = config(
            "[providers.a]\ntype = \"openai\"\napi_key_env = \"K\"\n\
             [providers.b]\ntype = \"openai-compatible\"\napi_key_env = \"K\"\n",
        );
        let i = parse_dotenv(b"K=sk\nOPENAI_API_KEY=other\n", Path::new("e"), &c).unwrap();
        assert_eq!(keys(&i), [("a", "sk", "K"), ("b", "sk", "K")]);
        assert_eq!(i.unknown, ["OPENAI_API_KEY"], "a has its own api_key_env");
    }

    #[test]
    fn parse_errors_name_the_line_and_never_the_value() {
        let e = error("OPENAI_API_KEY=ok\n\nANTHROPIC_API_KEY=\"sk-unterminated\n");
        assert!(matches!(e, DotenvError::Parse { line: 3, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("/p/.env: line 3:") && !text.contains("sk-unterminated"),
            "{text}"
        );

        let e = error("A=1\nB='multi\nline'\nthis is not an assignment sk-leak\n");
        assert!(matches!(e, DotenvError::Parse { line: 4, .. }), "{e}");
        assert!(!e.to_string().contains("sk-leak"));

        let e = error("OPENAI_API_KEY=sk-bad value\n");
        assert!(matches!(e, DotenvError::Parse { line: 1, .. }), "{e}");
        assert!(!e.to_string().contains("sk-bad"));

        let e =
            parse_dotenv(b"A=1\nB=\xff\xfe\n", Path::new("/p/.env"), &config(CONFIG)).unwrap_err();
        assert!(matches!(e, DotenvError::NotUtf8 { line: 2, .. }), "{e}");
    }

    #[test]
    fn multi_line_values_and_a_byte_order_mark_are_read() {
        let i = import("\u{feff}OPENAI_API_KEY=\"line1\nline2\"\nANTHROPIC_API_KEY=x\n");
        assert_eq!(keys(&i)[2], ("openai", "line1\nline2", "OPENAI_API_KEY"));
    }

    #[test]
    fn substitution_in_an_imported_variable_is_refused() {
        for env in [
            "PROVD_OPENAI_API_KEY=$SECRET_KEY\n",
            "OPENAI_API_KEY=\"${ANTHROPIC_API_KEY}\"\n",
            "OPENAI_API_KEY=a\\ #$X\n",
            "OPENAI_API_KEY=a\r#$X\n",
            "OPENAI_API_KEY='a'$X\n",
            "OPENAI_API_BASE=http://$HOST/\n",
        ] {
            let e = error(env);
            assert!(
                matches!(e, DotenvError::Substitution { line: 1, .. }),
                "{env:?}: {e}"
            );
            assert!(e.to_string().contains("single quotes"));
        }
        // Literal dollars in single quotes, dollars in comments and in unknown variables.
        let i = import("OPENAI_API_KEY='sk$literal' # costs $5\nOTHER=$HOME\n");
        assert_eq!(keys(&i), [("openai", "sk$literal", "OPENAI_API_KEY")]);
    }

    #[test]
    fn reading_a_file_works_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "OPENAI_API_KEY=sk-file\n").unwrap();
        let i = read_dotenv(&path, &config(CONFIG)).unwrap();
        assert_eq!(keys(&i), [("openai", "sk-file", "OPENAI_API_KEY")]);
        let e = read_dotenv(&dir.path().join("nope"), &config(CONFIG)).unwrap_err();
        assert!(matches!(e, DotenvError::Read { .. }) && e.to_string().contains("nope"));
    }

    #[test]
    fn an_env_file_others_can_change_is_refused_before_it_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "OPENAI_BASE_URL=http://attacker.invalid\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        let e = read_dotenv(&path, &config(CONFIG)).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, DotenvError::Untrusted { .. })
                && text.starts_with(&format!("env file {}: refused", path.display()))
                && text.contains("mode 646"),
            "{text}"
        );
    }

    /// dotenvy's own reading of a whole file, as (key, value) or an error marker.
    fn whole(text: &str) -> Vec<Option<(String, String)>> {
        dotenvy::from_read_iter(text.as_bytes())
            .map(Result::ok)
            .collect()
    }

    /// The same file read one logical line at a time.
    fn pieces(text: &str) -> Vec<Option<(String, String)>> {
        logical_lines(text)
            .iter()
            .flat_map(|l| {
                dotenvy::from_read_iter(l.text.as_bytes())
                    .map(Result::ok)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn splitting_into_entries_agrees_with_dotenvy_on_tricky_files() {
        for text in [
            "A=1\nB=2",
            "A='x\ny'\nB=\"p\\\"q\nr\"\n#c\nC=3 # c\n",
            "A=1 \n  # indented\nB=a\\\nC=2\n",
            "A='unterminated\nB=2\n",
            "A=b\\",
            "export A=1\nexport B\n",
            "\n\n  \nA=x#y\nB=x #y\n",
        ] {
            assert_eq!(pieces(text), whole(text), "{text:?}");
        }
        let lines: Vec<_> = logical_lines("A=1\nB='x\ny'\nC=3\n")
            .iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    proptest! {
        #[test]
        fn splitting_into_entries_agrees_with_dotenvy(
            text in "[AB= '\"#\\\\x\t\n]{0,40}",
        ) {
            prop_assert_eq!(pieces(&text), whole(&text));
        }

        #[test]
        fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_dotenv(&bytes, Path::new("e"), &config(CONFIG));
        }
    }
}
