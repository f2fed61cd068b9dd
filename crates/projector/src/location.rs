//! Where a node's read models are, and what they were made with.
//!
//! A data folder can hold more than one store while the node rebuilds online: `CURRENT` names the store in
//! use (`read-models` when there is no `CURRENT`, as before there was one). Switching stores is one atomic
//! rename of `CURRENT`, after the new store is complete and flushed, so a process killed at any moment
//! comes back to a complete store: the old one until the rename, the new one after it.
//!
//! Each store carries a stamp: the read models' format ([`READ_MODEL_FORMAT`], raised whenever what is
//! stored changes) and a fingerprint of the configuration it was derived with (policy, agencies,
//! timescales, signals, future tolerance). A store whose stamp differs from the node's is rebuilt.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::ProjectorError;
use crate::store::Projector;

/// The format of the read models this build writes. 1: stores from before stamps (they carry none). 3: the
/// history of identity links and the facts they moved (`history.rs`). 4: standing views placed by the
/// registry's areas (`area`, `mash-referral` per area), signal outcomes read as D14, signal names that never
/// repeat (`~2`).
pub const READ_MODEL_FORMAT: u32 = 4;

/// The default store's folder name, and the store in use when `CURRENT` is absent.
pub const DEFAULT_STORE: &str = "read-models";
const POINTER: &str = "CURRENT";
const META_TREE: &str = "meta";
const STAMP_KEY: &[u8] = b"stamp";

/// What a store was made with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub format: u32,
    pub fingerprint: String,
}

impl Stamp {
    pub fn current(fingerprint: &str) -> Self {
        Self {
            format: READ_MODEL_FORMAT,
            fingerprint: fingerprint.to_owned(),
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "format {}, configuration {}", self.format, self.fingerprint)
    }
}

/// The name of the store in use in `data_dir`: what `CURRENT` names, or [`DEFAULT_STORE`] when there is no
/// `CURRENT`. A `CURRENT` that cannot be read, or names no folder of `data_dir`, is an error: falling back
/// would open (and later remove in favour of) the wrong store.
pub fn active_store(data_dir: &Path) -> std::io::Result<String> {
    let pointer = data_dir.join(POINTER);
    let text = match std::fs::read_to_string(&pointer) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DEFAULT_STORE.to_owned()),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", pointer.display()),
            ));
        }
    };
    let name = text.trim();
    if name.is_empty() || name.contains('/') || name.contains("..") || !data_dir.join(name).is_dir() {
        return Err(std::io::Error::other(format!(
            "{} names {name:?}, which is not a folder of {}; restore the file or remove the data folder to rebuild",
            pointer.display(),
            data_dir.display()
        )));
    }
    Ok(name.to_owned())
}

/// The folder of the store in use in `data_dir` (see [`active_store`]).
pub fn active_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    Ok(data_dir.join(active_store(data_dir)?))
}

/// Makes `store` (a folder in `data_dir`) the store in use: `CURRENT` is written beside, synced, renamed
/// over, and the folder synced, so after a crash it names either the old store or `store`, never neither.
pub fn point_to(data_dir: &Path, store: &str) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{POINTER}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{store}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, data_dir.join(POINTER))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes every store in `data_dir` other than the one in use (left by a rebuild that did not finish, or
/// by a switch whose old store was not yet removed). Returns their names.
pub fn remove_others(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let active = active_store(data_dir)?;
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Ok(removed);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_store = name.starts_with(&format!("{DEFAULT_STORE}.rebuild-"))
            || (name == DEFAULT_STORE && active != DEFAULT_STORE);
        if is_store && name != active && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed.push(name);
        }
    }
    Ok(removed)
}

impl Projector {
    /// The store's stamp; `None` for a store from before stamps.
    pub fn stamp(&self) -> Result<Option<Stamp>, ProjectorError> {
        let tree = self.db().open_tree(META_TREE)?;
        Ok(tree.get(STAMP_KEY)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Records what the store was made with, durably.
    pub fn set_stamp(&self, stamp: &Stamp) -> Result<(), ProjectorError> {
        let tree = self.db().open_tree(META_TREE)?;
        tree.insert(STAMP_KEY, serde_json::to_vec(stamp).expect("a stamp serialises"))?;
        self.flush()
    }

    /// Whether nothing has been applied yet.
    pub fn is_empty(&self) -> bool {
        self.checkpoints().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_names_the_store_in_use_and_the_others_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(active_store(dir.path()).unwrap(), DEFAULT_STORE);
        std::fs::create_dir(dir.path().join(DEFAULT_STORE)).unwrap();
        std::fs::create_dir(dir.path().join("read-models.rebuild-1")).unwrap();
        std::fs::create_dir(dir.path().join("read-models.rebuild-2")).unwrap();
        point_to(dir.path(), "read-models.rebuild-2").unwrap();
        assert_eq!(
            active_dir(dir.path()).unwrap(),
            dir.path().join("read-models.rebuild-2")
        );
        let mut removed = remove_others(dir.path()).unwrap();
        removed.sort();
        assert_eq!(removed, vec!["read-models", "read-models.rebuild-1"]);
        assert!(dir.path().join("read-models.rebuild-2").is_dir());
    }

    #[test]
    fn a_pointer_to_nothing_is_an_error_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(DEFAULT_STORE)).unwrap();
        std::fs::write(dir.path().join(POINTER), "read-models.rebuild-9\n").unwrap();
        let e = active_store(dir.path()).unwrap_err();
        assert!(e.to_string().contains("read-models.rebuild-9"), "{e}");
        assert!(remove_others(dir.path()).is_err());
        assert!(dir.path().join(DEFAULT_STORE).is_dir());
    }

    #[test]
    fn a_stamp_is_kept_and_a_store_without_one_says_so() {
        let p = Projector::temporary().unwrap();
        assert_eq!(p.stamp().unwrap(), None);
        p.set_stamp(&Stamp::current("abc")).unwrap();
        assert_eq!(p.stamp().unwrap(), Some(Stamp::current("abc")));
    }
}
