//! Who is on the other end of a connection, as the kernel reports it (SO_PEERCRED on
//! Linux, through interprocess). The access policy is built on this; it is never taken
//! from anything the client says.

use std::fmt;

use interprocess::local_socket::tokio::{prelude::*, Stream};

/// A connection's peer, as far as the OS tells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Effective uid of the peer process when it connected.
    pub uid: Option<u32>,
    /// Effective gid.
    pub gid: Option<u32>,
    /// Process id (informational: pids are reused, so never a basis for trust).
    pub pid: Option<u32>,
}

impl PeerIdentity {
    /// Reads the peer credentials of a connected stream.
    pub fn of(stream: &Stream) -> std::io::Result<PeerIdentity> {
        let creds = stream.peer_creds()?;
        #[cfg(unix)]
        let (uid, gid) = (creds.euid(), creds.egid());
        #[cfg(not(unix))]
        let (uid, gid) = (None, None);
        Ok(PeerIdentity {
            uid,
            gid,
            pid: creds.pid().and_then(|p| u32::try_from(p).ok()),
        })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        write!(
            f,
            "uid={} gid={} pid={}",
            show(self.uid),
            show(self.gid),
            show(self.pid)
        )
    }
}
