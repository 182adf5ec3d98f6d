//! An encoder thread's window on the spool files it writes: a small cache
//! of open descriptors (least recently used closed first) and the staged
//! tails of the files written lately, within a byte budget.
//!
//! Bytes appended to a file stay staged in memory until the writer settles
//! them (a block is finished), the budget needs room (the least recently
//! written tail goes to disk first) or the file is finished. So the records
//! of an open block are read back for compression from memory, a few busy
//! partitions cost no disk reads, and neither memory nor descriptors grow
//! with the number of partitions that have a file open. Quiet tails (a few
//! records of a partition that is not busy) have a small share of the
//! budget of their own: thousands of them neither crowd out the open
//! blocks of the busy partitions nor make the budget resident.
//!
//! Owns descriptors and staged bytes only; what the bytes are is the
//! writer's (`format::avro`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::avro::Spooled;

/// Descriptors one encoder thread keeps open.
pub const DESCRIPTORS: usize = 8;

/// What an encoder thread may keep staged, in bytes of tail capacity.
#[derive(Clone, Copy)]
pub struct Budget {
    /// All tails together.
    pub all: usize,
    /// The quiet tails (below `QUIET_TAIL`) together.
    pub quiet: usize,
}

/// A tail with less room than this holds a few records: its partition is
/// quiet, and its bytes are the first to go to disk.
const QUIET_TAIL: usize = 64 << 10;

/// The staging budget of an encoder thread writing blocks of `block_bytes`.
/// Every busy partition keeps an open block staged between its chunks (a
/// chunk rarely ends where a block does), in a tail that grew to about a
/// block and a half: room for five or six of them, so that the partitions
/// of one encoder, written in turn, do not push each other's blocks to disk
/// and read them back (measured with room for four: twice the archive's
/// bytes written to the spool). Quiet tails share one block.
pub fn budget(block_bytes: usize) -> Budget {
    let block = block_bytes.max(1 << 20);
    Budget {
        all: 8 * block,
        quiet: block,
    }
}

/// A new tail starts with this much room (grown as needed): a header and a
/// few records.
const FIRST_ROOM: usize = 4 << 10;

/// A file the staging knows, from `adopt` to `finish` or `forget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(u64);

struct Open {
    id: FileId,
    file: File,
    used: u64,
}

/// Open descriptors, the least recently used closed first.
struct Descriptors {
    open: Vec<Open>,
    limit: usize,
    tick: u64,
}

impl Descriptors {
    fn keep(&mut self, id: FileId, file: File) {
        self.close(id);
        while self.open.len() >= self.limit {
            let oldest = (0..self.open.len())
                .min_by_key(|&i| self.open[i].used)
                .expect("not empty");
            self.open.swap_remove(oldest);
        }
        self.tick += 1;
        self.open.push(Open {
            id,
            file,
            used: self.tick,
        });
    }

    /// The descriptor of `id`, opening `path` again if it was closed.
    fn get(&mut self, id: FileId, path: &Path) -> io::Result<&mut File> {
        self.tick += 1;
        if let Some(i) = self.open.iter().position(|o| o.id == id) {
            self.open[i].used = self.tick;
            return Ok(&mut self.open[i].file);
        }
        let file = File::options().read(true).write(true).open(path)?;
        self.keep(id, file);
        Ok(&mut self.open.last_mut().expect("kept").file)
    }

    fn close(&mut self, id: FileId) {
        self.open.retain(|o| o.id != id);
    }
}

/// Bytes written at the end of one file and not yet to the file.
struct Staged {
    path: PathBuf,
    /// Where they go: the file's length on disk.
    start: u64,
    bytes: Vec<u8>,
    /// When it was last written (its key in `Staging::order`); 0 before.
    used: u64,
}

impl Staged {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

pub struct Staging {
    fds: Descriptors,
    staged: HashMap<FileId, Staged>,
    /// The staged tails by when they were last written, oldest first.
    order: BTreeMap<u64, FileId>,
    tick: u64,
    next_id: u64,
    /// Sum of the capacities of the staged tails, and of the quiet ones:
    /// within `budget` after every call.
    room: usize,
    quiet_room: usize,
    budget: Budget,
}

impl Staging {
    /// At most `descriptors` open files and `budget` staged bytes.
    pub fn new(descriptors: usize, budget: Budget) -> Self {
        Staging {
            fds: Descriptors {
                open: Vec::with_capacity(descriptors),
                limit: descriptors.max(1),
                tick: 0,
            },
            staged: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            next_id: 0,
            room: 0,
            quiet_room: 0,
            budget,
        }
    }

    /// A file just created (empty): keeps its descriptor.
    pub fn adopt(&mut self, file: File) -> FileId {
        self.next_id += 1;
        let id = FileId(self.next_id);
        self.fds.keep(id, file);
        id
    }

    /// File `id` (at `path`), as a writer sees it.
    pub fn file<'a>(&'a mut self, id: FileId, path: &'a Path) -> SpoolIo<'a> {
        SpoolIo {
            staging: self,
            id,
            path,
        }
    }

    /// Writes what is staged for file `id` and closes its descriptor: the
    /// file is finished. Not fsynced here: the uploader does that, so that
    /// the encoder goes on compressing while the disk writes.
    pub fn finish(&mut self, id: FileId) -> io::Result<()> {
        self.flush(id)?;
        self.fds.close(id);
        Ok(())
    }

    /// Forgets a file that is abandoned: its staged bytes and descriptor.
    pub fn forget(&mut self, id: FileId) {
        self.unstage(id);
        self.fds.close(id);
    }

    fn unstage(&mut self, id: FileId) -> Option<Staged> {
        let s = self.staged.remove(&id)?;
        self.order.remove(&s.used);
        self.resized(s.bytes.capacity(), 0);
        Some(s)
    }

    /// Accounts for a tail whose capacity went from `before` to `after`.
    fn resized(&mut self, before: usize, after: usize) {
        let quiet = |c: usize| if c < QUIET_TAIL { c } else { 0 };
        self.room = self.room - before + after;
        self.quiet_room = self.quiet_room - quiet(before) + quiet(after);
    }

    /// The tail to write out next while the budget is overspent: the least
    /// recently written, or of the quiet ones (the search passes at most
    /// `all / QUIET_TAIL` busy tails).
    fn over_budget(&self) -> Option<FileId> {
        if self.room > self.budget.all {
            return self.order.values().next().copied();
        }
        if self.quiet_room > self.budget.quiet {
            let quiet = |id: &&FileId| self.staged[*id].bytes.capacity() < QUIET_TAIL;
            return self.order.values().find(quiet).copied();
        }
        None
    }

    /// Writes the tail of file `id`, if any, to the file and drops it. A
    /// file removed from the spool meanwhile (abandoned) takes its bytes
    /// with it.
    fn flush(&mut self, id: FileId) -> io::Result<()> {
        let Some(s) = self.unstage(id) else {
            return Ok(());
        };
        match self.fds.get(id, &s.path) {
            Ok(file) => file.write_all_at(&s.bytes, s.start),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` at `at` into the tail of `id`, which begins at or
    /// before `at` and ends at or after it; marks it the last written and
    /// keeps the budget.
    fn write_staged(&mut self, id: FileId, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.tick += 1;
        let s = self.staged.get_mut(&id).expect("a staged tail");
        let before = s.bytes.capacity();
        let from = (at - s.start) as usize;
        let over = (s.bytes.len() - from).min(bytes.len());
        s.bytes[from..from + over].copy_from_slice(&bytes[..over]);
        let more = bytes.len() - over;
        if s.bytes.len() + more > s.bytes.capacity() {
            // Grown by half, not doubled: a tail is about one block.
            let grown = s.bytes.capacity() + s.bytes.capacity() / 2;
            s.bytes.reserve_exact(more.max(grown - s.bytes.len()));
        }
        s.bytes.extend_from_slice(&bytes[over..]);
        let after = s.bytes.capacity();
        self.order.remove(&s.used);
        s.used = self.tick;
        self.order.insert(self.tick, id);
        self.resized(before, after);
        while let Some(oldest) = self.over_budget() {
            self.flush(oldest)?;
        }
        Ok(())
    }
}

/// One spool file through its thread's staging.
pub struct SpoolIo<'a> {
    staging: &'a mut Staging,
    id: FileId,
    path: &'a Path,
}

impl Spooled for SpoolIo<'_> {
    fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let (st, id) = (&mut *self.staging, self.id);
        let fits = bytes.len() <= st.budget.all / 2;
        if let Some(s) = st.staged.get(&id) {
            if fits && at >= s.start && at <= s.end() {
                return st.write_staged(id, at, bytes);
            }
            st.flush(id)?;
        }
        let file = st.fds.get(id, self.path)?;
        if !fits || at != file.metadata()?.len() {
            return file.write_all_at(bytes, at);
        }
        let s = Staged {
            path: self.path.to_path_buf(),
            start: at,
            bytes: Vec::with_capacity(FIRST_ROOM.max(bytes.len())),
            used: 0,
        };
        st.resized(0, s.bytes.capacity());
        st.staged.insert(id, s);
        st.write_staged(id, at, bytes)
    }

    fn read_at<'b>(
        &'b mut self,
        at: u64,
        len: usize,
        buf: &'b mut Vec<u8>,
    ) -> io::Result<&'b [u8]> {
        let st = &mut *self.staging;
        let end = at + len as u64;
        let tail = st.staged.get(&self.id);
        let (start, staged_end) = tail.map_or((end, end), |s| (s.start, s.end()));
        if end > start && end > staged_end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a spool file",
            ));
        }
        if let Some(s) = tail.filter(|s| at >= s.start) {
            let from = (at - s.start) as usize;
            return Ok(&s.bytes[from..from + len]);
        }
        // The part on disk, then the part staged.
        let on_disk = (end.min(start) - at) as usize;
        buf.clear();
        buf.resize(len, 0);
        let (disk, staged) = buf.split_at_mut(on_disk);
        if let Some(s) = tail {
            staged.copy_from_slice(&s.bytes[..len - on_disk]);
        }
        st.fds.get(self.id, self.path)?.read_exact_at(disk, at)?;
        Ok(buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let (st, id) = (&mut *self.staging, self.id);
        if let Some(s) = st.staged.get_mut(&id) {
            if len >= s.start {
                s.bytes.truncate((len - s.start) as usize);
                return Ok(());
            }
            st.unstage(id);
        }
        st.fds.get(id, self.path)?.set_len(len)
    }

    fn settle(&mut self) -> io::Result<()> {
        let st = &mut *self.staging;
        let Some(s) = st.staged.get_mut(&self.id) else {
            return Ok(());
        };
        st.fds
            .get(self.id, self.path)?
            .write_all_at(&s.bytes, s.start)?;
        // The tail keeps its room for the next block.
        s.start = s.end();
        s.bytes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(dir: &Path, name: &str, staging: &mut Staging) -> (FileId, PathBuf) {
        let path = dir.join(name);
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (staging.adopt(f), path)
    }

    fn roomy() -> Budget {
        Budget {
            all: 1 << 20,
            quiet: 1 << 20,
        }
    }

    fn empty(st: &Staging) -> bool {
        st.staged.is_empty() && st.order.is_empty() && st.room == 0 && st.fds.open.is_empty()
    }

    #[test]
    fn appends_stay_staged_and_blocks_replace_them_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(2, roomy());
        let (a, pa) = file_of(dir.path(), "a", &mut st);
        let (b, pb) = file_of(dir.path(), "b", &mut st);
        st.file(a, &pa).write_at(0, b"header").unwrap();
        st.file(a, &pa).write_at(6, b"-rec1").unwrap();
        st.file(b, &pb).write_at(0, b"B").unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"", "staged, not written");
        let mut buf = Vec::new();
        assert_eq!(st.file(a, &pa).read_at(6, 5, &mut buf).unwrap(), b"-rec1");
        assert!(buf.is_empty(), "borrowed from the tail");
        st.file(a, &pa).write_at(6, b"#").unwrap();
        st.file(a, &pa).truncate(7).unwrap();
        st.file(a, &pa).write_at(0, b"HEADER").unwrap();
        st.finish(a).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"HEADER#");
        st.finish(b).unwrap();
        assert_eq!(std::fs::read(&pb).unwrap(), b"B");
        assert!(empty(&st));
    }

    #[test]
    fn settled_bytes_go_to_disk_and_the_tail_keeps_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(2, roomy());
        let (a, pa) = file_of(dir.path(), "a", &mut st);
        st.file(a, &pa).write_at(0, b"header+block").unwrap();
        st.file(a, &pa).settle().unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"header+block");
        let room = st.room;
        st.file(a, &pa).write_at(12, b"records").unwrap();
        assert_eq!((st.staged.len(), st.room), (1, room));
        let mut buf = Vec::new();
        assert_eq!(
            st.file(a, &pa).read_at(12, 7, &mut buf).unwrap(),
            b"records"
        );
        assert_eq!(
            st.file(a, &pa).read_at(7, 12, &mut buf).unwrap(),
            b"blockrecords"
        );
        assert!(
            st.file(a, &pa).read_at(12, 8, &mut buf).is_err(),
            "past the end"
        );
        st.finish(a).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"header+blockrecords");
        assert!(empty(&st));
    }

    #[test]
    fn the_oldest_tail_goes_to_disk_when_the_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(
            2,
            Budget {
                all: 2 * FIRST_ROOM,
                quiet: 2 * FIRST_ROOM,
            },
        );
        let (a, pa) = file_of(dir.path(), "a", &mut st);
        let (b, pb) = file_of(dir.path(), "b", &mut st);
        let (c, pc) = file_of(dir.path(), "c", &mut st);
        st.file(a, &pa).write_at(0, b"aaaa").unwrap();
        st.file(b, &pb).write_at(0, b"bbbb").unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"");
        st.file(c, &pc).write_at(0, b"cccc").unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), b"aaaa", "oldest written out");
        assert_eq!(std::fs::read(&pb).unwrap(), b"");
        assert!(st.room <= st.budget.all && st.fds.open.len() <= 2);
        // Reads span the disk and a new tail.
        st.file(a, &pa).write_at(4, b"-tail").unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            st.file(a, &pa).read_at(0, 9, &mut buf).unwrap(),
            b"aaaa-tail"
        );
        // A header patch below a tail writes the tail first.
        st.file(a, &pa).write_at(0, b"AAAA").unwrap();
        // More than half the budget at once goes straight to the file.
        let big = vec![b'x'; FIRST_ROOM + 1];
        st.file(b, &pb).write_at(4, &big).unwrap();
        assert_eq!(std::fs::read(&pb).unwrap().len(), 4 + big.len());
        for id in [a, b, c] {
            st.finish(id).unwrap();
        }
        assert_eq!(std::fs::read(&pa).unwrap(), b"AAAA-tail");
        assert_eq!(std::fs::read(&pc).unwrap(), b"cccc");
        assert!(empty(&st));
    }

    #[test]
    fn quiet_tails_go_to_disk_before_the_block_of_a_busy_partition() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget {
            all: 1 << 20,
            quiet: 2 * FIRST_ROOM,
        };
        let mut st = Staging::new(2, budget);
        let (busy, pbusy) = file_of(dir.path(), "busy", &mut st);
        st.file(busy, &pbusy)
            .write_at(0, &vec![b'b'; QUIET_TAIL])
            .unwrap();
        let quiet: Vec<_> = (0..3)
            .map(|i| file_of(dir.path(), &format!("q{i}"), &mut st))
            .collect();
        for (id, p) in &quiet {
            st.file(*id, p).write_at(0, b"few records").unwrap();
        }
        assert_eq!(
            std::fs::read(&pbusy).unwrap(),
            b"",
            "the block stays staged"
        );
        assert_eq!(std::fs::read(&quiet[0].1).unwrap(), b"few records");
        for (_, p) in &quiet[1..] {
            assert_eq!(std::fs::read(p).unwrap(), b"", "within the quiet share");
        }
        assert!(st.quiet_room <= budget.quiet && st.room <= budget.all);
        for id in quiet.iter().map(|q| q.0).chain([busy]) {
            st.finish(id).unwrap();
        }
        assert_eq!(std::fs::read(&pbusy).unwrap().len(), QUIET_TAIL);
        assert!(empty(&st) && st.quiet_room == 0);
    }

    #[test]
    fn descriptors_are_bounded_and_reopened_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(2, Budget { all: 0, quiet: 0 });
        let files: Vec<_> = (0..5)
            .map(|i| file_of(dir.path(), &format!("f{i}"), &mut st))
            .collect();
        assert!(st.fds.open.len() <= 2);
        for (i, (id, p)) in files.iter().enumerate() {
            st.file(*id, p)
                .write_at(0, format!("file number {i}").as_bytes())
                .unwrap();
            assert!(st.fds.open.len() <= 2);
        }
        for (i, (id, p)) in files.iter().enumerate() {
            st.finish(*id).unwrap();
            assert_eq!(
                std::fs::read(p).unwrap(),
                format!("file number {i}").as_bytes()
            );
        }
        assert!(empty(&st));
    }

    #[test]
    fn an_abandoned_file_takes_its_tail_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(2, roomy());
        let (a, pa) = file_of(dir.path(), "a", &mut st);
        st.file(a, &pa).write_at(0, b"x").unwrap();
        std::fs::remove_file(&pa).unwrap();
        st.forget(a);
        assert!(empty(&st));
        // Removed without forget: the tail goes when written out.
        let (c, pc) = file_of(dir.path(), "c", &mut st);
        st.file(c, &pc).write_at(0, b"z").unwrap();
        std::fs::remove_file(&pc).unwrap();
        st.fds.open.clear();
        st.flush(c).unwrap();
        assert!(!pa.exists() && !pc.exists());
    }
}
