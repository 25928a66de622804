#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

/// Every SQLite file's write lock in this process, by [`file_identity`].
static WRITE_LOCKS: LazyLock<Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One path per SQLite file, however it is reached (relative, through a
/// symlink, with `..`): the key for state shared by everything in this
/// process that uses the file. Through its directory when the file does not
/// exist yet; the path itself when neither can be resolved.
pub fn file_identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .map(|dir| dir.join(name)),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        })
        .unwrap_or_else(|_| path.to_owned())
}

/// The one write lock of this process on the SQLite file at `path`, shared
/// by every store and queue engine that writes to it (see the crate docs).
/// The lock lives as long as someone holds it; a later call for the same
/// file after every holder is gone makes a new one.
pub fn write_lock(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    let key = file_identity(path);
    let mut locks = WRITE_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    locks.retain(|_, lock| lock.strong_count() > 0);
    if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(key, Arc::downgrade(&lock));
    lock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_to_name_a_file_gets_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("byok.db");
        let other = dir.path().join("other.db");
        // Before the file exists: through its directory.
        let before = write_lock(&file);
        std::fs::write(&file, b"").unwrap();
        let dotted = dir.path().join("sub").join("..").join("byok.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for path in [&file, &dotted, &link] {
            assert!(Arc::ptr_eq(&before, &write_lock(path)), "{path:?}");
        }
        assert!(!Arc::ptr_eq(&before, &write_lock(&other)));
        assert_eq!(file_identity(&link), file_identity(&file));
    }
}
