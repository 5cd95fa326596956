//! AWS credentials as EKS hands them to a pod, each with only the standard variables EKS
//! injects: IRSA (a web-identity token file and a role, exchanged at STS, here moto's) and
//! EKS Pod Identity (a credentials endpoint and an authorization token file, here a small
//! endpoint of the test's own on 127.0.0.1), and a run that outlives its first credentials.
//!
//! These run the binary on the host: the credential chain is the same code in the image,
//! and the container tests already show the static binary reaching the host's loopback.
//! DynamoDB (dynalite) sits behind a [`Recorder`], so the tests see which access key signed
//! each request, and when.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const SEC: i64 = 1_000_000_000;

/// A request a [`Recorder`] forwarded: when it arrived (Unix ns) and its text.
#[derive(Debug, Clone)]
struct Seen {
    at: i64,
    text: String,
}

impl Seen {
    /// The access key id of a SigV4-signed request (`Credential=<id>/<date>/...`).
    fn access_key(&self) -> Option<&str> {
        let rest = &self.text[self.text.find("Credential=")? + "Credential=".len()..];
        rest.split('/').next()
    }
}

/// A TCP proxy in front of an HTTP server that records every request, and every byte of
/// the answers. Stops on drop.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<Seen>>>,
    responses: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        let (req, resp) = (requests.clone(), responses.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (req, resp) = (req.clone(), resp.clone());
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut pending = Vec::new();
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(len) = request_len(&pending) {
                                let r: Vec<u8> = pending.drain(..len).collect();
                                req.lock().unwrap().push(Seen {
                                    at: now_ns(),
                                    text: String::from_utf8_lossy(&r).into_owned(),
                                });
                                if sw.write_all(&r).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                            resp.lock().unwrap().extend_from_slice(&buf[..n]);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Recorder {
            port,
            requests,
            responses,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    fn responses(&self) -> String {
        String::from_utf8_lossy(&self.responses.lock().unwrap()).into_owned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Length of the first complete HTTP/1.1 request in `b` (head and Content-Length body).
fn request_len(b: &[u8]) -> Option<usize> {
    let head_end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    (b.len() >= head_end + body).then_some(head_end + body)
}

/// Credentials an endpoint handed out: the access key id, when, and until when (Unix ns).
#[derive(Debug, Clone)]
struct Issued {
    access_key: String,
    at: i64,
    expires: i64,
}

/// An EKS Pod Identity agent stand-in: answers GET with fresh credentials valid for
/// `lifetime`, a new access key id each time, when the Authorization header is `token`;
/// 403 otherwise. Stops on drop.
struct CredentialsEndpoint {
    port: u16,
    issued: Arc<Mutex<Vec<Issued>>>,
    refused: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl CredentialsEndpoint {
    async fn start(token: &str, lifetime: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(Mutex::new(Vec::<Issued>::new()));
        let refused = Arc::new(Mutex::new(0));
        let (iss, refd, token) = (issued.clone(), refused.clone(), token.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let authorized = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == token
                    })
                });
                let (status, body) = if authorized {
                    let mut iss = iss.lock().unwrap();
                    let at = now_ns();
                    let expires = SystemTime::now() + lifetime;
                    let access_key = format!("ASIAPODIDENTITY{:05}", iss.len());
                    iss.push(Issued {
                        access_key: access_key.clone(),
                        at,
                        expires: expires.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
                    });
                    let body = serde_json::json!({
                        "AccessKeyId": access_key,
                        "SecretAccessKey": "pod-identity-secret",
                        "Token": "pod-identity-session-token",
                        "AccountId": "111122223333",
                        "Expiration": humantime::format_rfc3339_seconds(expires).to_string(),
                    });
                    ("200 OK", body.to_string())
                } else {
                    *refd.lock().unwrap() += 1;
                    (
                        "403 Forbidden",
                        r#"{"Code":"AccessDeniedException","Message":"bad token"}"#.to_string(),
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        CredentialsEndpoint {
            port,
            issued,
            refused,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/credentials", self.port)
    }

    fn issued(&self) -> Vec<Issued> {
        self.issued.lock().unwrap().clone()
    }
}

impl Drop for CredentialsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `lock-exec ARGS` through `endpoint` with none of the harness's static credentials:
/// only the region, as EKS sets it, plus what the caller adds.
fn without_static_credentials(endpoint: &str, table: &str) -> LockExec {
    LockExec::new(endpoint, table)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_DEFAULT_REGION", "us-east-1")
}

/// Fails unless every request was signed with a key from `issued`, while it was valid.
fn assert_signed_with_valid_keys(requests: &[Seen], issued: &[Issued]) {
    assert!(!requests.is_empty());
    for r in requests {
        let key = r
            .access_key()
            .unwrap_or_else(|| panic!("unsigned: {}", r.text));
        let creds = issued
            .iter()
            .find(|i| i.access_key == key)
            .unwrap_or_else(|| panic!("signed with {key}, which the endpoint never issued"));
        assert!(
            r.at < creds.expires,
            "signed with {key} {} ms after it expired",
            (r.at - creds.expires) / 1_000_000
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_web_identity_token_is_exchanged_at_sts_for_the_credentials_that_sign() {
    let env = Env::new(Backend::Dynalite).await;
    let dynamo = Recorder::start(env.server.port).await;
    let moto = Server::start(Backend::Moto);
    let sts = Recorder::start(moto.port).await;
    // The projected service-account token EKS mounts (a JWT; moto does not verify it).
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmF0Y2g6bG9jay1leGVjIn0.c2lnbmF0dXJl";
    let token_file = env.dir.file("token");
    std::fs::write(&token_file, token).unwrap();
    let role = "arn:aws:iam::111122223333:role/lock-exec-irsa";

    let out = without_static_credentials(&dynamo.endpoint(), &env.table)
        .env("AWS_ROLE_ARN", role)
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_STS_REGIONAL_ENDPOINTS", "regional")
        .env("AWS_ENDPOINT_URL_STS", sts.endpoint())
        .args(["run", "irsa", "--", "echo", "ran"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran\n");

    let exchanges: Vec<Seen> = sts
        .requests()
        .into_iter()
        .filter(|r| r.text.contains("Action=AssumeRoleWithWebIdentity"))
        .collect();
    assert_eq!(exchanges.len(), 1, "{:?}", sts.requests());
    let form = &exchanges[0].text;
    assert!(
        form.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Flock-exec-irsa"),
        "{form}"
    );
    assert!(
        form.contains(&format!("WebIdentityToken={token}")),
        "{form}"
    );
    // The access key STS issued is the one every DynamoDB request was signed with.
    let answer = sts.responses();
    let issued = answer
        .split("<AccessKeyId>")
        .nth(1)
        .and_then(|r| r.split("</AccessKeyId>").next())
        .unwrap_or_else(|| panic!("no credentials in STS's answer: {answer}"));
    let requests = dynamo.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.access_key(), Some(issued), "{}", r.text);
    }
    let item = env.item("irsa").await.unwrap();
    assert_eq!(item.fence, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_pod_identity_endpoint_and_token_file_supply_the_credentials() {
    let env = Env::new(Backend::Dynalite).await;
    let dynamo = Recorder::start(env.server.port).await;
    let token = "eks-pod-identity-token-1234";
    let agent = CredentialsEndpoint::start(token, Duration::from_secs(3600)).await;
    let token_file = env.dir.file("eks-pod-identity-token");
    std::fs::write(&token_file, token).unwrap();

    let run = |file: &std::path::Path| {
        without_static_credentials(&dynamo.endpoint(), &env.table)
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url())
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file)
            .args(["run", "pod-identity", "--", "echo", "ran"])
    };
    let out = run(&token_file).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran\n");
    let issued = agent.issued();
    assert_eq!(issued.len(), 1, "one credentials fetch for a short run");
    assert_signed_with_valid_keys(&dynamo.requests(), &issued);

    // A token the agent does not accept: no credentials, one line, exit 125, no run.
    let wrong = env.dir.file("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let before = dynamo.requests().len();
    let out = run(&wrong).output().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_eq!(out.stdout, "", "the command did not run");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("credential provider refused") && out.stderr.contains("token file"),
        "the advice fits a refused token: {}",
        out.stderr
    );
    assert!(*agent.refused.lock().unwrap() >= 1);
    assert_eq!(
        dynamo.requests().len(),
        before,
        "nothing reached DynamoDB unsigned"
    );
    eprintln!("refused token: {}", out.stderr.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_outliving_its_first_credentials_renews_them_and_keeps_its_lease() {
    let env = Env::new(Backend::Dynalite).await;
    let dynamo = Recorder::start(env.server.port).await;
    let token = "eks-pod-identity-token-5678";
    // The SDK refreshes credentials 10-15 s before they expire: 12 s credentials are
    // replaced every few seconds, and the first ones are dead before the run ends.
    const LIFETIME: i64 = 12 * SEC;
    let agent = CredentialsEndpoint::start(token, Duration::from_secs(12)).await;
    let token_file = env.dir.file("eks-pod-identity-token");
    std::fs::write(&token_file, token).unwrap();
    let log = env.dir.file("interval");
    let body = format!(
        "date +%s%N > {0}; sleep 15; date +%s%N >> {0}",
        log.display()
    );
    let out = without_static_credentials(&dynamo.endpoint(), &env.table)
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .args(["run", "renewing", "--lease", "3s", "--", "sh", "-c", &body])
        .timeout(Duration::from_secs(60))
        .output()
        .await;
    // Exit 0: the command ran to its end; a lost or unrenewable lease would have stopped
    // it (exit 125).
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let interval: Vec<i64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(interval[1] - interval[0] >= 15 * SEC, "{interval:?}");

    let issued = agent.issued();
    let first_expiry = issued[0].expires;
    assert!(
        interval[1] > first_expiry,
        "the run ended before its first credentials expired"
    );
    assert!(issued.len() >= 2, "credentials never renewed: {issued:?}");
    let requests = dynamo.requests();
    assert_signed_with_valid_keys(&requests, &issued);
    // Heartbeats went on after the first credentials expired, signed with later ones.
    let late: Vec<&Seen> = requests.iter().filter(|r| r.at > first_expiry).collect();
    assert!(
        late.len() >= 2,
        "no renewals after the first credentials expired"
    );
    assert!(late
        .iter()
        .all(|r| r.access_key() != Some(issued[0].access_key.as_str())));
    let item = env.item("renewing").await.unwrap();
    assert_eq!(item.fence, Some(1), "never lost and re-acquired: {item:?}");
    eprintln!(
        "credentials fetched {} times over a {} ms run (lifetime {} ms): at {:?} ms",
        issued.len(),
        (interval[1] - interval[0]) / 1_000_000,
        LIFETIME / 1_000_000,
        issued
            .iter()
            .map(|i| (i.at - interval[0]) / 1_000_000)
            .collect::<Vec<_>>()
    );
}
