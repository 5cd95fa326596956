//! podman for the container tests: the lock-exec image `make image` built, a busybox job
//! image, containers and the chart's Job pod, each removed by a guard when it is dropped.
//!
//! podman runs with the project's containers.conf (tests/fixtures/containers.conf: runc,
//! rlimits this machine allows), never the host's. Every object a test creates is named
//! `lxt-<test process id>-...`: a test killed by nextest's timeout cannot run its guards, so
//! [`Podman::new`] first removes the objects of test processes that no longer exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// The image under test, built by `make image` (scripts/build-image.sh).
pub const IMAGE: &str = "localhost/lock-exec:dev";

/// Where busybox-static puts its binary; the job image and the PID 1 tests use it.
pub const BUSYBOX: &str = "/bin/busybox";

/// Longest any single podman command may take before the test fails.
const PODMAN_LIMIT: Duration = Duration::from_secs(90);

/// What a podman command printed and returned.
#[derive(Debug)]
pub struct Done {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// `podman` with the project's containers.conf.
fn command() -> tokio::process::Command {
    let mut c = tokio::process::Command::new("podman");
    c.env(
        "CONTAINERS_CONF",
        repo().join("tests/fixtures/containers.conf"),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    c
}

/// The same for guards, which run in `Drop` (no runtime needed, errors ignored).
fn blocking(args: &[&str]) {
    let _ = std::process::Command::new("podman")
        .env(
            "CONTAINERS_CONF",
            repo().join("tests/fixtures/containers.conf"),
        )
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A started podman command (e.g. an attached `podman run`), killed if dropped.
pub struct Started {
    child: tokio::process::Child,
    started: Instant,
}

/// Starts `podman ARGS`.
pub fn start<S: AsRef<str>>(args: &[S]) -> Started {
    let child = command()
        .args(args.iter().map(|a| a.as_ref()))
        .spawn()
        .expect("podman (run scripts/install-tools.sh)");
    Started {
        child,
        started: Instant::now(),
    }
}

impl Started {
    /// Waits for it to end; fails the test after `limit`.
    pub async fn wait(self, limit: Duration) -> Done {
        let Started { child, started } = self;
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(out) => {
                let out = out.expect("podman output");
                Done {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    elapsed: started.elapsed(),
                }
            }
            Err(_) => panic!("podman did not finish within {limit:?}"),
        }
    }
}

/// Runs `podman ARGS` to completion.
pub async fn podman<S: AsRef<str>>(args: &[S]) -> Done {
    start(args).wait(PODMAN_LIMIT).await
}

/// Runs `podman ARGS`, failing the test unless it exits 0; returns its stdout.
pub async fn podman_ok<S: AsRef<str>>(args: &[S]) -> String {
    let out = podman(args).await;
    let shown: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    assert_eq!(
        out.code,
        Some(0),
        "podman {shown:?} failed: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs `podman ARGS` when dropped: removes what a test created, also when it fails.
pub struct Guard(Vec<String>);

impl Guard {
    pub fn new(args: &[&str]) -> Self {
        Guard(args.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        blocking(&args);
    }
}

/// A test's access to podman: names its objects and cleans up after killed tests.
pub struct Podman;

impl Podman {
    /// Checks that the image exists and removes what killed test processes left behind.
    pub async fn new() -> Self {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: run scripts/install-tools.sh (busybox-static)"
        );
        let out = podman(&["image", "exists", IMAGE]).await;
        assert_eq!(
            out.code,
            Some(0),
            "image {IMAGE} not found: run `make image` (make test builds it first) {}",
            out.stderr
        );
        // An image of another commit would test other code (make test rebuilds it).
        let revision = podman_ok(&[
            "image",
            "inspect",
            "--format",
            "{{index .Labels \"org.opencontainers.image.revision\"}}",
            IMAGE,
        ])
        .await;
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !head.is_empty() {
            assert_eq!(
                revision.trim(),
                head,
                "image {IMAGE} was built from another commit: run `make image`"
            );
        }
        sweep().await;
        Podman
    }

    /// A new object name: `lxt-<pid>-<n>-<ns>`, unique on this machine.
    pub fn name(&self) -> String {
        unique("lxt")
    }
}

/// The test process that created an object named `lxt-<pid>-...`, if it no longer runs.
fn orphaned(name: &str) -> bool {
    let name = name.trim_start_matches("localhost/");
    let Some(pid) = name
        .strip_prefix("lxt-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    pid != std::process::id() as i32 && !alive(pid)
}

/// Removes the pods, containers and images of test processes that no longer run.
async fn sweep() {
    let lists: [(&[&str], &[&str]); 3] = [
        (
            &["pod", "ps", "--format", "{{.Name}}"],
            &["pod", "rm", "-f", "-t", "0"],
        ),
        (
            &["ps", "-a", "--format", "{{.Names}}"],
            &["rm", "-f", "-t", "0"],
        ),
        (
            &["images", "--format", "{{.Repository}}:{{.Tag}}"],
            &["rmi", "-f"],
        ),
    ];
    for (list, remove) in lists {
        let out = podman(list).await;
        for name in out.stdout.lines().filter(|n| orphaned(n)) {
            let mut args = remove.to_vec();
            args.push(name);
            let _ = podman(&args).await;
        }
    }
}

/// An image built for one test, removed on drop.
pub struct Image {
    pub name: String,
    _guard: Guard,
}

impl Image {
    /// Builds `Containerfile` (its text) with the files `context` names (name, source).
    pub async fn build(podman: &Podman, containerfile: &str, context: &[(&str, &Path)]) -> Self {
        let dir = TempDir::new();
        std::fs::write(dir.file("Containerfile"), containerfile).unwrap();
        for (name, source) in context {
            std::fs::copy(source, dir.file(name)).unwrap();
        }
        let name = format!("localhost/{}:test", podman.name());
        let guard = Guard::new(&["rmi", "-f", &name]);
        let context = dir.path().to_string_lossy().into_owned();
        // One layer, no intermediate images left behind (see scripts/build-image.sh).
        podman_ok(&[
            "build",
            "--quiet",
            "--squash-all",
            "-t",
            &name,
            "-f",
            &format!("{context}/Containerfile"),
            &context,
        ])
        .await;
        Image {
            name,
            _guard: guard,
        }
    }

    /// A job image without lock-exec and without a CA bundle: busybox on scratch.
    pub async fn busybox(podman: &Podman) -> Self {
        Self::build(
            podman,
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
            &[("busybox", Path::new(BUSYBOX))],
        )
        .await
    }
}

/// A directory the containers (uid 65532) write their run records into.
pub fn records_dir() -> TempDir {
    let dir = TempDir::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `-e NAME=VALUE` for what every lock-exec in a container needs to reach `env`.
pub fn env_args(env: &Env) -> Vec<String> {
    [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("LOCK_EXEC_ENDPOINT_URL", env.endpoint()),
        ("LOCK_EXEC_TABLE", env.table.clone()),
        ("LOCK_EXEC_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")])
    .collect()
}

/// The chart's values for a job pod of the tests: the lock-exec image under test, the
/// job image `job_image` running `sh -c SCRIPT`, static test credentials, `dir` mounted
/// at /records, and the DynamoDB endpoint; `lock` entries override the chart's `lock`.
pub fn chart_values(
    job_image: &str,
    script: &str,
    dir: &Path,
    endpoint: &str,
    table: &str,
    lock: Value,
) -> Value {
    let (repository, tag) = IMAGE.rsplit_once(':').unwrap();
    let mut values = json!({
        "schedule": "*/5 * * * *",
        "image": {"repository": repository, "tag": tag},
        "job": {
            "image": job_image,
            "command": ["sh", "-c", script],
            "env": [
                {"name": "AWS_ACCESS_KEY_ID", "value": "test"},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": "test"},
                // The downward API reading the Job controller's label, as the slots
                // feature's LOCK_EXEC_JOB_NAME does.
                {"name": "JOB_NAME_LABEL", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}}
            ],
            "volumeMounts": [{"name": "records", "mountPath": "/records"}]
        },
        "volumes": [{"name": "records", "hostPath": {"path": dir, "type": "Directory"}}],
        "lock": {"table": table, "region": "us-east-1", "endpointUrl": endpoint}
    });
    for (k, v) in lock.as_object().unwrap() {
        values["lock"][k] = v.clone();
    }
    values
}

/// The pod a Job controller would create for the chart's CronJob, as `podman kube play`
/// runs it: rendered with `helm template` and `scripts/render-job.py --pod`, then named
/// and labelled as the controller does, on the host's network (to reach 127.0.0.1).
pub struct JobPod {
    /// The pod's name: `<job name>-<suffix>`, as the controller makes it.
    pub name: String,
    /// The Job's name: `<cronjob>-<minutes since the epoch>`.
    pub job_name: String,
    /// The pod object played.
    pub pod: Value,
}

impl JobPod {
    /// Renders the chart as release `release` with `values`; `suffix` makes the pod's name.
    pub async fn render(release: &str, values: &Value, suffix: &str) -> Self {
        let dir = TempDir::new();
        let values_file = dir.file("values.json");
        std::fs::write(&values_file, values.to_string()).unwrap();
        let rendered = tokio::process::Command::new(tools().join("bin/helm"))
            .args([
                "template",
                release,
                "charts/lock-exec",
                "--namespace",
                "default",
            ])
            .arg("-f")
            .arg(&values_file)
            .current_dir(repo())
            .output()
            .await
            .expect("helm (run scripts/install-tools.sh)");
        assert!(
            rendered.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let rendered_file = dir.file("rendered.yaml");
        std::fs::write(&rendered_file, &rendered.stdout).unwrap();
        let pod = tokio::process::Command::new(tools().join("venv/bin/python"))
            .arg(repo().join("scripts/render-job.py"))
            .arg("--pod")
            .stdin(std::fs::File::open(&rendered_file).unwrap())
            .output()
            .await
            .unwrap();
        assert!(
            pod.status.success(),
            "render-job.py --pod: {}",
            String::from_utf8_lossy(&pod.stderr)
        );
        let mut pod: Value = serde_json::from_slice(&pod.stdout).unwrap();

        let cronjob = format!("{release}-lock-exec");
        let minutes = now_ns() / 60_000_000_000;
        let job_name = format!("{cronjob}-{minutes}");
        let name = format!("{job_name}-{suffix}");
        pod["metadata"]["name"] = json!(name);
        let labels = pod["metadata"]["labels"].as_object_mut().unwrap();
        for label in ["batch.kubernetes.io/job-name", "job-name"] {
            labels.insert(label.into(), json!(job_name));
        }
        // Not in the chart: a cluster gives pods their own network, and the tests' servers
        // listen on the host's loopback.
        pod["spec"]["hostNetwork"] = json!(true);
        JobPod {
            name,
            job_name,
            pod,
        }
    }

    /// The same pod for the Job `job_name` (another cluster's pod of one occurrence).
    pub fn for_job(mut self, job_name: &str) -> Self {
        let suffix = self.name.rsplit_once('-').unwrap().1.to_string();
        self.name = format!("{job_name}-{suffix}");
        self.job_name = job_name.to_string();
        self.pod["metadata"]["name"] = json!(self.name);
        let labels = self.pod["metadata"]["labels"].as_object_mut().unwrap();
        for label in ["batch.kubernetes.io/job-name", "job-name"] {
            labels.insert(label.into(), json!(job_name));
        }
        self
    }

    /// The rendered env of container `container` (value or null for valueFrom).
    pub fn env(&self, container: &str) -> BTreeMap<String, Value> {
        self.pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container)
            .expect("the container")["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect()
    }

    /// Plays the pod; it is removed when the returned guard drops.
    pub async fn play(&self) -> Playing {
        let dir = TempDir::new();
        let file = dir.file("pod.json");
        std::fs::write(&file, self.pod.to_string()).unwrap();
        let guard = Guard::new(&["pod", "rm", "-f", "-t", "0", &self.name]);
        podman_ok(&["kube", "play", file.to_str().unwrap()]).await;
        Playing {
            name: self.name.clone(),
            _guard: guard,
        }
    }
}

/// A played pod, removed (with its containers) on drop.
pub struct Playing {
    pub name: String,
    _guard: Guard,
}

impl Playing {
    /// The name podman gives the pod's container `container`.
    pub fn container(&self, container: &str) -> String {
        format!("{}-{container}", self.name)
    }

    /// Waits until the job container exits; returns its exit code.
    pub async fn wait_job(&self, limit: Duration) -> i32 {
        let out = start(&["wait", &self.container("job")]).wait(limit).await;
        assert_eq!(out.code, Some(0), "podman wait: {}", out.stderr);
        out.stdout.trim().parse().expect("an exit code")
    }

    /// What the job container printed (stdout, then stderr: lock-exec's log).
    pub async fn job_logs(&self) -> (String, String) {
        let out = podman(&["logs", &self.container("job")]).await;
        (out.stdout, out.stderr)
    }
}

/// A path as a `String` for podman's arguments.
pub fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The lock-exec image's files, extracted from a container made from it.
pub async fn image_files(pm: &Podman, image: &str) -> (TempDir, PathBuf) {
    let name = pm.name();
    let _guard = Guard::new(&["rm", "-f", &name]);
    podman_ok(&["create", "--name", &name, image]).await;
    let dir = TempDir::new();
    let tar = dir.file("image.tar");
    podman_ok(&["export", "-o", &arg(&tar), &name]).await;
    let root = dir.file("root");
    std::fs::create_dir(&root).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(&tar).unwrap();
    (dir, root)
}
