//! A real small disk for full-disk tests: a tmpfs of a given size, mounted when the tests run
//! as root and skipped, with the reason printed, otherwise.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
pub struct SmallDisk {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None`, with the reason on stderr, when the tests cannot mount one here.
    pub fn mount(size: &str) -> Option<SmallDisk> {
        // Our own /proc entry belongs to our effective user.
        if fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let mount_point = dir.path().join("disk");
        fs::create_dir(&mount_point).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("clusterctx-test")
            .arg(&mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(SmallDisk {
            mount_point,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Writes `name` until the disk is full (ENOSPC), down to the last page, and returns its
    /// path.
    #[cfg(feature = "server")]
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.mount_point.join(name);
        let mut file = fs::File::create(&path).unwrap();
        for chunk in [64 * 1024, 4096, 512] {
            let block = vec![0u8; chunk];
            loop {
                match file.write_all(&block) {
                    Ok(()) => continue,
                    Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(err) => panic!("cannot fill {}: {err}", path.display()),
                }
            }
        }
        assert_eq!(
            file.write(b"x").map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOSPC)),
            "the disk still takes writes"
        );
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}
