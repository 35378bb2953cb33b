//! The libc boundary: the few OS calls std does not wrap. Every `unsafe` block of the
//! daemon is in this file.

/// The process's effective uid.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Resolves a group given by name or number to its gid.
#[cfg(unix)]
pub fn group_id(group: &str) -> Option<u32> {
    id_by_name(group, |name, buf| {
        // SAFETY: an all-zero `group` is a valid value for a plain C struct.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `grp` and
        // `result` are live locals, and `buf` is a writable buffer of the length passed.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
}

/// Resolves a user given by name or number to its uid.
#[cfg(unix)]
pub fn user_id(user: &str) -> Option<u32> {
    id_by_name(user, |name, buf| {
        // SAFETY: an all-zero `passwd` is a valid value for a plain C struct.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `pwd` and
        // `result` are live locals, and `buf` is a writable buffer of the length passed.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(pwd.pw_uid))
    })
}

/// A number as itself, or a name through a reentrant `get*nam_r` lookup (`lookup` gives
/// its return code and the id found), its buffer grown while the call says `ERANGE`.
#[cfg(unix)]
fn id_by_name(
    text: &str,
    lookup: impl Fn(&std::ffi::CStr, &mut [u8]) -> (libc::c_int, Option<u32>),
) -> Option<u32> {
    if let Ok(id) = text.parse::<u32>() {
        return Some(id);
    }
    let name = std::ffi::CString::new(text).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (rc, id) = lookup(&name, &mut buf);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return if rc == 0 { id } else { None };
    }
}

/// Takes ownership of descriptor `fd`, inherited from the process that started us
/// (systemd's socket activation passes listening sockets from fd 3), after checking that
/// it is open and a listening Unix stream socket. It is marked close-on-exec, as every
/// descriptor of ours is, so that it does not leak into anything we might start.
#[cfg(unix)]
pub fn adopt_listening_unix_socket(
    fd: std::os::fd::RawFd,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only reads the descriptor's flags; an fd that is not open gives
    // EBADF, which is how we learn that nothing was passed there.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: as above; setting FD_CLOEXEC touches only this descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(Error::last_os_error());
    }
    let int_option = |level, name| -> std::io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live locals of the size passed; getsockopt writes
        // at most `len` bytes into `value` and fails with ENOTSOCK for a non-socket.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            Err(Error::last_os_error())
        } else {
            Ok(value)
        }
    };
    let domain = int_option(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = int_option(libc::SOL_SOCKET, libc::SO_TYPE)?;
    let listening = int_option(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)?;
    if domain != libc::AF_UNIX || kind != libc::SOCK_STREAM || listening == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("fd {fd} is not a listening Unix stream socket (ListenStream= with a path is)"),
        ));
    }
    // SAFETY: the descriptor is open (checked above), was given to this process to own,
    // and nothing else in the process refers to it: it is taken exactly once, at start-up.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// CLOCK_MONOTONIC in microseconds: the clock systemd's `MONOTONIC_USEC=` is read on.
#[cfg(unix)]
pub fn monotonic_usec() -> u64 {
    // SAFETY: an all-zero timespec is a valid value for a plain C struct.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a live local; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A pipe whose two ends are close-on-exec: (read end, write end).
#[cfg(unix)]
pub fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of the two ints pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// How [`flock`] locks.
#[cfg(unix)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// Shared, waiting until it is granted.
    SharedWait,
    /// Shared, failing with `WouldBlock` if an exclusive lock is held.
    SharedTry,
    /// Exclusive, waiting until it is granted.
    ExclusiveWait,
    /// Exclusive, failing with `WouldBlock` if any lock is held: what a daemon takes on
    /// its pid file.
    ExclusiveTry,
}

/// `flock(2)` on an open file. The lock belongs to the open file description, so two
/// `File`s opened separately exclude each other even inside one process, and the kernel
/// releases it when the file is closed or the process dies: a crash never leaves a stale
/// lock behind (the pid file's lock lasts the daemon's whole life).
#[cfg(unix)]
pub fn flock(file: &std::fs::File, lock: Lock) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = match lock {
        Lock::SharedWait => libc::LOCK_SH,
        Lock::SharedTry => libc::LOCK_SH | libc::LOCK_NB,
        Lock::ExclusiveWait => libc::LOCK_EX,
        Lock::ExclusiveTry => libc::LOCK_EX | libc::LOCK_NB,
    };
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call; flock reads
        // no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // A signal may interrupt a wait; the lock is not held then, so ask again.
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `signal` to process `pid`.
#[cfg(unix)]
pub fn kill(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill touches no memory of ours; a positive pid names one process.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads user `uid`'s password database entry (`getpwuid_r`) through `read`, or `None`
/// when it has none. May ask the name service: call it off the runtime's threads.
#[cfg(unix)]
fn with_passwd<T>(uid: u32, read: impl FnOnce(&libc::passwd) -> T) -> Option<T> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero `passwd` is a valid value for a plain C struct.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `pwd` and `result` are live locals and `buf` is writable for its length.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        // `pwd`'s strings point into `buf`, which outlives `read`.
        return (rc == 0 && !result.is_null()).then(|| read(&pwd));
    }
}

/// The name of user `uid` from the password database, or `None` when it has no entry.
/// May ask the name service: call it off the runtime's threads.
#[cfg(unix)]
pub fn user_name(uid: u32) -> Option<std::ffi::CString> {
    with_passwd(uid, |pwd| {
        // SAFETY: on success pw_name points to a NUL-terminated string inside the
        // buffer `with_passwd` keeps alive while this runs.
        unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned()
    })
}

/// The primary gid of user `uid` from the password database, or `None` when it has no
/// entry. May ask the name service: call it off the runtime's threads.
#[cfg(unix)]
pub fn user_gid(uid: u32) -> Option<u32> {
    with_passwd(uid, |pwd| pwd.pw_gid)
}

/// Every group `uid` belongs to (its supplementary groups and `primary_gid`), for access
/// checks: SO_PEERCRED reports only the peer's primary gid.
#[cfg(unix)]
pub fn user_groups(uid: u32, primary_gid: u32) -> Vec<u32> {
    // A uid with no passwd entry has no supplementary groups to find.
    let Some(name) = user_name(uid) else {
        return vec![primary_gid];
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `name` is NUL-terminated, `groups` holds `count` writable entries, and
        // getgrouplist writes at most that many, updating `count`.
        let rc = unsafe {
            libc::getgrouplist(name.as_ptr(), primary_gid, groups.as_mut_ptr(), &mut count)
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if groups.len() >= 1 << 16 {
            return vec![primary_gid];
        }
        let wanted = (count.max(0) as usize).max(groups.len() * 2);
        groups.resize(wanted, 0);
    }
}

/// Returns the allocator's free memory to the kernel; whether any was returned. glibc
/// keeps freed memory in its arenas for reuse and gives little of it back by itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks the allocator's own free lists
    // under the allocator's locks, so it is safe beside other threads allocating.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves (or offer no call to ask them).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Makes the process non-dumpable (no core files; no ptrace or `/proc/PID/mem` by other
/// processes of the same uid) and sets the core size limit to zero, before any secret is
/// in memory. Failures are logged: they weaken defence in depth, they do not stop service.
#[cfg(unix)]
pub fn protect_process_memory() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make the process non-dumpable");
        }
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot disable core dumps");
    }
}

/// Reads one line from the controlling terminal with echo off (for `provd creds set` and
/// `provd key rotate`), so a key typed by hand is neither shown nor kept in the shell's
/// history or the process's arguments.
#[cfg(unix)]
pub fn read_password(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    // SAFETY: an all-zero termios is a valid value to be overwritten by tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal owned by `tty`; `saved` is a live local.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; `quiet` is a valid termios derived from the current one.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut writer = &tty;
    let result = writer
        .write_all(prompt.as_bytes())
        .and_then(|()| writer.flush())
        .and_then(|()| {
            let mut line = String::new();
            std::io::BufReader::new(&tty).read_line(&mut line)?;
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        });
    // SAFETY: restores the settings read above on the same descriptor.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbers_as_themselves_names_through_the_lookup_and_unknown_names_none() {
        assert_eq!(user_id("4242"), Some(4242));
        assert_eq!(group_id("4242"), Some(4242));
        // Every Linux host has root, uid and gid 0.
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(user_id("no-such-user-provd-test"), None);
        assert_eq!(group_id("no-such-group-provd-test"), None);
        assert_eq!(user_id("nul\0inside"), None);
    }
}
