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
//!   and `retry_after_ms` is exact for that rule. Subjects idle for a whole month are
//!   dropped once a day; the rest are bounded by the host's users and groups and the
//!   token store.
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

    fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
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
        if !limits.is_empty() {
            let mut spent: Option<(i64, String)> = None;
            let mut full: Option<(Duration, String)> = None;
            for subject in &subjects {
                let Some(bounds) = limits.by_subject.get(subject) else {
                    continue;
                };
                let counter = state.counters.get_mut(subject);
                let counter = match counter {
                    Some(c) => {
                        c.expire(now_ms);
                        &*c
                    }
                    None => &Counter::default(),
                };
                for bound in bounds {
                    let q = &bound.quota;
                    for (field, limit, used, resets) in [
                        (
                            "tokens_per_day",
                            q.tokens_per_day,
                            counter.tokens_today(&p),
                            p.next_day_ms,
                        ),
                        (
                            "tokens_per_month",
                            q.tokens_per_month,
                            counter.tokens_this_month(&p),
                            p.next_month_ms,
                        ),
                    ] {
                        let Some(limit) = limit.filter(|l| used >= *l) else {
                            continue;
                        };
                        if spent.as_ref().is_none_or(|(at, _)| resets > *at) {
                            spent = Some((
                                resets,
                                format!(
                                    "{}.{field} = {limit} is spent ({used} used); it resets at {}",
                                    bound.key,
                                    rfc3339(resets)
                                ),
                            ));
                        }
                    }
                    let Some(limit) = q.requests_per_minute.map(u64::from) else {
                        continue;
                    };
                    let requests = counter.requests();
                    if requests >= limit {
                        let wait = counter.free_in(limit, now_ms);
                        if full.as_ref().is_none_or(|(w, _)| wait > *w) {
                            full = Some((wait, format!(
                                "{}.requests_per_minute = {limit} is reached ({requests} requests admitted in the last minute); retry in {:.1} s",
                                bound.key,
                                wait.as_secs_f64()
                            )));
                        }
                    }
                }
            }
            if let Some((_, message)) = spent {
                return Err(WireError::new(ErrorCode::PermissionDenied, message));
            }
            if let Some((wait, message)) = full {
                let mut e = WireError::new(ErrorCode::RateLimited, message).with_retry_after(wait);
                e.retryable = true;
                return Err(e);
            }
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
    pub async fn name_users(self: &Arc<Self>, users: &mut [UserUsage]) {
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
