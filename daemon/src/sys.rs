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
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(group).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
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
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some(grp.gr_gid);
    }
}

/// Takes an advisory `flock(2)` lock on `file`, waiting until it is granted; `exclusive`
/// picks a write lock over a shared one. The lock belongs to the open file description,
/// so two `File`s opened separately exclude each other even inside one process, and it
/// is released when the file is closed (or the process dies: a crash never leaves a
/// stale lock behind).
#[cfg(unix)]
pub fn lock_file(file: &std::fs::File, exclusive: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: the descriptor is owned by `file`, which outlives the call; flock reads
        // no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        // A signal may interrupt the wait; the lock is not held then, so wait again.
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Like [`lock_file`], but returns `Ok(false)` at once instead of waiting when another
/// open file description holds a conflicting lock. Only the tests need it (to observe a
/// lock without blocking on it).
#[cfg(all(unix, test))]
pub fn try_lock_file(file: &std::fs::File, exclusive: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    loop {
        // SAFETY: as in `lock_file`; LOCK_NB only makes the call return instead of wait.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(false),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}
