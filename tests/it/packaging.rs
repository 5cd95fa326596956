//! The Helm chart's rendered command line, run for real, and `lock-exec install`.

use std::process::Command;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_cronjob_command_locks_the_key_and_runs_the_job() {
    let env = Env::new(Backend::Dynalite).await;
    let rendered = Command::new(tools().join("bin/helm"))
        .args([
            "template",
            "nightly",
            "charts/lock-exec",
            "-f",
            "charts/lock-exec/ci/test-values.yaml",
        ])
        .current_dir(repo())
        .output()
        .expect("helm (run scripts/install-tools.sh)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut render = Command::new(tools().join("venv/bin/python"))
        .arg(repo().join("scripts/render-job.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    render
        .stdin
        .take()
        .unwrap()
        .write_all(&rendered.stdout)
        .unwrap();
    let job = render.wait_with_output().unwrap();
    assert!(job.status.success());
    let job: serde_json::Value = serde_json::from_slice(&job.stdout).unwrap();

    let argv: Vec<String> = job["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        argv[0], "/lock-exec-bin/lock-exec",
        "the job runs the binary the init container installed"
    );
    assert_eq!(&argv[1..4], ["run", "nightly-report", "--"]);

    // Run exactly that command line, with the local binary and the rendered environment;
    // only what a pod would supply (valueFrom fields) and the local endpoint are added.
    let mut cmd = LockExec::program(bin(), &env.endpoint(), &env.table).args(&argv[1..]);
    for (name, value) in job["env"].as_object().unwrap() {
        if let Some(v) = value.as_str() {
            cmd = cmd.env(name, v);
        }
    }
    // What the pod's downward API would supply: its name, and its Job's name (the
    // CronJob's name and the scheduled minute).
    assert_eq!(
        job["env"]["LOCK_EXEC_JOB_NAME"],
        serde_json::Value::Null,
        "the job name comes from the pod's label"
    );
    let minute = now_ns() / 60_000_000_000;
    let job_name = format!("nightly-{minute}");
    let cmd = cmd
        .env("LOCK_EXEC_OWNER", format!("{job_name}-x7k2p"))
        .env("LOCK_EXEC_JOB_NAME", &job_name)
        .env("LOCK_EXEC_TABLE", &env.table)
        .env("LOCK_EXEC_ENDPOINT_URL", env.endpoint());
    let out = cmd.output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello\n");
    let item = env
        .item("nightly-report")
        .await
        .expect("the configured key was locked");
    assert_eq!(item.fence, Some(1));
    assert_eq!(item.owner, Some(format!("{job_name}-x7k2p")));
    // Once per schedule: the occurrence is done.
    assert_eq!(item.done_slot, Some(minute));
    assert_eq!(item.cluster.as_deref(), Some("eu-west-1-blue"));
    // lock.minHold (1s) from the values was applied.
    assert_eq!(
        item.expire_ns.unwrap(),
        item.acquired_ns.unwrap() + 1_000_000_000
    );
}

/// `lock-exec install DIR`.
async fn install(dir: &std::path::Path) -> Output {
    LockExec::new("http://127.0.0.1:9", "t")
        .args(["install"])
        .arg_path(dir)
        .output()
        .await
}

#[tokio::test]
async fn install_copies_a_working_binary() {
    let dir = TempDir::new();
    let out = install(dir.path()).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let copied = dir.file("lock-exec");
    let v = Command::new(&copied).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        format!("lock-exec {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = install(std::path::Path::new("/nonexistent/dir")).await;
    assert_eq!(out.code, Some(125));
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
}

/// lock-exec points its TLS stack at one CA bundle file through SSL_CERT_FILE; that choice
/// of ours must not reach the command, while a user's own SSL_CERT_FILE does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_ca_bundle_stays_out_of_the_command_environment() {
    let env = Env::new(Backend::Dynalite).await;
    let show = [
        "run",
        "k",
        "--",
        "sh",
        "-c",
        "echo \"[${SSL_CERT_FILE-unset}]\"",
    ];
    let out = env.cmd(show).output().await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "[unset]\n"),
        "{}",
        out.stderr
    );
    let out = env
        .cmd(show)
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .await;
    assert_eq!(
        out.stdout, "[/etc/ssl/certs/ca-certificates.crt]\n",
        "{}",
        out.stderr
    );
}

/// Issue #9.10: `install` into a shared directory where someone planted symlinks under
/// every name it writes (its temp names included): nothing outside is written or chmod-ed,
/// and the results are regular files.
#[tokio::test]
async fn install_never_writes_through_planted_links() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = TempDir::new();
    let outside = TempDir::new();
    let victims: Vec<_> = ["bin", "ca", "tmp"]
        .iter()
        .map(|n| {
            let p = outside.file(n);
            std::fs::write(&p, "precious").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        })
        .collect();
    symlink(&victims[0], dir.file("lock-exec")).unwrap();
    symlink(&victims[1], dir.file("ca-certificates.crt")).unwrap();
    symlink(&victims[2], dir.file(".lock-exec.tmp")).unwrap();
    let out = install(dir.path()).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for v in &victims {
        assert_eq!(
            std::fs::read_to_string(v).unwrap(),
            "precious",
            "{v:?} written"
        );
        let mode = std::fs::metadata(v).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{v:?} chmod-ed");
    }
    let installed = std::fs::symlink_metadata(dir.file("lock-exec")).unwrap();
    assert!(installed.is_file(), "the planted link is still there");
    assert_eq!(installed.permissions().mode() & 0o777, 0o755);
    let v = std::process::Command::new(dir.file("lock-exec"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("lock-exec "));
    let ca = std::fs::symlink_metadata(dir.file("ca-certificates.crt")).unwrap();
    assert!(ca.is_file() && ca.len() > 1000, "{ca:?}");
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") && n != ".lock-exec.tmp")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
