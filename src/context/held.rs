//! A context file read now and rewritten later, maybe minutes later (after the wait for the
//! master), by root: whoever can change the path meanwhile must not be able to redirect the
//! write.
//!
//! - The directory is opened once, at the read (its path resolved then, so cloud-init's
//!   `instance` symlink works), and the rewrite happens in that open directory with
//!   `openat`/`renameat` (see `atomic`), never through the path again.
//! - The file is opened relative to it with `O_NOFOLLOW`: a symlink as a context file is
//!   refused, not followed. Only regular files are read (a FIFO would block the agent until
//!   its unit times out, a device is not user-data); the type is checked before opening and
//!   again on the open file, and the open is `O_NONBLOCK`.
//! - A directory another user can write (group- or other-writable without the sticky bit, or
//!   owned by a user other than root and the agent's own) is refused at the read: that user
//!   could swap the file at any time.
//! - Before the rewrite, the file in the held directory must still be the one read (device and
//!   inode, the file kept open so the inode cannot be reused, and still a regular file), and
//!   the path's directory must still resolve to the held one. Otherwise the rewrite is refused
//!   and nothing is written.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};

use super::atomic::{self, Original};
use super::ContextError;

/// A file's identity: (device, inode).
type Id = (libc::dev_t, libc::ino_t);

fn id_of(st: &FileStat) -> Id {
    (st.st_dev, st.st_ino)
}

/// The directory of a context file, held open from the read to the rewrite, and the file's
/// identity as read.
pub(crate) struct Held {
    /// The directory, open since the read.
    dir: OwnedFd,
    /// The directory's path as given (not resolved), to check that it still names `dir`.
    dir_path: PathBuf,
    /// The file's name in `dir`.
    name: OsString,
    /// The directory as opened.
    dir_id: Id,
    /// The file as read, kept open so that its inode number cannot be reused by another file
    /// while we wait, which would make `file_id` meaningless.
    file: File,
    /// The file's (device, inode).
    file_id: Id,
}

impl Held {
    /// Opens `path` for reading under the rules of the module doc.
    pub(crate) fn open(path: &Path) -> Result<Held, ContextError> {
        let read_error = |source: io::Error| ContextError::Read {
            path: path.to_path_buf(),
            source,
        };
        let name = path
            .file_name()
            .ok_or_else(|| {
                read_error(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a file name",
                ))
            })?
            .to_owned();
        let dir_path = atomic::parent_of(path);
        let resolved = std::fs::canonicalize(&dir_path).map_err(read_error)?;
        let dir = atomic::open_dir(&resolved).map_err(read_error)?;
        let dir_stat = stat::fstat(&dir).map_err(|e| read_error(e.into()))?;
        if let Some(why) = writable_by_others(&dir_stat) {
            return Err(ContextError::UnsafeDirectory {
                path: path.to_path_buf(),
                dir: resolved,
                why,
            });
        }
        let dir_id = id_of(&dir_stat);
        let before = stat::fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| read_error(e.into()))?;
        refuse_unless_regular(path, &before)?;
        let fd = fcntl::openat(
            &dir,
            name.as_os_str(),
            OFlag::O_RDONLY
                | OFlag::O_NONBLOCK
                | OFlag::O_NOFOLLOW
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => ContextError::NotRegular {
                path: path.to_path_buf(),
                kind: "symbolic link",
            },
            e => read_error(e.into()),
        })?;
        let opened = stat::fstat(&fd).map_err(|e| read_error(e.into()))?;
        refuse_unless_regular(path, &opened)?;
        let held = Held {
            dir,
            dir_path,
            name,
            dir_id,
            file: File::from(fd),
            file_id: id_of(&opened),
        };
        held.check_dir_path(path)?;
        Ok(held)
    }

    /// The file, open for reading.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Replaces the file with `bytes` (see `atomic`), if it is still the one read.
    pub(crate) fn rewrite(&self, path: &Path, bytes: &[u8]) -> Result<(), ContextError> {
        let now = self.unchanged(path)?;
        atomic::replace_in(
            self.dir.as_fd(),
            &self.dir_path,
            &self.name,
            Some(Original::of(&now)),
            bytes,
            io::Write::write_all,
        )
        .map_err(|source| ContextError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The file's status now, if the path's directory still is the held one and the file in
    /// it the one read.
    pub(crate) fn unchanged(&self, path: &Path) -> Result<FileStat, ContextError> {
        let swapped = |why: String| ContextError::Swapped {
            path: path.to_path_buf(),
            why,
        };
        self.check_dir_path(path)?;
        let now = match stat::fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(now) => now,
            Err(Errno::ENOENT) => return Err(swapped("it was removed".into())),
            Err(e) => {
                return Err(ContextError::Write {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        };
        if !atomic::is_regular(&now) {
            return Err(swapped(format!("it was replaced by a {}", file_kind(&now))));
        }
        if id_of(&now) != self.file_id {
            return Err(swapped("it was replaced by another file".into()));
        }
        Ok(now)
    }

    /// The path's directory must resolve to the held one.
    fn check_dir_path(&self, path: &Path) -> Result<(), ContextError> {
        match stat::stat(&self.dir_path) {
            Ok(st) if id_of(&st) == self.dir_id => Ok(()),
            Ok(_) => Err(ContextError::Swapped {
                path: path.to_path_buf(),
                why: format!(
                    "its directory {} now leads somewhere else",
                    self.dir_path.display()
                ),
            }),
            Err(e) => Err(ContextError::Swapped {
                path: path.to_path_buf(),
                why: format!(
                    "its directory {} cannot be found any more ({e})",
                    self.dir_path.display()
                ),
            }),
        }
    }
}

fn refuse_unless_regular(path: &Path, st: &FileStat) -> Result<(), ContextError> {
    if atomic::is_regular(st) {
        return Ok(());
    }
    Err(ContextError::NotRegular {
        path: path.to_path_buf(),
        kind: file_kind(st),
    })
}

fn file_kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "special file",
    }
}

/// Why a user other than root and the agent's own could change the entries of a directory
/// with this status, if one could.
fn writable_by_others(dir: &FileStat) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if dir.st_uid != me && dir.st_uid != 0 {
        return Some(format!("is owned by uid {}", dir.st_uid));
    }
    let mode = Mode::from_bits_truncate(dir.st_mode);
    if mode.intersects(Mode::S_IWGRP | Mode::S_IWOTH) && !mode.contains(Mode::S_ISVTX) {
        return Some(format!(
            "is writable by its group or by everyone (mode {:04o}) without the sticky bit",
            dir.st_mode & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextFile;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::sync::mpsc;
    use std::time::Duration;

    fn dir_with_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn rewrites_in_place_keeping_the_mode() {
        let (_dir, path) = dir_with_file(b"old");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o750)).unwrap();
        let file = ContextFile::load(&path).unwrap();
        file.rewrite(b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn a_directory_reached_through_a_symlink_is_fine() {
        // cloud-init's /var/lib/cloud/instance -> instances/<id>.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("instances/i-1");
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("cloud-config.txt"), b"old").unwrap();
        symlink("instances/i-1", dir.path().join("instance")).unwrap();
        let path = dir.path().join("instance/cloud-config.txt");
        ContextFile::load(&path).unwrap().rewrite(b"new").unwrap();
        assert_eq!(fs::read(real.join("cloud-config.txt")).unwrap(), b"new");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        let (send, receive) = mpsc::channel();
        let probe = path.clone();
        // A blocking open or read would never return: wait for the answer with a deadline.
        std::thread::spawn(move || send.send(ContextFile::load(&probe).map(|_| ())));
        let answer = receive
            .recv_timeout(Duration::from_secs(10))
            .expect("loading a FIFO blocked");
        let err = answer.unwrap_err();
        assert!(
            matches!(&err, ContextError::NotRegular { kind: "FIFO", path: p } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn devices_directories_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        for (path, kind) in [
            (Path::new("/dev/null"), "character device"),
            (dir.path(), "directory"),
            (link.as_path(), "symbolic link"),
        ] {
            let err = ContextFile::load(path).unwrap_err();
            assert!(
                matches!(&err, ContextError::NotRegular { kind: k, .. } if *k == kind),
                "{}: {err}",
                path.display()
            );
        }
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_sticky() {
        let (dir, path) = dir_with_file(b"x");
        for mode in [0o777, 0o770, 0o757] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = ContextFile::load(&path).unwrap_err();
            assert!(
                matches!(&err, ContextError::UnsafeDirectory { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("sticky"), "{err}");
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        ContextFile::load(&path).unwrap();
    }

    #[test]
    fn a_file_replaced_or_removed_after_the_read_is_not_rewritten() {
        let (dir, path) = dir_with_file(b"old");
        let file = ContextFile::load(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"theirs").unwrap();
        let err = file.rewrite(b"new").unwrap_err();
        assert!(matches!(&err, ContextError::Swapped { .. }), "{err}");
        assert!(
            err.to_string().contains("replaced by another file"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"theirs");

        fs::remove_file(&path).unwrap();
        let err = file.rewrite(b"new").unwrap_err();
        assert!(err.to_string().contains("it was removed"), "{err}");
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_moved_after_the_read_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        let path = ctx.join("user-data");
        fs::write(&path, b"old").unwrap();
        let file = ContextFile::load(&path).unwrap();
        fs::rename(&ctx, dir.path().join("moved")).unwrap();
        let err = file.rewrite(b"new").unwrap_err();
        assert!(
            err.to_string().contains("cannot be found any more"),
            "{err}"
        );
        assert_eq!(
            fs::read(dir.path().join("moved/user-data")).unwrap(),
            b"old"
        );
    }
}
