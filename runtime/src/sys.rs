//! The few operating-system calls the process runner needs, behind safe functions.
#![allow(unsafe_code)]

/// Asks the kernel to SIGKILL the calling process when its parent dies, so trials never outlive
/// a controller killed with SIGKILL. Meant to run between fork and exec.
pub fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory; it is
    // async-signal-safe, so it may run between fork and exec.
    let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if result == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends `signal` to the process group `group`; a group that is already gone is not an error.
pub fn signal_group(group: u32, signal: i32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: killpg only sends a signal; an invalid or finished group yields ESRCH, ignored here.
    unsafe {
        libc::killpg(group, signal);
    }
}

/// Whether the process group `group` still has a process in it (one we may signal or not).
pub fn group_exists(group: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the group exists and may be signalled; nothing is sent.
    let result = unsafe { libc::killpg(group, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SIGTERM.
pub const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL.
pub const SIGKILL: i32 = libc::SIGKILL;

/// Installs [`die_with_parent`] on a command, to run in the child before exec.
pub fn set_die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure calls only prctl, which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(die_with_parent);
    }
}

/// Takes an exclusive advisory lock on `file` without waiting; `Ok(false)` when another process
/// holds it. The lock lasts as long as the file stays open.
pub fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a file descriptor that `file` keeps open for the call's duration.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}
