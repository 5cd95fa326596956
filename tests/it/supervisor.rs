//! PID-1 behaviour: reaping, exit codes, signal forwarding, and stopping the child before
//! a lost or capped lease ends. Runs as root (as CI does): `unshare` makes lock-exec PID 1.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

/// `lock-exec ARGS` as PID 1 of a new PID namespace.
fn as_pid1(env: &Env, args: &[&str]) -> LockExec {
    LockExec::program("unshare", &env.endpoint(), &env.table)
        .args(["--pid", "--fork", "--mount-proc", bin()])
        .args(args)
}

/// lock-exec's pid in the host namespace: the only child of `unshare --fork`.
async fn pid1_host_pid(unshare: &Running) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", unshare.pid());
    let mut found = None;
    wait_for("unshare's child", Duration::from_secs(10), || {
        found = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        found.is_some()
    })
    .await;
    found.unwrap()
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Counts zombies left to lock-exec (its reaped orphans must not linger), and reports who
/// adopted a long orphan.
const ORPHANS: &str = r#"
for i in $(seq 30); do (sleep 0.2 &) ; done
(sleep 30 & echo $! > "$DIR/long")
($LEFTOVER &)
sleep 1.5
z=0
for f in /proc/[0-9]*/stat; do
  set -- $(cut -d')' -f2 < "$f" 2>/dev/null)
  [ "${1:-}" = Z ] && [ "${2:-}" = "$PPID" ] && z=$((z+1))
done
echo "zombies=$z"
echo "long_ppid=$(cut -d')' -f2 < /proc/$(cat "$DIR/long")/stat | awk '{print $2}')"
echo "parent=$PPID"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_reaps_30_orphans_and_stops_leftovers() {
    let env = Env::new(Backend::Dynalite).await;
    let jobs = Jobs::new();
    let s = script(env.dir.path(), "orphans.sh", ORPHANS);
    let out = as_pid1(&env, &["run", "k", "--grace", "1s", "--", &s])
        .env("DIR", env.dir.path())
        .env("LEFTOVER", leftover(&jobs))
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("zombies=0\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("long_ppid=1\n"),
        "orphan not adopted by PID 1: {}",
        out.stdout
    );
    assert_leftover_stopped_before_release(&env, &jobs).await;
}

/// A leftover that ignores SIGTERM: `python3 job.py … leftover` as one string.
fn leftover(jobs: &Jobs) -> String {
    jobs.argv("leftover", Duration::from_secs(60), OnTerm::Ignore, 0)
        .join(" ")
}

/// The leftover was killed (it ignores SIGTERM), and before the key was released: the
/// release time is in the item.
async fn assert_leftover_stopped_before_release(env: &Env, jobs: &Jobs) {
    let job = jobs.interval("leftover").expect("the leftover started");
    let item = env.item("k").await.unwrap();
    let released = item.released_ns.expect("released");
    assert!(!job.clean, "{job:?}");
    // It beat every 10 ms while alive: no beat may come after the release.
    let last_beat = job.end - HEARTBEAT_SLACK_NS;
    assert!(
        last_beat < released,
        "the leftover still ran {} ms after the release",
        (last_beat - released) / 1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subreaper_reaps_orphans_when_not_pid1() {
    let env = Env::new(Backend::Dynalite).await;
    let jobs = Jobs::new();
    let s = script(env.dir.path(), "orphans.sh", ORPHANS);
    let out = env
        .cmd(["run", "k", "--grace", "1s", "--", &s])
        .env("DIR", env.dir.path())
        .env("LEFTOVER", leftover(&jobs))
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let parent = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("parent="))
        .unwrap()
        .to_string();
    assert!(
        out.stdout.contains(&format!("long_ppid={parent}\n")),
        "orphan not adopted: {}",
        out.stdout
    );
    assert!(out.stdout.contains("zombies=0\n"), "{}", out.stdout);
    assert_leftover_stopped_before_release(&env, &jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_passes_all_256_exit_codes_through() {
    let env = Env::new(Backend::Dynalite).await;
    let mut set = tokio::task::JoinSet::new();
    let codes: Vec<i32> = (0..=255).collect();
    for chunk in codes.chunks(32) {
        let cmds: Vec<(i32, LockExec)> = chunk
            .iter()
            .map(|&c| {
                (
                    c,
                    as_pid1(
                        &env,
                        &[
                            "run",
                            &format!("code-{c}"),
                            "--",
                            "sh",
                            "-c",
                            &format!("exit {c}"),
                        ],
                    ),
                )
            })
            .collect();
        set.spawn(async move {
            let mut wrong = Vec::new();
            for (code, cmd) in cmds {
                let out = cmd.output().await;
                if out.code != Some(code) {
                    wrong.push((code, out.code, out.stderr));
                }
            }
            wrong
        });
    }
    let mut wrong = Vec::new();
    while let Some(r) = set.join_next().await {
        wrong.extend(r.unwrap());
    }
    assert!(wrong.is_empty(), "codes not passed through: {wrong:?}");
    let out = as_pid1(&env, &["run", "k", "--", "sh", "-c", "kill -KILL $$"])
        .output()
        .await;
    assert_eq!(out.code, Some(137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_forwards_signals_to_the_child_and_releases_after() {
    let env = Env::new(Backend::Dynalite).await;
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
    ] {
        let name = sig.as_str().trim_start_matches("SIG");
        let ready = env.dir.file(&format!("ready-{name}"));
        let got = env.dir.file(&format!("got-{name}"));
        let s = script(
            env.dir.path(),
            &format!("trap-{name}.sh"),
            &format!(
                "trap 'echo {name} > {got}; exit 42' {name}\ntouch {ready}\nwhile :; do sleep 0.05; done",
                got = got.display(),
                ready = ready.display()
            ),
        );
        let key = format!("sig-{name}");
        let running = as_pid1(&env, &["run", &key, "--", &s]).spawn();
        let pid1 = pid1_host_pid(&running).await;
        wait_for("the child's trap", Duration::from_secs(20), || {
            ready.exists()
        })
        .await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), sig).unwrap();
        let out = running.wait().await;
        assert_eq!(out.code, Some(42), "{name}: {}", out.stderr);
        assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), name);
        let item = env.item(&key).await.unwrap();
        assert!(!item.is_held(now_ns()), "{name}: lock not released");
    }
}

/// The hard cap (`--expire`) stops the command before the deadline stored in the table,
/// less the clock-skew allowance, even though every renewal succeeds; exit 124.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_cap_stops_the_command_with_124() {
    let env = Env::new(Backend::Dynalite).await;
    let jobs = Jobs::new();
    let out = env
        .cmd(["run", "k", "--expire", "3s", "--lease", "1s", "--"])
        .args(jobs.argv("capped", Duration::from_secs(30), OnTerm::Ignore, 0))
        .output()
        .await;
    assert_eq!(out.code, Some(124), "{}", out.stderr);
    assert!(out.stderr.contains("hard cap"), "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    assert!(!item.is_held(now_ns()));
    // Lease 1 s: skew allowance 100 ms, margin 50 ms; SIGKILL due 150 ms before the
    // deadline. The job (it ignores SIGTERM) must have ended before deadline - skew.
    let job = jobs.interval("capped").unwrap();
    let deadline = item.deadline_ns.unwrap();
    assert!(!job.clean, "the job was not stopped: {job:?}");
    assert!(
        job.end < deadline - 100_000_000,
        "the job ran until {} ms before the deadline, less than the skew allowance",
        (deadline - job.end) / 1_000_000
    );
    assert!(
        job.end - job.start > 2_000_000_000,
        "stopped too early: {job:?}"
    );
}

/// A holder behind a proxy that stops answering: it must stop its command before the
/// lease end recorded in the table less the clock-skew allowance (the documented
/// margin: SIGKILL is due skew + margin before the end), exit 125, and the next holder
/// runs only after that.
async fn lease_loss(on_term: OnTerm) {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let holder = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["run", "k", "--lease", "5s", "--"])
        .args(jobs.argv("holder", Duration::from_secs(60), on_term, 0))
        .spawn();
    jobs.wait_started("holder").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Fault::Blackhole);
    let out = holder.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(
        out.stderr.contains("could not be renewed"),
        "{}",
        out.stderr
    );
    let lease_end = env.item("k").await.unwrap().expire_ns.unwrap();
    let job = jobs.interval("holder").unwrap();
    // Lease 5 s: skew 500 ms, margin 250 ms, grace 1.67 s.
    let skew = 500_000_000;
    assert!(
        job.end < lease_end - skew,
        "the job ran until {} ms before the lease end, inside the skew allowance",
        (lease_end - job.end) / 1_000_000
    );
    eprintln!(
        "FIGURE lease loss (lease 5s, {on_term:?}): the job ended {} ms before the stored lease end",
        (lease_end - job.end) / 1_000_000
    );

    // The next holder (straight to the server) starts only after the lease end.
    let (next, started) = env.contender("k", "20s").await;
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert!(started.unwrap() > lease_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_network_stops_a_command_that_handles_sigterm() {
    lease_loss(OnTerm::Exit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_network_kills_a_command_that_ignores_sigterm() {
    lease_loss(OnTerm::Ignore).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_the_key_exits_143_without_running() {
    let env = Env::new(Backend::Dynalite).await;
    let holder = env.holder(&["run", "k"], "sleep 30").await;
    let never = env.dir.file("never");
    let waiter = env
        .cmd([
            "run",
            "k",
            "--wait",
            "60s",
            "--",
            "touch",
            never.to_str().unwrap(),
        ])
        .spawn();
    // Handlers first (a SIGTERM before them would kill it outright), then time to ask for
    // the key at least once.
    handlers_installed(waiter.pid()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    waiter.signal(Signal::SIGTERM);
    let out = waiter.wait().await;
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(!never.exists());
    holder.running.signal(Signal::SIGTERM);
    assert_eq!(holder.running.wait().await.code, Some(143));
}

/// Under a terminal (`kubectl run -it`), the command gets the foreground process group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_gets_the_terminal_foreground_group() {
    let env = Env::new(Backend::Dynalite).await;
    // Fields 5 and 8 of /proc/PID/stat: the process group and the terminal's foreground group.
    let s = script(
        env.dir.path(),
        "groups.sh",
        r#"cut -d')' -f2 /proc/$$/stat | awk '{print "pgrp=" $3 " tpgid=" $6}'"#,
    );
    // util-linux `script` runs lock-exec on a new pseudo-terminal.
    let out = LockExec::program("script", &env.endpoint(), &env.table)
        .args(["-qec", &format!("{} run k -- {s}", bin()), "/dev/null"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{} {}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("pgrp="))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let (pgrp, tpgid) = line.trim().split_once(' ').unwrap();
    assert_eq!(
        pgrp.trim_start_matches("pgrp="),
        tpgid.trim_start_matches("tpgid="),
        "{line}"
    );
}

/// Nothing lock-exec blocks or ignores (Rust ignores SIGPIPE; lock-exec ignores SIGTTIN and
/// SIGTTOU and blocks everything across fork) leaks into the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_starts_with_a_clean_signal_mask_and_dispositions() {
    let env = Env::new(Backend::Dynalite).await;
    let out = env
        .cmd(["run", "k", "--", "cat", "/proc/self/status"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for field in ["SigBlk:", "SigIgn:"] {
        let line = out.stdout.lines().find(|l| l.starts_with(field)).unwrap();
        assert_eq!(
            line.split_whitespace().nth(1),
            Some("0000000000000000"),
            "{line}"
        );
    }
    // While lock-exec itself does ignore SIGPIPE (bit 13) and SIGTTIN/SIGTTOU (21, 22).
    let holder = env.holder(&["run", "k2"], "sleep 30").await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", holder.running.pid())).unwrap();
    let ign = status
        .lines()
        .find(|l| l.starts_with("SigIgn:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let ign = u64::from_str_radix(ign, 16).unwrap();
    for sig in [13, 21, 22] {
        assert!(
            ign & (1 << (sig - 1)) != 0,
            "lock-exec does not ignore signal {sig}: {ign:x}"
        );
    }
    holder.running.signal(Signal::SIGTERM);
    assert_eq!(holder.running.wait().await.code, Some(143));
}

/// A command that ignores the forwarded SIGTERM is SIGKILLed after --grace, and the lock
/// is released: lock-exec finishes before the kubelet's own SIGKILL would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_escalates_to_sigkill_after_grace() {
    let env = Env::new(Backend::Dynalite).await;
    // The holder's pid is recorded before the trap is set: wait for the trap, or a SIGTERM
    // sent in between kills the shell (143) and the test measures nothing.
    let trapped = env.dir.file("trapped");
    let holder = env
        .holder(
            &["run", "k", "--grace", "1s"],
            &format!("trap '' TERM; touch {}; exec sleep 60", trapped.display()),
        )
        .await;
    wait_for("the command's trap", Duration::from_secs(20), || {
        trapped.exists()
    })
    .await;
    let sent = std::time::Instant::now();
    holder.running.signal(Signal::SIGTERM);
    let out = holder.running.wait().await;
    assert_eq!(out.code, Some(137), "{}", out.stderr);
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(!alive(holder.child));
    assert!(!env.item("k").await.unwrap().is_held(now_ns()));
}

/// Processes lock-exec inherited (started before it by the shell that exec'd it) are not
/// the job's leftovers: they are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_children_are_not_leftovers() {
    let env = Env::new(Backend::Dynalite).await;
    let pidfile = env.dir.file("sidecar.pid");
    let out = LockExec::program("sh", &env.endpoint(), &env.table)
        .args([
            "-c",
            &format!(
                "sleep 30 >/dev/null 2>&1 & echo $! > {}; exec {} run k -- true",
                pidfile.display(),
                bin()
            ),
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !out.stderr.contains("left processes behind"),
        "{}",
        out.stderr
    );
    let sidecar = read_num(&pidfile).unwrap() as i32;
    // lock-exec has exited; its inherited child lives on (re-parented), until we stop it.
    assert!(alive(sidecar), "the inherited sleep was killed");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sidecar), Signal::SIGKILL);
}
