//! Bad input: each case exits 125 with ONE line that says what to fix, never runs the
//! command, never panics, and leaves nothing locked.

use std::time::Duration;

use crate::harness::*;

/// Runs a case whose command would create `marker`, and checks the whole contract: exit
/// 125, one error record saying `expect`, the command never ran, and the item of key `k`
/// (written by a real run before the cases) exactly as it was.
async fn rejected(env: &Env, what: &str, cmd: LockExec, marker: &std::path::Path, expect: &str) {
    let before = env.raw_item("k").await;
    let out = cmd.output().await;
    assert_eq!(out.code, Some(125), "{what}: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {}", out.stderr);
    let record: serde_json::Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|_| panic!("{what}: not a JSON log record: {}", lines[0]));
    assert_eq!(record["level"], "error", "{what}: {record}");
    assert_eq!(record["exit_code"], 125, "{what}: {record}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(expect),
        "{what}: expected '{expect}' in: {message}"
    );
    assert!(!marker.exists(), "{what}: the command ran");
    assert!(before.is_some(), "the reference item is missing");
    assert_eq!(env.raw_item("k").await, before, "{what}: the item changed");
}

/// The reference item the cases must leave alone: a finished run's.
async fn reference_item(env: &Env) {
    let out = env.cmd(["run", "k", "--", "true"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_settings() {
    let env = Env::new(Backend::Dynalite).await;
    reference_item(&env).await;
    let marker = env.dir.file("ran");
    let touch = marker.to_str().unwrap().to_string();
    let long_key = "x".repeat(2049);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "empty key",
            vec!["run", "", "--", "touch", &touch],
            "key is empty",
        ),
        (
            "key over 2048 bytes",
            vec!["run", &long_key, "--", "touch", &touch],
            "at most 2048",
        ),
        ("no command", vec!["run", "k"], "no command"),
        ("empty command string", vec!["run", "k", ""], "empty"),
        (
            "unterminated quote",
            vec!["run", "k", "touch 'oops"],
            "unterminated quote",
        ),
        (
            "unknown flag",
            vec!["run", "k", "--frobnicate", "--", "touch", &touch],
            "--frobnicate",
        ),
        (
            "several words without --",
            vec!["run", "k", "touch", &touch],
            "unexpected argument",
        ),
        (
            "unparseable duration",
            vec!["run", "k", "--lease", "soon", "--", "touch", &touch],
            "not a duration",
        ),
        (
            "zero lease",
            vec!["run", "k", "--lease", "0s", "--", "touch", &touch],
            "at least 1s",
        ),
        (
            "negative duration",
            vec!["run", "k", "--lease=-5s", "--", "touch", &touch],
            "cannot be negative",
        ),
        (
            "zero expire",
            vec!["run", "k", "-e", "0", "--", "touch", &touch],
            "--expire",
        ),
        (
            "heartbeat >= lease/2",
            vec![
                "run",
                "k",
                "--lease",
                "10s",
                "--heartbeat",
                "5s",
                "--",
                "touch",
                &touch,
            ],
            "half of --lease",
        ),
        (
            "grace too long",
            vec![
                "run", "k", "--lease", "10s", "--grace", "8s", "--", "touch", &touch,
            ],
            "less than --lease",
        ),
        (
            "locked exit code 256",
            vec![
                "run",
                "k",
                "--locked-exit-code",
                "256",
                "--",
                "touch",
                &touch,
            ],
            "256",
        ),
        (
            "locked exit code -1",
            vec!["run", "k", "--locked-exit-code=-1", "--", "touch", &touch],
            "-1",
        ),
        (
            "empty owner",
            vec!["run", "k", "--owner", " ", "--", "touch", &touch],
            "--owner",
        ),
        (
            "--shell with argv",
            vec!["run", "k", "--shell", "--", "touch", &touch],
            "--shell",
        ),
        (
            "bad log format",
            vec!["--log-format", "xml", "run", "k", "--", "touch", &touch],
            "xml",
        ),
        ("no subcommand", vec![], "missing command"),
        ("empty key (unlock)", vec!["unlock", ""], "key is empty"),
        // Durations that would overflow a deadline (issue #9.8).
        (
            "expire 300y",
            vec!["run", "k", "-e", "300y", "--", "touch", &touch],
            "at most 3650d",
        ),
        (
            "lease 300y",
            vec!["run", "k", "--lease", "300y", "--", "touch", &touch],
            "at most 3650d",
        ),
        (
            "wait beyond u64 seconds",
            vec![
                "run",
                "k",
                "--wait",
                "18000000000000000000s",
                "--",
                "touch",
                &touch,
            ],
            "at most 3650d",
        ),
        (
            "min-hold 300y",
            vec!["run", "k", "--min-hold", "300y", "--", "touch", &touch],
            "at most 3650d",
        ),
        (
            "lease below 1s",
            vec!["run", "k", "--lease", "500ms", "--", "touch", &touch],
            "at least 1s",
        ),
        // Slots.
        (
            "two slot sources",
            vec![
                "run",
                "k",
                "--slot",
                "5",
                "--schedule",
                "0 * * * *",
                "--",
                "touch",
                &touch,
            ],
            "both give the slot",
        ),
        (
            "job name without a number",
            vec![
                "run",
                "k",
                "--slot-from-job-name",
                "nightly-manual",
                "--",
                "touch",
                &touch,
            ],
            "does not end in",
        ),
        (
            "job name with seconds",
            vec![
                "run",
                "k",
                "--slot-from-job-name",
                "nightly-1796000000",
                "--",
                "touch",
                &touch,
            ],
            "not a schedule time",
        ),
        (
            "bad schedule",
            vec![
                "run",
                "k",
                "--schedule",
                "every hour",
                "--",
                "touch",
                &touch,
            ],
            "not a cron schedule",
        ),
        (
            "bad time zone",
            vec![
                "run",
                "k",
                "--schedule",
                "0 * * * *",
                "--time-zone",
                "Mars/Olympus",
                "--",
                "touch",
                &touch,
            ],
            "not an IANA time zone",
        ),
        (
            "zone without schedule",
            vec!["run", "k", "--time-zone", "UTC", "--", "touch", &touch],
            "needs --schedule",
        ),
        (
            "retry without slot",
            vec!["run", "k", "--retry-failed-slot", "--", "touch", &touch],
            "needs a slot",
        ),
        (
            "negative slot",
            vec!["run", "k", "--slot=-1", "--", "touch", &touch],
            "not a slot",
        ),
        // Endpoint, region and table, checked before any request.
        (
            "endpoint without scheme",
            vec![
                "run",
                "k",
                "--endpoint-url",
                "127.0.0.1:8124",
                "--",
                "touch",
                &touch,
            ],
            "is not a URL",
        ),
        (
            "malformed region",
            vec!["run", "k", "-r", "eu_west_1", "--", "touch", &touch],
            "not an AWS region",
        ),
    ];
    for (what, args, expect) in cases {
        rejected(&env, what, env.cmd(args), &marker, expect).await;
    }
    // The same settings from the environment.
    let env_cases = [
        ("LOCK_EXEC_LEASE", "abc", "not a duration"),
        (
            "LOCK_EXEC_HEARTBEAT",
            "0s",
            "--heartbeat must be more than 0",
        ),
        ("LOCK_EXEC_EXPIRE", "-1h", "cannot be negative"),
        ("LOCK_EXEC_WAIT", "forever", "not a duration"),
        ("LOCK_EXEC_LOCKED_EXIT_CODE", "300", "300"),
        ("LOCK_EXEC_MIN_HOLD", "48h", "--min-hold"),
        ("LOCK_EXEC_REGION", "", "--region"),
        ("LOCK_EXEC_TABLE", "", "--table"),
        ("LOCK_EXEC_TABLE", "tt", "not a DynamoDB table name"),
        ("LOCK_EXEC_JOB_NAME", "hand-made", "does not end in"),
        ("LOCK_EXEC_JOB_NAME", "", "jobNameLabel"),
        ("LOCK_EXEC_SCHEDULE", "61 * * * *", "not a cron schedule"),
    ];
    for (var, value, expect) in env_cases {
        let cmd = env.cmd(["run", "k", "--", "touch", &touch]).env(var, value);
        rejected(&env, &format!("{var}={value}"), cmd, &marker, expect).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_aws_setups_fail_fast_with_a_reason() {
    let env = Env::new(Backend::Dynalite).await;
    reference_item(&env).await;
    let marker = env.dir.file("ran");
    let touch = marker.to_str().unwrap().to_string();
    let run = || env.cmd(["run", "k", "--", "touch", &touch]);
    rejected(
        &env,
        "missing table",
        run().env("LOCK_EXEC_TABLE", "nope"),
        &marker,
        "table 'nope' not found",
    )
    .await;

    // Nothing listening: refused connections fail in well under 5 s.
    let dead =
        LockExec::new("http://127.0.0.1:1", &env.table).args(["run", "k", "--", "touch", &touch]);
    let started = std::time::Instant::now();
    rejected(&env, "refused endpoint", dead, &marker, "unreachable").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // No region and no credentials: no stall on instance metadata.
    let home = TempDir::new();
    let no_region = run()
        .env_remove("AWS_REGION")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        // Instance metadata is tried, as in a pod, but refused: the test holds on EC2 too.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
        .env("HOME", home.path());
    let started = std::time::Instant::now();
    rejected(&env, "no region", no_region, &marker, "no AWS region").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let no_creds = run()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        // Instance metadata is tried, as in a pod, but refused: the test holds on EC2 too.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
        .env("HOME", home.path());
    let started = std::time::Instant::now();
    rejected(
        &env,
        "no credentials",
        no_creds,
        &marker,
        "no AWS credentials",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_names_the_iam_action() {
    // moto enforcing IAM: a user allowed only GetItem.
    let server = Server::moto_with_iam(4);
    let table = unique("locks");
    let out = std::process::Command::new(tools().join("venv/bin/python"))
        .arg(repo().join("tests/fixtures/moto_iam.py"))
        .args([&server.endpoint(), &table])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = String::from_utf8(out.stdout).unwrap();
    let (key, secret) = creds.trim().split_once(' ').unwrap();
    let dir = TempDir::new();
    let marker = dir.file("ran");
    let out = LockExec::new(&server.endpoint(), &table)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(["run", "k", "--", "touch", marker.to_str().unwrap()])
        .output()
        .await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("access denied for dynamodb:UpdateItem"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists());
    // The allowed action works with the same credentials.
    let out = LockExec::new(&server.endpoint(), &table)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(["status", "k"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_keys_and_keys_with_spaces_and_slashes_work() {
    let env = Env::new(Backend::Dynalite).await;
    for key in [
        "ключ/日本語 key",
        "jobs/nightly report",
        "a:b=c",
        &"é".repeat(1024),
    ] {
        let out = env
            .cmd(["run", key, "--", "sh", "-c", "printf %s \"$LOCK_EXEC_KEY\""])
            .output()
            .await;
        assert_eq!(out.code, Some(0), "{key}: {}", out.stderr);
        assert_eq!(out.stdout, key);
        assert_eq!(env.item(key).await.unwrap().fence, Some(1));
    }
}
