//! Policy files: loaded and compiled at start, watched, and swapped atomically when a valid
//! new version is written. The request path reads the current version with one atomic load
//! (`arc-swap`); it never waits for a reload, and never sees a half-applied one.
//!
//! An invalid edit is refused: its errors are logged and the previous version stays in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use toolgate_policy::Policy;

/// How long a burst of file events must settle before the file is read again.
const RELOAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

/// One version of a policy, as the request path sees it.
pub struct Loaded {
    pub policy: Policy,
    /// Counts valid versions of this file since the gateway started, from 1.
    pub version: u64,
    /// The text it was compiled from: a reload with the same text is not a new version.
    text: String,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loaded(v{})", self.version)
    }
}

impl Loaded {
    /// A version from the state store (its number is the store's).
    pub fn stored(policy: Policy, version: u64, text: String) -> Loaded {
        Loaded {
            policy,
            version,
            text,
        }
    }
}

/// A policy file and its current version.
pub struct PolicyFile {
    pub path: PathBuf,
    current: ArcSwap<Loaded>,
    /// Serializes reloads of this file (the watcher may fire several events for one save).
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for PolicyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PolicyFile({}, v{})",
            self.path.display(),
            self.current().version
        )
    }
}

impl PolicyFile {
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Re-reads the file; swaps in a new version if it is valid and different.
    pub fn reload(&self) -> Reload {
        let _guard = self.reload_lock.lock().expect("reload lock");
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return Reload::Refused(vec![format!("cannot read: {e}")]),
        };
        let current = self.current.load();
        if text == current.text {
            return Reload::Unchanged;
        }
        match Policy::parse(&text) {
            Ok(policy) => {
                let version = current.version + 1;
                self.current.store(Arc::new(Loaded {
                    policy,
                    version,
                    text,
                }));
                Reload::Applied(version)
            }
            Err(problems) => Reload::Refused(problems.iter().map(|p| p.to_string()).collect()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Applied(u64),
    Refused(Vec<String>),
}

/// Every policy file the configuration names, each loaded once however many grants use it.
#[derive(Default)]
pub struct PolicySet {
    files: HashMap<PathBuf, Arc<PolicyFile>>,
}

/// A policy file that could not be loaded at start: the gateway does not start without it.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy {} is invalid:", self.path.display())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl PolicySet {
    /// Every policy file the config names (its grants' and its servers'), each loaded once.
    pub fn from_config(config: &crate::config::Config) -> Result<PolicySet, LoadError> {
        let mut set = PolicySet::default();
        let grants = config.grants.iter().filter_map(|g| g.policy.as_ref());
        for path in grants.chain(config.servers.iter().filter_map(|s| s.policy.as_ref())) {
            set.load(path)?;
        }
        Ok(set)
    }

    /// Loads (or returns the already loaded) policy at `path`.
    pub fn load(&mut self, path: &Path) -> Result<Arc<PolicyFile>, LoadError> {
        // Absolute, so that the watcher's event paths compare equal to it.
        let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(f) = self.files.get(path) {
            return Ok(f.clone());
        }
        let fail = |problems| LoadError {
            path: path.to_path_buf(),
            problems,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
        let policy =
            Policy::parse(&text).map_err(|ps| fail(ps.iter().map(|p| p.to_string()).collect()))?;
        let file = Arc::new(PolicyFile {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(Loaded {
                policy,
                version: 1,
                text,
            }),
            reload_lock: Mutex::new(()),
        });
        self.files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    /// The already loaded file at `path`.
    pub fn get(&self, path: &Path) -> Option<Arc<PolicyFile>> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.files.get(&path).cloned()
    }

    /// Watches every loaded file's folder (editors replace files by renaming, which a watch
    /// on the file itself would miss). The returned watcher must be kept alive.
    pub fn watch(&self) -> notify::Result<Option<notify::RecommendedWatcher>> {
        use notify::Watcher;
        if self.files.is_empty() {
            return Ok(None);
        }
        let files: Vec<Arc<PolicyFile>> = self.files.values().cloned().collect();
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let watched = files.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !(event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove()) {
                    return;
                }
                for (i, file) in watched.iter().enumerate() {
                    if event.paths.iter().any(|p| p == &file.path) {
                        let _ = tx.send(i);
                    }
                }
            })?;
        // A save is often several events (truncate, write, rename): wait for the burst to
        // settle before reading, so a half-written file is not reported as an invalid edit.
        std::thread::Builder::new()
            .name("policy-reload".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    std::thread::sleep(RELOAD_SETTLE);
                    let mut touched = vec![first];
                    touched.extend(rx.try_iter());
                    touched.sort_unstable();
                    touched.dedup();
                    for i in touched {
                        let file = &files[i];
                        if file.path.exists() {
                            log_reload(file, file.reload());
                        }
                    }
                }
            })?;
        let mut dirs: Vec<PathBuf> = self
            .files
            .keys()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        }
        Ok(Some(watcher))
    }
}

fn log_reload(file: &PolicyFile, result: Reload) {
    match result {
        Reload::Unchanged => {}
        Reload::Applied(version) => {
            tracing::info!(policy = %file.path.display(), version, "policy reloaded; the new version applies from the next call");
        }
        Reload::Refused(problems) => {
            tracing::error!(
                policy = %file.path.display(),
                in_force = file.current().version,
                "policy edit refused, the previous version stays in force: {}",
                problems.join("; ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_applies_valid_versions_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"version":"1","default":"deny"}"#).unwrap();
        let mut set = PolicySet::default();
        let file = set.load(&path).unwrap();
        assert_eq!(file.current().version, 1);
        assert_eq!(file.reload(), Reload::Unchanged);

        std::fs::write(&path, r#"{"version":"1","default":"allow"}"#).unwrap();
        assert_eq!(file.reload(), Reload::Applied(2));
        assert_eq!(
            file.current().policy.default_action(),
            toolgate_policy::DefaultAction::Allow
        );

        std::fs::write(&path, r#"{"version":"1","default":"sometimes"}"#).unwrap();
        assert!(matches!(file.reload(), Reload::Refused(p) if p[0].contains("/default")));
        assert_eq!(file.current().version, 2);
        assert_eq!(
            file.current().policy.default_action(),
            toolgate_policy::DefaultAction::Allow
        );

        // The same file named twice is loaded once.
        assert!(Arc::ptr_eq(&set.load(&path).unwrap(), &file));
    }

    #[test]
    fn invalid_at_start_lists_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"version":"2","default":"x"}"#).unwrap();
        let err = PolicySet::default().load(&path).err().unwrap();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            PolicySet::default()
                .load(&dir.path().join("missing.json"))
                .is_err()
        );
    }
}
