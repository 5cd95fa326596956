//! The only place with `unsafe`: fork/exec with a clean signal state, and the raw
//! process-control calls around it. Everything here is synchronous and small; the async
//! supervisor in `mod.rs` sees only a safe interface.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{AccessFlags, Pid};

/// An exec prepared in the parent, so the forked child only makes async-signal-safe calls
/// (no allocation, no PATH search, no formatting) between fork and exec.
pub struct PreparedExec {
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
    /// Written to stderr when exec fails with ENOENT/ENOTDIR.
    not_found_msg: Vec<u8>,
    /// Written to stderr when exec fails otherwise.
    not_exec_msg: Vec<u8>,
    /// Whether the child should take the terminal's foreground process group.
    take_tty: bool,
}

// The raw pointers only point into the CStrings owned by the same struct.
unsafe impl Send for PreparedExec {}

impl PreparedExec {
    /// Prepares `argv` with `env`, resolving the program on the child's PATH.
    pub fn new(argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<Self> {
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
        let shown = program.to_string_lossy();
        Ok(PreparedExec {
            path: cstr(path.as_os_str())?,
            _argv: argv_c,
            argv_ptrs,
            _envp: envp_c,
            envp_ptrs,
            not_found_msg: format!("lock-exec: {shown}: command not found\n").into_bytes(),
            not_exec_msg: format!(
                "lock-exec: {shown}: cannot execute (permission denied or not an executable)\n"
            )
            .into_bytes(),
            take_tty: foreground_tty(),
        })
    }

    /// The path that will be executed.
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.path.as_bytes()))
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
/// default and an empty signal mask. Exec failures end the child with 127 (not found) or
/// 126 (not executable), so they reach the parent through the reaper like any exit.
pub fn spawn(exec: &PreparedExec) -> io::Result<Pid> {
    // Block everything across fork so no handler of ours runs in the child before it
    // resets dispositions (tini does the same).
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY: the child branch only calls async-signal-safe functions on memory prepared
    // before the fork, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { exec_child(exec) }
    }
    let fork_err = io::Error::last_os_error();
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    if pid < 0 {
        return Err(fork_err);
    }
    let pid = Pid::from_raw(pid);
    // Also set the group from the parent: whichever runs first wins, so a signal we
    // forward right after spawn always finds the group. EACCES after exec is harmless.
    let _ = nix::unistd::setpgid(pid, pid);
    Ok(pid)
}

/// The forked child: only async-signal-safe calls from here on.
unsafe fn exec_child(exec: &PreparedExec) -> ! {
    libc::setpgid(0, 0);
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
    let (msg, code) = if errno == libc::ENOENT || errno == libc::ENOTDIR {
        (&exec.not_found_msg, 127)
    } else {
        (&exec.not_exec_msg, 126)
    };
    libc::write(2, msg.as_ptr().cast(), msg.len());
    libc::_exit(code)
}

/// Takes the terminal back for our own group after the child ends, if it had it.
pub fn reclaim_tty() {
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
pub fn ignore_terminal_stops() -> io::Result<()> {
    for sig in [Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }?;
    }
    Ok(())
}

/// Sends `sig` to process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: Pid, sig: Signal) -> bool {
    match nix::sys::signal::killpg(pgid, sig) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => false,
    }
}

/// Sends `sig` to one process.
pub fn signal_pid(pid: Pid, sig: Signal) {
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Makes orphaned descendants re-parent to us when we are not PID 1.
pub fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Our direct children that are still alive (not zombies), read from /proc.
pub fn live_children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name, which may contain spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next();
            ppid == Some(me.as_str()) && state != Some("Z")
        })
        .map(Pid::from_raw)
        .collect()
}
