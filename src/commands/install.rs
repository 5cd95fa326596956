//! `lock-exec install DIR`: copy this binary (and the CA bundle) into DIR, for images
//! without `cp`, and for job images without CA certificates.
//!
//! DIR is often a volume shared with other containers, so nothing is written through a
//! name someone else could have planted: each file is created under a fresh random name
//! with `O_EXCL|O_NOFOLLOW`, made executable through its descriptor, and renamed into
//! place (a rename replaces a symlink; it never follows one).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Error, UsageError};
use crate::exit::Outcome;

/// The CA bundle of the lock-exec image (and of Debian-like systems).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Copies the running binary to `dir/lock-exec` (and the CA bundle beside it).
pub(super) fn install(dir: &Path) -> Result<Outcome, Error> {
    if !dir.is_dir() {
        return Err(UsageError::NotADirectory(dir.to_path_buf()).into());
    }
    let fail = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::Install { what, path, source }
    };
    let dir_fd = File::open(dir).map_err(fail("open", dir))?;
    let me = std::env::current_exe().map_err(fail("find", Path::new("this binary")))?;
    copy_in(&dir_fd, dir, "lock-exec", &me, 0o755)?;
    tracing::info!(path = %dir.join("lock-exec").display(), "installed lock-exec");
    // The job image may have no CA bundle; lock-exec uses this one when it finds none.
    let bundle = Path::new(CA_BUNDLE);
    if bundle.is_file() {
        copy_in(&dir_fd, dir, "ca-certificates.crt", bundle, 0o644)?;
        tracing::info!(path = %dir.join("ca-certificates.crt").display(), "installed CA bundle");
    }
    Ok(Outcome::Done)
}

/// Copies `src` to `dir/name` with `mode`, atomically and without following links.
fn copy_in(dir_fd: &File, dir: &Path, name: &str, src: &Path, mode: u32) -> Result<(), Error> {
    let tmp = format!(".{name}.{:016x}.tmp", fastrand::u64(..));
    let tmp_path = dir.join(&tmp);
    let io = |e: nix::Error| std::io::Error::from(e);
    let fail = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::Install { what, path, source }
    };
    let fd = openat(
        dir_fd.as_fd(),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io)
    .map_err(fail("create", &tmp_path))?;
    let mut out = File::from(fd);
    let result = (|| {
        let mut input = File::open(src).map_err(fail("read", src))?;
        std::io::copy(&mut input, &mut out).map_err(fail("write", &tmp_path))?;
        fchmod(out.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(io)
            .map_err(fail("chmod", &tmp_path))?;
        out.sync_all().map_err(fail("write", &tmp_path))?;
        renameat(dir_fd.as_fd(), tmp.as_str(), dir_fd.as_fd(), name)
            .map_err(io)
            .map_err(fail("create", &dir.join(name)))
    })();
    if result.is_err() {
        let _ = unlinkat(dir_fd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}
