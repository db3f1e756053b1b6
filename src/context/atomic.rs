//! Atomic file rewrite: a crash or a full disk leaves the old file or the new one, never half.
//!
//! The sequence is the classic one (afterburn's `write_file_atomic`), done relative to an open
//! directory (`openat`, `renameat`) so that the directory written in is the one that was
//! opened, whatever its path names meanwhile: a temporary file in that directory, created with
//! `O_EXCL | O_NOFOLLOW` under an unpredictable name and mode 0600; the bytes; the original's
//! owner and mode; `fsync`; `rename` over the original; `fsync` of the directory so the rename
//! itself is durable. On any error before the rename the temporary file is removed and the
//! original is untouched.
//!
//! [`write_atomic`] takes a path (the agent's own state files): a symlink is followed, the file
//! it points to is replaced and the link stays. Context files are rewritten through
//! `held::Held`, which never follows a link and checks that the file is still the one read.
//! A file that does not exist yet is created with mode 0600 (state files may hold a PIN).
//! Other hard links to the original keep the old content (the new file is a new inode).
//! Extended attributes, ACLs and SELinux labels of the original are not copied.
//!
//! The temporary file guard is our own rather than `tempfile`'s: `tempfile` creates by path,
//! and here every step must be relative to the held directory descriptor.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

/// Mode of a file [`write_atomic`] creates; also the temporary file's mode until it is filled.
const NEW_FILE_MODE: u32 = 0o600;
/// How many names to try when a temporary name is taken (it never should be).
const NAME_TRIES: usize = 8;
/// How much of the target's name goes into the temporary name, which must stay under the
/// 255-byte limit of common file systems.
const NAME_PREFIX_LEN: usize = 200;

/// The owner and mode a replacement takes over from the file it replaces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Original {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
}

impl Original {
    pub(crate) fn of(stat: &stat::FileStat) -> Self {
        Original {
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode & 0o7777,
        }
    }
}

/// Replaces the content of `path` with `bytes` atomically, keeping its mode and owner. Every
/// error names the path it is about.
///
/// An error while syncing the directory after the rename means the new content is in place but
/// may not survive a crash; the message says so.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, |file, bytes| file.write_all(bytes))
}

/// [`write_atomic`] with the writing step given, so tests can inject a failing disk.
pub(crate) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let target = resolve(path)?;
    let file_name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write {}: not a file name", path.display()),
        )
    })?;
    // The directory by its real path: a symlinked directory (a state directory that is a link
    // elsewhere) is written where it leads, and `open_dir` refuses a link in the last
    // component only to guard the held-directory path of context files.
    let parent = parent_of(&target);
    let dir_path =
        fs::canonicalize(&parent).map_err(|e| with_context(e, "failed to resolve", &parent))?;
    let dir = open_dir(&dir_path).map_err(|e| with_context(e, "failed to open", &dir_path))?;
    let original = match stat::fstatat(&dir, file_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_regular(&st) => Some(Original::of(&st)),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot replace {}: not a regular file", target.display()),
            ))
        }
        Err(Errno::ENOENT) => None,
        Err(e) => return Err(with_context(e.into(), "failed to inspect", &target)),
    };
    replace_in(dir.as_fd(), &dir_path, file_name, original, bytes, write)
}

/// The directory part of `path`, `.` for a bare name.
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens `dir` to work relative to it; its last component must not be a symlink.
pub(crate) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

pub(crate) fn is_regular(stat: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// The write sequence of the module doc, in the open directory `dir` (whose path `dir_path` is
/// only for messages): `name` there becomes `bytes`, with the owner and mode of `original`,
/// or mode 0600 when there was none.
pub(crate) fn replace_in(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    original: Option<Original>,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let target = dir_path.join(name);
    let (mut file, temp) = create_temp(dir, dir_path, name)?;
    write(&mut file, bytes).map_err(|e| with_context(e, "failed to write", &temp.path))?;
    if let Some(original) = original {
        let current = file
            .metadata()
            .map_err(|e| with_context(e, "failed to inspect", &temp.path))?;
        if (current.uid(), current.gid()) != (original.uid, original.gid) {
            std::os::unix::fs::fchown(&file, Some(original.uid), Some(original.gid))
                .map_err(|e| with_context(e, "failed to set the owner of", &temp.path))?;
        }
        // After the chown, which may clear set-id bits.
        file.set_permissions(Permissions::from_mode(original.mode))
            .map_err(|e| with_context(e, "failed to set the mode of", &temp.path))?;
    }
    file.sync_all()
        .map_err(|e| with_context(e, "failed to sync", &temp.path))?;
    drop(file);
    fcntl::renameat(dir, temp.name.as_os_str(), dir, name).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "failed to rename {} to {}: {e}",
                temp.path.display(),
                target.display()
            ),
        )
    })?;
    temp.disarm();
    unistd::fsync(dir).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "replaced {} but failed to sync its directory, the change may not survive a crash: {e}",
                target.display()
            ),
        )
    })
}

/// The file to replace: `path`, or what it points to when it is a symlink.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|e| with_context(e, "failed to follow", path))
        }
        Ok(_) => Ok(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(e) => Err(with_context(e, "failed to inspect", path)),
    }
}

/// Creates `.<name>.<random>.tmp` beside the target. The leading dot keeps it out of globs
/// such as cloud-init's `part-*` while it exists.
fn create_temp<'d>(
    dir: BorrowedFd<'d>,
    dir_path: &Path,
    file_name: &OsStr,
) -> io::Result<(File, TempFile<'d>)> {
    let mut last_error = None;
    for _ in 0..NAME_TRIES {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| {
            io::Error::other(format!("no random source for a temporary file name: {e}"))
        })?;
        let mut name = OsString::from(".");
        let prefix = &file_name.as_bytes()[..file_name.len().min(NAME_PREFIX_LEN)];
        name.push(OsStr::from_bytes(prefix));
        name.push(format!(".{:016x}.tmp", u64::from_ne_bytes(random)));
        let path = dir_path.join(&name);
        match fcntl::openat(
            dir,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(NEW_FILE_MODE),
        ) {
            Ok(fd) => return Ok((File::from(fd), TempFile { dir, name, path })),
            Err(Errno::EEXIST) => last_error = Some(io::Error::from(Errno::EEXIST)),
            Err(e) => return Err(with_context(e.into(), "failed to create", &path)),
        }
    }
    let e = last_error.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into());
    Err(with_context(
        e,
        "failed to create a temporary file in",
        dir_path,
    ))
}

/// A temporary file that is removed when dropped, unless it was renamed into place.
struct TempFile<'d> {
    /// The directory it is in.
    dir: BorrowedFd<'d>,
    /// Its name there.
    name: OsString,
    /// Its path, for messages.
    path: PathBuf,
}

impl TempFile<'_> {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        // Best effort: the error that got us here is the one worth reporting.
        let _ = unistd::unlinkat(self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
}

pub(crate) fn with_context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(names(dir.path()), ["user-data"]);
    }

    #[test]
    fn writes_through_a_symlinked_directory() {
        // A state directory that is a link elsewhere (`/var/lib/clusterctx -> /srv/...`).
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link.join("state.json"), b"{}").unwrap();
        assert_eq!(fs::read(real.join("state.json")).unwrap(), b"{}");
        assert_eq!(names(&real), ["state.json"]);
    }

    #[test]
    fn keeps_an_executable_script_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-001");
        fs::write(&path, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o700)).unwrap();
        write_atomic(&path, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn keeps_the_owner_when_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to give a file away");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        std::os::unix::fs::chown(&path, Some(4321), Some(8765)).unwrap();
        write_atomic(&path, b"new").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    }

    #[test]
    fn creates_a_missing_file_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn follows_a_symlink_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn a_failing_write_leaves_the_original_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        fs::write(&path, b"original").unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let err = write_atomic_with(&path, b"replacement", |file, bytes| {
            file.write_all(&bytes[..4])?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), None, "context was added");
        assert_eq!(
            err.kind(),
            io::Error::from_raw_os_error(libc::ENOSPC).kind()
        );
        assert!(err.to_string().contains("failed to write"), "{err}");
        assert!(err.to_string().contains(".user-data."), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(names(dir.path()), ["user-data"]);
    }

    #[test]
    fn a_name_at_the_length_limit_still_gets_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n".repeat(255));
        fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()).len(), 1);
    }

    #[test]
    fn errors_name_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x/user-data"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(dir.path(), b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
