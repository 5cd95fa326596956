//! TLS to a DynamoDB endpoint whose certificate comes from a private CA (a VPC endpoint
//! behind a corporate proxy, a local DynamoDB): trusted through `SSL_CERT_FILE`, refused
//! in one line that names the certificate problem otherwise, and, in the chart's pod, the
//! CA bundle `lock-exec install` copies is the one a job image without any bundle uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::podman::*;

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1, made
/// with openssl in a temporary directory.
struct PrivateCa {
    dir: TempDir,
}

impl PrivateCa {
    fn new() -> Self {
        let dir = TempDir::new();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (run scripts/install-tools.sh)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec![
            "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
        ];
        ca.extend(ec);
        ca.extend([
            "-subj",
            "/CN=lock-exec test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req", "-keyout", "server.key", "-out", "server.csr"];
        csr.extend(ec);
        csr.extend(["-subj", "/CN=localhost"]);
        openssl(&csr);
        std::fs::write(
            dir.file("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        // The pods' uid 65532 reads the CA certificate (not the keys).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        PrivateCa { dir }
    }

    /// The CA certificate: the bundle that trusts the server.
    fn bundle(&self) -> PathBuf {
        self.dir.file("ca.pem")
    }
}

/// dynalite serving HTTPS with the private CA's server certificate, killed on drop.
struct TlsDynalite {
    port: u16,
    child: Child,
}

impl TlsDynalite {
    fn start(ca: &PrivateCa) -> Self {
        let port = free_port();
        let child = Command::new("node")
            .arg(repo().join("tests/fixtures/dynalite_tls.js"))
            .args(["127.0.0.1", &port.to_string()])
            .arg(ca.dir.file("server.key"))
            .arg(ca.dir.file("server.pem"))
            .env("NODE_PATH", tools().join("npm/node_modules"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let server = TlsDynalite { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dynalite (TLS) did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The endpoint by name, so the certificate's DNS name is what is checked.
    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for TlsDynalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (the harness's own helper is private to it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The TLS server with a table, created through it while trusting the CA.
async fn tls_env() -> (PrivateCa, TlsDynalite, String) {
    let ca = PrivateCa::new();
    let server = TlsDynalite::start(&ca);
    let table = unique("locks");
    let out = LockExec::new(&server.endpoint(), &table)
        .env("SSL_CERT_FILE", ca.bundle())
        .args(["create-table"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "create-table over TLS: {}", out.stderr);
    (ca, server, table)
}

/// Fails unless `out` is the refusal of an untrusted certificate: exit 125, one line
/// that names the certificate problem, not the region.
fn assert_untrusted_certificate(code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(125), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let message = log_lines(stderr)
        .first()
        .and_then(|l| l["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| stderr.to_string());
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(!message.contains("region"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_trusted_through_ssl_cert_file() {
    let (ca, server, table) = tls_env().await;
    let out = LockExec::new(&server.endpoint(), &table)
        .env("SSL_CERT_FILE", ca.bundle())
        .args(["run", "tls", "--", "echo", "ran"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran\n");
    let status = LockExec::new(&server.endpoint(), &table)
        .env("SSL_CERT_FILE", ca.bundle())
        .args(["status", "tls", "--output", "json"])
        .output()
        .await;
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["fence"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_fails_in_one_line_naming_it_exit_125() {
    let (_ca, server, table) = tls_env().await;
    let marker = TempDir::new();
    let ran = marker.file("ran");
    // The system's bundle (as in the image, and as `install` copies it) does not know
    // the private CA; neither does an explicit SSL_CERT_FILE naming it.
    for bundle in [None, Some(Path::new("/etc/ssl/certs/ca-certificates.crt"))] {
        let mut cmd = LockExec::new(&server.endpoint(), &table);
        if let Some(b) = bundle {
            cmd = cmd.env("SSL_CERT_FILE", b);
        }
        let out = cmd
            .args(["run", "tls", "--", "touch"])
            .arg_path(&ran)
            .output()
            .await;
        assert_untrusted_certificate(out.code, &out.stderr);
        assert!(!ran.exists(), "the command ran");
        // Bounded: a certificate does not fix itself, so no retrying until a timeout.
        assert!(
            out.elapsed < Duration::from_secs(10),
            "took {:?}",
            out.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_bundle_install_copies_is_what_a_job_image_without_one_trusts() {
    let pm = Podman::new().await;
    let (ca, server, table) = tls_env().await;
    let job_image = Image::busybox(&pm).await;
    // The lock-exec image with the private CA as its bundle: `install` copies it next to
    // the binary, and the busybox job image (no /etc/ssl at all) has nothing else.
    let private = Image::build(
        &pm,
        &format!("FROM {IMAGE}\nCOPY ca.pem /etc/ssl/certs/ca-certificates.crt\n"),
        &[("ca.pem", &ca.bundle())],
    )
    .await;
    let records = records_dir();
    let script = "ls /etc/ssl 2>/dev/null || echo no-ca-bundle; echo ran";
    let pod = |lock_exec_image: &str, suffix: &str| {
        let mut values = chart_values(
            &job_image.name,
            script,
            records.path(),
            &server.endpoint(),
            &table,
            json!({"key": unique("tls")}),
        );
        let (repository, tag) = lock_exec_image.rsplit_once(':').unwrap();
        values["image"] = json!({"repository": repository, "tag": tag});
        let release = pm.name();
        let suffix = suffix.to_string();
        async move { JobPod::render(&release, &values, &suffix).await }
    };

    let trusted = pod(&private.name, "trust").await.play().await;
    let code = trusted.wait_job(Duration::from_secs(60)).await;
    let (stdout, stderr) = trusted.job_logs().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "no-ca-bundle\nran\n", "{stderr}");

    // The same pod with the real image: Debian's roots, which do not know the private CA.
    let untrusted = pod(IMAGE, "untru").await.play().await;
    let code = untrusted.wait_job(Duration::from_secs(60)).await;
    let (stdout, stderr) = untrusted.job_logs().await;
    assert_eq!(stdout, "", "the command did not run");
    assert_untrusted_certificate(Some(code), &stderr);
}
