//! `file://DIR`: the archive in a local or mounted (NFS) directory.
//!
//! An object is the file `DIR/{topic}/{partition:06}/{first:020}.avro`. Its
//! metadata lives in the file's own Avro header (fixed-width summary fields,
//! see `avro`), so object and metadata appear together, atomically.
//!
//! Create-only commit: the finished spool file is hard-linked to the final
//! name (`link` fails if the name exists, on local filesystems and NFS alike);
//! across filesystems it is first copied to a hidden temporary name in the
//! same folder and fsynced, then linked. The folder is fsynced after the link.
//! An existing object is never replaced, truncated or written to.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};
use crate::format::avro;
use crate::format::names::{self, ObjectKey};

/// A store in a directory.
pub struct FileStore {
    root: PathBuf,
    /// This host's name, in the names of temporary copies.
    host: String,
    /// Partition folders whose stale temporary copies were removed.
    swept: Mutex<HashSet<PathBuf>>,
}

/// A temporary copy of another host older than this is taken as left
/// behind by a crash (a copy in progress is written to continuously).
const FOREIGN_TEMP_LIFETIME: Duration = Duration::from_secs(3600);

/// The name of a temporary copy: `.{object}.{host}.{pid}.{nanos}.tmp`.
fn temp_name(object: &str, host: &str, pid: u32, nanos: u32) -> String {
    format!(".{object}.{host}.{pid}.{nanos}.tmp")
}

/// The host and process of a temporary copy's name, if it is one.
fn temp_owner(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = rest.rsplitn(3, '.');
    let _nanos: u32 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let (object, host) = parts.next()?.rsplit_once('.')?;
    names::parse_file_name(object)?;
    Some((host, pid))
}

/// This host's name (`/proc/sys/kernel/hostname`), for temporary copies.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['.', '/'], "-"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Network filesystems may time out or go stale for a while; local errors
/// such as a full disk or a permission problem need an operator.
fn io_error(what: impl Into<String>, e: io::Error) -> StoreError {
    match e.kind() {
        io::ErrorKind::TimedOut
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::StaleNetworkFileHandle => StoreError::Unavailable {
            what: what.into(),
            why: e.to_string(),
        },
        _ => StoreError::Io {
            what: what.into(),
            cause: e,
        },
    }
}

/// fsyncs a directory so that the names created in it survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// CRC32C and length of a whole file.
fn checksum(path: &Path) -> io::Result<(u32, u64)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((crc, len));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

impl FileStore {
    /// Opens (creating if needed) the archive directory and checks that it
    /// is writable, so a misconfiguration is reported before any work.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let what = || format!("archive directory {}", root.display());
        fs::create_dir_all(root).map_err(|cause| StoreError::Io {
            what: format!("cannot create {}", what()),
            cause,
        })?;
        let probe = root.join(format!(".kafka-store-probe-{}", std::process::id()));
        File::create(&probe)
            .and_then(|f| f.sync_all())
            .map_err(|cause| StoreError::Io {
                what: format!("{} is not writable", what()),
                cause,
            })?;
        let _ = fs::remove_file(&probe);
        Ok(FileStore {
            root: root.to_path_buf(),
            host: host_name(),
            swept: Mutex::new(HashSet::new()),
        })
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }

    /// Creates the partition folder, fsyncing every folder it had to create.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        let mut d = dir;
        while let Some(parent) = d.parent() {
            sync_dir(parent)?;
            if parent == self.root {
                break;
            }
            d = parent;
        }
        Ok(())
    }

    /// Decides what an existing object means for our upload.
    fn compare(&self, upload: &Upload, dest: &Path) -> Result<PutOutcome, StoreError> {
        let what = || format!("existing object {}", self.object_url(upload.key));
        let (crc, len) =
            checksum(dest).map_err(|e| io_error(format!("cannot read {}", what()), e))?;
        if crc == upload.crc32c && len == upload.size {
            return Ok(PutOutcome::Identical);
        }
        match self.head(upload.key)? {
            Some(mut info) => {
                info.crc32c = Some(crc);
                Ok(PutOutcome::Conflict(info))
            }
            None => Err(StoreError::Unavailable {
                what: what(),
                why: "vanished while being compared".into(),
            }),
        }
    }

    /// Removes the temporary copies a crash left in `dir`: this host's of a
    /// process that is gone (or of this one's pid, which a dead process
    /// had), other hosts' once they are an hour old. Each folder is swept
    /// once per process: when the partition is taken, or before its first
    /// copy.
    fn sweep(&self, dir: &Path) {
        if !self
            .swept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf())
        {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((host, pid)) = name.to_str().and_then(temp_owner) else {
                continue;
            };
            let stale = if host == self.host {
                pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists()
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > FOREIGN_TEMP_LIFETIME)
            };
            if stale {
                match fs::remove_file(entry.path()) {
                    Ok(()) => log::info!(
                        "removed {} (a temporary copy left by a crash)",
                        entry.path().display()
                    ),
                    Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
                }
            }
        }
    }

    /// Copies `src` to a temporary name beside `dest` and fsyncs it.
    fn copy_to_temp(&self, src: &Path, dest: &Path) -> io::Result<PathBuf> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        if let Some(dir) = dest.parent() {
            self.sweep(dir);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dest.with_file_name(temp_name(name, &self.host, std::process::id(), nanos));
        let result = (|| {
            let mut out = File::options().write(true).create_new(true).open(&tmp)?;
            io::copy(&mut File::open(src)?, &mut out)?;
            out.sync_all()
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

impl Store for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.object_path(key);
        let what = || format!("object {}", self.object_url(key));
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("cannot open {}", what()), e)),
        };
        let size = file
            .metadata()
            .map_err(|e| io_error(format!("cannot stat {}", what()), e))?
            .len();
        let not_archive = |why: String| StoreError::NotArchive {
            what: self.object_url(key),
            why,
        };
        let header = match avro::read_header(&mut BufReader::with_capacity(8192, &file)) {
            Ok(h) => h,
            Err(avro::AvroError::Io(e)) => {
                return Err(io_error(format!("cannot read {}", what()), e));
            }
            Err(e) => return Err(not_archive(e.to_string())),
        };
        if header.first_offset != key.first
            || header.partition != key.partition
            || *header.topic != *key.topic
        {
            return Err(not_archive(format!(
                "its header names {}/{} offset {}",
                header.topic, header.partition, header.first_offset
            )));
        }
        // A file cut short (a copy interrupted, a disk that lost its tail)
        // does not end with the sync marker every block ends with.
        let mut tail = [0u8; 16];
        let ends_well = size >= header.header_bytes
            && file.seek(SeekFrom::End(-16)).is_ok()
            && file.read_exact(&mut tail).is_ok()
            && tail == header.sync;
        if !ends_well {
            return Err(not_archive(format!(
                "truncated: {size} bytes that do not end with its sync marker"
            )));
        }
        Ok(Some(ObjectInfo {
            summary: header.summary,
            size,
            crc32c: None,
            md5: None,
            format_version: header.format_version,
            topic_id: header.topic_id,
            skipped: header.skipped,
        }))
    }

    fn put(&self, upload: &Upload) -> Result<PutOutcome, StoreError> {
        let dest = self.object_path(upload.key);
        let dir = dest
            .parent()
            .expect("object paths have a folder")
            .to_path_buf();
        let what = || format!("cannot store object {}", self.object_url(upload.key));
        self.ensure_dir(&dir).map_err(|e| io_error(what(), e))?;
        let linked = match fs::hard_link(upload.path, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return self.compare(upload, &dest);
            }
            // Spool and archive on different filesystems (EXDEV), or a
            // filesystem without hard links to foreign files: copy first.
            Err(e)
                if e.kind() == io::ErrorKind::CrossesDevices
                    || e.kind() == io::ErrorKind::PermissionDenied =>
            {
                let tmp = self
                    .copy_to_temp(upload.path, &dest)
                    .map_err(|e| io_error(what(), e))?;
                let result = fs::hard_link(&tmp, &dest);
                let _ = fs::remove_file(&tmp);
                match result {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return self.compare(upload, &dest);
                    }
                    other => other,
                }
            }
            Err(e) => Err(e),
        };
        linked
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| io_error(what(), e))?;
        Ok(PutOutcome::Created)
    }

    fn list(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError> {
        let dir = self.root.join(names::partition_dir(topic, partition));
        let mut firsts: Vec<i64> = read_names(&dir)
            .map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?
            .iter()
            .filter_map(|n| names::parse_file_name(n))
            .collect();
        firsts.sort_unstable();
        Ok(firsts)
    }

    fn topics(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = read_names(&self.root)
            .map_err(|e| io_error(format!("cannot list {}", self.root.display()), e))?
            .into_iter()
            // Topic names may start with '.'; a folder whose name no topic
            // can have (`lost+found` at the root of a filesystem) is not
            // one.
            .filter(|n| names::is_topic_name(n) && self.root.join(n).is_dir())
            .collect();
        out.sort();
        Ok(out)
    }

    fn tidy(&self, topic: &str, partition: i32) {
        self.sweep(&self.root.join(names::partition_dir(topic, partition)));
    }

    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError> {
        let dir = self.root.join(topic);
        let mut out: Vec<i32> = read_names(&dir)
            .map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?
            .iter()
            .filter_map(|n| names::parse_partition_dir(n))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn open(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.object_path(key);
        File::open(&path)
            .map(|f| Box::new(BufReader::with_capacity(1 << 16, f)) as Box<dyn Read + Send>)
            .map_err(|e| io_error(format!("cannot open object {}", self.object_url(key)), e))
    }
}

/// File names in a folder; a missing folder has none.
fn read_names(dir: &Path) -> io::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_copies_name_their_host_and_process() {
        let name = temp_name("00000000000000000042.avro", "box-1", 4242, 17);
        assert_eq!(name, ".00000000000000000042.avro.box-1.4242.17.tmp");
        assert_eq!(temp_owner(&name), Some(("box-1", 4242)));
        for other in [
            "00000000000000000042.avro",
            ".lock",
            ".00000000000000000042.avro.4242.17.tmp",
            ".notes.box.1.2.tmp",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_sweep_removes_copies_of_dead_processes_and_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let folder = dir.path().join("t/000000");
        fs::create_dir_all(&folder).unwrap();
        let object = "00000000000000000000.avro";
        // pid 0 is never a process of ours; pid 1 is always alive.
        let dead = temp_name(object, &store.host, 0, 1);
        let alive = temp_name(object, &store.host, 1, 1);
        let foreign = temp_name(object, "elsewhere", 0, 1);
        for name in [object, dead.as_str(), alive.as_str(), foreign.as_str()] {
            fs::write(folder.join(name), b"x").unwrap();
        }
        store.sweep(&folder);
        let mut left: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![object.to_string(), alive, foreign];
        want.sort();
        assert_eq!(left, want);
    }
}
