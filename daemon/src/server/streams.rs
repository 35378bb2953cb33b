//! The requests running on one connection (generations and model listings), by request
//! id, and the registration that holds a request's place among them.
//!
//! A running request's id is taken (a duplicate is refused, `cancel` finds it) from the
//! moment it is registered until its [`Registration`] is dropped, however its task ends,
//! even by panic. A generation also holds its uid's place under
//! `limits.max_streams_per_uid` and counts in the daemon's `active_streams`; all of it is
//! given back in one place, [`Registration`]'s `Drop`, before the client can see the end,
//! so the client may reuse the id at once and the gauges stay true.
//!
//! Admission of a generation, for both front doors, is here: first the stream caps
//! (`max_streams_per_connection`, `limits.max_streams_per_uid`: `overloaded`), then the
//! budgets and rate limits of [`crate::quota`] (`permission_denied` for a spent budget,
//! `rate_limited` for a full request window). A request over both gets `overloaded`:
//! a cap frees when a stream ends, and a request refused by a cap is not counted against
//! the rate.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use provd_client::{ErrorCode, WireError};
use tokio_util::sync::CancellationToken;

use super::accounting::Requester;
use super::admission::{Applicant, StreamSlot};
use super::Daemon;
use crate::config::LimitsConfig;

/// The requests running on one connection, by request id, with the token that cancels
/// each. Cloned into the tasks that run them.
#[derive(Clone, Debug, Default)]
pub(super) struct Streams(Arc<Mutex<HashMap<u32, CancellationToken>>>);

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, CancellationToken>> {
        self.0.lock().expect("streams lock poisoned")
    }

    /// Whether a request with this id is running.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.lock().contains_key(&id)
    }

    /// Cancels request `id`; false when none runs under that id.
    pub(super) fn cancel(&self, id: u32) -> bool {
        let token = self.lock().get(&id).cloned();
        token.inspect(CancellationToken::cancel).is_some()
    }

    /// Registers generation `id` of `requester`, cancelled by a child of `parent`:
    /// refused with `overloaded` when the connection already runs `max_per_connection`
    /// requests or the uid is at `limits.max_streams_per_uid`, then with
    /// `permission_denied` or `rate_limited` when a budget or rate of [`crate::quota`]
    /// refuses it; counted in `active_streams` and in the requester's request windows.
    pub(super) fn register_generation(
        &self,
        id: u32,
        parent: &CancellationToken,
        daemon: &Arc<Daemon>,
        requester: &Requester,
        limits: &LimitsConfig,
    ) -> Result<Registration, WireError> {
        let applicant = Applicant {
            uid: requester.uid,
            admin: requester.admin_uid,
        };
        let max = daemon.limits.max_streams_per_connection;
        let mut streams = self.lock();
        if streams.len() >= max {
            return Err(WireError::new(
                ErrorCode::Overloaded,
                format!("this connection already runs {max} generations (max_streams_per_connection); wait for one to finish or open another connection"),
            ));
        }
        let slot = daemon.admission.admit_stream(applicant, limits)?;
        // Refused here, the slot is dropped: nothing is held.
        daemon
            .quotas
            .check(requester, crate::ledger::unix_millis())?;
        let cancel = parent.child_token();
        streams.insert(id, cancel.clone());
        drop(streams);
        daemon.stats.active_streams.fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            id,
            cancel,
            streams: self.clone(),
            generation: Some((daemon.clone(), slot)),
        })
    }

    /// Registers model listing `id`, cancelled by a child of `parent`: its id is taken
    /// and `cancel` reaches it, but it is not a stream (not limited, not counted).
    pub(super) fn register_listing(&self, id: u32, parent: &CancellationToken) -> Registration {
        let cancel = parent.child_token();
        self.lock().insert(id, cancel.clone());
        Registration {
            id,
            cancel,
            streams: self.clone(),
            generation: None,
        }
    }
}

/// A running request's place on its connection (and, for a generation, under the
/// daemon's limits and gauges); given back when dropped.
#[derive(Debug)]
pub(super) struct Registration {
    id: u32,
    cancel: CancellationToken,
    streams: Streams,
    /// A generation's gauge to decrement and admission slot to give back.
    generation: Option<(Arc<Daemon>, StreamSlot)>,
}

impl Registration {
    /// The token that cancels this request (the client's `cancel`, or its connection
    /// closing).
    pub(super) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
        if let Some((daemon, slot)) = self.generation.take() {
            let stats = &daemon.stats;
            if stats.active_streams.fetch_sub(1, Ordering::Relaxed) == 1 {
                stats.last_stream_ended.notify_one();
            }
            drop(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(max_streams_per_connection: usize) -> Arc<Daemon> {
        let config = crate::config::Config::parse(
            &format!(
                "[daemon]\nmax_streams_per_connection = {max_streams_per_connection}\n\
                 [providers.m]\ntype = \"mock\"\n"
            ),
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        Arc::new(Daemon::new(config))
    }

    fn held_streams(daemon: &Daemon) -> u64 {
        daemon.admission.usage().iter().map(|u| u.streams).sum()
    }

    fn uid() -> Requester {
        Requester {
            uid: Some(4242),
            ..Requester::default()
        }
    }

    #[test]
    fn a_generation_holds_its_id_slot_and_gauge_until_its_registration_drops() {
        let daemon = daemon(8);
        let streams = Streams::default();
        let connection = CancellationToken::new();
        let limits = daemon.factory.config().limits.clone();
        let registration = streams
            .register_generation(7, &connection, &daemon, &uid(), &limits)
            .unwrap();
        assert!(streams.contains(7));
        assert_eq!(daemon.stats.active_streams.load(Ordering::Relaxed), 1);
        assert_eq!(held_streams(&daemon), 1);
        assert!(streams.cancel(7));
        assert!(registration.cancel_token().is_cancelled());
        drop(registration);
        assert!(!streams.contains(7));
        assert!(!streams.cancel(7), "nothing runs under a freed id");
        assert_eq!(daemon.stats.active_streams.load(Ordering::Relaxed), 0);
        assert_eq!(held_streams(&daemon), 0);
    }

    #[test]
    fn a_listing_takes_its_id_but_is_neither_limited_nor_counted() {
        let daemon = daemon(1);
        let streams = Streams::default();
        let connection = CancellationToken::new();
        let listing = streams.register_listing(3, &connection);
        assert!(streams.contains(3));
        assert_eq!(daemon.stats.active_streams.load(Ordering::Relaxed), 0);
        connection.cancel();
        assert!(
            listing.cancel_token().is_cancelled(),
            "the connection's end reaches it"
        );
        drop(listing);
        assert!(!streams.contains(3));
    }

    #[test]
    fn a_request_over_its_rate_is_refused_with_rate_limited_and_holds_nothing() {
        let config = crate::config::Config::parse(
            "[providers.m]\ntype = \"mock\"\n[limits.uid.4242]\nrequests_per_minute = 1\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let daemon = Arc::new(Daemon::new(config));
        let streams = Streams::default();
        let connection = CancellationToken::new();
        let limits = daemon.factory.config().limits.clone();
        drop(
            streams
                .register_generation(1, &connection, &daemon, &uid(), &limits)
                .unwrap(),
        );
        let e = streams
            .register_generation(2, &connection, &daemon, &uid(), &limits)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.retry_after_ms.is_some());
        assert!(!streams.contains(2));
        assert_eq!(daemon.stats.active_streams.load(Ordering::Relaxed), 0);
        assert_eq!(held_streams(&daemon), 0);
        // Another uid is not bound by it.
        let other = Requester {
            uid: Some(4343),
            ..Requester::default()
        };
        streams
            .register_generation(3, &connection, &daemon, &other, &limits)
            .unwrap();
    }

    #[test]
    fn a_request_over_a_stream_cap_and_its_rate_gets_overloaded() {
        let config = crate::config::Config::parse(
            "[daemon]\nmax_streams_per_connection = 1\n[providers.m]\ntype = \"mock\"\n\
             [limits.uid.4242]\nrequests_per_minute = 1\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let daemon = Arc::new(Daemon::new(config));
        let streams = Streams::default();
        let connection = CancellationToken::new();
        let limits = daemon.factory.config().limits.clone();
        let _running = streams
            .register_generation(1, &connection, &daemon, &uid(), &limits)
            .unwrap();
        let e = streams
            .register_generation(2, &connection, &daemon, &uid(), &limits)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded, "{}", e.message);
    }

    #[test]
    fn a_connection_at_its_stream_limit_is_refused_with_overloaded_and_nothing_is_taken() {
        let daemon = daemon(1);
        let streams = Streams::default();
        let connection = CancellationToken::new();
        let limits = daemon.factory.config().limits.clone();
        let _first = streams
            .register_generation(1, &connection, &daemon, &uid(), &limits)
            .unwrap();
        let e = streams
            .register_generation(2, &connection, &daemon, &uid(), &limits)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(
            e.message.contains("max_streams_per_connection"),
            "{}",
            e.message
        );
        assert!(!streams.contains(2));
        assert_eq!(daemon.stats.active_streams.load(Ordering::Relaxed), 1);
        assert_eq!(held_streams(&daemon), 1);
    }
}
