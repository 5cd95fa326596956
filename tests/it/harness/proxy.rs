//! A TCP proxy between lock-exec and a server, with switchable network faults.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Accept and keep connections open, forwarding nothing either way (a network that
    /// stops answering).
    Blackhole,
    /// Close connections at once, new and existing.
    Reset,
    /// Forward, answering each request this long after the server did.
    DelayResponses(Duration),
    /// Forward; answer the next request this long after the server did; then pass.
    DelayResponse(Duration),
    /// Forward the next request, swallow its answer and close that connection (the write
    /// is applied, its answer lost); then pass again.
    DropResponse,
    /// Hold the next request (of this DynamoDB operation, if given) this long before
    /// forwarding it, while later requests (on other connections) pass: a request
    /// delivered late, after its retry. Then pass.
    HoldRequest(Duration, Option<&'static str>),
    /// Forward requests, never answer (connections stay open): every write is applied
    /// and every answer lost.
    SwallowResponses,
    /// Answer every request with DynamoDB's ThrottlingException, forwarding nothing.
    Throttle,
}

/// A TCP proxy in front of a server, with switchable faults. Stops on drop.
pub struct Proxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    /// Requests seen, and faults that fired (responses dropped, requests held).
    pub requests: Arc<AtomicU64>,
    /// The DynamoDB operation of every request seen, in order.
    pub ops: Arc<Mutex<Vec<String>>>,
    pub fired: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let requests = Arc::new(AtomicU64::new(0));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let fired = Arc::new(AtomicU64::new(0));
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        let shared = Shared {
            fault: fault.clone(),
            requests: requests.clone(),
            ops: ops.clone(),
            fired: fired.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    if shared.get() == Fault::Reset {
                        return; // dropping the socket closes it
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    pipe(client, server, shared).await;
                });
            }
        });
        Proxy {
            port,
            fault,
            requests,
            ops,
            fired,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn get(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    /// The operations of the requests seen so far.
    pub fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    ops: Arc<Mutex<Vec<String>>>,
    fired: Arc<AtomicU64>,
}

impl Shared {
    fn get(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    /// Takes a one-shot fault: returns it and sets Pass, if it is the current one.
    fn take(&self, want: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut f = self.fault.lock().unwrap();
        if want(*f) {
            let was = *f;
            *f = Fault::Pass;
            self.fired.fetch_add(1, Ordering::SeqCst);
            Some(was)
        } else {
            None
        }
    }
}

/// The answer DynamoDB gives when it throttles a request.
const THROTTLED: &str = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ThrottlingException\",\"message\":\"Rate of requests exceeds the allowed throughput (fault proxy).\"}";

/// The DynamoDB operation of a request, from its X-Amz-Target header.
pub fn operation(request: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(request);
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-amz-target")
            .then(|| value.trim().rsplit('.').next().map(str::to_string))?
    })
}

/// Length of the first complete HTTP/1.1 request in `b` (headers + Content-Length body).
fn http_request_len(b: &[u8]) -> Option<usize> {
    let head_end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (b.len() >= head_end + body).then_some(head_end + body)
}

async fn pipe(client: tokio::net::TcpStream, server: tokio::net::TcpStream, shared: Shared) {
    let (mut cr, cw) = client.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let (mut sr, mut sw) = server.into_split();
    let up_shared = shared.clone();
    let cw_up = cw.clone();
    // A response to drop, or to delay: set by the request that took the one-shot fault.
    let drop_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drop_up = drop_next.clone();
    let delay_next = Arc::new(Mutex::new(None::<Duration>));
    let delay_up = delay_next.clone();
    // Upstream works request by request, so a fault applies to whole requests.
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(len) = http_request_len(&pending) {
                let request: Vec<u8> = pending.drain(..len).collect();
                up_shared.requests.fetch_add(1, Ordering::SeqCst);
                let op = operation(&request);
                up_shared
                    .ops
                    .lock()
                    .unwrap()
                    .push(op.clone().unwrap_or_default());
                match up_shared.get() {
                    Fault::Reset => return,
                    Fault::Blackhole => continue,
                    Fault::Throttle => {
                        let reply = format!(
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: fault-proxy\r\ncontent-length: {}\r\n\r\n{THROTTLED}",
                            THROTTLED.len()
                        );
                        if cw_up
                            .lock()
                            .await
                            .write_all(reply.as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    _ => {}
                }
                if let Some(Fault::HoldRequest(d, _)) = up_shared.take(|f| {
                    matches!(f, Fault::HoldRequest(_, target) if target.is_none_or(|t| op.as_deref() == Some(t)))
                }) {
                    // Delivered late, then this connection lives until the server has
                    // answered (the client gave up on it long ago).
                    tokio::time::sleep(d).await;
                    let _ = sw.write_all(&request).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    return;
                }
                if up_shared.take(|f| f == Fault::DropResponse).is_some() {
                    drop_up.store(true, Ordering::SeqCst);
                }
                if let Some(Fault::DelayResponse(d)) =
                    up_shared.take(|f| matches!(f, Fault::DelayResponse(_)))
                {
                    *delay_up.lock().unwrap() = Some(d);
                }
                if sw.write_all(&request).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if drop_next.load(Ordering::SeqCst) {
                return; // the answer is lost, the connection closed
            }
            let delay = delay_next.lock().unwrap().take();
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            match shared.get() {
                Fault::Reset => return,
                Fault::Blackhole | Fault::SwallowResponses => continue,
                Fault::DelayResponses(d) => tokio::time::sleep(d).await,
                _ => {}
            }
            if cw.lock().await.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending closes both (dropping the halves).
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
