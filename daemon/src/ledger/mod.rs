//! The usage ledger: every generation (completed, failed, cancelled) recorded with who
//! asked (uid, user name, token id), what was asked and what answered, the tokens, the
//! chunks, the outcome and the times, in an SQLite file under the state directory
//! (`[ledger]`, see [`crate::config::usage`]).
//!
//! A generation never waits for the ledger. Its end hands one [`Record`] to a bounded
//! queue ([`Ledger::record`], a non-blocking send that wakes no one); a writer thread of
//! its own takes what arrived within `flush_interval_ms` of a batch's first record and
//! writes it, at most `batch_records` per transaction. A full queue (a slow or full disk) drops the record, counts it and
//! logs the count; a batch that cannot be written is counted lost the same way. So a
//! SIGKILL loses at most the records not yet committed: those of the last
//! `flush_interval_ms` (and any still queued behind a slow disk), never a committed one,
//! and never the file (see [`db`]).
//!
//! A ledger file that cannot be read (corrupt, not a database, written by a newer provd)
//! is renamed aside, never deleted, and a new one started, with a warning; if no file
//! can be opened at all the daemon serves without a ledger and says so.

pub mod db;
pub mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::usage::LedgerConfig;
use db::Db;
#[cfg(test)]
use rusqlite::Connection;

/// How a generation ended, as the ledger stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its final reply was `done`.
    Completed,
    /// It ended with an error other than a cancel.
    Failed,
    /// The client cancelled it or went away.
    Cancelled,
}

impl Outcome {
    /// The name stored and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One generation, as the ledger records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// When the request was admitted: Unix time in milliseconds, UTC.
    pub at_ms: i64,
    /// The peer's uid (`None`: the OS did not say).
    pub uid: Option<u32>,
    /// The uid's user name, filled in by the writer (a name-service lookup is not for the
    /// request path).
    pub user: Option<String>,
    /// The id of the token the client presented, if any.
    pub token: Option<String>,
    /// The provider asked for (the first target, aliases resolved).
    pub provider: String,
    /// The model asked for (aliases resolved; the provider's default model when the
    /// request named none; empty when that is not known).
    pub model: String,
    /// The provider that answered (a fallback's, after one), if any did.
    pub answered_provider: Option<String>,
    /// The model the upstream said answered, if any did.
    pub answered_model: Option<String>,
    /// Prompt tokens (a lower bound after a cancel, see PROTOCOL.md).
    pub prompt_tokens: u32,
    /// Completion tokens, reasoning included (at least one per chunk delivered).
    pub completion_tokens: u32,
    /// Of the completion tokens, those spent reasoning, where the provider said.
    pub reasoning_tokens: u32,
    /// Chunks delivered to the client.
    pub chunks: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code it ended with (`snake_case`, as on the wire), if it failed.
    pub error_code: Option<&'static str>,
    /// Milliseconds from admission to the first chunk, if one was sent.
    pub first_chunk_ms: Option<u32>,
    /// Milliseconds from admission to the end.
    pub duration_ms: u32,
}

#[cfg(test)]
impl Record {
    /// A completed generation of `provider/model` by uid 4242 (alice), for tests: 10
    /// prompt and 20 completion tokens in 20 chunks, answered by what was asked. A test
    /// changes what it is about with struct update syntax.
    pub(crate) fn example(provider: &str, model: &str) -> Record {
        Record {
            at_ms: 0,
            uid: Some(4242),
            user: Some("alice".into()),
            token: None,
            provider: provider.into(),
            model: model.into(),
            answered_provider: Some(provider.into()),
            answered_model: Some(model.into()),
            prompt_tokens: 10,
            completion_tokens: 20,
            reasoning_tokens: 0,
            chunks: 20,
            outcome: Outcome::Completed,
            error_code: None,
            first_chunk_ms: Some(5),
            duration_ms: 50,
        }
    }
}

impl Record {
    /// The tokens this generation counts against a budget: prompt and completion.
    pub fn tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

/// The ledger's counters, for `status` and the metrics.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Records written to the file.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records lost because their batch could not be written.
    pub lost: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Rows pruned by retention.
    pub pruned: AtomicU64,
}

/// What the writer thread is told.
enum Message {
    Record(Box<Record>),
    /// Write everything queued before this, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// The ledger: a handle to the writer thread, or nothing when it is off.
#[derive(Debug)]
pub struct Ledger {
    inner: Option<Inner>,
    stats: Arc<LedgerStats>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    queue: SyncSender<Message>,
    /// The writer thread, unparked by a flush.
    writer: std::thread::Thread,
    /// When the last "records dropped" warning was logged, so a full disk logs once per
    /// interval, not once per generation.
    last_drop_warning: Mutex<Option<Instant>>,
}

/// How often the writer prunes rows past their retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// The least time between two "records dropped" warnings.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a flush request (before a report, at shutdown) waits for the writer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a flush looks for room in a full queue.
const FLUSH_POLL: Duration = Duration::from_millis(5);

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The current Unix time in milliseconds.
pub fn unix_millis() -> i64 {
    unix_now().as_millis().try_into().unwrap_or(i64::MAX)
}

impl Ledger {
    /// A ledger that records nothing (`[ledger] enabled = false`, tests, the demo).
    pub fn disabled() -> Ledger {
        Ledger {
            inner: None,
            stats: Arc::default(),
        }
    }

    /// Opens the ledger of `config` in `state_dir` and starts its writer. Never fails:
    /// an unreadable file is set aside and a new one started; a ledger that cannot be
    /// opened at all is logged and the daemon runs without one.
    pub fn open(config: &LedgerConfig, state_dir: &Path) -> Ledger {
        if !config.enabled {
            tracing::info!("usage ledger off ([ledger] enabled = false)");
            return Ledger::disabled();
        }
        let path = state_dir.join(&config.path);
        let Some(db) = open_or_replace(&path) else {
            return Ledger::disabled();
        };
        let stats = Arc::new(LedgerStats::default());
        let (queue, rx) = mpsc::sync_channel(config.queue_records);
        let writer = Writer {
            db,
            path: path.clone(),
            batch: Vec::with_capacity(config.batch_records.min(4096)),
            batch_records: config.batch_records,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            retention: Duration::from_secs(u64::from(config.retention_days) * 86_400),
            stats: stats.clone(),
            names: HashMap::new(),
        };
        // Detached: it ends when the daemon's handle (the queue's only sender) is dropped,
        // having written what was queued; shutdown calls `flush` to wait for that.
        let thread = std::thread::Builder::new()
            .name("provd-ledger".into())
            .spawn(move || writer.run(rx));
        let writer = match thread {
            Ok(detached) => detached.thread().clone(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the usage ledger's writer; serving without a ledger");
                return Ledger::disabled();
            }
        };
        tracing::info!(path = %path.display(), retention_days = config.retention_days, "usage ledger open");
        Ledger {
            inner: Some(Inner {
                path,
                queue,
                writer,
                last_drop_warning: Mutex::new(None),
            }),
            stats,
        }
    }

    /// Whether generations are being recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The ledger file, when there is one (reports open it read-only).
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.path.as_path())
    }

    /// The counters.
    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// The counters, as `status` reports them.
    pub fn status(&self) -> provd_client::message::LedgerStatus {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        provd_client::message::LedgerStatus {
            written: load(&self.stats.written),
            dropped: load(&self.stats.dropped),
            lost: load(&self.stats.lost),
            pruned: load(&self.stats.pruned),
        }
    }

    /// Queues `record` for writing without waiting; a full queue drops it (counted and,
    /// at most every ten seconds, logged).
    pub fn record(&self, record: Record) {
        let Some(inner) = &self.inner else {
            return;
        };
        match inner.queue.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = inner
                    .last_drop_warning
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|at| at.elapsed() >= DROP_WARNING_INTERVAL) {
                    *last = Some(Instant::now());
                    tracing::warn!(dropped_total = dropped, "usage ledger queue full (the disk is slow or full): records dropped; generations go on unrecorded");
                }
            }
        }
    }

    /// Waits (blocking, at most ten seconds) until every record queued before this call
    /// is written or counted lost. For reports, which must include the generations that
    /// ended before they were asked for, and for shutdown. Call it off the runtime's
    /// threads.
    pub fn flush(&self) {
        self.flush_within(FLUSH_TIMEOUT);
    }

    /// [`Ledger::flush`] waiting at most `timeout`, the queue's room for the request
    /// included: a writer stuck on a hung disk with a full queue must not hang a report or
    /// the daemon's exit. Whether everything before the call was taken care of.
    pub fn flush_within(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let mut flush = Message::Flush(tx);
        // Behind the records, so it waits for room; std's bounded sender has no send with
        // a timeout, hence the polling, which only a full queue reaches.
        loop {
            match inner.queue.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    flush = back;
                    inner.writer.unpark();
                    std::thread::sleep(FLUSH_POLL);
                }
            }
        }
        inner.writer.unpark();
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Opens the ledger at `path`; an unreadable file is set aside and a new one started.
fn open_or_replace(path: &Path) -> Option<Db> {
    match Db::open(path) {
        Ok(db) => Some(db),
        Err(e) if e.is_unreadable_file() => {
            let aside = db::set_aside(path, unix_now().as_secs());
            match aside {
                Ok(aside) => {
                    tracing::warn!(path = %path.display(), set_aside_as = %aside.display(), error = %e, "the usage ledger cannot be read; it was renamed aside (not deleted) and a new ledger starts: usage reports and budgets restart from zero")
                }
                Err(rename) => {
                    tracing::warn!(path = %path.display(), error = %e, rename_error = %rename, "the usage ledger cannot be read and cannot be set aside; serving without a ledger");
                    return None;
                }
            }
            match Db::open(path) {
                Ok(db) => Some(db),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot start a new usage ledger; serving without a ledger");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the usage ledger; serving without a ledger (generations are not recorded)");
            None
        }
    }
}

/// The writer thread's state.
struct Writer {
    db: Db,
    path: PathBuf,
    batch: Vec<Record>,
    batch_records: usize,
    flush_interval: Duration,
    retention: Duration,
    stats: Arc<LedgerStats>,
    /// User names by uid, looked up once each.
    names: HashMap<u32, Option<String>>,
}

/// The most user names the writer remembers (a host has few users; the bound is for a
/// hostile one that connects under many uids).
const MAX_NAMES: usize = 4096;

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        self.prune();
        let mut last_prune = Instant::now();
        loop {
            // Waits for the first record of a batch without a deadline...
            let first = match rx.recv_timeout(PRUNE_INTERVAL) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.prune();
                    last_prune = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.handle(first);
            // ...then sleeps until the batch is due, taking what arrived meanwhile when it
            // wakes. A generation's end is then only a push onto the queue: waking this
            // thread for every record (a futex wake and a context switch each) cost the
            // hot path several percent in the benchmark. A flush unparks it at once.
            let due = Instant::now() + self.flush_interval;
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(message) => self.handle(message),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            self.write();
                            return;
                        }
                    }
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::park_timeout(due - now);
            }
            self.write();
            if last_prune.elapsed() >= PRUNE_INTERVAL {
                self.prune();
                last_prune = Instant::now();
            }
        }
    }

    /// Takes one message: a record into the batch (written when full), a flush answered
    /// once everything before it is written.
    fn handle(&mut self, message: Message) {
        match message {
            Message::Record(record) => {
                self.push(*record);
                if self.batch.len() >= self.batch_records {
                    self.write();
                }
            }
            Message::Flush(done) => {
                self.write();
                let _ = done.send(());
            }
        }
    }

    fn push(&mut self, mut record: Record) {
        if let Some(uid) = record.uid {
            record.user = self.user_name(uid);
        }
        self.batch.push(record);
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        #[cfg(unix)]
        let name = crate::sys::user_name(uid).map(|n| n.to_string_lossy().into_owned());
        #[cfg(not(unix))]
        let name = None;
        if self.names.len() < MAX_NAMES {
            self.names.insert(uid, name.clone());
        }
        name
    }

    /// Writes the batch; a batch that cannot be written is counted lost and logged. A
    /// file found corrupt is set aside and a new one started for the next batches.
    fn write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let count = self.batch.len() as u64;
        match self.db.insert(&self.batch) {
            Ok(()) => {
                self.stats.written.fetch_add(count, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let lost = self.stats.lost.fetch_add(count, Ordering::Relaxed) + count;
                tracing::warn!(records = count, lost_total = lost, error = %e, "cannot write to the usage ledger; these records are lost");
                if e.is_unreadable_file() {
                    self.replace();
                }
            }
        }
        self.batch.clear();
    }

    /// Sets the corrupt file aside and starts a new one, keeping the old handle if no new
    /// file can be made.
    fn replace(&mut self) {
        if let Some(db) = open_or_replace_after_corruption(&self.path) {
            self.db = db;
        }
    }

    fn prune(&mut self) {
        let before = unix_now().saturating_sub(self.retention);
        let before_ms = before.as_millis().try_into().unwrap_or(i64::MAX);
        match self.db.prune(before_ms) {
            Ok(0) => {}
            Ok(n) => {
                self.stats.pruned.fetch_add(n, Ordering::Relaxed);
                tracing::info!(rows = n, "pruned usage ledger rows past their retention");
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune the usage ledger"),
        }
    }
}

/// After a write found the open file corrupt: set it aside and start a new one.
fn open_or_replace_after_corruption(path: &Path) -> Option<Db> {
    match db::set_aside(path, unix_now().as_secs()) {
        Ok(aside) => {
            tracing::warn!(path = %path.display(), set_aside_as = %aside.display(), "the usage ledger became unreadable; it was renamed aside (not deleted) and a new ledger starts");
            Db::open(path)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot start a new usage ledger"))
                .ok()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the usage ledger became unreadable and cannot be set aside");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queue_records: usize) -> LedgerConfig {
        LedgerConfig {
            queue_records,
            ..LedgerConfig::default()
        }
    }

    fn rows(path: &Path) -> Vec<(Option<u32>, Option<String>, String, i64)> {
        let conn = db::open_read(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT uid, user, outcome, completion_tokens FROM generations ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn record(uid: u32, completion: u32, outcome: Outcome) -> Record {
        Record {
            at_ms: unix_millis(),
            uid: Some(uid),
            user: None,
            completion_tokens: completion,
            chunks: completion,
            outcome,
            error_code: (outcome != Outcome::Completed).then_some("cancelled"),
            ..Record::example("m", "mock-1")
        }
    }

    #[test]
    fn flush_returns_once_every_record_before_it_is_written_with_its_user_name() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(1024), dir.path());
        assert!(ledger.is_enabled());
        for i in 0..10 {
            ledger.record(record(0, i, Outcome::Completed));
        }
        ledger.record(record(0, 3, Outcome::Cancelled));
        ledger.flush();
        let rows = rows(ledger.path().unwrap());
        assert_eq!(rows.len(), 11);
        assert_eq!(ledger.status().written, 11);
        assert_eq!(ledger.status().dropped + ledger.status().lost, 0);
        // The writer names the uid from the password database, where uid 0 is root.
        #[cfg(unix)]
        assert_eq!(rows[0].1.as_deref(), Some("root"));
        assert_eq!(rows[10].2, "cancelled");
        assert_eq!(rows[9].3, 9);
    }

    #[test]
    fn an_unreadable_ledger_is_set_aside_and_a_new_one_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        std::fs::write(&path, vec![0xa5; 4096]).unwrap();
        let ledger = Ledger::open(&config(16), dir.path());
        assert!(ledger.is_enabled());
        ledger.record(record(1, 1, Outcome::Completed));
        ledger.flush();
        assert_eq!(rows(&path).len(), 1);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("usage.db.unreadable-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), vec![0xa5; 4096]);
    }

    #[test]
    fn a_ledger_that_cannot_be_opened_leaves_the_daemon_without_one() {
        let dir = tempfile::tempdir().unwrap();
        // The state "directory" is a file: nothing can be created inside it.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let ledger = Ledger::open(&config(16), &file);
        assert!(!ledger.is_enabled());
        ledger.record(record(1, 1, Outcome::Completed));
        ledger.flush();
    }

    #[test]
    fn a_full_queue_drops_and_counts_records_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(1), dir.path());
        // Another connection holds the write lock: the writer waits on its first batch
        // while records keep coming.
        let path = ledger.path().unwrap().to_owned();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        for i in 0..50 {
            ledger.record(record(1, i, Outcome::Completed));
        }
        let dropped = ledger.status().dropped;
        assert!(
            dropped >= 48,
            "at most the writer's batch and one queued record wait: {dropped} dropped"
        );
        blocker.execute_batch("COMMIT").unwrap();
        ledger.flush();
        let s = ledger.status();
        assert_eq!(s.written + s.dropped + s.lost, 50, "{s:?}");
        assert_eq!(rows(&path).len() as u64, s.written);
    }

    #[test]
    fn a_flush_behind_a_stuck_writer_and_a_full_queue_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(
            &LedgerConfig {
                batch_records: 1,
                ..config(1)
            },
            dir.path(),
        );
        let path = ledger.path().unwrap().to_owned();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // The writer waits on the lock with its first record; the second fills the queue.
        for i in 0..3 {
            ledger.record(record(1, i, Outcome::Completed));
        }
        assert!(
            !ledger.flush_within(Duration::from_millis(50)),
            "nothing could be written"
        );
        blocker.execute_batch("COMMIT").unwrap();
        assert!(
            ledger.flush_within(FLUSH_TIMEOUT),
            "the writer is free again"
        );
        let s = ledger.status();
        assert_eq!(s.written + s.dropped + s.lost, 3, "{s:?}");
    }

    #[test]
    fn rows_past_their_retention_are_pruned_when_the_ledger_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let mut db = Db::open(&path).unwrap();
        let day_ms = 86_400_000;
        let mut old = record(1, 1, Outcome::Completed);
        old.at_ms = unix_millis() - 8 * day_ms;
        let mut recent = record(1, 2, Outcome::Completed);
        recent.at_ms = unix_millis() - 6 * day_ms;
        db.insert(&[old.clone(), old, recent]).unwrap();
        drop(db);
        let ledger = Ledger::open(
            &LedgerConfig {
                retention_days: 7,
                ..config(16)
            },
            dir.path(),
        );
        ledger.flush();
        assert_eq!(ledger.status().pruned, 2);
        let rows = rows(&path);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].3, 2, "the recent row stays");
    }

    #[test]
    fn a_disabled_ledger_records_nothing_and_never_blocks() {
        let ledger = Ledger::disabled();
        ledger.record(record(1, 1, Outcome::Completed));
        ledger.flush();
        assert!(ledger.path().is_none());
        assert_eq!(
            ledger.status(),
            provd_client::message::LedgerStatus::default()
        );
    }
}
