//! Local mode's journal writer: each record appended with one `write(2)` to the newest
//! segment, opened `O_APPEND`. Several local-mode processes (one per agent's server) share a
//! state directory and append to the same segment; each line arrives whole, and each process
//! numbers its own records from the last number it found, so numbers can repeat between
//! processes. One agent's calls come one at a time, so the write happens on the calling
//! thread, under this process's lock: a few microseconds into the page cache, where a crash
//! does not lose it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Options, last_seq, segment_path, segments};
use crate::audit::record::AuditRecord;

pub(super) struct AppendedJournal {
    opts: Options,
    state: Mutex<Appending>,
    dirty: AtomicBool,
}

struct Appending {
    file: File,
    path: PathBuf,
    size: u64,
    seq: u64,
    line: Vec<u8>,
}

impl AppendedJournal {
    /// Appends to the newest segment (the caller has repaired it, if it could), or starts one.
    pub(super) fn open(opts: Options) -> Result<AppendedJournal, String> {
        let newest = segments(&opts.dir).pop();
        let seq = newest.as_deref().map_or(0, last_seq);
        let path = newest.unwrap_or_else(|| segment_path(&opts.dir, seq + 1));
        let (file, size) = open_appending(&path)?;
        Ok(AppendedJournal {
            opts,
            state: Mutex::new(Appending {
                file,
                path,
                size,
                seq,
                line: Vec::new(),
            }),
            dirty: AtomicBool::new(false),
        })
    }

    pub(super) fn write(&self, record: &AuditRecord) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        if state.size >= self.opts.segment_bytes {
            let path = segment_path(&self.opts.dir, state.seq + 1);
            let (file, size) = open_appending(&path)?;
            (state.file, state.path, state.size) = (file, path, size);
        }
        state.seq += 1;
        state.line.clear();
        record.write_json_with_seq(state.seq, &mut state.line);
        state.line.push(b'\n');
        state
            .file
            .write_all(&state.line)
            .map_err(|e| format!("cannot write {}: {e}", state.path.display()))?;
        state.size += state.line.len() as u64;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.file.sync_data()?;
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
        self.state.lock().unwrap_or_else(|p| p.into_inner()).size
    }
}

fn open_appending(path: &Path) -> Result<(File, u64), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}
