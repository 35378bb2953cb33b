//! Fair admission: how many connections and generations each local user may hold, so
//! that no user locks the others out (issue 11, part 4).
//!
//! The daemon serves at most `daemon.max_connections` connections. Of those,
//! `limits.admin_reserved_connections` only admin uids may take, so `status`, `reload`
//! and `shutdown` get through however full the daemon is; and a non-admin uid may hold
//! at most `limits.max_connections_per_uid` connections and run
//! `limits.max_streams_per_uid` generations over all of them. Admin uids are counted
//! (so `status` shows them) but not capped.
//!
//! The connection decision is made when a connection is accepted, from the peer's uid as
//! the kernel reports it, before anything is read from it. Every admission is a guard
//! ([`ConnectionSlot`], [`StreamSlot`]) that gives its place back when dropped, however
//! the connection or generation ends, so the counts cannot leak; `status` reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use provd_client::message::UidUsage;
use provd_client::{ErrorCode, WireError};

use crate::config::LimitsConfig;

/// The connections and generations held, per uid. Shared by the accept loop and every
/// connection.
#[derive(Debug, Default)]
pub struct Admission {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Connections admitted, over all uids.
    connections: usize,
    /// By uid (`None`: a peer whose uid the OS does not tell). An entry is removed when
    /// both its counts fall to zero, so the map holds only uids present now.
    by_uid: BTreeMap<Option<u32>, Held>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Held {
    connections: usize,
    streams: usize,
}

/// Who asks to be admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applicant {
    /// The peer's uid, as the kernel reports it.
    pub uid: Option<u32>,
    /// Whether the uid is an admin's: not capped, may use the reserve.
    pub admin: bool,
}

/// A connection's place; released when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    uid: Option<u32>,
}

/// A generation's place; released when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    admission: Arc<Admission>,
    uid: Option<u32>,
}

impl Admission {
    /// Admits a connection, or says which limit refuses it (an `overloaded` error whose
    /// message names the setting). `max_connections` is the daemon's total.
    pub fn admit_connection(
        self: &Arc<Self>,
        who: Applicant,
        max_connections: usize,
        limits: &LimitsConfig,
    ) -> Result<ConnectionSlot, WireError> {
        let mut state = self.state.lock().expect("admission lock poisoned");
        if state.connections >= max_connections {
            return Err(overloaded(format!(
                "provd is serving its maximum of {max_connections} connections (daemon.max_connections); try again later"
            )));
        }
        if !who.admin {
            let reserved = limits.reserved_for_admins(max_connections);
            if state.connections >= max_connections - reserved {
                return Err(overloaded(format!(
                    "provd is serving {} connections; the last {reserved} of its {max_connections} (daemon.max_connections) are reserved for admins (limits.admin_reserved_connections); try again later",
                    state.connections
                )));
            }
            let held = state.by_uid.get(&who.uid).map_or(0, |h| h.connections);
            if held >= limits.max_connections_per_uid {
                return Err(overloaded(format!(
                    "uid {} already holds {held} connections, its maximum (limits.max_connections_per_uid = {}); close one first",
                    show_uid(who.uid),
                    limits.max_connections_per_uid
                )));
            }
        }
        state.connections += 1;
        state.by_uid.entry(who.uid).or_default().connections += 1;
        Ok(ConnectionSlot {
            admission: self.clone(),
            uid: who.uid,
        })
    }

    /// Admits a generation, or refuses it with `overloaded` naming
    /// `limits.max_streams_per_uid`.
    pub fn admit_stream(
        self: &Arc<Self>,
        who: Applicant,
        limits: &LimitsConfig,
    ) -> Result<StreamSlot, WireError> {
        let mut state = self.state.lock().expect("admission lock poisoned");
        let held = state.by_uid.entry(who.uid).or_default();
        if !who.admin && held.streams >= limits.max_streams_per_uid {
            let streams = held.streams;
            return Err(overloaded(format!(
                "uid {} already runs {streams} generations, its maximum over all its connections (limits.max_streams_per_uid = {}); wait for one to finish",
                show_uid(who.uid),
                limits.max_streams_per_uid
            )));
        }
        held.streams += 1;
        Ok(StreamSlot {
            admission: self.clone(),
            uid: who.uid,
        })
    }

    /// What each uid holds now, by uid.
    pub fn usage(&self) -> Vec<UidUsage> {
        let state = self.state.lock().expect("admission lock poisoned");
        state
            .by_uid
            .iter()
            .map(|(uid, held)| UidUsage {
                uid: *uid,
                connections: held.connections as u64,
                streams: held.streams as u64,
            })
            .collect()
    }

    fn release(&self, uid: Option<u32>, connection: bool) {
        let mut state = self.state.lock().expect("admission lock poisoned");
        if connection {
            state.connections -= 1;
        }
        let Some(held) = state.by_uid.get_mut(&uid) else {
            debug_assert!(false, "released a place never taken");
            return;
        };
        if connection {
            held.connections -= 1;
        } else {
            held.streams -= 1;
        }
        if held.connections == 0 && held.streams == 0 {
            state.by_uid.remove(&uid);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.admission.release(self.uid, true);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.admission.release(self.uid, false);
    }
}

fn overloaded(message: String) -> WireError {
    WireError::new(ErrorCode::Overloaded, message)
}

fn show_uid(uid: Option<u32>) -> String {
    uid.map_or_else(|| "?".to_owned(), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_uid: usize, streams: usize, reserved: usize) -> LimitsConfig {
        LimitsConfig {
            max_connections_per_uid: per_uid,
            max_streams_per_uid: streams,
            admin_reserved_connections: reserved,
            ..LimitsConfig::default()
        }
    }

    const USER: Applicant = Applicant {
        uid: Some(1001),
        admin: false,
    };
    const OTHER: Applicant = Applicant {
        uid: Some(1002),
        admin: false,
    };
    const ROOT: Applicant = Applicant {
        uid: Some(0),
        admin: true,
    };

    #[test]
    fn a_user_at_its_cap_leaves_room_for_others_and_admins_use_the_reserve() {
        let a = Arc::new(Admission::default());
        let l = limits(2, 8, 1);
        let mut held: Vec<_> = (0..2)
            .map(|_| a.admit_connection(USER, 4, &l).unwrap())
            .collect();
        let e = a.admit_connection(USER, 4, &l).unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(
            e.message.contains("limits.max_connections_per_uid = 2"),
            "{}",
            e.message
        );
        held.push(a.admit_connection(OTHER, 4, &l).unwrap());
        // Three of four taken: the last is the admins'.
        let e = a.admit_connection(OTHER, 4, &l).unwrap_err();
        assert!(
            e.message.contains("limits.admin_reserved_connections"),
            "{}",
            e.message
        );
        held.push(a.admit_connection(ROOT, 4, &l).unwrap());
        let e = a.admit_connection(ROOT, 4, &l).unwrap_err();
        assert!(
            e.message.contains("daemon.max_connections"),
            "{}",
            e.message
        );
        drop(held);
        assert!(a.usage().is_empty(), "{:?}", a.usage());
        assert_eq!(a.state.lock().unwrap().connections, 0);
    }

    #[test]
    fn streams_are_capped_per_uid_over_all_its_connections_but_not_for_admins() {
        let a = Arc::new(Admission::default());
        let l = limits(8, 2, 0);
        let conns: Vec<_> = (0..2)
            .map(|_| a.admit_connection(USER, 10, &l).unwrap())
            .collect();
        let streams: Vec<_> = (0..2).map(|_| a.admit_stream(USER, &l).unwrap()).collect();
        let e = a.admit_stream(USER, &l).unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(
            e.message.contains("limits.max_streams_per_uid = 2"),
            "{}",
            e.message
        );
        let admin: Vec<_> = (0..5).map(|_| a.admit_stream(ROOT, &l).unwrap()).collect();
        assert_eq!(
            a.usage(),
            [
                UidUsage {
                    uid: Some(0),
                    connections: 0,
                    streams: 5
                },
                UidUsage {
                    uid: Some(1001),
                    connections: 2,
                    streams: 2
                }
            ]
        );
        drop((conns, streams, admin));
        assert!(a.usage().is_empty(), "{:?}", a.usage());
    }
}
