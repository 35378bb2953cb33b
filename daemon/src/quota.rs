//! Budgets and rate limits (`[limits.uid.NAME]`, `[limits.group.NAME]`,
//! `[limits.token.ID]`; see [`crate::config::usage::Quota`]): which limits bind a request,
//! the counters they are checked against, and the check itself.
//!
//! - **Who is bound.** A request is bound by every limit that names it: its uid's, each of
//!   its groups' (primary and supplementary, as the kernel and the group database say;
//!   a group's budget is pooled over all its members), its token's. A budget binds
//!   whoever it names, admin uids included: the admins' exemption from the `[limits]`
//!   caps is about connections and streams (so `status`, `reload` and `shutdown` get
//!   through), not about spend. Names are resolved to ids when the configuration is
//!   loaded (start-up, reload): a user or group name that does not resolve is a warning
//!   naming it, and that entry binds nobody until a reload finds it.
//! - **Counters.** One per uid, per gid of any requester and per token id, whether or not
//!   a limit names it now, so that a limit added by a reload starts from the true usage
//!   and `status` can show everyone's. Each holds the tokens of the current UTC day and
//!   of the current UTC calendar month, and the requests of the last minute. The window is
//!   a queue of (second, requests) pairs, at most [`WINDOW_SECONDS`] + 1 of them, so a
//!   counter's memory is bounded whatever the request rate; a request counts for 60 to 61
//!   seconds (its whole second is kept), so no 60 seconds ever admit more than the limit
//!   and `retry_after_ms` is exact for that rule. Once a day the counters with nothing
//!   left in them (no tokens this month, an empty window) are dropped; the rest are
//!   bounded by the host's users and groups and the token store.
//! - **When.** [`Quotas::check`] at admission (in `server::streams`, the one place both
//!   front doors admit a generation): a spent token budget is `permission_denied` naming
//!   the budget and when it resets; a full request window is `rate_limited` with
//!   `retry_after_ms`. An admitted request is counted in its windows; a refused one is
//!   not. [`Quotas::charge`] at a generation's end (`server::accounting`) adds its tokens
//!   (after a cancel, max(provider count, chunks delivered)). So a stream that crosses a
//!   budget finishes; the next request is refused. Tokens count in the day and month the
//!   generation was admitted in, as the ledger records it, so a restart counts the same.
//! - **Restart.** [`Quotas::seed`] reads the ledger at start-up: this month's and today's
//!   tokens per uid, per token and (through each uid's groups in the user and group
//!   databases) per group, and the request windows from the last minute of rows. A uid
//!   not in the user database (or a process running under a gid that is not its user's)
//!   is seeded for its uid and token limits only. With the ledger off, counting starts
//!   when the daemon does.
//! - **Reload** swaps the resolved limits ([`Quotas::set_limits`]); the counters, keyed by
//!   id, stay, and running generations are charged at their end as before.
//!
//! Time is passed in (Unix milliseconds, UTC) so the unit tests control the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use provd_client::message::{LimitUse, UserUsage};
use provd_client::{ErrorCode, WireError};

use crate::config::usage::Quota;
use crate::config::LimitsConfig;
use crate::server::accounting::Requester;

/// The length of the request window, in seconds.
pub const WINDOW_SECONDS: i64 = 60;
const DAY_MS: i64 = 86_400_000;
/// The most user names kept for `status` (a host has few users; the bound is for a
/// daemon that served many uids).
const MAX_NAMES: usize = 4096;

/// Who a counter or a limit is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Uid(u32),
    Group(u32),
    Token(String),
}

/// One configured limit table, resolved: the key it was written under and its quota.
#[derive(Clone, Debug, PartialEq)]
struct Bound {
    /// `limits.uid.alice`, as the configuration spells it, for messages.
    key: String,
    quota: Quota,
}

/// The limits of a configuration, resolved to ids.
#[derive(Debug, Default)]
pub struct Limits {
    by_subject: HashMap<Subject, Vec<Bound>>,
    /// Uids named by a user name in the configuration, with that name (for `status`).
    names: HashMap<u32, String>,
}

impl Limits {
    /// Resolves the budget tables of `limits`, user and group names through `user` and
    /// `group`; the entries whose name does not resolve are returned by key (they bind
    /// nobody).
    fn resolve_with(
        limits: &LimitsConfig,
        user: impl Fn(&str) -> Option<u32>,
        group: impl Fn(&str) -> Option<u32>,
    ) -> (Limits, Vec<String>) {
        let mut resolved = Limits::default();
        let mut unresolved = Vec::new();
        for (kind, table) in limits.quota_tables() {
            for (name, quota) in table {
                let key = format!("limits.{kind}.{name}");
                let subject = match kind {
                    "uid" => user(name).map(Subject::Uid),
                    "group" => group(name).map(Subject::Group),
                    _ => Some(Subject::Token(name.clone())),
                };
                let Some(subject) = subject else {
                    unresolved.push(key);
                    continue;
                };
                if let Subject::Uid(uid) = subject {
                    if name.parse::<u32>().is_err() {
                        resolved.names.insert(uid, name.clone());
                    }
                }
                resolved.by_subject.entry(subject).or_default().push(Bound {
                    key,
                    quota: quota.clone(),
                });
            }
        }
        (resolved, unresolved)
    }

    /// Resolves the budget tables of `limits` through the user and group databases,
    /// logging each name that does not resolve (it binds nobody). May ask the name
    /// service: start-up and reload only.
    pub fn resolve(limits: &LimitsConfig) -> Limits {
        #[cfg(unix)]
        let (resolved, unresolved) =
            Limits::resolve_with(limits, crate::sys::user_id, crate::sys::group_id);
        #[cfg(not(unix))]
        let (resolved, unresolved) =
            Limits::resolve_with(limits, |n| n.parse().ok(), |n| n.parse().ok());
        for key in unresolved {
            tracing::warn!(limit = %crate::untrusted::untrusted(&key), "no such user or group on this host: this limit binds nobody until a reload finds it");
        }
        resolved
    }
}

/// The UTC day and month an instant falls in, and their bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Period {
    /// Days since 1970-01-01.
    day: i64,
    /// Months since year 0: year × 12 + month − 1.
    month: i64,
    /// When the next day begins, Unix ms.
    next_day_ms: i64,
    /// When this month began and when the next begins, Unix ms.
    month_start_ms: i64,
    next_month_ms: i64,
}

impl Period {
    fn of(at_ms: i64) -> Period {
        use jiff::tz::Offset;
        let day = at_ms.div_euclid(DAY_MS);
        let timestamp =
            jiff::Timestamp::from_millisecond(at_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let date = Offset::UTC.to_datetime(timestamp).date();
        let (year, month) = (date.year(), date.month());
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let start_of = |y: i16, m: i8| {
            jiff::civil::Date::new(y, m, 1)
                .ok()
                .and_then(|d| {
                    Offset::UTC
                        .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                        .ok()
                })
                .map_or(i64::MAX, |t| t.as_millisecond())
        };
        Period {
            day,
            month: i64::from(year) * 12 + i64::from(month) - 1,
            next_day_ms: (day + 1) * DAY_MS,
            month_start_ms: start_of(year, month),
            next_month_ms: start_of(next_year, next_month),
        }
    }

    fn day_start_ms(&self) -> i64 {
        self.day * DAY_MS
    }
}

/// An instant as RFC 3339 in UTC (`2027-01-01T00:00:00Z`).
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// One subject's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counter {
    /// The day `day_tokens` are of.
    day: i64,
    day_tokens: u64,
    /// The month `month_tokens` are of.
    month: i64,
    month_tokens: u64,
    /// Requests admitted, by the Unix second they were admitted in, oldest first; at most
    /// [`WINDOW_SECONDS`] + 1 entries.
    window: VecDeque<(i64, u32)>,
    /// For a uid: its groups, as its last request (or the group database, at seeding)
    /// gave them, for `status`.
    groups: Vec<u32>,
}

impl Counter {
    fn tokens_today(&self, p: &Period) -> u64 {
        if self.day == p.day {
            self.day_tokens
        } else {
            0
        }
    }

    fn tokens_this_month(&self, p: &Period) -> u64 {
        if self.month == p.month {
            self.month_tokens
        } else {
            0
        }
    }

    /// Adds `tokens` used in `at`'s day and month. Tokens of a day or month already past
    /// (a generation admitted before midnight that ended after it) count in neither.
    fn add_tokens(&mut self, tokens: u64, at: &Period) {
        if at.day > self.day {
            (self.day, self.day_tokens) = (at.day, 0);
        }
        if at.day == self.day {
            self.day_tokens = self.day_tokens.saturating_add(tokens);
        }
        if at.month > self.month {
            (self.month, self.month_tokens) = (at.month, 0);
        }
        if at.month == self.month {
            self.month_tokens = self.month_tokens.saturating_add(tokens);
        }
    }

    /// Forgets the requests that left the window at `now_ms`.
    fn expire(&mut self, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        while self
            .window
            .front()
            .is_some_and(|(s, _)| now_s - s > WINDOW_SECONDS)
        {
            self.window.pop_front();
        }
    }

    /// Requests in the window at `now_ms` (call [`Counter::expire`] first).
    fn requests(&self) -> u64 {
        self.window.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    fn count_request(&mut self, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        match self.window.back_mut() {
            Some((s, n)) if *s == now_s => *n = n.saturating_add(1),
            // A clock stepped back: counted in the newest second, never out of order.
            Some((s, n)) if *s > now_s => *n = n.saturating_add(1),
            _ => self.window.push_back((now_s, 1)),
        }
    }

    /// How long from `now_ms` until the window holds fewer than `limit` requests (call
    /// [`Counter::expire`] first).
    fn free_in(&self, limit: u64, now_ms: i64) -> Duration {
        let mut left = self.requests();
        for (s, n) in &self.window {
            left -= u64::from(*n);
            if left < limit {
                let frees_at = (s + WINDOW_SECONDS + 1) * 1000;
                return Duration::from_millis(frees_at.saturating_sub(now_ms).max(1) as u64);
            }
        }
        Duration::ZERO
    }

    /// Whether nothing of it counts any more (no tokens this month, an empty window).
    fn is_idle(&self, p: &Period) -> bool {
        self.tokens_this_month(p) == 0 && self.window.is_empty()
    }
}

/// What [`Quotas::seed`] found in the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Generations of this month read.
    pub generations: u64,
    /// Their tokens.
    pub tokens: u64,
}

/// The budgets and rate limits in force and the counters they are checked against.
/// Shared by every connection (on `Daemon`).
#[derive(Debug, Default)]
pub struct Quotas {
    limits: RwLock<Arc<Limits>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<Subject, Counter>,
    /// The day idle counters were last swept.
    swept_day: i64,
    /// User names by uid, for `status`: from the configuration, the ledger and lookups.
    names: HashMap<u32, Option<String>>,
}

/// Why a request is refused, as the limits that bind it are weighed one by one: the
/// spent budget that resets last, and the full window that frees last.
#[derive(Debug, Default)]
struct Refusal {
    spent: Option<(i64, String)>,
    full: Option<(Duration, String)>,
}

impl Refusal {
    /// Weighs `bound` against `counter` (its subject's, expired at `now_ms`).
    fn weigh(&mut self, bound: &Bound, counter: &Counter, p: &Period, now_ms: i64) {
        let q = &bound.quota;
        for (field, limit, used, resets) in [
            (
                "tokens_per_day",
                q.tokens_per_day,
                counter.tokens_today(p),
                p.next_day_ms,
            ),
            (
                "tokens_per_month",
                q.tokens_per_month,
                counter.tokens_this_month(p),
                p.next_month_ms,
            ),
        ] {
            let Some(limit) = limit.filter(|l| used >= *l) else {
                continue;
            };
            if self.spent.as_ref().is_none_or(|(at, _)| resets > *at) {
                let message = format!(
                    "{}.{field} = {limit} is spent ({used} used); it resets at {}",
                    bound.key,
                    rfc3339(resets)
                );
                self.spent = Some((resets, message));
            }
        }
        let Some(limit) = q.requests_per_minute.map(u64::from) else {
            return;
        };
        let requests = counter.requests();
        if requests < limit {
            return;
        }
        let wait = counter.free_in(limit, now_ms);
        if self.full.as_ref().is_none_or(|(w, _)| wait > *w) {
            let message = format!(
                "{}.requests_per_minute = {limit} is reached ({requests} requests admitted in the last minute); retry in {:.1} s",
                bound.key,
                wait.as_secs_f64()
            );
            self.full = Some((wait, message));
        }
    }

    /// The error to refuse with, if any: a spent budget first (waiting for the window
    /// would not help).
    fn into_error(self) -> Option<WireError> {
        if let Some((_, message)) = self.spent {
            return Some(WireError::new(ErrorCode::PermissionDenied, message));
        }
        self.full.map(|(wait, message)| {
            WireError::new(ErrorCode::RateLimited, message).with_retry_after(wait)
        })
    }
}

/// The subjects a request counts for: its uid, its groups, its token.
fn subjects(requester: &Requester) -> Vec<Subject> {
    let mut subjects = Vec::with_capacity(requester.groups.len() + 2);
    subjects.extend(requester.uid.map(Subject::Uid));
    subjects.extend(requester.groups.iter().copied().map(Subject::Group));
    subjects.extend(requester.token.clone().map(Subject::Token));
    subjects
}

impl Quotas {
    /// Quotas with the limits of `limits` (names resolved, see [`Limits::resolve`]) and
    /// no usage counted yet.
    pub fn new(limits: &LimitsConfig) -> Quotas {
        let quotas = Quotas::default();
        quotas.set_limits(Limits::resolve(limits));
        quotas
    }

    /// Puts `limits` in force (start-up, reload). The counters stay.
    pub fn set_limits(&self, limits: Limits) {
        let mut state = self.lock();
        for (uid, name) in &limits.names {
            if state.names.len() < MAX_NAMES || state.names.contains_key(uid) {
                state.names.insert(*uid, Some(name.clone()));
            }
        }
        drop(state);
        *self.limits.write().expect("quota limits lock poisoned") = Arc::new(limits);
    }

    fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .expect("quota limits lock poisoned")
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("quota state lock poisoned")
    }

    /// Admits a request of `requester` at `now_ms` (Unix ms, UTC), counting it in its
    /// request windows, or refuses it without counting it: `permission_denied` when a
    /// token budget that binds it is spent (the one that resets last is named), else
    /// `rate_limited` when a request window is full (`retry_after_ms`: when every full
    /// window has room again).
    pub fn check(&self, requester: &Requester, now_ms: i64) -> Result<(), WireError> {
        let limits = self.limits();
        let subjects = subjects(requester);
        let p = Period::of(now_ms);
        let mut state = self.lock();
        state.sweep(&p, now_ms);
        let mut refusal = Refusal::default();
        for subject in &subjects {
            let Some(bounds) = limits.by_subject.get(subject) else {
                continue;
            };
            let counter = match state.counters.get_mut(subject) {
                Some(c) => {
                    c.expire(now_ms);
                    &*c
                }
                None => &Counter::default(),
            };
            for bound in bounds {
                refusal.weigh(bound, counter, &p, now_ms);
            }
        }
        if let Some(e) = refusal.into_error() {
            return Err(e);
        }
        state.count_request(requester, now_ms);
        Ok(())
    }

    /// Charges `tokens` to `requester`, for a generation admitted at `at_ms`: counted in
    /// that day and month (a day or month already over is not charged).
    pub fn charge(&self, requester: &Requester, tokens: u64, at_ms: i64) {
        let at = Period::of(at_ms);
        self.lock().charge(requester, tokens, &at);
    }

    /// Seeds the counters from the ledger at `conn` (at start-up, before any request):
    /// this month's tokens (and today's) per uid, per token and per group of each uid
    /// (`groups_of`), the requests of the last minute, and the user names the ledger
    /// knows.
    pub fn seed(
        &self,
        conn: &rusqlite::Connection,
        now_ms: i64,
        groups_of: impl Fn(u32) -> Vec<u32>,
    ) -> Result<Seeded, rusqlite::Error> {
        let p = Period::of(now_ms);
        let mut seeded = Seeded::default();
        let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut who = |uid: Option<u32>, token: Option<String>| Requester {
            uid,
            groups: uid.map_or_else(Vec::new, |u| {
                groups.entry(u).or_insert_with(|| groups_of(u)).clone()
            }),
            token,
            admin_uid: false,
        };
        let mut state = self.lock();
        // Rows from the future (a clock set back) are left out: counted now, they would
        // hide today's usage until their day came.
        let mut totals = conn.prepare(
            "SELECT uid, token, at_ms >= ?1, count(*), sum(prompt_tokens + completion_tokens), max(user) \
             FROM generations WHERE at_ms >= ?2 AND at_ms <= ?3 GROUP BY uid, token, at_ms >= ?1",
        )?;
        let mut rows = totals.query(rusqlite::params![
            p.day_start_ms(),
            p.month_start_ms,
            now_ms
        ])?;
        while let Some(row) = rows.next()? {
            let (uid, token): (Option<u32>, Option<String>) = (row.get(0)?, row.get(1)?);
            let today: bool = row.get(2)?;
            let count: i64 = row.get(3)?;
            let tokens = u64::try_from(row.get::<_, Option<i64>>(4)?.unwrap_or(0)).unwrap_or(0);
            let user: Option<String> = row.get(5)?;
            seeded.generations += u64::try_from(count).unwrap_or(0);
            seeded.tokens = seeded.tokens.saturating_add(tokens);
            // A row of an earlier day of the month counts in the month only.
            let at = if today {
                p
            } else {
                Period::of(p.month_start_ms)
            };
            let requester = who(uid, token);
            state.charge(&requester, tokens, &at);
            if let (Some(uid), Some(user)) = (uid, user) {
                if state.names.len() < MAX_NAMES {
                    state.names.entry(uid).or_insert(Some(user));
                }
            }
        }
        drop(rows);
        let mut recent = conn.prepare(
            "SELECT uid, token, at_ms FROM generations WHERE at_ms > ?1 AND at_ms <= ?2 ORDER BY at_ms",
        )?;
        let mut rows = recent.query(rusqlite::params![
            now_ms - (WINDOW_SECONDS + 1) * 1000,
            now_ms
        ])?;
        while let Some(row) = rows.next()? {
            let requester = who(row.get(0)?, row.get(1)?);
            let at_ms: i64 = row.get(2)?;
            state.count_request(&requester, at_ms);
        }
        Ok(seeded)
    }

    /// Seeds the counters from the ledger file at `path` (see [`Quotas::seed`]), each
    /// uid's groups from the user and group databases; logs what it found, or why it
    /// could not (the budgets then count from now). Start-up only: it reads the file and
    /// may ask the name service.
    pub fn seed_from_ledger(&self, path: &std::path::Path, now_ms: i64) {
        let seeded = crate::ledger::db::open_read(path)
            .map_err(|e| e.to_string())
            .and_then(|conn| {
                self.seed(&conn, now_ms, groups_of_user)
                    .map_err(|e| e.to_string())
            });
        match seeded {
            Ok(s) => tracing::info!(
                generations = s.generations,
                tokens = s.tokens,
                "budgets seeded from the usage ledger (this month's generations)"
            ),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the usage ledger to seed the budgets; they count from now")
            }
        }
    }

    /// The figures `status` shows per user at `now_ms`: every uid with usage this month,
    /// a request in the last minute, or a limit of its own, by uid. Names are those
    /// already known ([`Quotas::name_users`] looks up the rest).
    pub fn users(&self, now_ms: i64) -> Vec<UserUsage> {
        let limits = self.limits();
        let p = Period::of(now_ms);
        let mut state = self.lock();
        let mut uids: Vec<u32> = limits
            .by_subject
            .keys()
            .filter_map(|s| match s {
                Subject::Uid(uid) => Some(*uid),
                _ => None,
            })
            .collect();
        for (subject, counter) in &mut state.counters {
            if let Subject::Uid(uid) = subject {
                counter.expire(now_ms);
                if !counter.is_idle(&p) {
                    uids.push(*uid);
                }
            }
        }
        uids.sort_unstable();
        uids.dedup();
        let empty = Counter::default();
        uids.into_iter()
            .map(|uid| {
                let counter = state.counters.get(&Subject::Uid(uid)).unwrap_or(&empty);
                let mut bound_by = vec![Subject::Uid(uid)];
                bound_by.extend(counter.groups.iter().copied().map(Subject::Group));
                let mut tightest: BTreeMap<&'static str, LimitUse> = BTreeMap::new();
                for subject in &bound_by {
                    let Some(bounds) = limits.by_subject.get(subject) else {
                        continue;
                    };
                    let of = state.counters.get(subject).unwrap_or(&empty);
                    for bound in bounds {
                        let q = &bound.quota;
                        for (field, limit, used, resets) in [
                            (
                                "tokens_per_day",
                                q.tokens_per_day,
                                of.tokens_today(&p),
                                Some(p.next_day_ms),
                            ),
                            (
                                "tokens_per_month",
                                q.tokens_per_month,
                                of.tokens_this_month(&p),
                                Some(p.next_month_ms),
                            ),
                            (
                                "requests_per_minute",
                                q.requests_per_minute.map(u64::from),
                                of.requests(),
                                None,
                            ),
                        ] {
                            let Some(limit) = limit else { continue };
                            let candidate = LimitUse {
                                limit: format!("{}.{field}", bound.key),
                                value: limit,
                                used,
                                left: limit.saturating_sub(used),
                                resets_at: resets.map(rfc3339),
                            };
                            match tightest.get(field) {
                                Some(held) if held.left <= candidate.left => {}
                                _ => {
                                    tightest.insert(field, candidate);
                                }
                            }
                        }
                    }
                }
                UserUsage {
                    uid,
                    user: state.names.get(&uid).cloned().flatten(),
                    requests_last_minute: counter.requests(),
                    tokens_today: counter.tokens_today(&p),
                    tokens_this_month: counter.tokens_this_month(&p),
                    limits: tightest.into_values().collect(),
                }
            })
            .collect()
    }

    /// Fills in the names of `users` not known yet from the user database, off the
    /// runtime's threads (it may ask the name service), and remembers them.
    pub async fn name_users(&self, users: &mut [UserUsage]) {
        let unknown: Vec<u32> = {
            let state = self.lock();
            users
                .iter()
                .filter(|u| u.user.is_none() && !state.names.contains_key(&u.uid))
                .map(|u| u.uid)
                .collect()
        };
        if !unknown.is_empty() {
            let found = tokio::task::spawn_blocking(move || {
                unknown
                    .into_iter()
                    .map(|uid| (uid, user_name(uid)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut state = self.lock();
            for (uid, name) in found {
                if state.names.len() < MAX_NAMES {
                    state.names.insert(uid, name);
                }
            }
        }
        let state = self.lock();
        for user in users {
            if user.user.is_none() {
                user.user = state.names.get(&user.uid).cloned().flatten();
            }
        }
    }
}

impl State {
    /// The counter of `subject`, made when it has none; a uid's remembers `groups`.
    fn counter(&mut self, subject: Subject, groups: &[u32]) -> &mut Counter {
        let is_uid = matches!(subject, Subject::Uid(_));
        let counter = self.counters.entry(subject).or_default();
        if is_uid && counter.groups != groups {
            counter.groups = groups.to_vec();
        }
        counter
    }

    /// Adds `tokens` to every counter of `requester`, in `at`'s day and month.
    fn charge(&mut self, requester: &Requester, tokens: u64, at: &Period) {
        for subject in subjects(requester) {
            self.counter(subject, &requester.groups)
                .add_tokens(tokens, at);
        }
    }

    /// Counts a request of `requester` at `at_ms` in every window of its.
    fn count_request(&mut self, requester: &Requester, at_ms: i64) {
        for subject in subjects(requester) {
            let counter = self.counter(subject, &requester.groups);
            counter.expire(at_ms);
            counter.count_request(at_ms);
        }
    }

    /// Once a day, forgets the counters with nothing left in them.
    fn sweep(&mut self, p: &Period, now_ms: i64) {
        if self.swept_day == p.day {
            return;
        }
        self.swept_day = p.day;
        self.counters.retain(|_, c| {
            c.expire(now_ms);
            !c.is_idle(p)
        });
    }
}

#[cfg(unix)]
fn user_name(uid: u32) -> Option<String> {
    crate::sys::user_name(uid).map(|n| n.to_string_lossy().into_owned())
}

#[cfg(not(unix))]
fn user_name(_: u32) -> Option<String> {
    None
}

/// A uid's groups from the user and group databases (none when it has no entry).
#[cfg(unix)]
fn groups_of_user(uid: u32) -> Vec<u32> {
    match crate::sys::user_gid(uid) {
        Some(gid) => {
            let mut groups = crate::sys::user_groups(uid, gid);
            groups.sort_unstable();
            groups.dedup();
            groups
        }
        None => Vec::new(),
    }
}

#[cfg(not(unix))]
fn groups_of_user(_: u32) -> Vec<u32> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// 2026-12-31T23:59:30Z.
    const NEW_YEARS_EVE: i64 = 1_798_761_570_000;

    fn config(limits: &str) -> LimitsConfig {
        Config::parse(limits, std::path::Path::new("t.toml"))
            .unwrap()
            .limits
    }

    /// Quotas for `limits`, where user `alice` is uid 1001, group `interns` gid 500, and
    /// nothing else resolves but numbers.
    fn quotas(limits: &str) -> Quotas {
        let quotas = Quotas::default();
        quotas.set_limits(resolve(limits).0);
        quotas
    }

    fn resolve(limits: &str) -> (Limits, Vec<String>) {
        Limits::resolve_with(
            &config(limits),
            |n| match n {
                "alice" => Some(1001),
                n => n.parse().ok(),
            },
            |n| match n {
                "interns" => Some(500),
                n => n.parse().ok(),
            },
        )
    }

    fn alice() -> Requester {
        Requester {
            uid: Some(1001),
            groups: vec![1001, 500],
            token: None,
            admin_uid: false,
        }
    }

    fn bob() -> Requester {
        Requester {
            uid: Some(1002),
            groups: vec![1002, 500],
            token: None,
            admin_uid: false,
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn periods_are_utc_days_and_calendar_months_across_the_year_end() {
        let p = Period::of(NEW_YEARS_EVE);
        assert_eq!(rfc3339(p.day_start_ms()), "2026-12-31T00:00:00Z");
        assert_eq!(rfc3339(p.next_day_ms), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(p.month_start_ms), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(p.next_month_ms), "2027-01-01T00:00:00Z");
        let q = Period::of(p.next_day_ms);
        assert_eq!((q.day, q.month), (p.day + 1, p.month + 1));
        let february = Period::of(ms("2028-02-29T12:00:00Z"));
        assert_eq!(rfc3339(february.next_month_ms), "2028-03-01T00:00:00Z");
    }

    #[test]
    fn a_spent_daily_budget_refuses_naming_it_and_resets_at_utc_midnight() {
        let q = quotas("[limits.uid.alice]\ntokens_per_day = 100\n");
        let before = NEW_YEARS_EVE - 3_600_000;
        q.check(&alice(), before).unwrap();
        // The generation that crosses the budget was admitted; it is charged in full.
        q.charge(&alice(), 150, before);
        let e = q.check(&alice(), before + 1000).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            "limits.uid.alice.tokens_per_day = 100 is spent (150 used); it resets at 2027-01-01T00:00:00Z"
        );
        // Bob is not bound by alice's budget.
        q.check(&bob(), before + 1000).unwrap();
        q.check(&alice(), ms("2027-01-01T00:00:00Z")).unwrap();
    }

    #[test]
    fn a_monthly_budget_runs_from_december_into_january() {
        let q = quotas("[limits.uid.1001]\ntokens_per_month = 1000\n");
        q.charge(&alice(), 600, ms("2026-12-02T10:00:00Z"));
        q.check(&alice(), ms("2026-12-20T10:00:00Z")).unwrap();
        q.charge(&alice(), 500, ms("2026-12-20T10:00:00Z"));
        let e = q.check(&alice(), NEW_YEARS_EVE).unwrap_err();
        assert_eq!(
            e.message,
            "limits.uid.1001.tokens_per_month = 1000 is spent (1100 used); it resets at 2027-01-01T00:00:00Z"
        );
        q.check(&alice(), ms("2027-01-01T00:00:00.001Z")).unwrap();
    }

    #[test]
    fn a_generation_admitted_before_midnight_counts_in_the_day_it_was_admitted() {
        let q = quotas("[limits.uid.alice]\ntokens_per_day = 100\n");
        q.check(&alice(), ms("2027-01-01T00:00:01Z")).unwrap();
        q.charge(&alice(), 40, ms("2027-01-01T00:00:01Z"));
        // Ends after midnight, admitted before: the ledger has it on the 31st.
        q.charge(&alice(), 500, NEW_YEARS_EVE);
        let users = q.users(ms("2027-01-01T00:00:02Z"));
        assert_eq!(users[0].tokens_today, 40);
        assert_eq!(users[0].tokens_this_month, 40);
        q.check(&alice(), ms("2027-01-01T00:00:02Z")).unwrap();
    }

    #[test]
    fn the_request_window_slides_and_says_when_a_slot_frees() {
        let q = quotas("[limits.uid.alice]\nrequests_per_minute = 3\n");
        let t0 = ms("2026-12-06T10:00:00.500Z");
        q.check(&alice(), t0).unwrap();
        q.check(&alice(), t0 + 10_000).unwrap();
        q.check(&alice(), t0 + 20_000).unwrap();
        let e = q.check(&alice(), t0 + 30_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.retryable);
        assert!(
            e.message
                .starts_with("limits.uid.alice.requests_per_minute = 3 is reached (3 requests"),
            "{}",
            e.message
        );
        // The first request's second (10:00:00) leaves the window at 10:01:01.
        assert_eq!(
            e.retry_after_ms,
            Some(ms("2026-12-06T10:01:01Z") - (t0 + 30_000)).map(|m| m as u64)
        );
        // Refused requests are not counted: the slot frees when it said.
        let free = t0 + 30_000 + e.retry_after_ms.unwrap() as i64;
        let e = q.check(&alice(), free - 1).unwrap_err();
        assert_eq!(e.retry_after_ms, Some(1));
        q.check(&alice(), free).unwrap();
        assert!(q.check(&alice(), free).is_err());
    }

    #[test]
    fn no_sixty_seconds_admit_more_than_the_rate() {
        let q = quotas("[limits.uid.alice]\nrequests_per_minute = 2\n");
        let t0 = ms("2026-12-06T10:00:00.999Z");
        let mut admitted = Vec::new();
        for step in 0..400 {
            let now = t0 + step * 250;
            if q.check(&alice(), now).is_ok() {
                admitted.push(now);
            }
        }
        for pair in admitted.windows(3) {
            assert!(pair[2] - pair[0] >= 60_000, "{admitted:?}");
        }
        // Two at once, then each again once its second has left the window.
        assert_eq!(admitted.len(), 4, "{admitted:?}");
    }

    #[test]
    fn a_group_budget_is_pooled_over_its_members() {
        let q = quotas("[limits.group.interns]\ntokens_per_day = 100\nrequests_per_minute = 3\n");
        let now = ms("2026-12-06T10:00:00Z");
        q.check(&alice(), now).unwrap();
        q.charge(&alice(), 60, now);
        q.check(&bob(), now).unwrap();
        q.charge(&bob(), 60, now);
        let e = q.check(&alice(), now + 1).unwrap_err();
        assert!(
            e.message
                .starts_with("limits.group.interns.tokens_per_day = 100 is spent (120 used)"),
            "{}",
            e.message
        );
        let carol = Requester {
            uid: Some(1003),
            groups: vec![1003],
            ..Requester::default()
        };
        q.check(&carol, now + 1).unwrap();
    }

    #[test]
    fn a_spent_budget_wins_over_a_full_window_and_the_last_reset_is_named() {
        let q = quotas(
            "[limits.uid.alice]\nrequests_per_minute = 1\ntokens_per_day = 10\n\
             [limits.group.interns]\ntokens_per_month = 10\n",
        );
        let now = ms("2026-12-06T10:00:00Z");
        q.check(&alice(), now).unwrap();
        q.charge(&alice(), 10, now);
        let e = q.check(&alice(), now + 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(
            e.message
                .starts_with("limits.group.interns.tokens_per_month = 10 is spent")
                && e.message.ends_with("2027-01-01T00:00:00Z"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_token_budget_binds_the_token_whoever_uses_it() {
        let q = quotas("[limits.token.ci-bot]\ntokens_per_day = 5\n");
        let now = ms("2026-12-06T10:00:00Z");
        let with_token = |r: Requester| Requester {
            token: Some("ci-bot".into()),
            ..r
        };
        q.check(&with_token(alice()), now).unwrap();
        q.charge(&with_token(alice()), 5, now);
        let e = q.check(&with_token(bob()), now).unwrap_err();
        assert!(
            e.message
                .starts_with("limits.token.ci-bot.tokens_per_day = 5 is spent (5 used)"),
            "{}",
            e.message
        );
        q.check(&alice(), now).unwrap();
    }

    #[test]
    fn admins_are_bound_by_a_budget_that_names_them() {
        let q = quotas("[limits.uid.0]\ntokens_per_day = 1\n");
        let root = Requester {
            uid: Some(0),
            groups: vec![0],
            token: None,
            admin_uid: true,
        };
        let now = ms("2026-12-06T10:00:00Z");
        q.charge(&root, 1, now);
        assert_eq!(
            q.check(&root, now).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_binds_nobody_and_is_reported() {
        let (limits, unresolved) = resolve(
            "[limits.uid.nobody-here]\ntokens_per_day = 1\n[limits.group.no-group]\ntokens_per_day = 1\n\
             [limits.uid.alice]\ntokens_per_day = 1\n",
        );
        assert_eq!(
            unresolved,
            ["limits.uid.nobody-here", "limits.group.no-group"]
        );
        assert_eq!(limits.by_subject.len(), 1);
        assert_eq!(limits.names.get(&1001).map(String::as_str), Some("alice"));
    }

    #[test]
    fn a_reload_keeps_the_counters_and_applies_the_new_limits_to_them() {
        let q = quotas("[limits.uid.alice]\ntokens_per_day = 100\n");
        let now = ms("2026-12-06T10:00:00Z");
        q.check(&alice(), now).unwrap();
        q.charge(&alice(), 150, now);
        assert!(q.check(&alice(), now).is_err());
        q.set_limits(resolve("[limits.uid.alice]\ntokens_per_day = 200\n").0);
        q.check(&alice(), now).unwrap();
        // A limit new to the configuration starts from the usage already counted.
        q.set_limits(resolve("[limits.group.interns]\ntokens_per_day = 100\n").0);
        let e = q.check(&alice(), now).unwrap_err();
        assert!(e.message.contains("(150 used)"), "{}", e.message);
    }

    #[test]
    fn status_shows_each_users_usage_and_the_tightest_limit_of_each_kind() {
        let q = quotas(
            "[limits.uid.alice]\ntokens_per_day = 1000\nrequests_per_minute = 10\n\
             [limits.group.interns]\ntokens_per_day = 300\n[limits.uid.4000]\ntokens_per_month = 5\n",
        );
        let now = ms("2026-12-06T10:00:00Z");
        q.check(&alice(), now).unwrap();
        q.charge(&alice(), 100, now);
        q.check(&bob(), now).unwrap();
        q.charge(&bob(), 150, now);
        let users = q.users(now + 1);
        assert_eq!(
            users.iter().map(|u| u.uid).collect::<Vec<_>>(),
            [1001, 1002, 4000],
            "users with usage or a limit of their own"
        );
        let a = &users[0];
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(
            (a.requests_last_minute, a.tokens_today, a.tokens_this_month),
            (1, 100, 100)
        );
        assert_eq!(
            a.limits,
            [
                LimitUse {
                    limit: "limits.uid.alice.requests_per_minute".into(),
                    value: 10,
                    used: 1,
                    left: 9,
                    resets_at: None
                },
                LimitUse {
                    limit: "limits.group.interns.tokens_per_day".into(),
                    value: 300,
                    used: 250,
                    left: 50,
                    resets_at: Some("2026-12-07T00:00:00Z".into())
                },
            ]
        );
        assert_eq!(users[2].limits[0].left, 5);
    }

    #[test]
    fn counters_are_seeded_from_the_ledger_this_month_today_and_the_last_minute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let now = ms("2026-12-06T10:00:00Z");
        let row = |at_ms: i64, uid: u32, token: Option<&str>, tokens: u32| crate::ledger::Record {
            at_ms,
            uid: Some(uid),
            user: Some(format!("user{uid}")),
            token: token.map(str::to_owned),
            prompt_tokens: tokens,
            completion_tokens: 0,
            ..crate::ledger::Record::example("m", "mock-1")
        };
        let mut db = crate::ledger::db::Db::open(&path).unwrap();
        db.insert(&[
            // Last month: not counted.
            row(ms("2026-11-30T23:59:59Z"), 1001, None, 10_000),
            // Earlier this month: the month only.
            row(ms("2026-12-01T00:00:00Z"), 1001, None, 300),
            // Today, one in the last minute, one with a token.
            row(now - 3_600_000, 1001, None, 20),
            row(now - 30_000, 1002, Some("ci-bot"), 7),
            // From the future (a clock set back): left out.
            row(now + 60_000, 1001, None, 99_999),
        ])
        .unwrap();
        let q = quotas(
            "[limits.uid.alice]\ntokens_per_month = 320\n[limits.group.interns]\nrequests_per_minute = 1\n\
             [limits.token.ci-bot]\ntokens_per_day = 7\n",
        );
        let conn = crate::ledger::db::open_read(&path).unwrap();
        let seeded = q.seed(&conn, now, |uid| vec![uid, 500]).unwrap();
        assert_eq!(
            seeded,
            Seeded {
                generations: 3,
                tokens: 327
            }
        );
        let users = q.users(now);
        assert_eq!(users.len(), 2, "{users:?}");
        assert_eq!(
            (
                users[0].uid,
                users[0].tokens_today,
                users[0].tokens_this_month,
                users[0].requests_last_minute
            ),
            (1001, 20, 320, 0)
        );
        assert_eq!(users[1].user.as_deref(), Some("user1002"));
        assert_eq!(users[1].requests_last_minute, 1);
        let e = q.check(&alice(), now).unwrap_err();
        assert!(
            e.message
                .contains("tokens_per_month = 320 is spent (320 used)"),
            "{}",
            e.message
        );
        let e = q.check(&bob(), now).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::RateLimited,
            "bob's request of the last minute fills the group's window"
        );
        let token = Requester {
            uid: Some(7),
            groups: vec![],
            token: Some("ci-bot".into()),
            admin_uid: false,
        };
        assert!(q
            .check(&token, now)
            .unwrap_err()
            .message
            .contains("ci-bot.tokens_per_day = 7 is spent"));
    }
}
