//! The `usage` request: who used what, from the daemon's usage ledger (PROTOCOL.md
//! section 7.9). [`UsageParams`] asks for a time window, a grouping ([`UsageBy`]) and
//! optionally one user; [`UsageReport`] answers with a row per key, the totals, and the
//! cost where the daemon's configuration prices every model of a row.
//!
//! Kept apart from `message.rs` because it is one request's family of types; `message`
//! re-exports them, so they are found where every other payload is.

use serde::{Deserialize, Serialize};

/// How `usage` groups the generations of its window: one row per user, provider, model
/// asked, token or UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum UsageBy {
    /// One row per uid (with its user name where the host knows it).
    #[default]
    User,
    /// One row per provider id asked for.
    Provider,
    /// One row per `provider/model` asked for (aliases resolved, the default model
    /// filled in).
    Model,
    /// One row per token id, and one for the generations made without a token.
    Token,
    /// One row per UTC calendar day (`YYYY-MM-DD`).
    Day,
}

impl UsageBy {
    /// Every grouping, in the order the documentation lists them.
    pub const ALL: [UsageBy; 5] = [
        UsageBy::User,
        UsageBy::Provider,
        UsageBy::Model,
        UsageBy::Token,
        UsageBy::Day,
    ];

    /// The name on the wire and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            UsageBy::User => "user",
            UsageBy::Provider => "provider",
            UsageBy::Model => "model",
            UsageBy::Token => "token",
            UsageBy::Day => "day",
        }
    }

    /// The grouping named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<UsageBy> {
        UsageBy::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

impl TryFrom<String> for UsageBy {
    type Error = String;

    /// Parses the wire name; the error names the field and the names it may take, so a
    /// client that sends `by: "users"` learns what to send.
    fn try_from(name: String) -> Result<UsageBy, String> {
        UsageBy::from_name(&name).ok_or_else(|| {
            let names: Vec<&str> = UsageBy::ALL.iter().map(|b| b.as_str()).collect();
            format!(
                "by must be one of {}, got '{}'",
                names.join(", "),
                name.escape_debug().take(64).collect::<String>()
            )
        })
    }
}

impl std::fmt::Display for UsageBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `usage` params. Every field is optional: an empty map asks for the last 7 days, one
/// row per user, of every user the connection may see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageParams {
    /// The window's start, in milliseconds since the Unix epoch (UTC), inclusive; the
    /// default is 7 days before `until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The window's end, in milliseconds since the Unix epoch, exclusive; the default is
    /// now, the current millisecond included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// The grouping; `user` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UsageBy>,
    /// Only this user's generations: a user name or a numeric uid. A connection that is
    /// not an admin's sees only its own uid's generations whatever this says, and naming
    /// another user is `permission_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The figures of one row of a [`UsageReport`] (or of its totals).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// What the row counts: the user name (the uid in decimal when the host does not know
    /// it), the provider id, `provider/model`, the token id, or the UTC date
    /// `YYYY-MM-DD`. `nil` for generations of an unknown uid, those made without a
    /// token, and the totals row.
    #[serde(default)]
    pub key: Option<String>,
    /// With `by: user`: the uid (`nil` when the OS did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// With `by: user`: the user name, when the host knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Generations.
    pub requests: u64,
    /// Of them, those that ended with `done`.
    pub completed: u64,
    /// Those that ended with an error other than a cancel.
    pub failed: u64,
    /// Those cancelled (by `cancel` or by their client going away).
    pub cancelled: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included).
    pub completion_tokens: u64,
    /// Of the completion tokens, those spent reasoning, where the provider said.
    pub reasoning_tokens: u64,
    /// The cost at the configured prices (`[prices."provider/model"]`), in whatever
    /// currency they are written; `nil` when some model of the row has no price.
    #[serde(default)]
    pub cost: Option<f64>,
}

impl UsageRow {
    /// Prompt and completion tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// `usage` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The grouping of `rows`.
    pub by: UsageBy,
    /// The window's start (ms since the Unix epoch, inclusive).
    pub since_ms: u64,
    /// The window's end (ms since the Unix epoch, exclusive).
    pub until_ms: u64,
    /// The one uid the report is limited to (a `user` asked for, or the connection's own
    /// for a connection that is not an admin's); `nil`: every uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// One row per key; by day in date order, otherwise the most tokens first. At most
    /// [`MAX_USAGE_ROWS`]; `rows_omitted` counts the rest (the totals include them).
    pub rows: Vec<UsageRow>,
    /// How many rows past [`MAX_USAGE_ROWS`] were left out.
    #[serde(default)]
    pub rows_omitted: u64,
    /// Every generation of the window (and of the user asked for) together; its `key` is
    /// `nil`.
    pub total: UsageRow,
    /// Whether the configuration prices any model (`[prices]`); without prices no row
    /// has a cost.
    #[serde(default)]
    pub priced: bool,
    /// The models (`provider/model`) of the window that have no price (at most
    /// [`MAX_USAGE_ROWS`]): the rows that include them, and the totals, have no cost rather
    /// than a cost that leaves them out.
    #[serde(default)]
    pub unpriced: Vec<String>,
}

/// The most rows a `usage` reply carries.
pub const MAX_USAGE_ROWS: usize = 5000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_grouping_is_refused_with_the_names_it_may_take() {
        #[derive(Serialize)]
        struct Raw<'a> {
            by: &'a str,
        }
        let bytes = rmp_serde::to_vec_named(&Raw { by: "users" }).unwrap();
        let e = crate::message::decode::<UsageParams>(&bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("by must be one of user, provider, model, token, day, got 'users'"),
            "{e}"
        );
        let bytes = rmp_serde::to_vec_named(&Raw { by: "day" }).unwrap();
        let p: UsageParams = crate::message::decode(&bytes).unwrap();
        assert_eq!(p.by, Some(UsageBy::Day));
    }

    #[test]
    fn empty_params_are_an_empty_map_and_read_back_as_defaults() {
        let bytes = rmp_serde::to_vec_named(&UsageParams::default()).unwrap();
        assert_eq!(bytes, [0x80]);
        let p: UsageParams = crate::message::decode(&bytes).unwrap();
        assert_eq!(p, UsageParams::default());
    }

    /// The hex dump of the `n`th fenced block after `heading` in PROTOCOL.md, as bytes.
    fn documented_frame(heading: &str, n: usize) -> Vec<u8> {
        let doc = include_str!("../PROTOCOL.md");
        let section = &doc[doc.find(heading).expect("the section exists")..];
        let block = section.split("```").nth(2 * n + 1).expect("a fenced block");
        block
            .lines()
            .flat_map(|line| line.split_whitespace().skip(1))
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect()
    }

    #[test]
    fn the_documented_usage_frames_are_what_the_types_encode() {
        let heading = "### 15.15 Request `usage` (id 8) and its result";
        let params = UsageParams {
            since_ms: Some(1_772_323_200_000),
            by: Some(UsageBy::Model),
            ..UsageParams::default()
        };
        let request = crate::message::encode_request(8, "usage", &params).unwrap();
        assert_eq!(request, documented_frame(heading, 0));
        let row = UsageRow {
            key: Some("mock/mock-1".into()),
            requests: 1,
            completed: 1,
            prompt_tokens: 3,
            completion_tokens: 25,
            cost: Some((3.0 * 3.0 + 25.0 * 15.0) / 1e6),
            ..UsageRow::default()
        };
        let report = UsageReport {
            by: UsageBy::Model,
            since_ms: 1_772_323_200_000,
            until_ms: 1_772_928_000_000,
            rows: vec![row.clone()],
            total: UsageRow { key: None, ..row },
            priced: true,
            ..UsageReport::default()
        };
        let reply = crate::message::encode_result(8, &report).unwrap();
        assert_eq!(reply, documented_frame(heading, 1));
    }
}
