//! The spool: local files under construction and finished files waiting for
//! the store, in `spool_dir`.
//!
//! The archive is the ledger, not the spool: at start the leftovers of a
//! crash are deleted (a rebuild makes the same bytes); only upload session
//! notes (`*.session`, younger than a week) stay, so that a rebuilt file
//! resumes its upload. A lock file keeps two processes from sharing one
//! spool directory. A file under construction or waiting for the store is a
//! [`SpoolFile`], which removes itself when dropped: whether it was stored,
//! abandoned or failed, nothing is left behind.
//!
//! Owns file creation and removal only; never decides what a file holds or
//! when it closes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::format::names::ObjectKey;

const SUFFIX: &str = ".spool";
const LOCK: &str = ".lock";
/// Upload sessions (GCS) are kept across restarts for a rebuilt file to
/// resume; GCS forgets a session after a week, and so do we.
const SESSION_SUFFIX: &str = ".session";
const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A locked spool directory.
pub struct Spool {
    dir: PathBuf,
    /// Held (with an exclusive lock) for the life of the process.
    _lock: File,
}

impl Spool {
    /// Creates and locks the directory, then deletes crash leftovers.
    pub fn open(dir: &Path) -> anyhow::Result<Spool> {
        use anyhow::Context as _;
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spool directory {}", dir.display()))?;
        let lock_path = dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("spool directory {} is not writable", dir.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "spool directory {} is in use by another kafka-store process; give each process its own store.spool_dir",
                dir.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e)
                    .with_context(|| format!("cannot lock spool directory {}", dir.display()));
            }
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        let removed = spool
            .remove_leftovers(&spool.dir)
            .with_context(|| format!("cannot clean spool directory {}", dir.display()))?;
        if removed > 0 {
            log::info!(
                "removed {removed} unfinished file(s) from spool {} (they are rebuilt from kafka)",
                dir.display()
            );
        }
        Ok(spool)
    }

    /// Deletes `*.spool` files in the directory and its topic folders.
    fn remove_leftovers(&self, dir: &Path) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Topic folders (a topic's name may start with '.').
            if entry.file_type()?.is_dir() && dir == self.dir {
                removed += self.remove_leftovers(&path)?;
            } else if name.ends_with(SUFFIX) {
                fs::remove_file(&path)?;
                removed += 1;
            } else if name.ends_with(SESSION_SUFFIX) {
                let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
                if age > SESSION_LIFETIME {
                    fs::remove_file(&path)?;
                }
            }
        }
        Ok(removed)
    }

    /// Creates the spool file for the archive file `key`, built in
    /// assignment `epoch` (two epochs may build the same name).
    pub fn create(&self, key: &ObjectKey, epoch: u64) -> io::Result<(SpoolFile, File)> {
        let folder = self.dir.join(&*key.topic);
        fs::create_dir_all(&folder)?;
        let path = folder.join(format!("{}-{epoch}{SUFFIX}", stem(key)));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok((SpoolFile { path }, file))
    }

    /// Where the store notes its upload session for `key` (a GCS resumable
    /// upload): named by the object, not the build, so that a rebuilt file
    /// finds it after a restart.
    pub fn session_note(&self, key: &ObjectKey) -> PathBuf {
        self.dir
            .join(&*key.topic)
            .join(format!("{}{SESSION_SUFFIX}", stem(key)))
    }
}

/// A file in the spool, removed when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file's bytes durable (fsync through a descriptor of its
    /// own: the writer's is closed by then; Linux reports a writeback error
    /// nobody has seen yet to a descriptor opened after it, since 4.16).
    pub fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove spool file {}: {e}", self.path.display());
        }
    }
}

/// Bytes on disk of the spool's files being built or waiting for the
/// store, under `dir` (for `/metrics`; staged tails in memory are not
/// counted). Unreadable entries count as empty.
pub fn spool_bytes(dir: &Path) -> u64 {
    let files = |d: &Path| -> Vec<fs::DirEntry> {
        fs::read_dir(d).map_or(Vec::new(), |r| r.flatten().collect())
    };
    files(dir)
        .iter()
        .filter(|t| t.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|t| files(&t.path()))
        .filter(|f| f.file_name().to_string_lossy().ends_with(SUFFIX))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// What a file's spool builds and its session note are named after.
fn stem(key: &ObjectKey) -> String {
    format!("{:06}-{:020}", key.partition, key.first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::TopicPartition;

    #[test]
    fn spool_bytes_are_the_sizes_of_the_files_being_built() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool_bytes(dir.path()), 0);
        let (a, mut fa) = spool
            .create(&ObjectKey::new(&TopicPartition::new("t", 0), 0), 1)
            .unwrap();
        let (_b, mut fb) = spool
            .create(&ObjectKey::new(&TopicPartition::new("u", 1), 5), 1)
            .unwrap();
        io::Write::write_all(&mut fa, &[0; 100]).unwrap();
        io::Write::write_all(&mut fb, &[0; 23]).unwrap();
        fs::write(
            spool.session_note(&ObjectKey::new(&TopicPartition::new("t", 0), 0)),
            b"x",
        )
        .unwrap();
        assert_eq!(spool_bytes(dir.path()), 123);
        drop(a);
        assert_eq!(spool_bytes(dir.path()), 23);
    }

    #[test]
    fn a_spool_file_is_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let key = ObjectKey::new(&TopicPartition::new("t", 1), 5);
        let (file, _) = spool.create(&key, 3).unwrap();
        let path = file.path().to_path_buf();
        assert!(path.exists());
        assert_eq!(
            spool.session_note(&key),
            dir.path().join("t/000001-00000000000000000005.session")
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn leftovers_are_removed_and_a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::new(&TopicPartition::new("t", 1), 5);
        {
            let spool = Spool::open(dir.path()).unwrap();
            let (file, _) = spool.create(&key, 0).unwrap();
            assert!(file.path().exists());
            std::mem::forget(file);
            let err = Spool::open(dir.path()).err().unwrap().to_string();
            assert!(
                err.contains("in use by another kafka-store process"),
                "{err}"
            );
        }
        fs::write(dir.path().join("keep.txt"), b"not ours").unwrap();
        fs::write(
            dir.path().join("t/000001-00000000000000000005.session"),
            b"{}",
        )
        .unwrap();
        let _spool = Spool::open(dir.path()).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["000001-00000000000000000005.session"]);
        assert!(dir.path().join("keep.txt").exists());
    }
}
