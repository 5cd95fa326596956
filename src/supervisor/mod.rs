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
pub(crate) const FORWARDED: &[Signal] = &[
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
pub(crate) fn is_shutdown(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT
    )
}

/// What the supervisor reports to the run loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// lock-exec received this signal; the run loop decides what to do with it.
    Signal(Signal),
    /// The main child ended.
    ChildExited(ChildStatus),
}

/// The command to run: argv and the complete environment.
#[derive(Debug, Clone)]
pub(crate) struct ChildCommand {
    /// Program and arguments; the program is looked up on the child's PATH.
    pub(crate) argv: Vec<OsString>,
    /// The child's environment.
    pub(crate) env: Vec<(OsString, OsString)>,
}

/// Owns the signal handlers, the child and every wait.
pub(crate) struct Supervisor {
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
    /// The watchdog that kills the command's group if lock-exec dies (not as PID 1,
    /// where the kernel kills the whole namespace with us).
    watchdog: Option<Pid>,
    /// The pipe on which the main child reports a failed exec.
    exec_report: Option<std::fs::File>,
    /// Signals that came before the command existed, forwarded once it does.
    deferred: Vec<Signal>,
    /// Children we had before the command (inherited across the exec that started
    /// lock-exec, e.g. `sh -c 'sidecar & exec lock-exec …'`): not the job's, left alone.
    inherited: Vec<Pid>,
}

impl Supervisor {
    /// Installs the signal handlers and registers as subreaper.
    pub(crate) fn new() -> io::Result<Self> {
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
            watchdog: None,
            exec_report: None,
            deferred: Vec::new(),
            inherited: sys::live_children(),
        })
    }

    /// Starts the main child in its own process group, and the watchdog that kills that
    /// group should lock-exec die first; forwards the signals that came before it.
    pub(crate) fn spawn(&mut self, cmd: &ChildCommand) -> io::Result<u32> {
        let exec = sys::PreparedExec::new(&cmd.argv, &cmd.env)?;
        let (pid, report) = sys::spawn(&exec)?;
        self.child = Some(pid);
        self.exec_report = Some(report);
        if std::process::id() != 1 {
            match sys::spawn_watchdog(pid) {
                Ok(w) => self.watchdog = Some(w),
                Err(e) => tracing::warn!(error = %e,
                    "cannot start the watchdog; if lock-exec is killed, processes the command started may outlive it"),
            }
        }
        for sig in std::mem::take(&mut self.deferred) {
            sys::signal_group(pid, sig);
        }
        Ok(pid.as_raw() as u32)
    }

    /// Why the main child's program could not be executed, if so; once it has exited.
    pub(crate) fn exec_error(&mut self) -> Option<io::Error> {
        if !self.reported {
            return None;
        }
        sys::exec_error(self.exec_report.as_mut()?)
    }

    /// The next event: a received signal, or the main child's exit (reported once).
    pub(crate) async fn next(&mut self) -> Event {
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

    /// A shutdown signal that has arrived but not been handled, without waiting; other
    /// signals that arrived are kept for the command, forwarded when it starts.
    pub(crate) fn pending_shutdown(&mut self) -> Option<Signal> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(sig) = Pin::new(&mut AnySignal(&mut self.signals)).poll(&mut cx) {
            if is_shutdown(sig) {
                return Some(sig);
            }
            self.deferred.push(sig);
        }
        None
    }

    /// Waits for a signal (while no child runs, e.g. when waiting for the lock).
    pub(crate) async fn next_signal(&mut self) -> Signal {
        AnySignal(&mut self.signals).await
    }

    /// Sends `sig` to the main child's process group.
    pub(crate) fn signal_child(&self, sig: Signal) {
        if let Some(pgid) = self.child {
            if !self.reported && self.exited.is_none() {
                sys::signal_group(pgid, sig);
            }
        }
    }

    /// After the main child ended: stops everything of ours that is left (the command's
    /// process group, and every process re-parented to us, also those adopted late, when
    /// their own parent dies), SIGTERM first and SIGKILL from `kill_at` on, and reaps them.
    /// The lock is only released after this, so nothing of the job outlives it. Gives up
    /// (and says so) 5 s after SIGKILL, which only a process stuck in the kernel survives.
    pub(crate) async fn stop_leftovers(&mut self, kill_at: Instant) {
        sys::reclaim_tty();
        let give_up = kill_at.max(Instant::now()) + Duration::from_secs(5);
        let mut seen: Vec<Pid> = Vec::new();
        let mut term_sent: Vec<Pid> = Vec::new();
        let mut group_signalled: Option<Signal> = None;
        loop {
            self.reap();
            let left: Vec<Pid> = sys::live_children()
                .into_iter()
                .filter(|p| Some(*p) != self.watchdog && !self.inherited.contains(p))
                .collect();
            // Members of the command's group that are not our children (their parent in
            // the group still runs) are reached through the group.
            let group_alive = self.child.is_some_and(sys::group_exists);
            if left.is_empty() && !group_alive {
                break;
            }
            if seen.is_empty() {
                tracing::info!(
                    "the command left processes behind; stopping them before releasing the lock"
                );
            }
            for p in &left {
                if !seen.contains(p) {
                    seen.push(*p);
                }
            }
            let sig = if Instant::now() >= kill_at {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            if let Some(pgid) = self.child {
                if group_signalled != Some(sig) {
                    sys::signal_group(pgid, sig);
                    group_signalled = Some(sig);
                }
            }
            for p in &left {
                if sig == Signal::SIGKILL || !term_sent.contains(p) {
                    sys::signal_pid(*p, sig);
                    term_sent.push(*p);
                }
            }
            if Instant::now() >= give_up {
                tracing::error!(
                    count = left.len(),
                    "processes still alive 5 s after SIGKILL (stuck in the kernel?); releasing anyway"
                );
                break;
            }
            tokio::select! {
                _ = self.sigchld.recv() => {}
                // Polling too: a member of the group that is not our child sends no SIGCHLD.
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        if !seen.is_empty() {
            tracing::info!(count = seen.len(), "leftover processes stopped");
        }
        if let Some(w) = self.watchdog.take() {
            sys::kill_and_reap(w);
        }
    }

    /// Reaps every exited child, recording the main child's status.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let child_status = match status {
                        WaitStatus::Exited(_, code) => ChildStatus::Exited(code as u8),
                        WaitStatus::Signaled(_, sig, _) => ChildStatus::Signaled(sig as i32),
                        _ => continue,
                    };
                    if Some(pid) == self.child && !self.reported {
                        self.exited = Some(child_status);
                    } else if Some(pid) == self.watchdog {
                        // It only exits when killed; without it the group is unguarded.
                        tracing::warn!(status = child_status.code(), "the watchdog ended");
                        self.watchdog = None;
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
                Err(_) => return,
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
