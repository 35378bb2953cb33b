//! The end of every generation, accounted in one place: the usage ledger's record (and,
//! from it, the budgets and the metrics). Both front doors (MessagePack and HTTP) run
//! their generations through [`super::generation::run`], which calls [`account`] once
//! per generation, before the client can see its end, so a report asked for after a
//! generation's end includes it.

use super::Daemon;
use crate::ledger::Record;

/// Who asked for a generation, as the ledger and the budgets key it: from the kernel
/// (uid, groups) and the connection's token, never from anything the client says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    /// The peer's uid.
    pub uid: Option<u32>,
    /// Every group of the uid (primary and supplementary), for the group budgets.
    pub groups: Vec<u32>,
    /// The id of the token the client presented.
    pub token: Option<String>,
    /// Whether the uid is an admin's.
    pub admin_uid: bool,
}

impl Requester {
    /// The requester a grant describes.
    pub fn of(grant: &crate::access::Grant) -> Requester {
        Requester {
            uid: grant.peer.uid,
            groups: grant.groups.clone(),
            token: grant.token.clone(),
            admin_uid: grant.admin_uid,
        }
    }
}

/// Accounts one generation's end: never waits, never fails the generation.
pub(super) fn account(daemon: &Daemon, requester: &Requester, record: Record) {
    daemon
        .quotas
        .charge(requester, record.tokens(), record.at_ms);
    daemon.metrics.generation(&daemon.factory.config(), &record);
    daemon.ledger.record(record);
}
