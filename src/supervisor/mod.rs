//! PID-1-safe supervision of the child: spawn, signal forwarding, reaping.
//!
//! One reaper owns every `wait`: on each SIGCHLD it calls `waitpid(-1, WNOHANG)` until
//! nothing is left, recognises the main child by pid and records its status. Nothing
//! else in the process may wait (no `std::process::Child`, no `tokio::process`): two
//! reapers race and one of them loses the exit status. When lock-exec is not PID 1 it
//! registers as child subreaper, so orphans of the job still come back to it.

mod sys;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::exit::ChildStatus;

/// Signals forwarded to the child's process group: every catchable one except SIGCHLD,
/// the synchronous faults (SEGV, BUS, FPE, ILL, TRAP, SYS, ABRT) that only make sense for
/// the process that caused them, SIGPIPE (raised by our own writes to a closed log pipe,
/// not sent to us; Rust ignores it) and SIGTTIN/SIGTTOU (ignored, as tini does, so that
/// lock-exec can log and hand the terminal over from a background process group).
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGTSTP,
    Signal::SIGURG,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

/// Whether a signal asks the whole container to stop (forwarded, then lock-exec waits
/// for the child to exit before releasing the lock).
pub fn is_shutdown(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT
    )
}

/// What the supervisor reports to the run loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// lock-exec received this signal; the run loop decides what to do with it.
    Signal(Signal),
    /// The main child ended.
    ChildExited(ChildStatus),
}

/// The command to run: argv and the complete environment.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    /// Program and arguments; the program is looked up on the child's PATH.
    pub argv: Vec<OsString>,
    /// The child's environment.
    pub env: Vec<(OsString, OsString)>,
}

/// Owns the signal handlers, the child and every wait.
pub struct Supervisor {
    /// Handlers for [`FORWARDED`], installed before anything else can go wrong: as PID 1,
    /// a signal without a handler is silently dropped by the kernel.
    signals: Vec<(Signal, tokio::signal::unix::Signal)>,
    /// SIGCHLD, which drives the reaper.
    sigchld: tokio::signal::unix::Signal,
    /// The main child's pid, which is also its process group id.
    child: Option<Pid>,
    /// The main child's status once reaped and not yet reported.
    exited: Option<ChildStatus>,
    /// Whether the main child's exit has been reported.
    reported: bool,
}

impl Supervisor {
    /// Installs the signal handlers and registers as subreaper.
    pub fn new() -> io::Result<Self> {
        let mut signals = Vec::with_capacity(FORWARDED.len());
        for &sig in FORWARDED {
            signals.push((sig, signal(SignalKind::from_raw(sig as i32))?));
        }
        let sigchld = signal(SignalKind::child())?;
        sys::ignore_terminal_stops()?;
        if let Err(e) = sys::become_subreaper() {
            tracing::warn!(error = %e, "cannot register as child subreaper; orphans of the command may not be reaped");
        }
        Ok(Supervisor {
            signals,
            sigchld,
            child: None,
            exited: None,
            reported: false,
        })
    }

    /// Starts the main child in its own process group.
    pub fn spawn(&mut self, cmd: &ChildCommand) -> io::Result<u32> {
        let exec = sys::PreparedExec::new(&cmd.argv, &cmd.env)?;
        if !exec.path().is_absolute() && !exec.path().exists() {
            tracing::warn!(program = %exec.path().display(), "command not found on PATH");
        }
        let pid = sys::spawn(&exec)?;
        self.child = Some(pid);
        Ok(pid.as_raw() as u32)
    }

    /// The next event: a received signal, or the main child's exit (reported once).
    pub async fn next(&mut self) -> Event {
        loop {
            self.reap();
            if let Some(status) = self.exited.take() {
                self.reported = true;
                return Event::ChildExited(status);
            }
            tokio::select! {
                biased;
                _ = self.sigchld.recv() => continue,
                sig = AnySignal(&mut self.signals) => return Event::Signal(sig),
            }
        }
    }

    /// A signal that has arrived but not been handled, without waiting.
    pub fn pending_signal(&mut self) -> Option<Signal> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut AnySignal(&mut self.signals)).poll(&mut cx) {
            Poll::Ready(sig) => Some(sig),
            Poll::Pending => None,
        }
    }

    /// Waits for a signal (while no child runs, e.g. when waiting for the lock).
    pub async fn next_signal(&mut self) -> Signal {
        AnySignal(&mut self.signals).await
    }

    /// Sends `sig` to the main child's process group.
    pub fn signal_child(&self, sig: Signal) {
        if let Some(pgid) = self.child {
            if !self.reported && self.exited.is_none() {
                sys::signal_group(pgid, sig);
            }
        }
    }

    /// After the main child ended: stops whatever it left behind (its process group and
    /// orphans re-parented to us), SIGTERM first and SIGKILL after `grace`, and reaps them
    /// all. The lock is only released after this, so nothing of the job outlives it.
    /// Returns how many processes were left.
    pub async fn stop_leftovers(&mut self, grace: Duration) -> usize {
        sys::reclaim_tty();
        // No children at all (ECHILD): as subreaper, every descendant still running would
        // be our child by now, so nothing is left and /proc need not be scanned.
        if self.reap() {
            return 0;
        }
        let left = self.leftovers();
        if left.is_empty() {
            return 0;
        }
        let count = left.len();
        tracing::info!(
            count,
            "the command left processes behind; stopping them before releasing the lock"
        );
        self.signal_leftovers(Signal::SIGTERM);
        if self.wait_all_gone(Instant::now() + grace).await {
            return count;
        }
        tracing::warn!(grace = %humantime::format_duration(grace), "leftover processes ignored SIGTERM; sending SIGKILL");
        self.signal_leftovers(Signal::SIGKILL);
        // SIGKILL cannot be ignored; this bound only guards against D-state processes.
        if !self
            .wait_all_gone(Instant::now() + Duration::from_secs(5))
            .await
        {
            tracing::error!("processes still alive 5 s after SIGKILL (uninterruptible sleep?)");
        }
        count
    }

    fn leftovers(&self) -> Vec<Pid> {
        sys::live_children()
    }

    fn signal_leftovers(&self, sig: Signal) {
        if let Some(pgid) = self.child {
            sys::signal_group(pgid, sig);
        }
        for pid in self.leftovers() {
            sys::signal_pid(pid, sig);
        }
    }

    /// Reaps until no children remain or `until` passes; true when none remain.
    async fn wait_all_gone(&mut self, until: Instant) -> bool {
        loop {
            if self.reap() {
                return true;
            }
            tokio::select! {
                _ = self.sigchld.recv() => {}
                // Polling too: a process in our group that is not our child sends no SIGCHLD.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(until) => return self.reap(),
            }
        }
    }

    /// Reaps every exited child; returns true when we have no children left at all.
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let child_status = match status {
                        WaitStatus::Exited(_, code) => ChildStatus::Exited(code as u8),
                        WaitStatus::Signaled(_, sig, _) => ChildStatus::Signaled(sig as i32),
                        _ => continue,
                    };
                    if Some(pid) == self.child && !self.reported {
                        self.exited = Some(child_status);
                    } else {
                        tracing::debug!(
                            pid = pid.as_raw(),
                            status = child_status.code(),
                            "reaped orphan"
                        );
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // ECHILD: nothing left to wait for.
                Err(_) => return true,
            }
        }
    }
}

/// Resolves to the first pending signal among the handlers.
struct AnySignal<'a>(&'a mut Vec<(Signal, tokio::signal::unix::Signal)>);

impl Future for AnySignal<'_> {
    type Output = Signal;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signal> {
        for (sig, handler) in self.0.iter_mut() {
            if let Poll::Ready(Some(())) = handler.poll_recv(cx) {
                return Poll::Ready(*sig);
            }
        }
        Poll::Pending
    }
}
