//! `lock-exec install DIR`: copy this binary (and the CA bundle) into DIR, for images
//! without `cp`, and for job images without CA certificates.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::Error;
use crate::exit;

/// The CA bundle of the lock-exec image (and of Debian-like systems).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Copies the running binary to `dir/lock-exec` atomically (write, then rename).
pub fn install(dir: &Path) -> Result<u8, Error> {
    let io = |what: &str, e: std::io::Error| Error::Io(format!("install: {what}: {e}"));
    if !dir.is_dir() {
        return Err(Error::Io(format!(
            "install: {} is not a directory: create it or mount a volume (e.g. an emptyDir) there",
            dir.display()
        )));
    }
    let me = std::env::current_exe().map_err(|e| io("cannot find this binary", e))?;
    let dest = dir.join("lock-exec");
    let tmp = dir.join(".lock-exec.tmp");
    fs::copy(&me, &tmp).map_err(|e| io(&format!("cannot write {}", tmp.display()), e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(|e| io("cannot make it executable", e))?;
    fs::rename(&tmp, &dest).map_err(|e| io(&format!("cannot create {}", dest.display()), e))?;
    tracing::info!(path = %dest.display(), "installed lock-exec");
    // The job image may have no CA bundle; lock-exec uses this one when it finds none.
    let bundle = Path::new(CA_BUNDLE);
    if bundle.is_file() {
        let ca = dir.join("ca-certificates.crt");
        fs::copy(bundle, &ca).map_err(|e| io(&format!("cannot write {}", ca.display()), e))?;
        tracing::info!(path = %ca.display(), "installed CA bundle");
    }
    Ok(exit::SUCCESS)
}
