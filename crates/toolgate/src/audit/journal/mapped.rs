//! The gateway's journal writer: the thread serving a call copies its record into a shared
//! mapping of the segment file. Once the bytes are copied they are in the kernel's page
//! cache, which a crash of the gateway does not lose, so the call can be answered at once: no
//! other thread is woken and no system call is made per record. (Before, a writer thread
//! wrote batches with `write(2)` and each call waited for its acknowledgement: two
//! cross-thread wake-ups per round of calls and five more system calls per call at one
//! session, `bench/scripts/syscalls.sh`.)
//!
//! The file grows by chunks (`CHUNK_BYTES`, or one record when it is larger), each reserved
//! on disk with `fallocate` before it is mapped, so that on the usual file systems a full disk
//! shows as an error when a chunk is added (the record is lost, loudly), not as a fault while
//! a record is copied. Where `fallocate` is missing the file grows sparse, without that
//! guarantee; and on copy-on-write file systems (btrfs) a rewrite of a page after a sync needs
//! new space, so a full disk there can still stop the gateway with SIGBUS: keep the state
//! directory on ext4 or XFS. The first record on each page takes a page fault, in which the
//! kernel adds the page to its cache.
//!
//! A record claims its sequence number and its bytes in the chunk with one compare-and-swap on
//! the chunk's state, so numbers follow file order and no lock is taken. The thread that finds
//! the chunk full adds the next one (under a lock taken once per chunk) and, at the segment's
//! size, waits for the segment's last copies, cuts it to size and starts the next segment:
//! only the newest segment ever has a copy in progress. Bytes not yet copied read as zeros
//! (see `for_each_record`). One process at a time writes a journal this way (the directory
//! lock, see `lock_dir`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{Options, last_seq, segment_path, segments};
use crate::audit::record::AuditRecord;

/// How much the segment file grows at a time: one lock, `fallocate` and `mmap` per chunk
/// (about 3,000 records), and at most this much of it mapped and resident per journal.
const CHUNK_BYTES: u64 = 1024 * 1024;
/// A chunk's state packs three fields into one word, so that a record claims its number and
/// its bytes in one compare-and-swap: closed (no more records), records claimed, bytes claimed.
const CLOSED: u64 = 1 << 63;
const COUNT_SHIFT: u32 = 40;
const BYTES_MASK: u64 = (1 << COUNT_SHIFT) - 1;
const COUNT_MAX: u64 = (1 << (63 - COUNT_SHIFT)) - 1;
/// What a line adds to the fields `write_json_fields` writes: `{"seq":` and at most 20 digits.
const SEQ_PREFIX: &[u8] = b"{\"seq\":";
const LINE_OVERHEAD: usize = SEQ_PREFIX.len() + 20;

pub(super) struct MappedJournal {
    opts: Options,
    /// The chunk records are copied into. Replaced (under `rolling`) when it is full.
    current: ArcSwap<Chunk>,
    rolling: Mutex<()>,
    /// Segments left, complete, for a newer one: synced once more by the syncer.
    retired: Mutex<Vec<Arc<Segment>>>,
    /// Records were copied since the last sync.
    dirty: AtomicBool,
    /// A segment file was created since the directory was last synced.
    created: AtomicBool,
    /// Held while syncing, so that `close` waits for a sync the syncer has begun (of a
    /// retired segment it has taken, say).
    syncing: Mutex<()>,
}

/// A segment file, shared by its chunks.
struct Segment {
    file: File,
    path: PathBuf,
    /// Whether this process created the file (else it continues one).
    new: bool,
    /// The first sequence number this process gave a record in it.
    first_seq: u64,
    /// Records this process has copied into it.
    copied: AtomicU64,
}

/// A part of a segment file, mapped into memory; records are copied into it at the offsets
/// they claim.
struct Chunk {
    segment: Arc<Segment>,
    /// From `start` (memmap2 maps from the page boundary before it and hides that).
    map: memmap2::MmapRaw,
    /// The file offset of the chunk's first byte.
    start: u64,
    capacity: u64,
    /// The sequence number of the chunk's first record.
    first_seq: u64,
    /// `CLOSED`, records claimed and bytes claimed (see `CLOSED`).
    state: AtomicU64,
}

/// A record's place in a chunk.
struct Claim {
    seq: u64,
    offset: u64,
}

impl Chunk {
    /// Adds `capacity` bytes at `start` to the segment file (allocated on disk, so that
    /// copying into the mapping does not need space the disk does not have) and maps them.
    fn new(
        segment: Arc<Segment>,
        start: u64,
        first_seq: u64,
        capacity: u64,
    ) -> Result<Chunk, String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("cannot {what} {}: {e}", segment.path.display())
        };
        // SAFETY: a plain system call on a file descriptor this function borrows.
        let allocated = unsafe {
            libc::fallocate(
                segment.file.as_raw_fd(),
                0,
                start as libc::off_t,
                capacity as libc::off_t,
            )
        };
        if allocated != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(fail("allocate space in", e));
            }
            // A file system without fallocate: the file grows sparse.
            let len = segment.file.metadata().map_err(|e| fail("read", e))?.len();
            if len < start + capacity {
                segment
                    .file
                    .set_len(start + capacity)
                    .map_err(|e| fail("extend", e))?;
            }
        }
        let map = memmap2::MmapOptions::new()
            .offset(start)
            .len(capacity as usize)
            .map_raw(&segment.file)
            .map_err(|e| fail("map", e))?;
        Ok(Chunk {
            segment,
            map,
            start,
            capacity,
            first_seq,
            state: AtomicU64::new(0),
        })
    }

    /// Claims the next sequence number and the bytes of its line (`fields` with `{"seq":N`
    /// before them), or `None` when the chunk is closed or the line does not fit.
    fn claim(&self, fields: usize) -> Option<Claim> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let (count, used) = (state >> COUNT_SHIFT, state & BYTES_MASK);
            if state & CLOSED != 0 || count == COUNT_MAX {
                return None;
            }
            let seq = self.first_seq + count;
            let len = (SEQ_PREFIX.len() + digits(seq) + fields) as u64;
            if used + len > self.capacity {
                return None;
            }
            let next = ((count + 1) << COUNT_SHIFT) | (used + len);
            match self.state.compare_exchange_weak(
                state,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Claim { seq, offset: used }),
                Err(now) => state = now,
            }
        }
    }

    /// Copies a claimed line in.
    fn fill(&self, claim: &Claim, fields: &[u8]) {
        let mut seq = itoa::Buffer::new();
        let seq = seq.format(claim.seq).as_bytes();
        let at = claim.offset as usize;
        debug_assert!(
            at + SEQ_PREFIX.len() + seq.len() + fields.len() <= self.map.len(),
            "claimed within the chunk"
        );
        // SAFETY: `claim` gave this thread the bytes from `at` for exactly this line's length
        // (prefix, digits, fields), inside the mapping (`claim` checks the capacity); no other
        // thread writes them, and the mapping lives as long as `self`. The file is not cut
        // below them meanwhile: `roll` cuts a segment only after every claimed copy into it
        // is done, `close` runs with no writer left, and no other process writes or repairs
        // the directory while this one holds its lock.
        unsafe {
            let to = self.map.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(SEQ_PREFIX.as_ptr(), to, SEQ_PREFIX.len());
            let to = to.add(SEQ_PREFIX.len());
            std::ptr::copy_nonoverlapping(seq.as_ptr(), to, seq.len());
            let to = to.add(seq.len());
            std::ptr::copy_nonoverlapping(fields.as_ptr(), to, fields.len());
        }
        self.segment.copied.fetch_add(1, Ordering::Release);
    }

    /// Takes no more records; returns how many it took and the bytes they use.
    fn close(&self) -> (u64, u64) {
        let state = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        ((state >> COUNT_SHIFT) & COUNT_MAX, state & BYTES_MASK)
    }

    /// Records claimed in the segment whose copy is not complete yet.
    fn in_flight(&self) -> u64 {
        let claimed = (self.state.load(Ordering::Acquire) >> COUNT_SHIFT) & COUNT_MAX;
        let claimed = self.first_seq + claimed - self.segment.first_seq;
        claimed.saturating_sub(self.segment.copied.load(Ordering::Acquire))
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

thread_local! {
    /// The record being written, as a line without its `{"seq":N` (reused between records).
    static FIELDS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl MappedJournal {
    /// Continues the newest segment or starts one. The caller holds the directory's
    /// exclusive lock, having repaired the newest segment: no other process writes these
    /// files.
    pub(super) fn open(opts: Options) -> Result<MappedJournal, String> {
        let newest = segments(&opts.dir).pop();
        let last = newest.as_deref().map_or(0, last_seq);
        let continued = match &newest {
            Some(path) => {
                let len = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .len();
                (len < opts.segment_bytes).then_some((path, len))
            }
            None => None,
        };
        let (segment, start) = match continued {
            Some((path, len)) => (open_segment(path, false, last + 1)?, len),
            None => (
                open_segment(&segment_path(&opts.dir, last + 1), true, last + 1)?,
                0,
            ),
        };
        let capacity = chunk_capacity(&opts, start, 0);
        let chunk = Chunk::new(segment.clone(), start, last + 1, capacity)
            .inspect_err(|_| forget_new(&segment))?;
        Ok(MappedJournal {
            opts,
            current: ArcSwap::from_pointee(chunk),
            rolling: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
            created: AtomicBool::new(segment.new),
            syncing: Mutex::new(()),
        })
    }

    pub(super) fn write(&self, record: &AuditRecord) -> Result<(), String> {
        FIELDS.with_borrow_mut(|fields| {
            fields.clear();
            record.write_json_fields(fields);
            fields.push(b'\n');
            let mut chunk = self.current.load();
            let claim = loop {
                if let Some(claim) = chunk.claim(fields.len()) {
                    break claim;
                }
                self.roll(&chunk, fields.len())?;
                chunk = self.current.load();
            };
            chunk.fill(&claim, fields);
            if !self.dirty.load(Ordering::Relaxed) {
                self.dirty.store(true, Ordering::Relaxed);
            }
            // One outsized record must not keep its buffer's size for the thread's life.
            if fields.capacity() > 64 * 1024 {
                *fields = Vec::new();
            }
            Ok(())
        })
    }

    /// Replaces the chunk `full` (closed, or without room for a line of `fields` bytes after
    /// its number) with the next one, unless another thread has done so already.
    fn roll(&self, full: &Arc<Chunk>, fields: usize) -> Result<(), String> {
        let _rolling = self.rolling.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&self.current.load(), full) {
            return Ok(());
        }
        let (count, used) = full.close();
        let end = full.start + used;
        let first_seq = full.first_seq + count;
        let next = if end >= self.opts.segment_bytes {
            let old = &full.segment;
            // Every copy into the segment, in any of its chunks, finishes before the next
            // segment exists: readers count on only the newest segment having one in progress,
            // and the syncer's last flush of this one must hold them all. A copy takes
            // microseconds.
            while old.copied.load(Ordering::Acquire) < first_seq - old.first_seq {
                std::thread::yield_now();
            }
            old.file
                .set_len(end)
                .map_err(|e| format!("cannot cut {}: {e}", old.path.display()))?;
            let path = segment_path(&self.opts.dir, first_seq);
            let segment = open_segment(&path, true, first_seq)?;
            let capacity = chunk_capacity(&self.opts, 0, fields);
            let next = Chunk::new(segment.clone(), 0, first_seq, capacity)
                .inspect_err(|_| forget_new(&segment))?;
            self.created.store(true, Ordering::Release);
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(old.clone());
            next
        } else {
            let capacity = chunk_capacity(&self.opts, end, fields);
            Chunk::new(full.segment.clone(), end, first_seq, capacity)?
        };
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Flushes what was written since the last call (the syncer's tick).
    pub(super) fn sync(&self) -> std::io::Result<()> {
        let _syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let retired: Vec<Arc<Segment>> =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        for segment in retired {
            segment.file.sync_data()?;
        }
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.current.load().segment.file.sync_data()?;
        }
        if self.created.swap(false, Ordering::AcqRel) {
            File::open(&self.opts.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The segment being written (retention leaves it alone).
    pub(super) fn current_path(&self) -> PathBuf {
        self.current.load().segment.path.clone()
    }

    /// The size of the segment being written, counting only what was claimed.
    pub(super) fn current_size(&self) -> u64 {
        let chunk = self.current.load();
        chunk.start + (chunk.state.load(Ordering::Relaxed) & BYTES_MASK)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.current.load().in_flight() as usize
    }

    /// Ends writing, with no copy in progress (the caller has the journal to itself): the
    /// segment is cut to what was written, ending on a complete line, and flushed; one this
    /// process created and wrote nothing to goes.
    pub(super) fn close(&self) -> std::io::Result<()> {
        let chunk = self.current.load_full();
        let (_, used) = chunk.close();
        let end = chunk.start + used;
        let segment = &chunk.segment;
        if end == 0 && segment.new {
            std::fs::remove_file(&segment.path)?;
        } else {
            segment.file.set_len(end)?;
        }
        self.dirty.store(true, Ordering::Relaxed);
        self.sync()
    }
}

/// How many bytes the chunk at `start` gets: `CHUNK_BYTES`, less near the segment's size so
/// that segments roll close to it, and never too few for a line of `fields` bytes.
fn chunk_capacity(opts: &Options, start: u64, fields: usize) -> u64 {
    let room = opts.segment_bytes.saturating_sub(start).min(CHUNK_BYTES);
    room.max((fields + LINE_OVERHEAD) as u64).max(1)
}

fn open_segment(path: &Path, new: bool, first_seq: u64) -> Result<Arc<Segment>, String> {
    // A new segment is named past the newest segment's records (the caller holds the
    // directory's lock), so no file has the name; `create_new` makes sure.
    let file = OpenOptions::new()
        .create_new(new)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Arc::new(Segment {
        file,
        path: path.to_path_buf(),
        new,
        first_seq,
        copied: AtomicU64::new(0),
    }))
}

/// A segment just created for a chunk that could not be added (the disk is full): removed,
/// so that each failed attempt does not leave an empty file.
fn forget_new(segment: &Segment) {
    if segment.new {
        let _ = std::fs::remove_file(&segment.path);
    }
}
