//! The configuration of the usage ledger (`[ledger]`), of budgets and rate limits per
//! user, group and token (`[limits.uid.NAME]`, `[limits.group.NAME]`,
//! `[limits.token.ID]`) and of prices per model (`[prices."provider/model"]`).
//!
//! ```toml
//! [ledger]
//! enabled = true            # default
//! path = "usage.db"         # default; relative to the state directory
//! retention_days = 90       # default; older rows are pruned
//!
//! [limits.uid.alice]        # a user name or a numeric uid
//! tokens_per_day = 200000
//! requests_per_minute = 30
//! [limits.group.interns]    # pooled over every member of the group
//! tokens_per_month = 1000000
//! [limits.token.ci-bot]     # a token id, as `provd token list` shows it
//! requests_per_minute = 10
//!
//! [prices."claude/claude-sonnet-4-5"]
//! input_per_mtok = 3.0      # per million prompt tokens, in any one currency
//! output_per_mtok = 15.0    # per million completion tokens (reasoning included)
//! ```

use std::path::PathBuf;

use serde::Deserialize;

/// The `[ledger]` table: where every generation is recorded, for `provd usage`, the
/// budgets of `[limits]` and the metrics' totals.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Whether generations are recorded at all. Off, `provd usage` has nothing to report
    /// and token budgets count only since the daemon started.
    pub enabled: bool,
    /// The database file, relative to the state directory (an absolute path or `..` is
    /// refused: the ledger stays in the directory provd keeps 0700).
    pub path: PathBuf,
    /// Rows older than this many days are pruned (1 to 36500).
    pub retention_days: u32,
    /// The most records written in one transaction (1 to 65536).
    pub batch_records: usize,
    /// How long a record may wait for its batch before the batch is written anyway (10 to
    /// 60000 ms): the most a SIGKILL can lose is what arrived in this window.
    pub flush_interval_ms: u64,
    /// Records waiting to be written, at most (1 to 1048576); past that, records are
    /// dropped, counted and logged, never waited for.
    pub queue_records: usize,
}

/// Default for `[ledger] retention_days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Default for `[ledger] batch_records`.
pub const DEFAULT_BATCH_RECORDS: usize = 512;
/// Default for `[ledger] flush_interval_ms`.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// Default for `[ledger] queue_records`.
pub const DEFAULT_QUEUE_RECORDS: usize = 65_536;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            path: PathBuf::from("usage.db"),
            retention_days: DEFAULT_RETENTION_DAYS,
            batch_records: DEFAULT_BATCH_RECORDS,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            queue_records: DEFAULT_QUEUE_RECORDS,
        }
    }
}

impl LedgerConfig {
    /// The bounds of each numeric setting, for validation: (key, value, min, max).
    pub(super) fn bounds(&self) -> [(&'static str, u64, u64, u64); 4] {
        [
            ("retention_days", u64::from(self.retention_days), 1, 36_500),
            ("batch_records", self.batch_records as u64, 1, 65_536),
            ("flush_interval_ms", self.flush_interval_ms, 10, 60_000),
            ("queue_records", self.queue_records as u64, 1, 1 << 20),
        ]
    }
}

/// One subject's budgets and rate (`[limits.uid.NAME]`, `[limits.group.NAME]`,
/// `[limits.token.ID]`). Every limit that applies to a request applies: its uid's, each of
/// its groups', its token's. Days and months are UTC calendar days and months; requests
/// per minute is a sliding window of the last 60 seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Tokens (prompt and completion) per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Tokens (prompt and completion) per UTC calendar month.
    pub tokens_per_month: Option<u64>,
    /// Requests admitted in any 60 seconds.
    pub requests_per_minute: Option<u32>,
}

/// A model's price (`[prices."provider/model"]`), for the optional cost in `provd usage`.
/// The currency is whatever the administrator writes; provd only multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens (reasoning included, as providers bill it).
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens at this price.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.input_per_mtok + completion as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Checks `[ledger] path`: a file name or a relative path inside the state directory, so
/// the ledger lives in the directory provd made 0700 for itself (an absolute path or one
/// with `..` could put every user's usage where another user can reach it).
pub(super) fn check_ledger_path(path: &std::path::Path) -> Result<(), String> {
    use std::path::Component;
    let inside = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "must be a relative path inside the state directory (like \"usage.db\"), got '{}'",
            path.display()
        ))
    }
}

/// Checks a `[limits.KIND.NAME]` entry; the error is (key, rule).
pub(super) fn check_quota(kind: &str, name: &str, quota: &Quota) -> Result<(), (String, String)> {
    let key = |field: &str| format!("limits.{kind}.{name}.{field}");
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err((
            format!("limits.{kind}"),
            "names must be 1 to 256 printable characters".into(),
        ));
    }
    if *quota == Quota::default() {
        return Err((
            format!("limits.{kind}.{name}"),
            "sets no limit: give tokens_per_day, tokens_per_month or requests_per_minute".into(),
        ));
    }
    for (field, value) in [
        ("tokens_per_day", quota.tokens_per_day),
        ("tokens_per_month", quota.tokens_per_month),
        (
            "requests_per_minute",
            quota.requests_per_minute.map(u64::from),
        ),
    ] {
        if value == Some(0) {
            return Err((
                key(field),
                "must be > 0, got 0 (to refuse a user, leave it out of [access])".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a `[prices."provider/model"]` entry against the configured providers; the error
/// is (key, rule).
pub(super) fn check_price(
    target: &str,
    price: &Price,
    configured: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    let key = format!("prices.\"{target}\"");
    let Some((provider, model)) = target.split_once('/') else {
        return Err((key, "must be \"provider/model\"".into()));
    };
    if model.is_empty() || !configured(provider) {
        return Err((
            key,
            format!("must name a configured provider and a model as \"provider/model\"; '{provider}' is not configured"),
        ));
    }
    for (field, value) in [
        ("input_per_mtok", price.input_per_mtok),
        ("output_per_mtok", price.output_per_mtok),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err((
                format!("{key}.{field}"),
                format!("must be a finite number >= 0, got {value}"),
            ));
        }
    }
    Ok(())
}
