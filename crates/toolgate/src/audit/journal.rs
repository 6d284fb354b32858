//! The audit journal: JSON lines in segment files `state_dir/audit/audit-<first seq>.jsonl`.
//!
//! The calling thread writes its record itself, into a shared mapping of the segment file:
//! once the bytes are copied they are in the kernel's page cache, which a crash of the
//! gateway does not lose, so the call can be answered at once. No other thread is woken and
//! no system call is made per record. Before, a writer thread wrote batches with `write(2)`
//! and each call waited for its acknowledgement: two cross-thread wake-ups per round of calls
//! and five more system calls per call at one session (`bench/scripts/syscalls.sh`).
//!
//! The file grows by chunks (`CHUNK_BYTES`, or one record when it is larger), each reserved
//! on disk with `fallocate` before it is mapped, so a full disk shows as an error when a
//! chunk is added (the record is lost, loudly), not as a fault while a record is copied (on
//! a file system without `fallocate` the file grows sparse, without that guarantee). A record claims its sequence
//! number and its bytes in the chunk with one compare-and-swap on the chunk's state, so
//! numbers follow file order and no lock is taken. The thread that finds the chunk full adds
//! the next one (under a lock taken once per chunk) and, at the segment's size, starts a new
//! segment file.
//!
//! The first record on each 4 KiB page takes a page fault, in which the kernel adds the page
//! to its cache; the disk blocks behind it were reserved when the chunk was added.
//!
//! Bytes not yet copied read as zeros: while a gateway writes the journal, a reader of the
//! newest segment stops at the first zero byte (a record still being copied, or the chunk's
//! unused end; see `for_each_line`). A crash can leave such gaps; the next start repairs them
//! (see `repair`). A syncer thread flushes the
//! segment to disk (fdatasync) every `SYNC_EVERY` and applies retention.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::record::{ArgumentsMode, AuditRecord, Redactor};

const SYNC_EVERY: Duration = Duration::from_millis(100);
const RETENTION_EVERY: Duration = Duration::from_secs(60);
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditConfigError(pub String);

/// `[audit]` as the journal needs it.
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: bool,
    pub dir: PathBuf,
    pub arguments: ArgumentsMode,
    pub secret_patterns: Vec<String>,
    pub retention_days: u64,
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

pub struct Audit {
    journal: Option<Arc<Journal>>,
    pub redactor: Arc<Redactor>,
    pub arguments: ArgumentsMode,
    pub dir: PathBuf,
}

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// A grant id or label.
    pub grant: Option<String>,
    pub tool: Option<String>,
    pub outcome: Option<String>,
    /// RFC 3339 bounds on `time` (inclusive since, exclusive until).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only records after this sequence number.
    pub after_seq: Option<u64>,
    /// At most this many: the oldest ones after `after_seq` when it is given (paging
    /// forward), else the newest ones.
    pub limit: Option<usize>,
}

impl Query {
    /// The time bounds in milliseconds; an error names a bound that is not an RFC 3339 time.
    pub fn bounds(&self) -> Result<(Option<i64>, Option<i64>), String> {
        let parse = |name: &str, v: &Option<String>| match v {
            None => Ok(None),
            Some(t) => super::record::parse_rfc3339(t).map(Some).ok_or_else(|| {
                format!(
                    "{name} {t:?} is not an RFC 3339 time (e.g. 2026-11-26T07:15:36Z) or a date"
                )
            }),
        };
        Ok((parse("since", &self.since)?, parse("until", &self.until)?))
    }

    fn matches(&self, r: &AuditRecord, since: Option<i64>, until: Option<i64>) -> bool {
        let at = || super::record::parse_rfc3339(&r.time).unwrap_or(i64::MIN);
        self.grant
            .as_ref()
            .is_none_or(|g| r.grant_id.as_deref() == Some(g) || r.grant_label.as_deref() == Some(g))
            && self
                .tool
                .as_ref()
                .is_none_or(|t| r.tool.as_deref() == Some(t))
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| r.outcome.is_some_and(|x| x.as_str() == o))
            && since.is_none_or(|s| at() >= s)
            && until.is_none_or(|u| at() < u)
            && self.after_seq.is_none_or(|s| r.seq > s)
    }
}

impl Audit {
    /// Opens the journal (repairing what a crash left, starting its syncer) or, when
    /// disabled, a sink that records nothing.
    pub fn open(opts: Options) -> Result<Audit, AuditConfigError> {
        let redactor = Arc::new(Redactor::new(&opts.secret_patterns).map_err(AuditConfigError)?);
        let mut audit = Audit {
            journal: None,
            redactor,
            arguments: opts.arguments,
            dir: opts.dir.clone(),
        };
        if !opts.enabled {
            return Ok(audit);
        }
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| AuditConfigError(format!("cannot create {}: {e}", opts.dir.display())))?;
        let journal = Arc::new(Journal::open(opts).map_err(AuditConfigError)?);
        let syncer = journal.clone();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run_syncer())
            .map_err(|e| AuditConfigError(format!("cannot start the audit syncer: {e}")))?;
        audit.journal = Some(journal);
        Ok(audit)
    }

    pub fn enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// Records being copied into the journal at this moment.
    pub fn queue_depth(&self) -> usize {
        self.journal
            .as_ref()
            .map_or(0, |j| j.current.load().in_flight())
    }

    /// Writes a record to the journal; when this returns, a crash of the gateway no longer
    /// loses it. An error (the disk is full, say) is logged and loses the record.
    pub fn write(&self, record: AuditRecord) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.write(&record)
        {
            tracing::error!("cannot write the audit journal, a record is lost: {e}");
        }
    }

    /// Reads records back (oldest first), from a journal directory.
    pub fn read(dir: &Path, query: &Query) -> Result<Vec<AuditRecord>, String> {
        let (since, until) = query.bounds()?;
        let mut out = Vec::new();
        for segment in segments(dir) {
            for_each_line(&segment, being_written(&segment), |line| {
                if let Ok(r) = serde_json::from_slice::<AuditRecord>(line)
                    && query.matches(&r, since, until)
                {
                    out.push(r);
                }
            });
        }
        if let Some(limit) = query.limit
            && out.len() > limit
        {
            if query.after_seq.is_some() {
                out.truncate(limit);
            } else {
                out.drain(..out.len() - limit);
            }
        }
        Ok(out)
    }
}

impl Drop for Audit {
    /// No record can be in the middle of its copy any more: the segment is cut to what was
    /// written and flushed, so that it ends on a complete line.
    fn drop(&mut self) {
        if let Some(journal) = &self.journal {
            journal.stop.store(true, Ordering::Relaxed);
            let chunk = journal.current.load_full();
            let (_, used) = chunk.close();
            let end = chunk.start + used;
            let closed = if end == 0 {
                // A process that wrote nothing (a command that only read the configuration)
                // leaves no file behind.
                std::fs::remove_file(&chunk.segment.path)
            } else {
                (chunk.segment.file.set_len(end)).and_then(|()| chunk.segment.file.sync_data())
            };
            if let Err(e) = closed {
                tracing::error!("cannot close the audit journal: {e}");
            }
            // Complete: the next journal (a restart in this process) may continue it, though
            // the syncer thread still holds the file for up to `SYNC_EVERY`.
            // SAFETY: a plain system call on a descriptor the chunk keeps open.
            unsafe { libc::flock(chunk.segment.file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Calls `f` with each complete line (without its newline) of a segment. `live` is the
/// segment a running gateway is writing: there a zero byte is where the written part ends
/// for now (a record still being copied, after which others may be complete already), so
/// reading stops, and a reader that follows the journal by sequence number never passes a
/// record that is about to appear. Elsewhere zeros are a gap a crash left (a record that was
/// never copied in full), and a line resumes after them.
fn for_each_line(path: &Path, live: bool, mut f: impl FnMut(&[u8])) {
    let Ok(file) = File::open(path) else { return };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A line without its newline is torn (a crash mid-write of an unanswered call) or
        // still being copied.
        let Some((b'\n', text)) = line.split_last() else {
            return;
        };
        let text = match text.iter().rposition(|&b| b == 0) {
            Some(_) if live => return,
            Some(zero) => &text[zero + 1..],
            None => text,
        };
        if !text.is_empty() {
            f(text);
        }
    }
}

/// Whether a process holds the exclusive `flock` that the one process writing a segment
/// keeps on it until the segment is complete. Several processes can write one journal (local
/// mode runs one per agent's server, and commands that load the configuration open it): each
/// writes segments of its own, and readers learn from the lock whether a gap in a segment may
/// be a copy in progress or is one a crash left.
fn being_written(segment: &Path) -> bool {
    let Ok(file) = File::open(segment) else {
        return false;
    };
    // SAFETY: plain system calls on a file descriptor this function owns.
    unsafe {
        if libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 {
            return true;
        }
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
    false
}

/// Takes the writer's lock on a segment (see `being_written`): waits for a reader's brief
/// check when `wait`, else fails at once if anyone holds it.
fn lock_segment(file: &File, wait: bool) -> std::io::Result<()> {
    let how = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: a plain system call on a file descriptor the caller owns.
    match unsafe { libc::flock(file.as_raw_fd(), how) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Segment files, oldest first (their names sort by first sequence number).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The last sequence number used: the newest record's, or one before the number a segment
/// with no record yet is named after.
fn last_seq(segment: &Path) -> u64 {
    let named = segment.file_name().and_then(|n| n.to_str()).and_then(|n| {
        n.strip_prefix("audit-")?
            .strip_suffix(".jsonl")?
            .parse::<u64>()
            .ok()
    });
    let mut last = named.map_or(0, |first| first.saturating_sub(1));
    for_each_line(segment, true, |line| {
        if let Ok(r) = serde_json::from_slice::<AuditRecord>(line) {
            last = last.max(r.seq);
        }
    });
    last
}

/// Mends what a crash can leave in a segment, before anything is appended to it: the unused
/// end of its last chunk is cut off, a gap in the middle (a record whose copy the crash
/// interrupted, with complete records after it) becomes empty lines, and a torn last line is
/// ended. Readers skip what remains of a torn record: it was never acknowledged.
fn repair(path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot repair {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(fail)?;
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut block).map_err(fail)?;
        if n == 0 {
            break;
        }
        for (i, &b) in block[..n].iter().enumerate() {
            if b == 0 {
                let pos = at + i as u64;
                match gaps.last_mut() {
                    Some((_, end)) if *end == pos => *end = pos + 1,
                    _ => gaps.push((pos, pos + 1)),
                }
            }
        }
        at += n as u64;
    }
    let mut len = at;
    if let Some(&(start, end)) = gaps.last()
        && end == len
    {
        len = start;
        file.set_len(len).map_err(fail)?;
        gaps.pop();
    }
    for (start, end) in gaps {
        file.write_all_at(&vec![b'\n'; (end - start) as usize], start)
            .map_err(fail)?;
    }
    let mut last = [0u8; 1];
    if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        file.write_all_at(b"\n", len).map_err(fail)?;
    }
    Ok(())
}

struct Journal {
    opts: Options,
    /// The chunk records are copied into. Replaced (under `rolling`) when it is full.
    current: ArcSwap<Chunk>,
    rolling: Mutex<()>,
    /// Segments left, complete, for a newer one: synced once more by the syncer.
    retired: Mutex<Vec<Arc<Chunk>>>,
    /// Records were copied since the last sync.
    dirty: AtomicBool,
    stop: AtomicBool,
}

/// A segment file, shared by its chunks.
struct Segment {
    file: File,
    path: PathBuf,
}

/// A part of a segment file, mapped into memory; records are copied into it at the offsets
/// they claim.
struct Chunk {
    segment: Arc<Segment>,
    map: memmap2::MmapRaw,
    /// The file offset of the map's first byte (a page boundary at or before `start`).
    map_offset: u64,
    /// The file offset of the chunk's first byte.
    start: u64,
    capacity: u64,
    /// The sequence number of the chunk's first record.
    first_seq: u64,
    /// `CLOSED`, records claimed and bytes claimed (see `CLOSED`).
    state: AtomicU64,
    /// Records whose copy is complete.
    copied: AtomicU64,
}

/// A record's place in a chunk.
struct Claim {
    seq: u64,
    offset: u64,
}

impl Chunk {
    /// Adds `capacity` bytes at `start` to the segment file (allocated on disk, so that
    /// copying into the mapping never needs space the disk does not have) and maps them.
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
            segment
                .file
                .set_len(start + capacity)
                .map_err(|e| fail("extend", e))?;
        }
        let page = page_size();
        let map_offset = start / page * page;
        let map = memmap2::MmapOptions::new()
            .offset(map_offset)
            .len((start + capacity - map_offset) as usize)
            .map_raw(&segment.file)
            .map_err(|e| fail("map", e))?;
        Ok(Chunk {
            segment,
            map,
            map_offset,
            start,
            capacity,
            first_seq,
            state: AtomicU64::new(0),
            copied: AtomicU64::new(0),
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
        let at = (self.start - self.map_offset + claim.offset) as usize;
        debug_assert!(
            at + SEQ_PREFIX.len() + seq.len() + fields.len() <= self.map.len(),
            "claimed within the chunk"
        );
        // SAFETY: `claim` gave this thread the bytes from `at` for exactly this line's length
        // (prefix, digits, fields), inside the mapping (`claim` checks the capacity); no other
        // thread writes them, and the mapping lives as long as `self`.
        unsafe {
            let to = self.map.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(SEQ_PREFIX.as_ptr(), to, SEQ_PREFIX.len());
            let to = to.add(SEQ_PREFIX.len());
            std::ptr::copy_nonoverlapping(seq.as_ptr(), to, seq.len());
            let to = to.add(seq.len());
            std::ptr::copy_nonoverlapping(fields.as_ptr(), to, fields.len());
        }
        self.copied.fetch_add(1, Ordering::Release);
    }

    /// Takes no more records; returns how many it took and the bytes they use.
    fn close(&self) -> (u64, u64) {
        let state = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        ((state >> COUNT_SHIFT) & COUNT_MAX, state & BYTES_MASK)
    }

    /// Records claimed whose copy is not complete yet.
    fn in_flight(&self) -> usize {
        let claimed = (self.state.load(Ordering::Acquire) >> COUNT_SHIFT) & COUNT_MAX;
        claimed.saturating_sub(self.copied.load(Ordering::Acquire)) as usize
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

thread_local! {
    /// The record being written, as a line without its `{"seq":N` (reused between records).
    static FIELDS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Journal {
    /// Continues the newest segment, repaired, or starts one.
    fn open(opts: Options) -> Result<Journal, String> {
        let files = segments(&opts.dir);
        // The newest segment is continued when no other process is writing it. Having been
        // the newest, it is the one a crash can have left mid-copy: a segment is complete and
        // cut to size before its writer starts the next one.
        let newest = match files.last() {
            Some(path) => continue_segment(path, opts.segment_bytes)?,
            None => None,
        };
        let last = files.last().map_or(0, |p| last_seq(p));
        let (segment, start) = match newest {
            Some((segment, len)) => (segment, len),
            None => (new_segment(&opts.dir, last + 1)?, 0),
        };
        let capacity = chunk_capacity(&opts, start, 0);
        let chunk = Chunk::new(segment, start, last + 1, capacity)?;
        Ok(Journal {
            opts,
            current: ArcSwap::from_pointee(chunk),
            rolling: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    fn write(&self, record: &AuditRecord) -> Result<(), String> {
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
            // The copies still running in the full chunk (all before `end`) finish before the
            // next segment exists, so that the segment is complete when the syncer flushes it
            // once more. A copy takes microseconds.
            while full.copied.load(Ordering::Acquire) < count {
                std::thread::yield_now();
            }
            full.segment
                .file
                .set_len(end)
                .map_err(|e| format!("cannot cut {}: {e}", full.segment.path.display()))?;
            let segment = new_segment(&self.opts.dir, first_seq)?;
            let next = Chunk::new(segment, 0, first_seq, chunk_capacity(&self.opts, 0, fields))?;
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(full.clone());
            next
        } else {
            let capacity = chunk_capacity(&self.opts, end, fields);
            Chunk::new(full.segment.clone(), end, first_seq, capacity)?
        };
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Flushes the segment being written every `SYNC_EVERY` when records were added, syncs
    /// retired segments once more, and applies retention.
    fn run_syncer(&self) {
        let mut last_retention = Instant::now() - RETENTION_EVERY;
        loop {
            std::thread::sleep(SYNC_EVERY);
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.dirty.swap(false, Ordering::AcqRel)
                && let Err(e) = self.current.load().segment.file.sync_data()
            {
                tracing::error!("cannot sync the audit journal: {e}");
            }
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .for_each(|chunk| {
                    if let Err(e) = chunk.segment.file.sync_data() {
                        tracing::error!("cannot sync the audit journal: {e}");
                    }
                });
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                self.retention();
            }
        }
    }

    /// Deletes whole segments past the age or total-size limit, never one being written (by
    /// this process or another).
    fn retention(&self) {
        let mut files = segments(&self.opts.dir);
        let current = self.current.load();
        files.retain(|p| *p != current.segment.path && !being_written(p));
        let current_size = current.start + (current.state.load(Ordering::Relaxed) & BYTES_MASK);
        let max_age = Duration::from_secs(self.opts.retention_days * 86_400);
        let mut sizes: Vec<(PathBuf, u64, SystemTime)> = files
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|s| s.1).sum::<u64>() + current_size;
        sizes.reverse();
        while let Some((path, len, modified)) = sizes.pop() {
            let too_old = modified.elapsed().is_ok_and(|age| age > max_age);
            if !(too_old || total > self.opts.max_bytes) {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::info!(segment = %path.display(), "audit segment removed by retention");
                }
                Err(e) => {
                    tracing::error!(segment = %path.display(), "cannot remove audit segment: {e}")
                }
            }
        }
    }
}

/// How many bytes the chunk at `start` gets: `CHUNK_BYTES`, less near the segment's size so
/// that segments roll close to it, and never too few for a line of `fields` bytes.
fn chunk_capacity(opts: &Options, start: u64, fields: usize) -> u64 {
    let room = opts.segment_bytes.saturating_sub(start).min(CHUNK_BYTES);
    room.max((fields + LINE_OVERHEAD) as u64).max(1)
}

/// A new segment named after its first record, locked for this process. Another process may
/// have used that name already (each numbers its own records): then the next free number
/// names it.
fn new_segment(dir: &Path, first_seq: u64) -> Result<Arc<Segment>, String> {
    let mut n = first_seq;
    loop {
        let path = dir.join(format!("audit-{n:020}.jsonl"));
        match OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(file) => {
                lock_segment(&file, true)
                    .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
                return Ok(Arc::new(Segment { file, path }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
}

/// The newest segment, locked, repaired and with its length, when no other process is
/// writing it and it has room.
fn continue_segment(
    path: &Path,
    segment_bytes: u64,
) -> Result<Option<(Arc<Segment>, u64)>, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if lock_segment(&file, false).is_err() {
        return Ok(None);
    }
    repair(path)?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len >= segment_bytes {
        return Ok(None);
    }
    let segment = Segment {
        file,
        path: path.to_path_buf(),
    };
    Ok(Some((Arc::new(segment), len)))
}

#[cfg(test)]
impl Audit {
    /// Ends like a killed process: nothing cut to size or synced (the syncer stops).
    fn crash(self) {
        if let Some(journal) = &self.journal {
            journal.stop.store(true, Ordering::Relaxed);
            let fd = journal.current.load().segment.file.as_raw_fd();
            // SAFETY: a plain system call; the descriptor stays open (leaked with `self`).
            unsafe { libc::flock(fd, libc::LOCK_UN) };
        }
        std::mem::forget(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> Options {
        Options {
            enabled: true,
            dir: dir.to_path_buf(),
            arguments: ArgumentsMode::Redacted,
            secret_patterns: vec![],
            retention_days: 30,
            max_bytes: u64::MAX,
            segment_bytes: 64 * 1024 * 1024,
        }
    }

    fn rec(tool: &str) -> AuditRecord {
        AuditRecord {
            time: "2026-11-26T00:00:00.000Z".into(),
            server: "s".into(),
            tool: Some(tool.into()),
            ..Default::default()
        }
    }

    fn seqs(dir: &Path, q: &Query) -> Vec<u64> {
        Audit::read(dir, q).unwrap().iter().map(|r| r.seq).collect()
    }

    #[test]
    fn written_when_write_returns_numbered_and_continued_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let audit = Audit::open(options(dir.path())).unwrap();
            for i in 0..50 {
                audit.write(rec(&format!("t{i}")));
                // Written means readable now, before any sync or shutdown.
                assert_eq!(seqs(dir.path(), &Query::default()).len(), i + 1);
            }
            assert_eq!(
                seqs(dir.path(), &Query::default()),
                (1..=50).collect::<Vec<_>>()
            );
        }
        // Closed: the segment ends on its last line, without the chunk's unused bytes.
        let segment = &segments(dir.path())[0];
        let bytes = std::fs::read(segment).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert!(!bytes.contains(&0));
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("after"));
        let q = Query {
            tool: Some("after".into()),
            ..Default::default()
        };
        assert_eq!(Audit::read(dir.path(), &q).unwrap()[0].seq, 51);
        assert_eq!(segments(dir.path()).len(), 1, "the segment is continued");
        let q = Query {
            after_seq: Some(48),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(
            seqs(dir.path(), &q),
            vec![49, 50],
            "pages forward after a sequence number"
        );
        let q = Query {
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(seqs(dir.path(), &q), vec![50, 51], "else the newest");
    }

    /// Threads writing at once, across chunks and segments, while another reads: every record
    /// is on file when its write returns, numbers are unique and follow file order, a thread's
    /// records keep their order, and a reader never sees a gap (it sees 1..=n for some n).
    fn concurrent_writers(segment_bytes: u64, threads: usize, per_thread: usize) {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(
            Audit::open(Options {
                segment_bytes,
                ..options(dir.path())
            })
            .unwrap(),
        );
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dir, done) = (dir.path().to_path_buf(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    let seen = seqs(&dir, &Query::default());
                    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
                    assert_eq!(seen, expected, "a reader saw a gap");
                    reads += 1;
                }
                reads
            })
        };
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let audit = audit.clone();
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let tool = format!("w{t}-{i:05}-{}", "x".repeat(i % 40));
                        audit.write(rec(&tool));
                        if i % 500 == 0 {
                            // Readable as soon as the records before it are copied too (one
                            // of them may be mid-copy on a thread the machine has paused).
                            let q = Query {
                                tool: Some(tool.clone()),
                                ..Default::default()
                            };
                            let started = Instant::now();
                            while Audit::read(&path, &q).unwrap().len() != 1 {
                                assert!(started.elapsed() < Duration::from_secs(5), "{tool}");
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        let total = (threads * per_thread) as u64;
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        for t in 0..threads {
            let mine: Vec<&str> = all
                .iter()
                .filter_map(|r| r.tool.as_deref())
                .filter(|name| name.starts_with(&format!("w{t}-")))
                .collect();
            assert_eq!(mine.len(), per_thread);
            assert!(mine.is_sorted(), "thread {t}'s records in its order");
        }
        assert_eq!(audit.queue_depth(), 0);
        drop(audit);
        for segment in segments(dir.path()) {
            let bytes = std::fs::read(&segment).unwrap();
            assert!(!bytes.contains(&0), "{} has a gap", segment.display());
        }
    }

    #[test]
    fn concurrent_writers_across_chunks() {
        // About 6 MB of records: several 1 MiB chunks of one segment.
        concurrent_writers(64 * 1024 * 1024, 4, 6_000);
    }

    #[test]
    fn concurrent_writers_across_segments() {
        concurrent_writers(20_000, 4, 1_500);
    }

    #[test]
    fn a_record_larger_than_a_chunk_gets_a_chunk_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(options(dir.path())).unwrap();
        let big = "b".repeat(3 * CHUNK_BYTES as usize);
        audit.write(rec("small"));
        audit.write(rec(&big));
        audit.write(rec("after"));
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        let tools: Vec<&str> = all.iter().filter_map(|r| r.tool.as_deref()).collect();
        assert_eq!(tools, ["small", big.as_str(), "after"]);
    }

    #[test]
    fn segments_roll_at_their_size_and_retention_keeps_the_total_under_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let small = Options {
            segment_bytes: 2_000,
            max_bytes: 8_000,
            ..options(dir.path())
        };
        let audit = Audit::open(small.clone()).unwrap();
        for i in 0..200 {
            audit.write(rec(&format!("tool-{i}")));
        }
        assert!(segments(dir.path()).len() > 3, "segments roll");
        for segment in segments(dir.path()).iter().rev().skip(1) {
            let len = std::fs::metadata(segment).unwrap().len();
            // At most one record past it (a record here is about 300 bytes).
            assert!((2_000..2_400).contains(&len), "closed near its size: {len}");
        }
        drop(audit);
        // A new journal runs retention at once: the oldest segments go until the total fits.
        let audit = Audit::open(small).unwrap();
        audit.write(rec("last"));
        std::thread::sleep(Duration::from_millis(300));
        let total: u64 = segments(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(total <= 8_000 + 2_000, "{total} bytes kept");
        let kept = Audit::read(dir.path(), &Query::default()).unwrap();
        assert_eq!(kept.last().unwrap().tool.as_deref(), Some("last"));
        assert!(
            kept.first().unwrap().seq > 1,
            "the oldest records went first"
        );
    }

    /// A crash leaves the chunk's unused end as zeros: what was written reads back, and the
    /// next start cuts the zeros off and continues the numbering.
    #[test]
    fn a_crash_loses_no_written_record_and_the_next_start_continues() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(options(dir.path())).unwrap();
        for i in 0..10 {
            audit.write(rec(&format!("t{i}")));
        }
        audit.crash();
        let segment = segments(dir.path()).pop().unwrap();
        assert!(std::fs::read(&segment).unwrap().ends_with(&[0; 64]));
        assert_eq!(
            seqs(dir.path(), &Query::default()),
            (1..=10).collect::<Vec<_>>()
        );
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("after"));
        drop(audit);
        assert_eq!(
            seqs(dir.path(), &Query::default()),
            (1..=11).collect::<Vec<_>>()
        );
        assert!(!std::fs::read(&segment).unwrap().contains(&0));
    }

    /// A crash in the middle of one record's copy, with later records complete: with no
    /// gateway running readers read past the gap (the torn record is skipped); with one
    /// running they stop at it, as at a copy still in progress; the next start repairs it.
    #[test]
    fn a_gap_left_by_a_crash_is_repaired_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let line = |seq: u64, tool: &str| {
            let mut r = rec(tool);
            r.seq = seq;
            let mut out = Vec::new();
            r.write_json(&mut out);
            out.push(b'\n');
            out
        };
        let mut bytes = line(1, "one");
        let torn = line(2, "two");
        bytes.extend_from_slice(&torn[..20]);
        bytes.extend_from_slice(&vec![0; torn.len() - 20]);
        bytes.extend_from_slice(&line(3, "three"));
        bytes.extend_from_slice(&[0; 500]);
        let older = dir.path().join("audit-00000000000000000001.jsonl");
        std::fs::write(&older, &bytes).unwrap();
        assert_eq!(seqs(dir.path(), &Query::default()), vec![1, 3]);
        {
            // The same bytes in a segment a process is writing: maybe a copy in progress.
            let running = File::open(&older).unwrap();
            lock_segment(&running, false).unwrap();
            let q = Query::default();
            assert_eq!(seqs(dir.path(), &q), vec![1], "stops at the gap");
        }
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("next"));
        assert_eq!(seqs(dir.path(), &Query::default()), vec![1, 3, 4]);
        drop(audit);
        assert!(!std::fs::read(&older).unwrap().contains(&0));
    }

    #[test]
    fn torn_lines_are_skipped_and_disabled_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-00000000000000000001.jsonl"), b"{\"seq\":1,\"time\":\"t\",\"request_id\":\"r\",\"server\":\"s\",\"argument_keys\":[],\"http_status\":200,\"decision_us\":0}\n{\"seq\":2,\"ti").unwrap();
        assert_eq!(Audit::read(dir.path(), &Query::default()).unwrap().len(), 1);
        // A journal opened after the crash ends the torn line and appends cleanly.
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("next"));
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        let off = Audit::open(Options {
            enabled: false,
            ..options(&dir.path().join("off"))
        })
        .unwrap();
        off.write(rec("x"));
        assert!(!dir.path().join("off").exists());
    }

    /// Two journals open on one directory at once (two local-mode processes): each writes a
    /// segment of its own, never the other's, and readers see every record. A journal that
    /// wrote nothing leaves no file.
    #[test]
    fn two_writers_side_by_side_write_segments_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let first = Audit::open(options(dir.path())).unwrap();
        first.write(rec("first-1"));
        let second = Audit::open(options(dir.path())).unwrap();
        second.write(rec("second-1"));
        first.write(rec("first-2"));
        second.write(rec("second-2"));
        assert_eq!(segments(dir.path()).len(), 2);
        let idle = Audit::open(options(dir.path())).unwrap();
        assert_eq!(segments(dir.path()).len(), 3);
        drop(idle);
        assert_eq!(
            segments(dir.path()).len(),
            2,
            "an idle journal leaves no file"
        );
        let mut tools: Vec<String> = Audit::read(dir.path(), &Query::default())
            .unwrap()
            .into_iter()
            .filter_map(|r| r.tool.map(|t| t.to_string()))
            .collect();
        tools.sort();
        assert_eq!(tools, ["first-1", "first-2", "second-1", "second-2"]);
        drop((first, second));
        for segment in segments(dir.path()) {
            assert!(!std::fs::read(&segment).unwrap().contains(&0));
        }
    }

    /// An empty newest segment (a start that wrote nothing, then a crash) still numbers on
    /// from its name.
    #[test]
    fn numbering_continues_from_an_empty_segment_s_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-00000000000000000042.jsonl"), b"").unwrap();
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("next"));
        assert_eq!(seqs(dir.path(), &Query::default()), vec![42]);
    }
}
