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

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};
use crate::format::avro;
use crate::format::names::{self, ObjectKey};

/// A store in a directory.
pub struct FileStore {
    root: PathBuf,
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
            source: e,
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
        fs::create_dir_all(root).map_err(|source| StoreError::Io {
            what: format!("cannot create {}", what()),
            source,
        })?;
        let probe = root.join(format!(".kafka-store-probe-{}", std::process::id()));
        File::create(&probe)
            .and_then(|f| f.sync_all())
            .map_err(|source| StoreError::Io {
                what: format!("{} is not writable", what()),
                source,
            })?;
        let _ = fs::remove_file(&probe);
        Ok(FileStore {
            root: root.to_path_buf(),
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

    /// Copies `src` to a temporary name beside `dest` and fsyncs it.
    fn copy_to_temp(&self, src: &Path, dest: &Path) -> io::Result<PathBuf> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dest.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
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
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("cannot open {}", what()), e)),
        };
        let size = file
            .metadata()
            .map_err(|e| io_error(format!("cannot stat {}", what()), e))?
            .len();
        let header = match avro::read_header(&mut BufReader::with_capacity(8192, file)) {
            Ok(h) => h,
            Err(avro::AvroError::Io(e)) => {
                return Err(io_error(format!("cannot read {}", what()), e));
            }
            Err(e) => {
                return Err(StoreError::NotArchive {
                    what: what(),
                    why: format!("is not a readable archive file: {e}"),
                });
            }
        };
        if header.first_offset != key.first
            || header.partition != key.partition
            || *header.topic != *key.topic
        {
            return Err(StoreError::NotArchive {
                what: what(),
                why: format!(
                    "its header says {}/{} offset {}",
                    header.topic, header.partition, header.first_offset
                ),
            });
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
            .filter(|n| !n.starts_with('.') && self.root.join(n).is_dir())
            .collect();
        out.sort();
        Ok(out)
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
