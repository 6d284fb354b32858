//! The audit journal: JSON lines in segment files `state_dir/audit/audit-<first seq>.jsonl`.
//!
//! One writer thread owns the files. The request path hands it a record and waits for the
//! acknowledgement that the batch holding it was written; everything queued meanwhile goes in
//! the same write (group commit). Records get their sequence numbers in the writer, in file
//! order, so `tail --follow` can resume from the last number it saw. Segments roll at a size
//! and are deleted by age and by total size (retention).
//!
//! The records of the calls a thread has ready at the same moment travel together: the first
//! record of a round spawns a hand-over task, which runs after the calls already queued on
//! the runtime, takes every record the thread's calls added meanwhile, sends them as one job
//! and, on the writer's one acknowledgement, wakes their calls. On the gateway's
//! single-threaded runtimes that is one cross-thread wake each way per round instead of per
//! call: at 64 sessions that was most of what the audit cost.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::record::{ArgumentsMode, AuditRecord, Redactor};

const SYNC_EVERY: Duration = Duration::from_millis(100);
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const MAX_BATCH: usize = 4096;
/// How long the writer polls for the next record before sleeping, when records are coming
/// fast (see `Writer::run`).
const LINGER: Duration = Duration::from_micros(50);

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

/// Records for the writer, acknowledged together once written. The acknowledgement carries
/// the records back, so that they are freed on the thread that allocated them: freed by the
/// writer, they cost jemalloc a flush of its per-thread caches to their arena, and the
/// serving thread a refill (about 1,800 instructions per call at 64 sessions, callgrind).
struct Job {
    records: Vec<AuditRecord>,
    ack: oneshot::Sender<Written>,
}

/// The records of a job, once written.
type Written = Vec<AuditRecord>;

pub struct Audit {
    /// Each thread's current round (see the module's header).
    rounds: thread_local::ThreadLocal<Arc<std::sync::Mutex<Round>>>,
    tx: Option<mpsc::Sender<Job>>,
    depth: Arc<AtomicUsize>,
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
    /// Opens the journal (starting its writer) or, when disabled, a sink that records nothing.
    pub fn open(opts: Options) -> Result<Audit, AuditConfigError> {
        let redactor = Arc::new(Redactor::new(&opts.secret_patterns).map_err(AuditConfigError)?);
        let depth = Arc::new(AtomicUsize::new(0));
        let mut audit = Audit {
            rounds: thread_local::ThreadLocal::new(),
            tx: None,
            depth: depth.clone(),
            redactor,
            arguments: opts.arguments,
            dir: opts.dir.clone(),
        };
        if !opts.enabled {
            return Ok(audit);
        }
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| AuditConfigError(format!("cannot create {}: {e}", opts.dir.display())))?;
        let last_seq = last_seq(&opts.dir);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = Writer::new(opts, last_seq).map_err(AuditConfigError)?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx, depth))
            .map_err(|e| AuditConfigError(format!("cannot start the audit writer: {e}")))?;
        audit.tx = Some(tx);
        Ok(audit)
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Records awaiting their write.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Hands a record to the writer and waits until it has been written.
    pub async fn write(&self, record: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        let round = self.rounds.get_or_default();
        let first = {
            let mut pending = round.lock().unwrap_or_else(|p| p.into_inner());
            pending.records.push(record);
            pending.waiters.push(ack);
            pending.records.len() == 1
        };
        if first {
            let handover = HandOver {
                round: round.clone(),
                tx: tx.clone(),
                depth: self.depth.clone(),
                ran: false,
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(async move { handover.run().await })),
                // Not on a tokio runtime (nothing here is): this call hands over itself.
                Err(_) => handover.run().await,
            }
        }
        let _ = done.await;
    }

    /// Reads records back (oldest first), from a journal directory.
    pub fn read(dir: &Path, query: &Query) -> Result<Vec<AuditRecord>, String> {
        let (since, until) = query.bounds()?;
        let mut out = Vec::new();
        for segment in segments(dir) {
            let Ok(file) = File::open(&segment) else {
                continue;
            };
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                // A torn last line (a crash mid-write of an unanswered call) is skipped.
                if let Ok(r) = serde_json::from_str::<AuditRecord>(&line)
                    && query.matches(&r, since, until)
                {
                    out.push(r);
                }
            }
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

/// Queues records for the writer; an error (the writer has stopped) loses them, loudly.
fn send(
    tx: &mpsc::Sender<Job>,
    depth: &AtomicUsize,
    records: Vec<AuditRecord>,
    ack: oneshot::Sender<Written>,
) {
    let count = records.len();
    if tx.send(Job { records, ack }).is_err() {
        depth.fetch_sub(count, Ordering::Relaxed);
        tracing::error!("audit writer has stopped: {count} record(s) lost");
    }
}

/// The records this thread's calls have added since its last hand-over (for one journal), and
/// the calls waiting for them. Behind a mutex only so that the hand-over task, which may run on
/// another thread of a multi-threaded runtime, takes exactly the round it was spawned for; on
/// the gateway's single-threaded runtimes it is never contended.
#[derive(Default)]
struct Round {
    records: Vec<AuditRecord>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Round {
    /// Takes the round, leaving it empty: the next record starts a new one.
    fn take(round: &std::sync::Mutex<Round>) -> Round {
        std::mem::take(&mut *round.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The task that sends one round of records to the writer and answers its calls. Spawned by
/// the round's first record, it runs after the calls already queued on the runtime, which
/// may add theirs meanwhile.
struct HandOver {
    round: Arc<std::sync::Mutex<Round>>,
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    ran: bool,
}

impl HandOver {
    async fn run(mut self) {
        self.ran = true;
        let round = Round::take(&self.round);
        let (ack, done) = oneshot::channel();
        send(&self.tx, &self.depth, round.records, ack);
        // Dropped unanswered (the writer stopped), the waiters go on as they would have.
        if let Ok(written) = done.await {
            for waiter in round.waiters {
                let _ = waiter.send(());
            }
            drop(written);
        }
    }
}

impl Drop for HandOver {
    /// A runtime shutting down drops its queued tasks unpolled: the round this task was
    /// spawned for still goes to the writer, unacknowledged (its calls are being dropped too,
    /// but they may have reached the upstream).
    fn drop(&mut self) {
        if !self.ran {
            let round = Round::take(&self.round);
            if !round.records.is_empty() {
                send(&self.tx, &self.depth, round.records, oneshot::channel().0);
            }
        }
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

fn last_seq(dir: &Path) -> u64 {
    let Some(last) = segments(dir).pop() else {
        return 0;
    };
    let Ok(file) = File::open(&last) else {
        return 0;
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<AuditRecord>(&l).ok())
        .map(|r| r.seq)
        .max()
        .unwrap_or(0)
}

struct Writer {
    opts: Options,
    seq: u64,
    file: File,
    size: u64,
    sync: Arc<Syncer>,
    last_retention: Instant,
}

/// Flushes the current segment to disk every `SYNC_EVERY`, on its own thread: an fdatasync
/// can take milliseconds, and the writer must not stop acknowledging records meanwhile.
struct Syncer {
    file: std::sync::Mutex<File>,
    dirty: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
}

impl Syncer {
    fn run(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(SYNC_EVERY);
            self.sync_now();
        }
    }

    fn sync_now(&self) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let file = self
                .file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_clone();
            match file.and_then(|f| f.sync_data()) {
                Ok(()) => {}
                Err(e) => tracing::error!("cannot sync the audit journal: {e}"),
            }
        }
    }
}

impl Writer {
    fn new(opts: Options, seq: u64) -> Result<Writer, String> {
        let (file, size) = open_segment(&opts.dir, seq + 1, false)?;
        let sync = Arc::new(Syncer {
            file: std::sync::Mutex::new(file.try_clone().map_err(|e| e.to_string())?),
            dirty: std::sync::atomic::AtomicBool::new(false),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let syncer = sync.clone();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run())
            .map_err(|e| format!("cannot start the audit syncer: {e}"))?;
        Ok(Writer {
            opts,
            seq,
            file,
            size,
            sync,
            last_retention: Instant::now() - RETENTION_EVERY,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Job>, depth: Arc<AtomicUsize>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        // Whether the last record came soon after the batch before it: then the next one is
        // likely a few µs away too, and polling for it briefly spares the sender waking this
        // thread from sleep (a futex wake and two context switches per batch). Under light
        // load records are far apart and the thread sleeps at once.
        let mut busy = false;
        loop {
            let idle_from = Instant::now();
            let mut polled = None;
            while busy && polled.is_none() && idle_from.elapsed() < LINGER {
                match rx.try_recv() {
                    Ok(job) => polled = Some(job),
                    Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
            let first = match polled.map_or_else(|| rx.recv_timeout(RETENTION_EVERY), Ok) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            busy = idle_from.elapsed() < LINGER;
            let mut records = first.records.len();
            let mut batch = vec![first];
            while records < MAX_BATCH
                && let Ok(job) = rx.try_recv()
            {
                records += job.records.len();
                batch.push(job);
            }
            buf.clear();
            let mut count = 0;
            for record in batch.iter_mut().flat_map(|job| &mut job.records) {
                self.seq += 1;
                record.seq = self.seq;
                record.write_json(&mut buf);
                buf.push(b'\n');
                count += 1;
            }
            if let Err(e) = self.file.write_all(&buf) {
                tracing::error!("cannot write the audit journal: {e}");
            }
            self.size += buf.len() as u64;
            self.sync.dirty.store(true, Ordering::Release);
            depth.fetch_sub(count, Ordering::Relaxed);
            for job in batch {
                let _ = job.ack.send(job.records);
            }
            self.housekeeping();
        }
        self.sync.stop.store(true, Ordering::Relaxed);
        self.sync.sync_now();
    }

    fn housekeeping(&mut self) {
        if self.size >= self.opts.segment_bytes {
            // The full segment is synced once, here; then the syncer follows the new one.
            if let Err(e) = self.file.sync_data() {
                tracing::error!("cannot sync the audit journal: {e}");
            }
            match open_segment(&self.opts.dir, self.seq + 1, true).and_then(|(f, size)| {
                let clone = f.try_clone().map_err(|e| e.to_string())?;
                Ok((f, clone, size))
            }) {
                Ok((file, clone, size)) => {
                    self.file = file;
                    self.size = size;
                    *self.sync.file.lock().unwrap_or_else(|p| p.into_inner()) = clone;
                }
                Err(e) => tracing::error!("cannot start a new audit segment: {e}"),
            }
        }
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            self.retention();
        }
    }

    /// Deletes whole segments past the age or total-size limit, never the one being written.
    fn retention(&self) {
        let mut files = segments(&self.opts.dir);
        files.pop();
        let max_age = Duration::from_secs(self.opts.retention_days * 86_400);
        let mut sizes: Vec<(PathBuf, u64, SystemTime)> = files
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|s| s.1).sum::<u64>() + self.size;
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

/// The segment to write to: a new one named after its first record when `fresh`, else the
/// newest one (so that restarts keep appending to it until it is full).
fn open_segment(dir: &Path, first_seq: u64, fresh: bool) -> Result<(File, u64), String> {
    let new = dir.join(format!("audit-{first_seq:020}.jsonl"));
    let path = if fresh {
        new
    } else {
        segments(dir).pop().unwrap_or(new)
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A crash mid-write can leave a torn last line: end it, so the next record starts clean.
    if size > 0 && !ends_with_newline(&path) {
        let mut f = &file;
        f.write_all(b"\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        size += 1;
    }
    Ok((file, size))
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return true;
    };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
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

    /// A runtime like each of the gateway's serving threads runs.
    fn single_threaded() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn rec(tool: &str) -> AuditRecord {
        AuditRecord {
            time: "2026-11-26T00:00:00.000Z".into(),
            server: "s".into(),
            tool: Some(tool.into()),
            ..Default::default()
        }
    }

    #[test]
    fn written_before_acknowledged_numbered_and_continued_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rt = single_threaded();
        {
            let audit = Audit::open(options(dir.path())).unwrap();
            rt.block_on(async {
                futures_util::future::join_all((0..50).map(|i| audit.write(rec(&format!("t{i}")))))
                    .await;
            });
            // Acknowledged means written: readable now, before any sync or shutdown.
            let all = Audit::read(dir.path(), &Query::default()).unwrap();
            assert_eq!(all.len(), 50);
            let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(50));
        let audit = Audit::open(options(dir.path())).unwrap();
        rt.block_on(audit.write(rec("after")));
        let q = Query {
            tool: Some("after".into()),
            ..Default::default()
        };
        assert_eq!(Audit::read(dir.path(), &q).unwrap()[0].seq, 51);
        let q = Query {
            after_seq: Some(48),
            limit: Some(2),
            ..Default::default()
        };
        let seqs = |q: &Query| {
            Audit::read(dir.path(), q)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(&q),
            vec![49, 50],
            "pages forward after a sequence number"
        );
        assert_eq!(
            seqs(&Query {
                limit: Some(2),
                ..Default::default()
            }),
            vec![50, 51],
            "else the newest"
        );
    }

    /// Calls spread over several rounds of one single-threaded runtime, as the gateway's
    /// serving threads run them: every record is on file when its call goes on, none is lost
    /// or numbered twice, and a call's records keep their order.
    #[test]
    fn records_handed_over_by_rounds_are_each_written_before_their_call_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let rt = single_threaded();
        let audit = Arc::new(Audit::open(options(dir.path())).unwrap());
        let path = dir.path().to_path_buf();
        rt.block_on(async {
            let calls = (0..40).map(|call| {
                let audit = audit.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    for step in 0..3 {
                        let tool = format!("c{call}-{step}");
                        audit.write(rec(&tool)).await;
                        let q = Query {
                            tool: Some(tool.clone()),
                            ..Default::default()
                        };
                        assert_eq!(Audit::read(&path, &q).unwrap().len(), 1, "{tool} on file");
                        tokio::task::yield_now().await;
                    }
                })
            });
            for call in futures_util::future::join_all(calls).await {
                call.unwrap();
            }
        });
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
        for call in 0..40 {
            let steps: Vec<&str> = all
                .iter()
                .filter_map(|r| r.tool.as_deref())
                .filter(|t| t.starts_with(&format!("c{call}-")))
                .collect();
            let expected: Vec<String> = (0..3).map(|s| format!("c{call}-{s}")).collect();
            assert_eq!(steps, expected);
        }
    }

    /// On a multi-threaded runtime (local mode) a hand-over may run on another thread than the
    /// calls whose round it takes: it still takes exactly that round.
    #[test]
    fn records_from_a_multi_threaded_runtime_are_all_written() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let audit = Arc::new(Audit::open(options(dir.path())).unwrap());
        rt.block_on(async {
            let calls = (0..200).map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.write(rec(&format!("t{i}"))).await })
            });
            for call in futures_util::future::join_all(calls).await {
                call.unwrap();
            }
        });
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(audit.queue_depth(), 0);
    }

    /// A write from a thread that does not drive the runtime (`Handle::block_on` on a blocking
    /// thread): the hand-over runs on the runtime's own thread and still takes that round.
    #[test]
    fn a_write_from_a_thread_that_does_not_drive_the_runtime_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let rt = single_threaded();
        let audit = Arc::new(Audit::open(options(dir.path())).unwrap());
        rt.block_on(async {
            let handle = tokio::runtime::Handle::current();
            let (a, b) = (audit.clone(), audit.clone());
            tokio::task::spawn_blocking(move || handle.block_on(a.write(rec("blocking"))))
                .await
                .unwrap();
            // And the thread's round was emptied: a second write is handed over too.
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || handle.block_on(b.write(rec("again"))))
                .await
                .unwrap();
        });
        let tools: Vec<Option<Arc<str>>> = Audit::read(dir.path(), &Query::default())
            .unwrap()
            .into_iter()
            .map(|r| r.tool)
            .collect();
        assert_eq!(tools, [Some("blocking".into()), Some("again".into())]);
    }

    /// A runtime that stops drops its queued tasks unpolled, the hand-over of the last round
    /// among them: that round's records still reach the file.
    #[test]
    fn a_round_whose_runtime_stops_before_its_hand_over_is_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(options(dir.path())).unwrap();
        let rt = single_threaded();
        rt.block_on(async {
            // Polled once: the record joins this thread's round and the hand-over is spawned,
            // but block_on returns before the runtime runs it.
            let mut write = std::pin::pin!(audit.write(rec("stranded")));
            assert!(futures_util::poll!(write.as_mut()).is_pending());
        });
        drop(rt);
        let q = Query {
            tool: Some("stranded".into()),
            ..Default::default()
        };
        for _ in 0..100 {
            if !Audit::read(dir.path(), &q).unwrap().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the stranded record was never written");
    }

    #[test]
    fn segments_roll_at_their_size_and_retention_keeps_the_total_under_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let rt = single_threaded();
        let audit = Audit::open(Options {
            segment_bytes: 2_000,
            max_bytes: 8_000,
            ..options(dir.path())
        })
        .unwrap();
        rt.block_on(async {
            for i in 0..200 {
                audit.write(rec(&format!("tool-{i}"))).await;
            }
        });
        assert!(segments(dir.path()).len() > 3, "segments roll");
        drop(audit);
        // A new writer runs retention at once: the oldest segments go until the total fits.
        let audit = Audit::open(Options {
            segment_bytes: 2_000,
            max_bytes: 8_000,
            ..options(dir.path())
        })
        .unwrap();
        rt.block_on(audit.write(rec("last")));
        std::thread::sleep(Duration::from_millis(200));
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

    #[test]
    fn torn_lines_are_skipped_and_disabled_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-00000000000000000001.jsonl"), b"{\"seq\":1,\"time\":\"t\",\"request_id\":\"r\",\"server\":\"s\",\"argument_keys\":[],\"http_status\":200,\"decision_us\":0}\n{\"seq\":2,\"ti").unwrap();
        assert_eq!(Audit::read(dir.path(), &Query::default()).unwrap().len(), 1);
        // A writer opened after the crash ends the torn line and appends cleanly.
        let audit = Audit::open(options(dir.path())).unwrap();
        single_threaded().block_on(audit.write(rec("next")));
        let all = Audit::read(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        let off = Audit::open(Options {
            enabled: false,
            ..options(&dir.path().join("off"))
        })
        .unwrap();
        single_threaded().block_on(off.write(rec("x")));
        assert!(!dir.path().join("off").exists());
    }
}
