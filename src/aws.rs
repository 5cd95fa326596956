//! Building the DynamoDB client: region, endpoint, credentials, timeouts and retries.
//!
//! The SDK's defaults are wrong for a lock: requests have no read timeout (a hung renewal
//! would hide a lapsing lease) and, with no region or credentials configured, the chain
//! stalls for seconds probing instance metadata. Here every attempt has a timeout, and the
//! metadata client gets short timeouts and a single attempt.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::Client;

/// Where and how to reach DynamoDB.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// `--region`; otherwise AWS_REGION, the profile, then instance metadata.
    pub region: Option<String>,
    /// `--endpoint-url`; AWS_ENDPOINT_URL(_DYNAMODB) are honoured by the SDK itself.
    pub endpoint_url: Option<String>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No region anywhere in the chain.
    #[error("no AWS region: pass --region, or set LOCK_EXEC_REGION or AWS_REGION")]
    NoRegion,
}

/// Connection set-up limit: a refused or black-holed endpoint fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-attempt limit; a slow (2 s) server still answers inside it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-operation limit across the SDK's retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
/// Instance-metadata probes: one short attempt, so a pod without IMDS fails in about a second.
const IMDS_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds the DynamoDB client, failing fast when no region can be found.
pub async fn client(opts: &AwsOptions) -> Result<Client, AwsError> {
    let imds = imds::Client::builder()
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .operation_timeout(IMDS_TIMEOUT * 3)
        .max_attempts(1)
        .build();

    let region = match &opts.region {
        Some(r) => Some(Region::new(r.clone())),
        None => {
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(ProfileFileRegionProvider::new())
                .or_else(
                    imds::region::ImdsRegionProvider::builder()
                        .imds_client(imds.clone())
                        .build(),
                )
                .region()
                .await
        }
    };
    let region = region.ok_or(AwsError::NoRegion)?;

    let credentials = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .region(region.clone())
        .imds_client(imds)
        .build()
        .await;

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Ok(Client::new(&loader.load().await))
}

/// System CA bundle files (Debian/Ubuntu/Alpine, RHEL/Fedora, others).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The bundle [`choose_ca_bundle`] selected, if any.
static CHOSEN_CA: OnceLock<PathBuf> = OnceLock::new();

/// Points the TLS stack at ONE CA bundle file through SSL_CERT_FILE, unless the user set
/// SSL_CERT_FILE or SSL_CERT_DIR:
/// - the system's bundle file when there is one: left alone, the TLS stack reads it AND
///   every file of the hashed certificate directory beside it (the same certificates
///   again), which cost about 4 ms of every run (measured, docs/performance.md);
/// - else the bundle `lock-exec install` put next to this binary, for job images without
///   any (busybox, scratch), where every request would fail with UnknownIssuer.
///
/// Call before any thread starts.
pub fn choose_ca_bundle() {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return;
    }
    let beside_binary = || {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("ca-certificates.crt")))
    };
    let Some(bundle) = SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .chain(beside_binary())
        .find(|p| p.is_file())
    else {
        return;
    };
    std::env::set_var("SSL_CERT_FILE", &bundle);
    let _ = CHOSEN_CA.set(bundle);
}

/// Whether SSL_CERT_FILE was set by [`choose_ca_bundle`] (so it is not the user's, and is
/// kept out of the command's environment).
pub fn ca_bundle_chosen() -> bool {
    CHOSEN_CA.get().is_some()
}
