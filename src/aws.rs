//! Building the DynamoDB client: region, endpoint, credentials, timeouts and retries.
//!
//! The SDK's defaults are wrong for a lock: requests have no read timeout (a hung renewal
//! would hide a lapsing lease) and, with no region or credentials configured, the chain
//! stalls for seconds probing instance metadata. Here every attempt has a timeout, and the
//! metadata client gets short timeouts and a single attempt.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};

use crate::error::UsageError;

/// Where and how to reach DynamoDB.
#[derive(Debug, Clone, Default)]
pub(crate) struct AwsOptions {
    /// `--region`; otherwise AWS_REGION, the profile, then instance metadata.
    pub(crate) region: Option<String>,
    /// `--endpoint-url`; AWS_ENDPOINT_URL(_DYNAMODB) are honoured by the SDK itself.
    pub(crate) endpoint_url: Option<String>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwsError {
    /// No region anywhere in the chain.
    #[error("no AWS region: pass --region, or set LOCK_EXEC_REGION or AWS_REGION")]
    NoRegion,
    /// The CA bundle next to the binary could not be read.
    #[error("cannot read the CA bundle {}: {source} (set SSL_CERT_FILE to a readable bundle)", path.display())]
    Bundle {
        /// The bundle.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Connection set-up limit: a refused or black-holed endpoint fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-attempt limit; a slow (2 s) server still answers inside it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-operation limit across the SDK's retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
/// Instance-metadata probes: one short attempt, so a pod without IMDS fails in about a second.
const IMDS_TIMEOUT: Duration = Duration::from_millis(500);

impl AwsOptions {
    /// Checks the region and endpoint before any request: the SDK's own errors for these
    /// are pages long.
    pub(crate) fn validate(&self) -> Result<(), UsageError> {
        if let Some(region) = &self.region {
            if region.is_empty() {
                return Err(UsageError::Empty("--region (LOCK_EXEC_REGION)"));
            }
            let ok = region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && region.starts_with(|c: char| c.is_ascii_lowercase());
            if !ok {
                return Err(UsageError::Region(region.clone()));
            }
        }
        if let Some(url) = &self.endpoint_url {
            if url.is_empty() {
                return Err(UsageError::Empty("--endpoint-url (LOCK_EXEC_ENDPOINT_URL)"));
            }
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
            if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
                return Err(UsageError::Endpoint(url.clone()));
            }
        }
        Ok(())
    }
}

/// Builds the DynamoDB client, failing fast when no region can be found.
pub(crate) async fn client(opts: &AwsOptions) -> Result<Client, AwsError> {
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

    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(bundle) = fallback_bundle() {
        // Read once, here; the TLS stack parses it when it builds its first connector.
        let pem = std::fs::read(&bundle).map_err(|source| AwsError::Bundle {
            path: bundle.clone(),
            source,
        })?;
        let tls = TlsContext::builder()
            .with_trust_store(
                TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(pem),
            )
            .build()
            .map_err(|e| AwsError::Bundle {
                path: bundle,
                source: std::io::Error::other(e),
            })?;
        loader = loader.http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(tls)
                .build_https(),
        );
    }
    let mut loader = loader
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

/// The CA bundle `lock-exec install` puts next to the binary, when TLS has nothing else to
/// trust: no SSL_CERT_FILE or SSL_CERT_DIR and no system bundle (busybox or scratch job
/// images). `None` means the TLS stack's own search (the user's variables, the system's
/// bundle), which is right everywhere else.
fn fallback_bundle() -> Option<std::path::PathBuf> {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return None;
    }
    if SYSTEM_BUNDLES
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
    {
        return None;
    }
    let beside = std::env::current_exe()
        .ok()?
        .parent()?
        .join("ca-certificates.crt");
    beside.is_file().then_some(beside)
}
