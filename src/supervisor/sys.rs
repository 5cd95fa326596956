//! The only place with `unsafe`: fork/exec with a clean signal state, and the raw
//! process-control calls around it. Everything here is synchronous and small; the async
//! supervisor in `mod.rs` sees only a safe interface.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::libc;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{AccessFlags, Pid};

use crate::exit;

/// An exec prepared in the parent, so the forked child only makes async-signal-safe calls
/// (no allocation, no PATH search, no formatting) between fork and exec.
pub(super) struct PreparedExec {
    /// Resolved program path.
    path: CString,
    /// Keeps the argument strings alive for `argv_ptrs`.
    _argv: Vec<CString>,
    /// NULL-terminated argv.
    argv_ptrs: Vec<*const libc::c_char>,
    /// Keeps the environment strings alive for `envp_ptrs`.
    _envp: Vec<CString>,
    /// NULL-terminated environment.
    envp_ptrs: Vec<*const libc::c_char>,
    /// Whether the child should take the terminal's foreground process group.
    take_tty: bool,
    /// Our pid: the child checks it is still our child after arming its death signal.
    parent: libc::pid_t,
}

// The raw pointers only point into the CStrings owned by the same struct.
unsafe impl Send for PreparedExec {}

impl PreparedExec {
    /// Prepares `argv` with `env`, resolving the program on the child's PATH.
    pub(super) fn new(argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<Self> {
        let program = argv
            .first()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let path = resolve(program, &path_var);
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("command contains a NUL byte: {}", s.to_string_lossy()),
                )
            })
        };
        let argv_c = argv
            .iter()
            .map(|a| cstr(a))
            .collect::<io::Result<Vec<_>>>()?;
        let envp_c = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                cstr(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut argv_ptrs: Vec<_> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp_c.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(PreparedExec {
            path: cstr(path.as_os_str())?,
            _argv: argv_c,
            argv_ptrs,
            _envp: envp_c,
            envp_ptrs,
            take_tty: foreground_tty(),
            parent: nix::unistd::getpid().as_raw(),
        })
    }
}

/// Finds `program` on `path_var` like execvp: the first executable candidate, else the
/// first existing one (exec then fails with EACCES: exit 126), else the bare name
/// (exec fails with ENOENT: exit 127).
fn resolve(program: &OsStr, path_var: &OsStr) -> PathBuf {
    if program.as_bytes().contains(&b'/') {
        return PathBuf::from(program);
    }
    let candidates: Vec<PathBuf> = std::env::split_paths(path_var)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .map(|dir| dir.join(program))
        .filter(|p| p.is_file())
        .collect();
    candidates
        .iter()
        .find(|p| nix::unistd::access(p.as_path(), AccessFlags::X_OK).is_ok())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Whether our stdin is a terminal whose foreground group is ours (`kubectl run -it`).
fn foreground_tty() -> bool {
    let stdin = io::stdin();
    nix::unistd::isatty(stdin.as_fd()).unwrap_or(false)
        && nix::unistd::tcgetpgrp(stdin.as_fd()).ok() == Some(nix::unistd::getpgrp())
}

/// Forks and execs `exec` in a new process group, with every signal disposition reset to
/// default and an empty signal mask. If exec fails, the child exits 127 (not found) or 126
/// (not executable) — which reaches the reaper like any exit — and writes why into a
/// close-on-exec pipe (as std does): the returned file has the errno, or nothing when the
/// exec succeeded. Read it once the child has exited, never before (a child stopped
/// before its exec would hold the reader up).
pub(super) fn spawn(exec: &PreparedExec) -> io::Result<(Pid, std::fs::File)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let write_fd = write.as_raw_fd();
    // SAFETY: the child only calls async-signal-safe functions on memory prepared before
    // the fork, then execs or exits.
    let pid = unsafe { fork_blocked(|| exec_child(exec, write_fd)) }?;
    drop(write);
    // Also set the group from the parent: whichever runs first wins, so a signal we
    // forward right after spawn always finds the group. EACCES after exec is harmless.
    let _ = nix::unistd::setpgid(pid, pid);
    Ok((pid, std::fs::File::from(read)))
}

/// Why the exec in `report`'s child failed, if it did; the child must have exited.
pub(super) fn exec_error(report: &mut std::fs::File) -> Option<io::Error> {
    let mut errno = [0u8; 4];
    std::io::Read::read_exact(report, &mut errno)
        .ok()
        .map(|()| io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// Forks with every signal blocked across the fork, so no handler of ours runs in the
/// child before it sets its own (tini does the same); the parent's mask is restored.
///
/// # Safety
/// `child` runs in the child of a multi-threaded process: it may only make
/// async-signal-safe calls on memory prepared before the fork, and must not return.
unsafe fn fork_blocked(child: impl FnOnce()) -> io::Result<Pid> {
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    let pid = libc::fork();
    if pid == 0 {
        child();
        // `child` does not return; should it ever, the child must not go on as a copy of us.
        libc::_exit(exit::FAILURE.into());
    }
    let fork_err = io::Error::last_os_error();
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    if pid < 0 {
        return Err(fork_err);
    }
    Ok(Pid::from_raw(pid))
}

/// The forked child: only async-signal-safe calls from here on.
unsafe fn exec_child(exec: &PreparedExec, report: libc::c_int) -> ! {
    libc::setpgid(0, 0);
    // The command must never outlive lock-exec: if lock-exec dies (SIGKILL, OOM, abort)
    // the kernel kills the command. The signal follows the *thread* that forked, which is
    // the main thread (the runtime is single-threaded). If lock-exec died before this
    // call, the signal will never come: do not start the command at all.
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    );
    if libc::getppid() != exec.parent {
        libc::_exit(exit::FAILURE.into());
    }
    if exec.take_tty {
        // SIGTTOU is blocked, so a background group may take the terminal.
        libc::tcsetpgrp(0, libc::getpid());
    }
    // The raw syscall, not libc's sigaction: glibc refuses to touch its internal
    // real-time signals (32, 33), and an ignored one would leak into the command. A zeroed
    // kernel sigaction (handler, flags, restorer, mask) is SIG_DFL with no flags.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::execve(
        exec.path.as_ptr(),
        exec.argv_ptrs.as_ptr(),
        exec.envp_ptrs.as_ptr(),
    );
    let errno = *libc::__errno_location();
    let code = if errno == libc::ENOENT || errno == libc::ENOTDIR {
        exit::NOT_FOUND
    } else {
        exit::NOT_EXECUTABLE
    };
    let bytes = errno.to_ne_bytes();
    libc::write(report, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(code.into())
}

/// Takes the terminal back for our own group after the child ends, if it had it.
pub(super) fn reclaim_tty() {
    let stdin = io::stdin();
    if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        return;
    }
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok() {
        let _ = nix::unistd::tcsetpgrp(stdin.as_fd(), nix::unistd::getpgrp());
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// Ignores SIGTTIN and SIGTTOU in lock-exec (the child resets them to default), so
/// writing logs to a terminal we no longer own and taking it back never stops us.
pub(super) fn ignore_terminal_stops() -> io::Result<()> {
    for sig in [Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }?;
    }
    Ok(())
}

/// Sends `sig` to process group `pgid`; a group that is already gone is not an error.
pub(super) fn signal_group(pgid: Pid, sig: Signal) {
    let _ = nix::sys::signal::killpg(pgid, sig);
}

/// Whether any process is left in group `pgid`.
pub(super) fn group_exists(pgid: Pid) -> bool {
    // Signal 0 checks for existence; a group of zombies only (already ours to reap) is
    // reported as existing too, and the next reap clears it.
    nix::sys::signal::killpg(pgid, None).is_ok()
}

/// Sends `sig` to one process.
pub(super) fn signal_pid(pid: Pid, sig: Signal) {
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Makes orphaned descendants re-parent to us when we are not PID 1.
pub(super) fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Our direct children that are still alive (not zombies), from each thread's
/// `/proc/self/task/<tid>/children` (cheap), or a scan of all of /proc where the kernel
/// lacks those files.
pub(super) fn live_children() -> Vec<Pid> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return scan_children();
    };
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => found.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .filter(|&p| state_and_parent(p).is_some_and(|(state, _)| state != 'Z'))
                    .map(Pid::from_raw),
            ),
            Err(_) => return scan_children(),
        }
    }
    found
}

/// Our direct children that are still alive, from a scan of every process in /proc.
fn scan_children() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            state_and_parent(pid).is_some_and(|(state, ppid)| ppid == me && state != 'Z')
        })
        .map(Pid::from_raw)
        .collect()
}

/// A process's state letter and parent pid, from /proc/PID/stat.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Starts the watchdog: a forked copy of lock-exec that does nothing until lock-exec
/// dies, then SIGKILLs the command's process group. The command's own death signal
/// (above) covers the command; this covers what it started in its group (`sh -c 'a; b'`
/// runs `a` as a grandchild), which a death signal does not reach. It blocks every
/// signal but SIGKILL, holds no file descriptor, and lives in a group of its own.
pub(super) fn spawn_watchdog(group: Pid) -> io::Result<Pid> {
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: the child only makes async-signal-safe calls (prctl, getppid, close,
    // sigwaitinfo, kill, _exit) on values prepared before the fork, and never returns.
    unsafe { fork_blocked(|| watchdog(parent, group.as_raw())) }
}

/// The watchdog process. Every signal is blocked (inherited from the fork).
unsafe fn watchdog(parent: libc::pid_t, group: libc::pid_t) -> ! {
    libc::setpgid(0, 0);
    libc::prctl(
        libc::PR_SET_NAME,
        c"lock-exec-watch".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    // Pipes held open here would keep a reader of lock-exec's output waiting.
    if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
        for fd in 0..4096 {
            libc::close(fd);
        }
    }
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGUSR1 as libc::c_ulong,
        0,
        0,
        0,
    );
    let mut wake: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut wake);
    libc::sigaddset(&mut wake, libc::SIGUSR1);
    // Checked after arming the signal, so a death before it is not missed; any other
    // sender of SIGUSR1 finds lock-exec still our parent and is ignored.
    while libc::getppid() == parent {
        libc::sigwaitinfo(&wake, std::ptr::null_mut());
    }
    libc::kill(-group, libc::SIGKILL);
    libc::_exit(0)
}

/// SIGKILLs and reaps one child of ours (the watchdog).
pub(super) fn kill_and_reap(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn programs_resolve_like_execvp() {
        let dir = std::env::temp_dir().join(format!("lock-exec-resolve-{}", std::process::id()));
        let (first, second) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let write = |p: &Path, mode: u32| {
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&first.join("job"), 0o644); // found first, but not executable
        write(&second.join("job"), 0o755);
        write(&first.join("plain"), 0o644);
        let path = std::env::join_paths([&first, &second]).unwrap();
        // The first executable candidate wins over an earlier non-executable one.
        assert_eq!(resolve(OsStr::new("job"), &path), second.join("job"));
        // Only a non-executable one: exec then fails with EACCES (exit 126).
        assert_eq!(resolve(OsStr::new("plain"), &path), first.join("plain"));
        // None: the bare name, exec fails with ENOENT (exit 127).
        assert_eq!(resolve(OsStr::new("nope"), &path), PathBuf::from("nope"));
        // A name with a slash is taken as it is; an empty PATH entry is the current dir.
        assert_eq!(
            resolve(OsStr::new("./x/job"), &path),
            PathBuf::from("./x/job")
        );
        assert_eq!(
            resolve(OsStr::new("job"), OsStr::new(":/nonexistent")),
            PathBuf::from("job")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
