//! Building the DynamoDB client: region, endpoint, credentials, timeouts, retries and TLS.
//!
//! The SDK's defaults are wrong for a lock: requests have no read timeout (a hung renewal
//! would hide a lapsing lease) and, with no region or credentials configured, the chain
//! stalls for seconds probing instance metadata. Here every attempt has a timeout, and the
//! metadata client gets short timeouts and a single attempt.
//!
//! Every AWS client lock-exec builds (DynamoDB, and the credential chain's STS and
//! metadata clients) shares one [`HttpClient`], [`SchemeClient`]: the SDK's default client
//! reads and parses the CA roots when a client is built, whatever the endpoint's scheme
//! (about a quarter of a run's CPU time, and more when SSL_CERT_DIR is set), and the
//! credential chain builds an STS client even when no web identity is configured.
//! [`SchemeClient`] sends `http://` requests over plain TCP and builds the TLS side, and
//! reads the roots, on the first `https://` request, once per process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::imds;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::{
    ConfigBag, ProvideCredentials, RuntimeComponents, RuntimeComponentsBuilder,
    SharedCredentialsProvider,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

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
    let http = SchemeClient::new();
    // The credential chain and the metadata client use the same HTTP client, so none of
    // them builds the SDK's default one (which would read the CA roots at once).
    let provider = ProviderConfig::default().with_http_client(http.clone());
    let imds = imds::Client::builder()
        .configure(&provider)
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

    // The SDK's default chain tries the environment first and stops there when it has keys;
    // only then is the rest (profile, web identity with its STS client, container and
    // metadata providers) worth building. Asking the environment provider itself keeps its
    // exact rules (blank values, SECRET_ACCESS_KEY).
    let env = EnvironmentVariableCredentialsProvider::new();
    let credentials = if env.provide_credentials().await.is_ok() {
        SharedCredentialsProvider::new(env)
    } else {
        SharedCredentialsProvider::new(
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .configure(provider)
                .region(region.clone())
                .imds_client(imds)
                .build()
                .await,
        )
    };

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
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

/// The HTTP client of every AWS client: plain HTTP for `http://` URIs, TLS for `https://`
/// ones, whose connector (and CA roots) is built on the first such request.
#[derive(Debug, Clone)]
struct SchemeClient {
    /// The SDK's own connector without TLS (hyper over TCP, with its timeouts and pool).
    plain: SharedHttpClient,
    /// The SDK's TLS client, built once, on the first `https://` request.
    tls: Arc<OnceLock<Result<SharedHttpClient, TlsSetupError>>>,
}

impl SchemeClient {
    fn new() -> Self {
        SchemeClient {
            plain: aws_smithy_http_client::Builder::new().build_http(),
            tls: Arc::default(),
        }
    }

    /// The TLS client, built (and the CA roots read) by the first caller.
    fn tls(&self) -> Result<&SharedHttpClient, &TlsSetupError> {
        self.tls
            .get_or_init(|| {
                let roots = roots()?;
                let tls = TlsContext::builder()
                    .with_trust_store(
                        TrustStore::empty()
                            .with_native_roots(false)
                            .with_pem_certificate(roots),
                    )
                    .build()
                    .map_err(|e| TlsSetupError::Context(e.to_string()))?;
                Ok(aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                    .tls_context(tls)
                    .build_https())
            })
            .as_ref()
    }
}

impl HttpClient for SchemeClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(SchemeConnector {
            plain: self.plain.http_connector(settings, components),
            client: self.clone(),
            settings: settings.clone(),
            components: components.clone(),
        })
    }

    /// Checks the plain side only: the SDK's default client builds its TLS connector here,
    /// which is what reads the CA roots for every client at start-up.
    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.plain
            .validate_base_client_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.plain.connector_metadata()
    }
}

/// One request's connector: the plain one, or the TLS one for `https://`.
#[derive(Debug)]
struct SchemeConnector {
    plain: SharedHttpConnector,
    client: SchemeClient,
    /// Timeouts for the TLS connector, which the SDK keeps one of per setting.
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
}

impl HttpConnector for SchemeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if !is_https(request.uri()) {
            return self.plain.call(request);
        }
        match self.client.tls() {
            Ok(tls) => tls
                .http_connector(&self.settings, &self.components)
                .call(request),
            // Not retried: a missing bundle does not appear between two attempts.
            Err(e) => HttpConnectorFuture::ready(Err(ConnectorError::user(Box::new(e.clone())))),
        }
    }
}

/// Whether a request goes over TLS (URI schemes are case-insensitive).
fn is_https(uri: &str) -> bool {
    uri.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Why no TLS connection can be made.
#[derive(Debug, Clone, thiserror::Error)]
enum TlsSetupError {
    /// The CA certificate bundle could not be read.
    #[error("cannot read the CA certificate bundle {}: {detail} (set SSL_CERT_FILE to a readable bundle)", path.display())]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The SDK refused the TLS settings.
    #[error("cannot set up TLS: {0}")]
    Context(String),
}

/// The trusted roots as one PEM text, read once per process (by the first TLS connector):
/// SSL_CERT_FILE and SSL_CERT_DIR when either is set; else the system's bundle file; else,
/// in an image without one, the bundle `lock-exec install` put next to the binary; else
/// whatever the usual places hold. Certificates that rustls cannot use as roots are
/// dropped here: the SDK panics on them.
fn roots() -> Result<Vec<u8>, TlsSetupError> {
    let found = match root_source() {
        RootSource::Environment | RootSource::Probe => rustls_native_certs::load_native_certs(),
        RootSource::File(path) => {
            // A bundle chosen here must be readable: say so rather than fail every handshake.
            let pem = std::fs::read(&path).map_err(|e| TlsSetupError::Bundle {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let mut found = rustls_native_certs::CertificateResult::default();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                match cert {
                    Ok(cert) => found.certs.push(cert),
                    Err(e) => {
                        tracing::warn!(bundle = %path.display(), error = %e, "CA bundle read up to a malformed certificate");
                        break;
                    }
                }
            }
            found
        }
    };
    if !found.errors.is_empty() {
        tracing::warn!(errors = ?found.errors, "some CA certificates could not be loaded");
    }
    let usable = usable_roots(found.certs);
    if usable.is_empty() {
        tracing::warn!("no CA certificates found: TLS connections will fail (set SSL_CERT_FILE)");
    }
    Ok(pem(&usable))
}

/// Where the roots come from.
#[derive(Debug, PartialEq)]
enum RootSource {
    /// SSL_CERT_FILE or SSL_CERT_DIR: the user's choice, read as OpenSSL would.
    Environment,
    /// One bundle file: the system's, or the one next to the binary.
    File(PathBuf),
    /// Neither: the usual places, as OpenSSL would look.
    Probe,
}

fn root_source() -> RootSource {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return RootSource::Environment;
    }
    if let Some(system) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        // The bundle alone: the hashed directory next to it holds the same roots again,
        // one file each.
        return RootSource::File(system.to_path_buf());
    }
    match beside_binary() {
        Some(bundle) => RootSource::File(bundle),
        None => RootSource::Probe,
    }
}

/// The roots rustls can use as trust anchors.
fn usable_roots(mut certs: Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
    certs.retain(|cert| rustls::RootCertStore::empty().add(cert.clone()).is_ok());
    certs
}

/// Certificates as PEM, the only form the SDK's trust store takes.
fn pem(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for cert in certs {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let encoded = aws_smithy_types::base64::encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    out
}

/// System CA bundle files (Debian/Ubuntu/Alpine, RHEL/Fedora, others).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The CA bundle `lock-exec install` puts next to the binary, for job images without one
/// (busybox, scratch).
fn beside_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()?
        .parent()?
        .join("ca-certificates.crt");
    beside.is_file().then_some(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed root made with openssl for these tests (valid until 2126).
    const ROOT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBnTCCAUOgAwIBAgIUXh8xsPp6ruWZ3AT5UbnXtS/4PigwCgYIKoZIzj0EAwIw\n\
IzEhMB8GA1UEAwwYbG9jay1leGVjIHVuaXQgdGVzdCByb290MCAXDTI2MTEzMDIz\n\
NTIxN1oYDzIxMjYxMTA2MjM1MjE3WjAjMSEwHwYDVQQDDBhsb2NrLWV4ZWMgdW5p\n\
dCB0ZXN0IHJvb3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASIDRSgcbhoCyds\n\
XWKVgyATpgjU9g67DBh5Qn0if4NSVBAaWVnTHwDwWZUytm0GQtaH5BhDhTlfu+tf\n\
sA9X9HBFo1MwUTAdBgNVHQ4EFgQUdm5KihuOolOdto3EU6EXT8kyS2swHwYDVR0j\n\
BBgwFoAUdm5KihuOolOdto3EU6EXT8kyS2swDwYDVR0TAQH/BAUwAwEB/zAKBggq\n\
hkjOPQQDAgNIADBFAiEA52A72sCL6t767X9MIQvQAOnNgrwhJdjBe6da2aneDvcC\n\
IBsAhjPIzL6DT5LDnK8tBWNH57676t1cZpPKmpt7aLyU\n\
-----END CERTIFICATE-----\n";

    fn parse(pem: &[u8]) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn pem_gives_back_the_same_certificates() {
        let certs = parse(ROOT.as_bytes());
        assert_eq!(certs.len(), 1);
        assert_eq!(parse(&pem(&certs)), certs);
        assert_eq!(parse(&pem(&[certs[0].clone(), certs[0].clone()])).len(), 2);
    }

    #[test]
    fn certificates_rustls_cannot_use_are_dropped_before_the_sdk_sees_them() {
        // The SDK's trust store panics on a certificate rustls cannot parse.
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let root = parse(ROOT.as_bytes()).remove(0);
        assert_eq!(usable_roots(vec![garbage, root.clone()]), vec![root]);
        assert!(usable_roots(Vec::new()).is_empty());
    }

    #[test]
    fn only_https_uris_take_the_tls_side() {
        assert!(is_https("https://dynamodb.us-east-1.amazonaws.com/"));
        assert!(is_https("HTTPS://localhost:8000"));
        assert!(!is_https("http://127.0.0.1:8000/"));
        assert!(!is_https("http://169.254.169.254/latest/api/token"));
        assert!(!is_https("https:/"));
        assert!(!is_https(""));
    }

    #[test]
    fn an_unreadable_bundle_is_reported_as_a_certificate_problem() {
        // src/lock/dynamo.rs classifies errors that mention a certificate as TLS errors.
        let e = TlsSetupError::Bundle {
            path: "/x/ca-certificates.crt".into(),
            detail: "Permission denied".into(),
        };
        assert!(e.to_string().contains("certificate"), "{e}");
    }
}
