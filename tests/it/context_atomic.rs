//! `write_atomic` on a real full disk: a tiny tmpfs, mounted when the tests run as root (they
//! are skipped otherwise). The original must survive untouched and no temporary file remain.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use clusterctx::context::write_atomic;

use crate::support::disk::SmallDisk;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn disk_full_leaves_the_original_and_no_temporary_file() {
    let Some(disk) = SmallDisk::mount("16k") else {
        return;
    };
    let path = disk.path().join("user-data");
    let original = "my_master_ip=###MASTER_IP_PLACEHOLDER###\n".repeat(50);
    fs::write(&path, &original).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();

    let too_big = vec![b'x'; 256 * 1024];
    let err = write_atomic(&path, &too_big).unwrap_err();
    assert_eq!(
        err.kind(),
        io::Error::from_raw_os_error(libc::ENOSPC).kind(),
        "{err}"
    );
    assert!(
        err.to_string().contains(&disk.path().display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), original);
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(names(disk.path()), ["user-data"]);

    // Space is back: a write that fits goes through.
    write_atomic(&path, b"my_master_ip=10.0.0.1\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"my_master_ip=10.0.0.1\n");
    assert_eq!(names(disk.path()), ["user-data"]);
}
