//! The benchmark's floor (tests/it/bench.rs, `make bench`): the least any client can do for
//! one `lock-exec run`, so lock-exec's overhead has something to be compared with.
//!
//! `bench_floor run KEY 'COMMAND' -t TABLE`, the same argv as `lock-exec` and the Go tool
//! get in the benchmark, and the same environment (AWS_ENDPOINT_URL, AWS_REGION,
//! AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). It sends exactly the two requests lock-exec
//! sends (the same conditional UpdateItem bodies, SigV4-signed, on one kept-alive plain
//! HTTP/1.1 connection), and runs the command once in between: no SDK, no async runtime,
//! no logging, no lease, no signal handling, no TLS. Exit: the command's code; 3 when a
//! request fails; 2 for bad usage.
//!
//! Built with the release profile by `make bench`; never shipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// What the floor needs from its environment and argv.
struct Setup {
    /// `host:port` of the plain-HTTP endpoint.
    host: String,
    region: String,
    access_key: String,
    secret_key: String,
    key: String,
    table: String,
    /// The command string, split on whitespace as the Go tool does.
    command: Vec<String>,
}

fn setup() -> Result<Setup, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (key, command, table) = match args.as_slice() {
        [run, key, command, t, table] if run == "run" && t == "-t" => (key, command, table),
        _ => return Err("usage: bench_floor run KEY 'COMMAND' -t TABLE".into()),
    };
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let endpoint = var("AWS_ENDPOINT_URL")?;
    let host = endpoint
        .strip_prefix("http://")
        .ok_or("AWS_ENDPOINT_URL must be http:// (the floor has no TLS)")?
        .trim_end_matches('/')
        .to_string();
    Ok(Setup {
        host,
        region: var("AWS_REGION")?,
        access_key: var("AWS_ACCESS_KEY_ID")?,
        secret_key: var("AWS_SECRET_ACCESS_KEY")?,
        key: key.clone(),
        table: table.clone(),
        command: command.split_whitespace().map(str::to_string).collect(),
    })
}

fn main() -> ExitCode {
    let setup = match setup() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench_floor: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&setup) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bench_floor: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(s: &Setup) -> Result<u8, String> {
    let stream = TcpStream::connect(&s.host).map_err(|e| format!("connect {}: {e}", s.host))?;
    // As the SDK does: a request written in pieces must not wait for an ACK.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = Conn {
        reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
        writer: stream,
    };
    let now = now_ns();
    let run_id = format!("{:032x}", now as u128 * 0x9e37_79b9_7f4a_7c15);
    let owner = "bench-floor";
    // The acquire lock-exec sends (src/lock/dynamo.rs), values filled in the same way.
    let acquire = format!(
        concat!(
            r##"{{"TableName":"{table}","Key":{{"key":{{"S":"{key}"}}}},"ReturnValues":"ALL_NEW","##,
            r##""UpdateExpression":"SET #owner = :owner, #run = :run, #acquired = :now, #expire = :expire, #deadline = :deadline, #ttl = :ttl REMOVE #released, #revoked, #cluster, #slot ADD #fence :one","##,
            r##""ConditionExpression":"(attribute_not_exists(#key) OR attribute_not_exists(#expire) OR NOT attribute_type(#expire, :type_n) OR #expire < :now) AND (attribute_not_exists(#fence) OR (attribute_type(#fence, :type_n) AND #fence >= :zero AND #fence < :fence_max))","##,
            r##""ExpressionAttributeNames":{{"#revoked":"revoked","#released":"released","#owner":"owner","#ttl":"ttl","#key":"key","#fence":"fence","#acquired":"acquired","#run":"run","#expire":"expire","#deadline":"deadline","#slot":"slot","#cluster":"cluster"}},"##,
            r##""ExpressionAttributeValues":{{":owner":{{"S":"{owner}"}},":now":{{"N":"{now}"}},":one":{{"N":"1"}},":run":{{"S":"{run}"}},":zero":{{"N":"0"}},":ttl":{{"N":"{ttl}"}},":fence_max":{{"N":"9007199254740992"}},":expire":{{"N":"{expire}"}},":deadline":{{"N":"{deadline}"}},":type_n":{{"S":"N"}}}},"##,
            r##""ReturnValuesOnConditionCheckFailure":"ALL_OLD"}}"##
        ),
        table = s.table,
        key = s.key,
        owner = owner,
        now = now,
        run = run_id,
        ttl = now / 1_000_000_000 + 2 * 86_400,
        expire = now + 30_000_000_000,
        deadline = now + 86_400_000_000_000,
    );
    let answer = conn.request(s, &acquire)?;
    let fence = fence_of(&answer).ok_or_else(|| format!("no fence in the answer: {answer}"))?;

    let code = match Command::new(&s.command[0]).args(&s.command[1..]).status() {
        Ok(status) => status.code().unwrap_or(1) as u8,
        Err(e) => {
            eprintln!("bench_floor: {}: {e}", s.command[0]);
            127
        }
    };

    let now = now_ns();
    let release = format!(
        concat!(
            r##"{{"TableName":"{table}","Key":{{"key":{{"S":"{key}"}}}},"##,
            r##""UpdateExpression":"SET #expire = :expire, #released = :now REMOVE #run","##,
            r##""ConditionExpression":"#run = :run AND #fence = :fence AND #owner = :owner","##,
            r##""ExpressionAttributeNames":{{"#expire":"expire","#run":"run","#released":"released","#fence":"fence","#owner":"owner"}},"##,
            r##""ExpressionAttributeValues":{{":expire":{{"N":"{now}"}},":run":{{"S":"{run}"}},":fence":{{"N":"{fence}"}},":owner":{{"S":"{owner}"}},":now":{{"N":"{now}"}}}}}}"##
        ),
        table = s.table,
        key = s.key,
        now = now,
        run = run_id,
        fence = fence,
        owner = owner,
    );
    conn.request(s, &release)?;
    Ok(code)
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Sends one signed UpdateItem and returns the body of its 200 answer.
    fn request(&mut self, s: &Setup, body: &str) -> Result<String, String> {
        let target = "DynamoDB_20120810.UpdateItem";
        let (date, auth) = sign(s, target, body);
        let head = format!(
            "POST / HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-amz-json-1.0\r\n\
             x-amz-target: {target}\r\nx-amz-date: {date}\r\nauthorization: {auth}\r\n\
             content-length: {len}\r\n\r\n",
            host = s.host,
            len = body.len(),
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        self.writer.write_all(&out).map_err(|e| e.to_string())?;

        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let status = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut length = 0;
        loop {
            line.clear();
            self.reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| "bad content-length")?;
                }
            }
        }
        let mut answer = vec![0; length];
        self.reader
            .read_exact(&mut answer)
            .map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if status != "200" {
            return Err(format!("HTTP {status}: {answer}"));
        }
        Ok(answer)
    }
}

/// The fence the acquire wrote, from `"fence":{"N":"7"}` in the answer.
fn fence_of(answer: &str) -> Option<u64> {
    let rest = answer.split("\"fence\":{\"N\":\"").nth(1)?;
    rest.split('"').next()?.parse().ok()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// SigV4 for one request: the `x-amz-date` value and the `authorization` header, signing
/// the same headers the SDK signs (less its user-agent).
fn sign(s: &Setup, target: &str, body: &str) -> (String, String) {
    let secs = now_ns() / 1_000_000_000;
    let (y, mo, d) = civil(secs / 86_400);
    let t = secs % 86_400;
    let date = format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    let day = &date[..8];
    let signed = "content-length;content-type;host;x-amz-date;x-amz-target";
    let canonical = format!(
        "POST\n/\n\ncontent-length:{}\ncontent-type:application/x-amz-json-1.0\nhost:{}\n\
         x-amz-date:{date}\nx-amz-target:{target}\n\n{signed}\n{}",
        body.len(),
        s.host,
        hex(&Sha256::digest(body.as_bytes())),
    );
    let scope = format!("{day}/{}/dynamodb/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", s.secret_key).as_bytes(), day);
    for part in [s.region.as_str(), "dynamodb", "aws4_request"] {
        key = hmac(&key, part);
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
        s.access_key,
        hex(&hmac(&key, &to_sign)),
    );
    (date, auth)
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}
