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

/// Every group `uid` belongs to (its supplementary groups and `primary_gid`), for access
/// checks: SO_PEERCRED reports only the peer's primary gid.
#[cfg(unix)]
pub fn user_groups(uid: u32, primary_gid: u32) -> Vec<u32> {
    let mut buf = vec![0u8; 4096];
    let name = loop {
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
        if rc != 0 || result.is_null() {
            // A uid with no passwd entry has no supplementary groups to find.
            return vec![primary_gid];
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        break unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned();
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
