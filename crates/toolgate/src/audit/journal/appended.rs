//! Local mode's journal writer: each record appended with one `write(2)` to the newest
//! segment, opened `O_APPEND`. Several local-mode processes (one per agent's server) share a
//! state directory and append to the same segment; each line arrives whole, and each process
//! numbers its own records from the last number it found, so numbers can repeat between
//! processes. One agent's calls come one at a time, so the write happens on the calling
//! thread, under this process's lock: a copy into the page cache, where a crash does not
//! lose it. The syncer flushes outside that lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Options, last_seq, segment_path, segments};
use crate::audit::record::AuditRecord;

pub(super) struct AppendedJournal {
    opts: Options,
    state: Mutex<Appending>,
    /// Segments left for a newer one: synced once more by the syncer.
    retired: Mutex<Vec<Arc<File>>>,
    dirty: AtomicBool,
    /// This process may have created a segment since the directory was last synced.
    created: AtomicBool,
}

struct Appending {
    file: Arc<File>,
    path: PathBuf,
    seq: u64,
    line: Vec<u8>,
    /// A write failed part-way: the next line starts on a line of its own.
    torn: bool,
}

impl AppendedJournal {
    /// Appends to the newest segment (the caller has repaired it, if it could), or starts one.
    pub(super) fn open(opts: Options) -> Result<AppendedJournal, String> {
        let newest = segments(&opts.dir).pop();
        let seq = newest.as_deref().map_or(0, last_seq);
        let path = newest.unwrap_or_else(|| segment_path(&opts.dir, seq + 1));
        let file = open_appending(&path)?;
        Ok(AppendedJournal {
            opts,
            state: Mutex::new(Appending {
                file,
                path,
                seq,
                line: Vec::new(),
                torn: false,
            }),
            retired: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
            created: AtomicBool::new(true),
        })
    }

    pub(super) fn write(&self, record: &AuditRecord) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        self.follow_the_newest(state)?;
        state.seq += 1;
        state.line.clear();
        if state.torn {
            state.line.push(b'\n');
        }
        record.write_json_with_seq(state.seq, &mut state.line);
        state.line.push(b'\n');
        let written = (&*state.file).write_all(&state.line);
        state.torn = written.is_err();
        written.map_err(|e| format!("cannot write {}: {e}", state.path.display()))?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Moves on when the segment is full or gone (another process's retention), by its size
    /// on disk, which the other local-mode processes grow too: to the newest segment when
    /// another process has started one, else to a new one. So the processes sharing a
    /// directory keep appending to one segment.
    fn follow_the_newest(&self, state: &mut Appending) -> Result<(), String> {
        let meta = state
            .file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", state.path.display()))?;
        if meta.nlink() > 0 && meta.len() < self.opts.segment_bytes {
            return Ok(());
        }
        let newest = segments(&self.opts.dir).pop();
        if let Some(p) = &newest {
            // Numbered on from the newest records, so that a new segment's name sorts last.
            state.seq = state.seq.max(last_seq(p));
        }
        let path = match newest {
            Some(p)
                if p != state.path
                    && std::fs::metadata(&p).is_ok_and(|m| m.len() < self.opts.segment_bytes) =>
            {
                p
            }
            _ => segment_path(&self.opts.dir, state.seq + 1),
        };
        let file = open_appending(&path)?;
        let old = std::mem::replace(&mut state.file, file);
        state.path = path;
        state.torn = false;
        self.created.store(true, Ordering::Release);
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(old);
        Ok(())
    }

    pub(super) fn sync(&self) -> std::io::Result<()> {
        let retired: Vec<Arc<File>> =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        for file in retired {
            file.sync_data()?;
        }
        if self.dirty.swap(false, Ordering::AcqRel) {
            // Flushed outside the writers' lock: an fdatasync can take milliseconds.
            self.current_file().sync_data()?;
        }
        if self.created.swap(false, Ordering::AcqRel) {
            File::open(&self.opts.dir)?.sync_all()?;
        }
        Ok(())
    }

    pub(super) fn current_path(&self) -> PathBuf {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .clone()
    }

    pub(super) fn current_size(&self) -> u64 {
        self.current_file().metadata().map_or(0, |m| m.len())
    }

    fn current_file(&self) -> Arc<File> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.file.clone()
    }
}

fn open_appending(path: &Path) -> Result<Arc<File>, String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Arc::new(file))
}
