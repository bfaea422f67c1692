//! Where the local store stages writes: temp files renamed into place and upload part
//! directories beside the destination, named after the process that created them, so that a
//! later run can tell a temp file whose writer died (and remove it) from one being written.

use std::collections::BTreeSet;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

use rand::Rng;

use super::{HIDDEN, io_error, key_of};
use crate::error::Result;

pub(super) fn random_suffix() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// A name part that says which process owns the staging it names (`PID-RANDOM`): staging
/// whose process is gone is abandoned, and a later run removes it.
pub(super) fn owned_suffix() -> String {
    format!("{}-{}", std::process::id(), random_suffix())
}

/// Whether hidden entry `name` is a temp file (a write under way, renamed into place when it
/// ends) whose owning process is gone on this host: no one will ever finish it. Upload part
/// directories are not judged this way: a resumed copy goes on writing into one its dead
/// predecessor created; they go when their upload is aborted (the gateway's journal keeps
/// every upload it opened until then).
fn is_abandoned(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{HIDDEN}tmp-")) else {
        return false;
    };
    // Names without an owner (written by older versions) are left alone.
    let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes `write` into a temp file beside `dest`, syncs it and renames it into place.
pub(super) fn write_atomically(
    dest: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_staged(dest, Durability::EachFile, write)
}

/// When a staged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Synced before it is renamed into place: what an agent reports landed is on disk.
    EachFile,
    /// Left to the page cache; the writer syncs the whole filesystem once when it is done
    /// (see `LocalStore::sync_written`).
    Later,
}

/// Writes `write` into a temp file beside `dest` and renames it into place; a failure leaves
/// nothing behind.
pub(super) fn write_staged(
    dest: &Path,
    durability: Durability,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| std::io::Error::new(IoKind::InvalidInput, "no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let name = dest
        .file_name()
        .ok_or_else(|| std::io::Error::new(IoKind::InvalidInput, "key names a directory"))?;
    let tmp = dir.join(format!(
        "{HIDDEN}tmp-{}-{}",
        owned_suffix(),
        name.to_string_lossy()
    ));
    let result = (|| {
        // Readable too: a writer may read back what it wrote.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        write(&mut f)?;
        if durability == Durability::EachFile {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(super) fn staging_dir(dest: &Path, upload_id: &str) -> PathBuf {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!("{HIDDEN}upload-{upload_id}-{name}"))
}

/// Removes abandoned temp files (see [`is_abandoned`]) directly in `dirs`; returns how many
/// went.
pub(super) fn sweep(dirs: BTreeSet<PathBuf>) -> Result<usize> {
    let mut removed = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_abandoned(&name) {
                continue;
            }
            let path = e.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(io_error("sweep", &key_of(&path), e)),
            }
        }
    }
    Ok(removed)
}
