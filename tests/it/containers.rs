//! The image and the chart's pod on a real container runtime (podman with runc), against
//! dynalite on the host's loopback (`--network host`, `hostNetwork: true`).
//!
//! - The image `make image` built, as PID 1 under the restrictions the chart sets
//!   (read-only root, no capabilities, its own non-root user): exit codes, `podman stop`
//!   (what the kubelet does on pod deletion) and `podman kill --signal KILL` (a lost node).
//!   Its commands come from busybox-static mounted read-only: the image has no shell.
//! - The chart's Job pod, as the Job controller would create it (see [`JobPod`]), played by
//!   `podman kube play`: the init container installs lock-exec into the emptyDir, and the
//!   job container (busybox on scratch: no lock-exec, no CA bundle) runs under it.
//!
//! Commands record their own run intervals (busybox `adjtimex`, microseconds) in a host
//! directory mounted at /records, and every test where two runs could meet checks that
//! no two intersect.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::podman::*;
use crate::records::*;

const SEC: i64 = 1_000_000_000;

/// `podman run` of the image as PID 1: read-only root, no capabilities, the image's own
/// user, the host's network; busybox and `records` mounted; ARGS are lock-exec's.
fn run_pid1(env: &Env, name: &str, records: &TempDir, args: &[&str]) -> Started {
    let mut v: Vec<String> = [
        "run",
        "--name",
        name,
        "--hostname",
        name,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--network",
        "host",
        "-v",
        &format!("{BUSYBOX}:/bin/busybox:ro"),
        "-v",
        &format!("{}:/records", arg(records.path())),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(env_args(env));
    v.push(IMAGE.to_string());
    v.extend(args.iter().map(|s| s.to_string()));
    start(&v)
}

/// Waits until the command recorded `/records/TAG.start`.
async fn started(records: &TempDir, tag: &str) {
    let file = records.file(&format!("{tag}.start"));
    wait_for(&format!("{tag} to start"), Duration::from_secs(30), || {
        read_num(&file).is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_holds_only_a_static_binary_and_the_ca_bundle_and_runs_as_65532() {
    let pm = Podman::new().await;
    let config: Value =
        serde_json::from_str(&podman_ok(&["image", "inspect", IMAGE]).await).unwrap();
    let config = &config[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], json!(["/lock-exec"]), "{config}");

    let (_dir, root) = image_files(&pm, IMAGE).await;
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(
                    p.strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files.sort();
    assert_eq!(files, ["etc/ssl/certs/ca-certificates.crt", "lock-exec"]);
    let elf = std::process::Command::new("readelf")
        .arg("-l")
        .arg(root.join("lock-exec"))
        .output()
        .unwrap();
    let elf = String::from_utf8_lossy(&elf.stdout);
    assert!(
        elf.contains("LOAD") && !elf.contains("program interpreter"),
        "not a static executable: {elf}"
    );
    // `make image` ships the build machine's Debian bundle, as the Dockerfile's build
    // stage ships Debian's.
    assert_eq!(
        std::fs::read(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()
    );
    let out = podman_ok(&["run", "--rm", "--network", "none", IMAGE, "version"]).await;
    assert_eq!(out, format!("lock-exec {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_as_pid1_passes_exit_codes_through_read_only_without_capabilities() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();

    // Where lock-exec runs: PID 1, uid 65532, no capabilities at all, read-only root.
    let name = pm.name();
    let _guard = Guard::new(&["rm", "-f", "-t", "0", &name]);
    let probe = "echo ppid=$PPID uid=`id -u`; grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
                 touch /probe 2>/dev/null && echo root=writable || echo root=read-only";
    let out = run_pid1(
        &env,
        &name,
        &records,
        &["run", "probe", "--", "/bin/busybox", "sh", "-c", probe],
    )
    .wait(Duration::from_secs(60))
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "ppid=1 uid=65532",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "root=read-only"
        ],
        "{}",
        out.stderr
    );
    let item = env.item("probe").await.unwrap();
    assert_eq!(
        item.owner.as_deref(),
        Some(name.as_str()),
        "owner: the host name"
    );
    assert_eq!(item.fence, Some(1));
    assert!(!item.is_held(now_ns()), "released: {item:?}");

    // The command's code, 127 for a missing program, 128+N for signal N.
    let cases: [(&[&str], i32); 5] = [
        (&["/bin/busybox", "true"], 0),
        (&["/bin/busybox", "sh", "-c", "exit 3"], 3),
        (&["/bin/busybox", "sh", "-c", "exit 255"], 255),
        (&["/no/such/program"], 127),
        (&["/bin/busybox", "sh", "-c", "kill -KILL $$"], 137),
    ];
    for (command, want) in cases {
        let name = pm.name();
        let _guard = Guard::new(&["rm", "-f", "-t", "0", &name]);
        let key = unique("code");
        let mut args = vec!["run", key.as_str(), "--"];
        args.extend_from_slice(command);
        let out = run_pid1(&env, &name, &records, &args)
            .wait(Duration::from_secs(60))
            .await;
        assert_eq!(out.code, Some(want), "{command:?}: {}", out.stderr);
        let item = env.item(&key).await.unwrap();
        assert!(
            !item.is_held(now_ns()),
            "{command:?} left the key held: {item:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_stop_is_forwarded_the_container_exits_143_and_the_key_is_released() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();
    let key = unique("stop");
    let name = pm.name();
    let _guard = Guard::new(&["rm", "-f", "-t", "0", &name]);
    let trap = "trap 'now > /records/first.end; exit 143' TERM";
    let script = recording_after("/records", "first", trap, "sleep 300 &\nwait");
    let run = run_pid1(
        &env,
        &name,
        &records,
        &[
            "run",
            &key,
            "--lease",
            "6s",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            &script,
        ],
    );
    started(&records, "first").await;

    // 30 s: the chart's terminationGracePeriodSeconds, after which podman SIGKILLs (137).
    let stop = podman(&["stop", "-t", "30", &name]).await;
    let out = run.wait(Duration::from_secs(60)).await;
    let stopped = now_ns();
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(
        stop.elapsed < Duration::from_secs(10),
        "podman stop took {:?}",
        stop.elapsed
    );
    assert!(
        out.stderr.contains("forwarded shutdown signal"),
        "{}",
        out.stderr
    );
    let first = intervals(records.path());
    assert!(first[0].end.is_some(), "the command saw SIGTERM: {first:?}");

    // Released, not left to lapse: the lease (6 s) has not ended, yet the key is free.
    let item = env.item(&key).await.unwrap();
    assert!(!item.is_held(stopped), "{item:?}");
    let (next, next_start) = env.contender(&key, "0s").await;
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    // --wait 0s: it would have skipped a held key.
    let next_start = next_start.expect("the next run ran at once");
    let mut runs = first.clone();
    runs.push(ShellRun {
        tag: "next".into(),
        start: next_start,
        end: None,
    });
    assert_disjoint(&runs, now_ns());
    eprintln!(
        "podman stop returned after {:?}; the container exited 143; key free, next run started {} ms after the command ended",
        stop.elapsed,
        (next_start - first[0].end.unwrap()) / 1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_kill_leaves_the_key_to_lapse_after_one_lease_never_longer() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();
    let key = unique("kill");
    let name = pm.name();
    let _guard = Guard::new(&["rm", "-f", "-t", "0", &name]);
    const LEASE: i64 = 4 * SEC;
    let script = recording("/records", "killed", "sleep 300");
    let run = run_pid1(
        &env,
        &name,
        &records,
        &[
            "run",
            &key,
            "--lease",
            "4s",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            &script,
        ],
    );
    started(&records, "killed").await;
    // Past the first renewal (every lease/3), so the lease end is a renewed one.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed = now_ns();
    podman_ok(&["kill", "--signal", "KILL", &name]).await;
    let out = run.wait(Duration::from_secs(30)).await;
    let dead = now_ns();
    assert_eq!(out.code, Some(137), "{}", out.stderr);

    let held = env.item(&key).await.unwrap();
    let lease_end = held.expire_ns.unwrap();
    assert!(
        held.is_held(dead),
        "a SIGKILLed holder cannot release: {held:?}"
    );
    assert!(
        lease_end <= killed + LEASE,
        "the stored lease ends {} ms after the kill, more than one lease",
        (lease_end - killed) / 1_000_000
    );

    // A waiting contender on the host takes the key when that lease ends, not before.
    let (next, next_start) = env.contender(&key, "20s").await;
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    let next_start = next_start.expect("the contender ran");
    assert!(
        next_start >= lease_end,
        "taken {} ms before the stored lease end",
        (lease_end - next_start) / 1_000_000
    );
    assert!(
        next_start < lease_end + 3 * SEC,
        "the key stayed locked {} ms past the stored lease end",
        (next_start - lease_end) / 1_000_000
    );
    let mut runs = intervals(records.path());
    runs.push(ShellRun {
        tag: "next".into(),
        start: next_start,
        end: None,
    });
    assert_disjoint(&runs, dead);
    eprintln!(
        "lease end stored {} ms after the SIGKILL (lease 4000 ms); contender ran {} ms after it",
        (lease_end - killed) / 1_000_000,
        (next_start - lease_end) / 1_000_000
    );
}

/// What each job command records about itself: its identity as lock-exec passes it on,
/// and the job name from the downward API.
const SHOW_ENV: &str = "echo \"owner=$LOCK_EXEC_OWNER fence=$LOCK_EXEC_FENCE key=$LOCK_EXEC_KEY \
                        job_label=$JOB_NAME_LABEL job_env=${LOCK_EXEC_JOB_NAME-unset}\" \
                        > /records/$LOCK_EXEC_OWNER.env";

/// The chart's job pod for `cluster`: release `release`, key `key`, running SCRIPT.
async fn job_pod(
    release: &str,
    job_image: &Image,
    records: &TempDir,
    env: &Env,
    lock: Value,
    script: &str,
    suffix: &str,
) -> JobPod {
    let values = chart_values(
        &job_image.name,
        script,
        records.path(),
        &env.endpoint(),
        &env.table,
        lock,
    );
    JobPod::render(release, &values, suffix).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_job_pod_installs_lock_exec_into_a_busybox_image_and_runs_the_command() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();
    let job_image = Image::busybox(&pm).await;
    let key = unique("chart");
    let release = pm.name();
    let script = recording(
        "/records",
        "$LOCK_EXEC_OWNER",
        &format!("{SHOW_ENV}\nls /lock-exec-bin > /records/installed\necho ran"),
    );
    let pod = job_pod(
        &release,
        &job_image,
        &records,
        &env,
        json!({"key": key, "cluster": "cluster-a"}),
        &script,
        "x7k2p",
    )
    .await;
    let playing = pod.play().await;
    let code = playing.wait_job(Duration::from_secs(60)).await;
    let (stdout, stderr) = playing.job_logs().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "ran\n", "{stderr}");

    // The init container put the binary and the CA bundle into the emptyDir.
    assert_eq!(
        std::fs::read_to_string(records.file("installed")).unwrap(),
        "ca-certificates.crt\nlock-exec\n"
    );
    let item = env.item(&key).await.unwrap();
    assert_eq!(item.owner.as_deref(), Some(pod.name.as_str()), "{item:?}");
    assert_eq!(item.cluster.as_deref(), Some("cluster-a"), "{item:?}");
    assert_eq!(item.fence, Some(1), "{item:?}");
    assert!(!item.is_held(now_ns()), "released: {item:?}");

    let seen = std::fs::read_to_string(records.file(&format!("{}.env", pod.name))).unwrap();
    // When the chart passes the job name on (the slots feature), it is the label's value.
    let job_env = if pod.env("job").contains_key("LOCK_EXEC_JOB_NAME") {
        pod.job_name.clone()
    } else {
        "unset".to_string()
    };
    assert_eq!(
        seen.trim(),
        format!(
            "owner={} fence=1 key={key} job_label={} job_env={job_env}",
            pod.name, pod.job_name
        )
    );
    let runs = intervals(records.path());
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].end.is_some(), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_job_pods_of_three_clusters_run_the_occurrence_once() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();
    let job_image = Image::busybox(&pm).await;
    let key = unique("race");
    // The same release in both "clusters": the same CronJob, Job and key, as in production.
    let release = pm.name();
    let script = recording("/records", "$LOCK_EXEC_OWNER", "sleep 2");
    // No minHold: the chart's oncePerSchedule (the default) makes the occurrence run once.
    let lock = |cluster: &str| json!({"key": key, "cluster": cluster});
    let a = job_pod(
        &release,
        &job_image,
        &records,
        &env,
        lock("cluster-a"),
        &script,
        "aaaaa",
    )
    .await;
    let b = job_pod(
        &release,
        &job_image,
        &records,
        &env,
        lock("cluster-b"),
        &script,
        "bbbbb",
    )
    .await
    .for_job(&a.job_name);
    let (pa, pb) = tokio::join!(a.play(), b.play());
    let (ca, cb) = tokio::join!(
        pa.wait_job(Duration::from_secs(60)),
        pb.wait_job(Duration::from_secs(60))
    );
    let (la, lb) = tokio::join!(pa.job_logs(), pb.job_logs());
    // The loser skips with the locked exit code (0).
    assert_eq!((ca, cb), (0, 0), "{la:?}\n{lb:?}");

    let runs = intervals(records.path());
    assert_eq!(runs.len(), 1, "exactly one pod ran the command: {runs:?}");
    assert_disjoint(&runs, now_ns());
    let (winner, cluster, loser_logs) = if runs[0].tag == a.name {
        (&a, "cluster-a", &lb.1)
    } else {
        (&b, "cluster-b", &la.1)
    };
    assert_eq!(runs[0].tag, winner.name);
    assert!(runs[0].end.is_some(), "{runs:?}");
    assert!(loser_logs.contains("key is locked"), "{loser_logs}");
    let item = env.item(&key).await.unwrap();
    assert_eq!(
        item.owner.as_deref(),
        Some(winner.name.as_str()),
        "{item:?}"
    );
    assert_eq!(item.cluster.as_deref(), Some(cluster), "{item:?}");
    assert_eq!(item.fence, Some(1), "{item:?}");
    // The occurrence (the Job name's minute, from the pod label) is done.
    let minute: i64 = a.job_name.rsplit_once('-').unwrap().1.parse().unwrap();
    assert_eq!(item.done_slot, Some(minute), "{item:?}");

    // A third cluster whose controller fires the same occurrence after the run ended
    // skips it: the key is free, but the occurrence is done.
    assert!(!item.is_held(now_ns()));
    let c = job_pod(
        &release,
        &job_image,
        &records,
        &env,
        lock("cluster-c"),
        &script,
        "ccccc",
    )
    .await
    .for_job(&a.job_name);
    let pc = c.play().await;
    assert_eq!(pc.wait_job(Duration::from_secs(60)).await, 0);
    let (_, lc) = pc.job_logs().await;
    assert!(lc.contains("slot is already done"), "{lc}");
    assert_eq!(
        intervals(records.path()).len(),
        1,
        "the occurrence ran twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_unlock_work_through_podman_exec_in_the_job_container() {
    let pm = Podman::new().await;
    let env = Env::new(Backend::Dynalite).await;
    let records = records_dir();
    let job_image = Image::busybox(&pm).await;
    let key = unique("exec");
    let script = recording("/records", "holder", "sleep 120");
    let pod = job_pod(
        &pm.name(),
        &job_image,
        &records,
        &env,
        json!({"key": key, "cluster": "cluster-a", "lease": "3s"}),
        &script,
        "e3x3c",
    )
    .await;
    let playing = pod.play().await;
    started(&records, "holder").await;

    // What users type: kubectl exec <pod> -c job -- /lock-exec-bin/lock-exec ...; the
    // container's environment already names the table, region and endpoint.
    let job = playing.container("job");
    let exec = |args: &[&str]| {
        let mut v = vec!["exec", job.as_str(), "/lock-exec-bin/lock-exec"];
        v.extend_from_slice(args);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let status = podman(&exec(&["status", &key, "--output", "json"])).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["state"], "held", "{status}");
    assert_eq!(status["owner"], pod.name.as_str(), "{status}");
    assert_eq!(status["cluster"], "cluster-a", "{status}");
    assert_eq!(status["fence"], 1, "{status}");

    let refused = podman(&exec(&["unlock", &key])).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("live lease"), "{}", refused.stderr);

    let forced = podman(&exec(&["unlock", &key, "--force"])).await;
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    // The holder sees it at its next heartbeat (1 s), stops its command and exits 125.
    let code = playing.wait_job(Duration::from_secs(30)).await;
    let (_, logs) = playing.job_logs().await;
    assert_eq!(code, 125, "{logs}");
    assert!(logs.contains("lease lost"), "{logs}");
    let item = env.item(&key).await.unwrap();
    assert!(item.run.is_none(), "force-unlocked: {item:?}");
}
