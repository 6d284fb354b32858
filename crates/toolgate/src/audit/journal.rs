//! The audit journal: JSON lines in segment files `state_dir/audit/audit-<first seq>.jsonl`.
//!
//! Two writers, one per kind of process (see their modules):
//! - `mapped`, the gateway's (`toolgate serve`): the thread serving a call copies its record
//!   into a shared memory mapping of the segment file, with no system call and no other
//!   thread involved. One such process writes a directory at a time.
//! - `appended`, local mode's (`toolgate run`): one `write(2)` per record, `O_APPEND`, so
//!   that several local-mode processes can share a directory.
//!
//! Either way a record is in the kernel's page cache before its call is answered, so a crash
//! of the process does not lose it; a syncer thread flushes to disk (fdatasync) every
//! `SYNC_EVERY` and applies retention. The directory's lock file (`WRITERS_LOCK`) says which
//! kind is writing: the gateway holds it exclusively, local-mode processes shared. A start
//! repairs what a crash left in the newest segment (see `repair`).

mod appended;
mod mapped;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::record::{ArgumentsMode, AuditRecord, Redactor};
use appended::AppendedJournal;
use mapped::MappedJournal;

const SYNC_EVERY: Duration = Duration::from_millis(100);
const RETENTION_EVERY: Duration = Duration::from_secs(60);

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
    /// Local mode: other local-mode processes may write the same directory (the `appended`
    /// writer). Else this process is the directory's only writer (the `mapped` writer).
    pub shared: bool,
}

pub struct Audit {
    writer: Option<Arc<Writer>>,
    pub redactor: Arc<Redactor>,
    pub arguments: ArgumentsMode,
    pub dir: PathBuf,
}

/// A journal being written, with the directory lock that lets it (held while the file is
/// open), and what its syncer thread needs.
struct Writer {
    kind: Kind,
    lock: File,
    opts: Options,
    stop: AtomicBool,
}

enum Kind {
    Mapped(MappedJournal),
    Appended(AppendedJournal),
}

impl Kind {
    fn write(&self, record: &AuditRecord) -> Result<(), String> {
        match self {
            Kind::Mapped(m) => m.write(record),
            Kind::Appended(a) => a.write(record),
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        match self {
            Kind::Mapped(m) => m.sync(),
            Kind::Appended(a) => a.sync(),
        }
    }

    /// The segment this process writes, and its size.
    fn current(&self) -> (PathBuf, u64) {
        match self {
            Kind::Mapped(m) => (m.current_path(), m.current_size()),
            Kind::Appended(a) => (a.current_path(), a.current_size()),
        }
    }
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
            writer: None,
            redactor,
            arguments: opts.arguments,
            dir: opts.dir.clone(),
        };
        if !opts.enabled {
            return Ok(audit);
        }
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| AuditConfigError(format!("cannot create {}: {e}", opts.dir.display())))?;
        let lock = lock_dir(&opts.dir, !opts.shared).map_err(AuditConfigError)?;
        let kind = if opts.shared {
            Kind::Appended(AppendedJournal::open(opts.clone()).map_err(AuditConfigError)?)
        } else {
            Kind::Mapped(MappedJournal::open(opts.clone()).map_err(AuditConfigError)?)
        };
        let writer = Arc::new(Writer {
            kind,
            lock,
            opts,
            stop: AtomicBool::new(false),
        });
        let syncer = writer.clone();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run_syncer())
            .map_err(|e| AuditConfigError(format!("cannot start the audit syncer: {e}")))?;
        audit.writer = Some(writer);
        Ok(audit)
    }

    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Records being copied into the journal at this moment.
    pub fn queue_depth(&self) -> usize {
        match self.writer.as_deref().map(|w| &w.kind) {
            Some(Kind::Mapped(m)) => m.in_flight(),
            _ => 0,
        }
    }

    /// Writes a record to the journal; when this returns, a crash of the gateway no longer
    /// loses it. An error (the disk is full, say) is logged and loses the record.
    pub fn write(&self, record: AuditRecord) {
        let Some(writer) = &self.writer else { return };
        if let Err(e) = writer.kind.write(&record) {
            tracing::error!("cannot write the audit journal, a record is lost: {e}");
        }
    }

    /// Reads records back (oldest first), from a journal directory.
    pub fn read(dir: &Path, query: &Query) -> Result<Vec<AuditRecord>, String> {
        let (since, until) = query.bounds()?;
        let read = |live: bool| {
            let mut out = Vec::new();
            let files = segments(dir);
            for (i, segment) in files.iter().enumerate() {
                for_each_record(segment, live && i + 1 == files.len(), |r| {
                    if query.matches(&r, since, until) {
                        out.push(r);
                    }
                });
            }
            out
        };
        let mut out = if gateway_writing(dir) {
            read(true)
        } else {
            let out = read(false);
            // A gateway that started meanwhile may have had a copy in progress, read as a
            // crash's gap: read again as it is written.
            if gateway_writing(dir) {
                read(true)
            } else {
                out
            }
        };
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
    /// No record can be in the middle of its copy any more (`write` borrows the journal).
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.stop.store(true, Ordering::Relaxed);
            let closed = match &writer.kind {
                Kind::Mapped(m) => m.close(),
                Kind::Appended(_) => writer.kind.sync(),
            };
            if let Err(e) = closed {
                tracing::error!("cannot close the audit journal: {e}");
            }
            // Released now, not when the syncer thread next wakes and drops the writer: a
            // journal opened again in this process takes it at once.
            // SAFETY: a plain system call on a descriptor the writer keeps open.
            unsafe { libc::flock(writer.lock.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl Writer {
    /// Flushes every `SYNC_EVERY` and applies retention every `RETENTION_EVERY`, until the
    /// journal is closed.
    fn run_syncer(&self) {
        let mut last_retention = Instant::now() - RETENTION_EVERY;
        loop {
            std::thread::sleep(SYNC_EVERY);
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = self.kind.sync() {
                tracing::error!("cannot sync the audit journal: {e}");
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                self.retention();
            }
        }
    }

    /// Deletes whole segments past the age or total-size limit, oldest first; never the
    /// newest, nor the one this process writes (local-mode processes that share the
    /// directory move to the newest when theirs is full or gone).
    fn retention(&self) {
        let (current, current_size) = self.kind.current();
        let mut files = segments(&self.opts.dir);
        files.pop();
        files.retain(|p| *p != current);
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

/// Calls `f` with each record of a segment, from its complete lines. `live` is the newest
/// segment while a gateway writes the journal: there a zero byte is where the written part
/// ends for now (a record still being copied, after which others may be complete already),
/// so reading stops, and a reader that follows the journal by sequence number never passes a
/// record that is about to appear. Elsewhere zeros are a gap a crash left (a record that was
/// never copied in full), and a line resumes after them. A line that is not a record is
/// tried again from each later `{"seq":` in it, which no JSON string holds: local mode's next
/// record after a torn one (a write cut short) is glued to it.
fn for_each_record(path: &Path, live: bool, mut f: impl FnMut(AuditRecord)) {
    const START: &[u8] = b"{\"seq\":";
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
        let mut text = match text.iter().rposition(|&b| b == 0) {
            Some(_) if live => return,
            Some(zero) => &text[zero + 1..],
            None => text,
        };
        while let Some(at) = text.windows(START.len()).position(|w| w == START) {
            text = &text[at..];
            if let Ok(r) = serde_json::from_slice::<AuditRecord>(text) {
                f(r);
                break;
            }
            text = &text[1..];
        }
    }
}

/// The directory's lock file: the gateway (`mapped` writer) holds an exclusive `flock` on it
/// while it writes; local-mode processes (`appended`) hold a shared one. So a gateway and
/// local-mode processes never write one directory at once, and readers learn whether a zero
/// byte in the newest segment may be a copy in progress (see `for_each_record`).
const WRITERS_LOCK: &str = "writers.lock";
const LOCK_WAIT: Duration = if cfg!(test) {
    // The unit tests that expect a refusal need not wait as long.
    Duration::from_millis(200)
} else {
    Duration::from_secs(5)
};

/// Takes the directory's lock for a writer, and repairs the newest segment (the only one a
/// crash can have left mid-copy) whenever no other process writes it: a gateway always, local
/// mode (`exclusive` false) when it can take the lock exclusively first, before it shares
/// it. A reader's check holds the lock shared for a moment, and a
/// local-mode start holds it exclusively while it repairs, so a taken lock is tried again
/// for up to `LOCK_WAIT`.
fn lock_dir(dir: &Path, exclusive: bool) -> Result<File, String> {
    let path = dir.join(WRITERS_LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: a plain system call on a file descriptor this function owns.
    let lock = |how| unsafe { libc::flock(fd, how | libc::LOCK_NB) } == 0;
    let started = Instant::now();
    loop {
        if lock(libc::LOCK_EX) {
            // The only writer: what a crash left can be mended before writing.
            let repaired = segments(dir).pop().map_or(Ok(()), |newest| repair(&newest));
            // Turning the lock into a shared one may drop it first (flock(2)): a gateway
            // starting in that instant makes this start fail below.
            if !exclusive && !lock(libc::LOCK_SH) {
                break;
            }
            return repaired.map(|()| file);
        }
        // Shared with other local-mode processes (never a converted lock: a failed
        // conversion would leave none).
        if !exclusive && lock(libc::LOCK_SH) {
            return Ok(file);
        }
        if started.elapsed() > LOCK_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "the audit journal in {} is being written by {}",
        dir.display(),
        if exclusive {
            "another process (a gateway, or local mode)"
        } else {
            "a gateway (toolgate serve), or a local-mode start is still repairing it"
        }
    ))
}

/// Whether a gateway (`mapped` writer) holds the directory's lock now.
fn gateway_writing(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(WRITERS_LOCK)) else {
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

/// A segment is named after its first record.
fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("audit-{first_seq:020}.jsonl"))
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
    for_each_record(segment, false, |r| last = last.max(r.seq));
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
        // Most blocks hold no zero: one fast search (memchr) each.
        if !block[..n].contains(&0) {
            at += n as u64;
            continue;
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

#[cfg(test)]
impl Audit {
    /// Ends like a killed process: nothing cut to size or synced (the syncer stops).
    fn crash(self) {
        if let Some(writer) = &self.writer {
            writer.stop.store(true, Ordering::Relaxed);
            // SAFETY: a plain system call; the descriptor stays open (leaked with `self`).
            unsafe { libc::flock(writer.lock.as_raw_fd(), libc::LOCK_UN) };
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
            shared: false,
        }
    }

    /// Record `seq`'s journal line, without its newline.
    fn line(seq: u64, tool: &str) -> Vec<u8> {
        let mut r = rec(tool);
        r.seq = seq;
        let mut out = Vec::new();
        r.write_json(&mut out);
        out
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
    fn concurrent_writers_across_segments_of_several_chunks() {
        // About 6 MB of records in segments of three chunks or so.
        concurrent_writers(2_500_000, 4, 6_000);
    }

    #[test]
    fn concurrent_writers_across_segments() {
        concurrent_writers(20_000, 4, 1_500);
    }

    #[test]
    fn a_record_larger_than_a_chunk_gets_a_chunk_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(options(dir.path())).unwrap();
        let big = "b".repeat(3 << 20); // three chunks
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
            let mut out = line(seq, tool);
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
            // The same bytes in a segment a process is writing: maybe a copy in progress. (The
            // lock taken as a gateway holds it, without the repair that `lock_dir` does.)
            let gateway = File::create(dir.path().join(WRITERS_LOCK)).unwrap();
            // SAFETY: a plain system call on a descriptor this test owns.
            assert_eq!(
                unsafe { libc::flock(gateway.as_raw_fd(), libc::LOCK_EX) },
                0
            );
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

    /// Local-mode processes share a directory, appending to one segment; a gateway writes
    /// one alone: it does not start beside either, nor they beside it.
    #[test]
    fn local_mode_journals_share_a_directory_a_gateway_s_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let local = Options {
            shared: true,
            ..options(dir.path())
        };
        let first = Audit::open(local.clone()).unwrap();
        first.write(rec("first-1"));
        let second = Audit::open(local.clone()).unwrap();
        second.write(rec("second-1"));
        first.write(rec("first-2"));
        assert_eq!(segments(dir.path()).len(), 1);
        let tools: Vec<String> = Audit::read(dir.path(), &Query::default())
            .unwrap()
            .into_iter()
            .filter_map(|r| r.tool.map(|t| t.to_string()))
            .collect();
        assert_eq!(tools, ["first-1", "second-1", "first-2"]);
        // Each numbers its own records, from the last number it found (as before the gateway
        // had a writer of its own): local mode's numbers can repeat.
        let seqs: Vec<u64> = seqs(dir.path(), &Query::default());
        assert_eq!(seqs, [1, 2, 2]);
        let gateway = Audit::open(options(dir.path()));
        assert!(
            gateway.is_err_and(|e| e.0.contains("being written by another process")),
            "a gateway beside local mode"
        );
        drop((first, second));
        let gateway = Audit::open(options(dir.path())).unwrap();
        gateway.write(rec("gateway"));
        assert!(
            Audit::open(options(dir.path())).is_err(),
            "a second gateway"
        );
        assert!(
            Audit::open(local).is_err_and(|e| e.0.contains("by a gateway")),
            "local mode beside a gateway"
        );
        drop(gateway);
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.last().unwrap().tool.as_deref(), Some("gateway"));
        assert_eq!(
            all.last().unwrap().seq,
            3,
            "a gateway numbers on from the highest"
        );
    }

    /// Local mode starting on what a crashed gateway left mends it first, then appends.
    #[test]
    fn local_mode_mends_a_crashed_gateway_s_segment_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = Audit::open(options(dir.path())).unwrap();
        gateway.write(rec("gateway"));
        gateway.crash();
        let segment = segments(dir.path()).pop().unwrap();
        assert!(std::fs::read(&segment).unwrap().contains(&0));
        let local = Audit::open(Options {
            shared: true,
            ..options(dir.path())
        })
        .unwrap();
        local.write(rec("local"));
        assert!(!std::fs::read(&segment).unwrap().contains(&0));
        let tools: Vec<Option<Arc<str>>> = Audit::read(dir.path(), &Query::default())
            .unwrap()
            .into_iter()
            .map(|r| r.tool)
            .collect();
        assert_eq!(tools, [Some("gateway".into()), Some("local".into())]);
        assert_eq!(seqs(dir.path(), &Query::default()), [1, 2]);
    }

    /// Local-mode processes follow each other onto the newest segment when theirs is full
    /// (by its size on disk) or deleted (another process's retention), and a record glued to
    /// a torn one still reads.
    #[test]
    fn local_mode_follows_the_newest_segment_and_reads_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let local = Options {
            shared: true,
            segment_bytes: 2_000,
            ..options(dir.path())
        };
        let busy = Audit::open(local.clone()).unwrap();
        let quiet = Audit::open(local).unwrap();
        quiet.write(rec("quiet-1"));
        for i in 0..20 {
            busy.write(rec(&format!("busy-{i}")));
        }
        quiet.write(rec("quiet-2"));
        let newest = segments(dir.path()).pop().unwrap();
        let in_newest = |tool: &str| {
            let mut found = false;
            for_each_record(&newest, false, |r| found |= r.tool.as_deref() == Some(tool));
            found
        };
        assert!(
            in_newest("quiet-2"),
            "the quiet process moved to the newest segment"
        );
        std::fs::remove_file(&newest).unwrap();
        quiet.write(rec("quiet-3"));
        let tools: Vec<String> = Audit::read(dir.path(), &Query::default())
            .unwrap()
            .into_iter()
            .filter_map(|r| r.tool.map(|t| t.to_string()))
            .collect();
        assert!(tools.contains(&"quiet-3".to_string()), "{tools:?}");
        drop((busy, quiet));

        let torn = tempfile::tempdir().unwrap();
        let mut bytes = line(1, "one");
        bytes.push(b'\n');
        bytes.extend_from_slice(&line(2, "two")[..15]);
        bytes.extend_from_slice(&line(3, "three"));
        bytes.push(b'\n');
        std::fs::write(torn.path().join("audit-00000000000000000001.jsonl"), bytes).unwrap();
        assert_eq!(seqs(torn.path(), &Query::default()), [1, 3]);
    }

    /// A journal opened and closed without a record (a gateway that served nothing) leaves
    /// the segment as it was.
    #[test]
    fn a_journal_that_wrote_nothing_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        drop(Audit::open(options(dir.path())).unwrap());
        assert!(segments(dir.path()).is_empty());
        let audit = Audit::open(options(dir.path())).unwrap();
        audit.write(rec("one"));
        drop(audit);
        let before = std::fs::read(&segments(dir.path())[0]).unwrap();
        drop(Audit::open(options(dir.path())).unwrap());
        assert_eq!(std::fs::read(&segments(dir.path())[0]).unwrap(), before);
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
