//! The lock protocol and the `run`/`unlock`/`status`/`create-table` contract, against
//! both dynalite and moto.

use std::time::Duration;

use crate::both;
use crate::harness::*;

both!(
    exit_codes_pass_through,
    seed_string_form_with_options_after,
    fence_increases_and_reaches_the_child,
    contender_refused_while_lease_is_renewed,
    crashed_holder_is_taken_over_within_a_lease,
    wait_runs_after_the_holder,
    min_hold_keeps_the_key_after_the_command,
    unlock_refuses_a_live_lease_and_force_stops_the_holder,
    status_reports_json,
    seed_format_item_is_respected_then_taken_over,
    create_table_is_idempotent_and_checks_the_schema,
);

async fn exit_codes_pass_through(b: Backend) {
    let env = Env::new(b).await;
    for code in [0, 1, 3, 42, 255] {
        let out = env
            .cmd(["run", "k", "--", "sh", "-c", &format!("exit {code}")])
            .output()
            .await;
        assert_eq!(out.code, Some(code), "{}", out.stderr);
    }
    let out = env
        .cmd(["run", "k", "--", "sh", "-c", "kill -KILL $$"])
        .output()
        .await;
    assert_eq!(out.code, Some(137));
    let out = env
        .cmd(["run", "k", "--", "/nonexistent/program"])
        .output()
        .await;
    assert_eq!(out.code, Some(127));
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let out = env.cmd(["run", "k", "--", "/etc/hostname"]).output().await;
    assert_eq!(out.code, Some(126));
    // The key is free after each of them.
    assert!(!env.item("k").await.unwrap().is_held(now_ns()));
}

async fn seed_string_form_with_options_after(b: Backend) {
    let env = Env::new(b).await;
    // Exactly the seed README's line: the table comes after the command string.
    let out = LockExec::new(&env.endpoint(), "not-this-table")
        .args(["run", "testkey", r#"echo "hello world""#, "-t", &env.table])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello world\n");
    let out = env
        .cmd(["run", "k", "--shell", "echo $((6*7)) | tr 4 X"])
        .output()
        .await;
    assert_eq!(out.stdout, "X2\n");
}

async fn fence_increases_and_reaches_the_child(b: Backend) {
    let env = Env::new(b).await;
    let mut fences = Vec::new();
    for _ in 0..3 {
        let out = env
            .cmd(["run", "jobs/fence key", "--owner", "pod-a", "--"])
            .args([
                "sh",
                "-c",
                "echo $LOCK_EXEC_FENCE $LOCK_EXEC_KEY $LOCK_EXEC_OWNER",
            ])
            .output()
            .await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let line = out.stdout.trim().to_string();
        assert!(line.ends_with("jobs/fence key pod-a"), "{line}");
        fences.push(line.split(' ').next().unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(fences, [1, 2, 3]);
    assert_eq!(env.item("jobs/fence key").await.unwrap().fence, Some(3));
}

async fn contender_refused_while_lease_is_renewed(b: Backend) {
    let env = Env::new(b).await;
    let holder = env.holder(&["run", "k", "--lease", "2s"], "sleep 5").await;
    // Past the first lease: only renewals keep the key.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let contender_marker = env.dir.file("contender-ran");
    let out = env
        .cmd([
            "run",
            "k",
            "--locked-exit-code",
            "42",
            "--",
            "touch",
            contender_marker.to_str().unwrap(),
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(42), "{}", out.stderr);
    assert!(!contender_marker.exists(), "the contender's command ran");
    assert!(out.stderr.contains("key is locked"), "{}", out.stderr);
    let held = holder.running.wait().await;
    assert_eq!(held.code, Some(0), "{}", held.stderr);
}

async fn crashed_holder_is_taken_over_within_a_lease(b: Backend) {
    let env = Env::new(b).await;
    let holder = env
        .holder(&["run", "k", "--lease", "2s"], "exec sleep 60")
        .await;
    // Node loss: lock-exec and its child die at once, without releasing.
    holder.running.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder.child),
        nix::sys::signal::Signal::SIGKILL,
    );
    let killed = std::time::Instant::now();
    let _ = holder.running.wait().await;
    let (out, _) = env.contender("k", "20s").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let takeover = killed.elapsed();
    eprintln!(
        "FIGURE takeover after SIGKILL, lease 2s, {b:?}: {} ms",
        takeover.as_millis()
    );
    assert!(
        takeover <= Duration::from_millis(2000 + 2500),
        "takeover took {takeover:?}"
    );
    assert_eq!(env.item("k").await.unwrap().fence, Some(2));
}

async fn wait_runs_after_the_holder(b: Backend) {
    let env = Env::new(b).await;
    let (a_end, b_start) = (env.dir.file("a-end"), env.dir.file("b-start"));
    let holder = env
        .holder(
            &["run", "k"],
            &format!("sleep 2; date +%s%N > {}", a_end.display()),
        )
        .await;
    let out = env
        .cmd([
            "run",
            "k",
            "--wait",
            "30s",
            "--lease",
            "3s",
            "--",
            "sh",
            "-c",
            &format!("date +%s%N > {}", b_start.display()),
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("waiting for it"), "{}", out.stderr);
    assert_eq!(holder.running.wait().await.code, Some(0));
    assert!(
        read_num(&b_start).unwrap() > read_num(&a_end).unwrap(),
        "waiter ran before the holder ended"
    );

    // Without --wait the same situation skips at once.
    let out = env
        .cmd(["run", "k", "--min-hold", "10s", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(0));
    // A wait that runs out is not a skip: 75 by default, or --wait-exit-code.
    let out = env
        .cmd([
            "run",
            "k",
            "--wait",
            "500ms",
            "--locked-exit-code",
            "3",
            "--",
            "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert!(out.stderr.contains("gave up waiting"), "{}", out.stderr);
    let out = env
        .cmd([
            "run",
            "k",
            "--wait",
            "300ms",
            "--wait-exit-code",
            "9",
            "--",
            "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(9), "{}", out.stderr);
}

async fn min_hold_keeps_the_key_after_the_command(b: Backend) {
    let env = Env::new(b).await;
    let out = env
        .cmd(["run", "k", "--min-hold", "3s", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    let hold_end = item.acquired_ns.unwrap() + 3_000_000_000;
    assert_eq!(item.expire_ns, Some(hold_end));
    let out = env
        .cmd(["run", "k", "--locked-exit-code", "9", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(9), "a late contender ran within --min-hold");
    tokio::time::sleep(Duration::from_nanos(
        (hold_end - now_ns()).max(0) as u64 + 100_000_000,
    ))
    .await;
    let out = env
        .cmd(["run", "k", "--locked-exit-code", "9", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

async fn unlock_refuses_a_live_lease_and_force_stops_the_holder(b: Backend) {
    let env = Env::new(b).await;
    // Never-locked and lapsed keys unlock fine.
    assert_eq!(env.cmd(["unlock", "nothing"]).output().await.code, Some(0));
    let holder = env
        .holder(
            &[
                "run",
                "k",
                "--lease",
                "3s",
                "--owner",
                "pod-a",
                "--cluster",
                "east",
            ],
            "sleep 60",
        )
        .await;
    let out = env.cmd(["unlock", "k"]).output().await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("pod-a")
            && out.stderr.contains("east")
            && out.stderr.contains("acquired"),
        "{}",
        out.stderr
    );
    assert!(env.item("k").await.unwrap().is_held(now_ns()));

    let out = env.cmd(["unlock", "k", "--force"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let held = holder.running.wait().await;
    assert_eq!(held.code, Some(125), "{}", held.stderr);
    assert!(held.stderr.contains("lease lost"), "{}", held.stderr);
    assert!(held.elapsed < Duration::from_secs(20));
    // The key is free for the next run.
    assert_eq!(
        env.cmd(["run", "k", "--", "true"]).output().await.code,
        Some(0)
    );
}

async fn status_reports_json(b: Backend) {
    let env = Env::new(b).await;
    let out = env.cmd(["status", "k", "-o", "json"]).output().await;
    let free: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(free["state"], "free");
    assert_eq!(free["fence"], serde_json::Value::Null);

    let holder = env
        .holder(
            &[
                "run",
                "k",
                "--owner",
                "pod-b",
                "--cluster",
                "west",
                "--expire",
                "1h",
            ],
            "sleep 60",
        )
        .await;
    let out = env.cmd(["status", "k", "--output", "json"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["key"], "k");
    assert_eq!(s["state"], "held");
    assert_eq!(s["owner"], "pod-b");
    assert_eq!(s["cluster"], "west");
    assert_eq!(s["fence"], 1);
    for field in ["acquired_at", "expires_at", "deadline"] {
        let t = s[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing"));
        assert!(humantime::parse_rfc3339(t).is_ok(), "{field}: {t}");
    }
    let text = env.cmd(["status", "k"]).output().await.stdout;
    assert!(text.contains("held by owner pod-b"), "{text}");
    holder.running.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(holder.running.wait().await.code, Some(143));
    let s: serde_json::Value =
        serde_json::from_str(&env.cmd(["status", "k", "-o", "json"]).output().await.stdout)
            .unwrap();
    assert_eq!(s["state"], "free");
}

async fn seed_format_item_is_respected_then_taken_over(b: Backend) {
    let env = Env::new(b).await;
    // The Go tool's 24 h lock: respected.
    env.put_go_item("legacy", now_ns() + 86_400_000_000_000)
        .await;
    let out = env
        .cmd(["run", "legacy", "--locked-exit-code", "7", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    assert!(
        out.stderr.contains("original Go tool"),
        "holder should be described as the Go tool's lock: {}",
        out.stderr
    );
    // Expired: taken over, fence starts at 1.
    env.put_go_item("legacy", now_ns() - 1).await;
    let out = env
        .cmd(["run", "legacy", "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "1\n");
}

async fn create_table_is_idempotent_and_checks_the_schema(b: Backend) {
    let env = Env::new(b).await;
    let out = env.cmd(["create-table"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);

    // A table keyed on something else is named as such, by create-table and by run.
    use aws_sdk_dynamodb::types::*;
    env.client()
        .create_table()
        .table_name("wrong-schema")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let out = env
        .cmd(["create-table", "-t", "wrong-schema"])
        .output()
        .await;
    assert_eq!(out.code, Some(125));
    assert!(out.stderr.contains("wrong key schema"), "{}", out.stderr);
    let out = env
        .cmd([
            "run",
            "k",
            "-t",
            "wrong-schema",
            "--",
            "touch",
            "/tmp/never",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(125));
    assert!(out.stderr.contains("wrong key schema"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let out = env
        .cmd(["run", "k", "-t", "no-such-table", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(125));
    assert!(
        out.stderr.contains("not found") && out.stderr.contains("create-table"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_aws_endpoint_variables_work() {
    let env = Env::new(Backend::Dynalite).await;
    for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"] {
        let out = env
            .cmd(["run", "k", "--", "echo", var])
            .env_remove("LOCK_EXEC_ENDPOINT_URL")
            .env(var, env.endpoint())
            .output()
            .await;
        assert_eq!(out.code, Some(0), "{var}: {}", out.stderr);
        assert_eq!(out.stdout, format!("{var}\n"));
    }
    assert_eq!(env.item("k").await.unwrap().fence, Some(2));
    let help = env.cmd(["--help"]).output().await;
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("create-table"));
    let v = env.cmd(["--version"]).output().await;
    assert_eq!(
        (v.code, v.stdout),
        (
            Some(0),
            format!("lock-exec {}\n", env!("CARGO_PKG_VERSION"))
        )
    );
}

/// Scripts moved over from the Go tool get a one-line note where lock-exec reads the
/// same words differently: `-e` is a hard cap, and quotes in the command string group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_differences_are_pointed_out() {
    let env = Env::new(Backend::Dynalite).await;
    let out = env
        .cmd(["run", "k", r#"echo "hello world""#, "-e", "1h"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello world\n");
    let notes: Vec<String> = log_lines(&out.stderr)
        .iter()
        .filter_map(|r| {
            r["message"]
                .as_str()
                .filter(|m| m.starts_with("note:"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("hard cap") && notes[1].contains("quotes"),
        "{notes:?}"
    );
    let plain = env.cmd(["run", "k", "echo hi"]).output().await;
    assert!(!plain.stderr.contains("note:"), "{}", plain.stderr);
    // From the environment (a chart, say) the setting means the new thing already.
    let from_env = env
        .cmd(["run", "k", "--", "find", "/dev/null", "-empty"])
        .env("LOCK_EXEC_EXPIRE", "1h")
        .output()
        .await;
    assert_eq!(from_env.code, Some(0), "{}", from_env.stderr);
    assert!(!from_env.stderr.contains("note:"), "{}", from_env.stderr);
}
