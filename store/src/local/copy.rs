//! Copies between two paths of this machine: the filesystem's own server-side copy, with no
//! agent and no byte leaving the process.
//!
//! The source is read once, pinned to the version listed (its identity before and after the
//! read, as a pinned `get_range` is), into a file of no name beside the destination, which is
//! read back (its CRC32C must equal the source's) and linked into place. Files are not synced one
//! by one: the store remembers each filesystem it wrote and [`sync_filesystems`] syncs each
//! once, before the copy reports success; a crash before that leaves at worst files a rerun
//! writes again, never a success reported for bytes that were not on disk.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::staging::{Durability, write_staged};
use super::{identity, io_error, marker_dir, path_of, set_modified};
use crate::error::{ErrorKind, Result, StoreError};
use crate::{Copied, CopyProof, CopySource, Properties, StoreLocation};

/// Bytes read or written per call.
const BUFFER: usize = 1024 * 1024;

/// The filesystems copies were written to, by device: one directory on each.
pub(super) type Written = std::sync::Arc<std::sync::Mutex<BTreeMap<u64, PathBuf>>>;

/// Copies `source` (a local file) to `key`, carrying the modification time of `properties`
/// (`None`: the source file's own).
pub(super) fn copy_file(
    source: &CopySource,
    key: &str,
    properties: Option<&Properties>,
    written: &Written,
) -> Result<Copied> {
    if source.location != StoreLocation::Local {
        return Err(StoreError::new(
            ErrorKind::InvalidInput,
            "file://",
            "copy",
            key,
            format!("cannot copy server-side from {}", source.location),
        ));
    }
    if let Some(dir) = marker_dir("copy", key)? {
        // A directory marker is its directory: there are no bytes to check.
        std::fs::create_dir_all(&dir).map_err(|e| io_error("copy", key, e))?;
        return Ok(Copied::default());
    }
    let dest = path_of("copy", key)?;
    let mut from = std::fs::File::open(path_of("copy", &source.key)?).map_err(|e| {
        let mut e = io_error("copy", key, e);
        e.message = format!("reading the source /{}: {}", source.key, e.message);
        e
    })?;
    let (version, own_time) = pinned_version(&from, source, key)?;
    let modified = match properties {
        Some(p) => p.modified,
        None => own_time,
    };
    let mut source_crc = 0u32;
    let mut copy_crc = 0u32;
    let outcome = write_staged(&dest, Durability::Later, |out| {
        // One byte more than the file: a small file is read in one call, its end seen by a
        // short read at the listed size (growing after it would change its identity below).
        let mut buffer = vec![0u8; (source.size as usize).saturating_add(1).clamp(1, BUFFER)];
        let mut read = 0u64;
        loop {
            let n = from.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            source_crc = crc32c::crc32c_append(source_crc, &buffer[..n]);
            out.write_all(&buffer[..n])?;
            read += n as u64;
            if read == source.size && n < buffer.len() {
                break;
            }
        }
        // Written while it was read: not the version listed, and no copy of it lands.
        let now = identity(&from.metadata()?);
        if now != version || read != source.size {
            return Err(std::io::Error::other(ChangedWhileRead { now }));
        }
        set_modified(out, modified)?;
        // What the filesystem gives back for the copy, before it takes the destination's name.
        let mut at = 0u64;
        loop {
            let n = out.read_at(&mut buffer, at)?;
            if n == 0 {
                break;
            }
            copy_crc = crc32c::crc32c_append(copy_crc, &buffer[..n]);
            at += n as u64;
            if at == read && n < buffer.len() {
                break;
            }
        }
        if copy_crc != source_crc {
            return Err(std::io::Error::other(format!(
                "the copy read back has CRC32C {copy_crc:08x}, the source {source_crc:08x}"
            )));
        }
        remember(written, &dest, out)
    });
    match outcome {
        Ok(()) => Ok(Copied {
            crc32c: Some(copy_crc),
            md5: None,
            same_as_source: Some(CopyProof::ReadBack),
        }),
        Err(e) => match e
            .get_ref()
            .and_then(|e| e.downcast_ref::<ChangedWhileRead>())
        {
            Some(changed) => Err(StoreError::new(
                ErrorKind::Changed,
                "file://",
                "copy",
                key,
                format!(
                    "the source /{} changed while it was read (version {version}, now {})",
                    source.key, changed.now
                ),
            )),
            None => Err(io_error("copy", key, e)),
        },
    }
}

/// The version of the open source file, which must be the one `source` was listed as (errors
/// name `key`, the copy's destination, as every other store's copy does).
/// With it, the file's modification time.
fn pinned_version(
    file: &std::fs::File,
    source: &CopySource,
    key: &str,
) -> Result<(String, Option<std::time::SystemTime>)> {
    let md = file.metadata().map_err(|e| io_error("copy", key, e))?;
    if md.is_dir() {
        return Err(StoreError::new(
            ErrorKind::NotFound,
            "file://",
            "copy",
            key,
            format!("the source /{} is a directory, not an object", source.key),
        ));
    }
    let now = identity(&md);
    match &source.etag {
        Some(want) if *want != now => Err(StoreError::new(
            ErrorKind::Changed,
            "file://",
            "copy",
            key,
            format!(
                "the source /{} changed since it was listed (version {want}, now {now})",
                source.key
            ),
        )),
        _ => Ok((now, md.modified().ok())),
    }
}

#[derive(Debug)]
struct ChangedWhileRead {
    now: String,
}

impl std::fmt::Display for ChangedWhileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "changed while it was read (now {})", self.now)
    }
}

impl std::error::Error for ChangedWhileRead {}

/// Notes the filesystem `file` (written for `dest`) is on, to sync it once later.
fn remember(written: &Written, dest: &Path, file: &std::fs::File) -> std::io::Result<()> {
    let dev = file.metadata()?.dev();
    let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
    if let (false, Some(dir)) = (written.contains_key(&dev), dest.parent()) {
        written.insert(dev, dir.to_path_buf());
    }
    Ok(())
}

/// Syncs every filesystem a copy was written to (and forgets them): the copies are on disk
/// when it returns.
pub(super) fn sync_filesystems(written: &Written) -> Result<()> {
    let dirs: Vec<PathBuf> = {
        let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *written).into_values().collect()
    };
    for dir in dirs {
        let key = super::key_of(&dir);
        let handle = std::fs::File::open(&dir).map_err(|e| io_error("sync", &key, e))?;
        rustix::fs::syncfs(&handle).map_err(|e| io_error("sync", &key, e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_read_back_and_its_filesystem_synced_once() {
        let dir = std::env::temp_dir().join(format!("skyx-local-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.bin");
        std::fs::write(&src, b"some bytes").unwrap();
        let key = |p: &Path| super::super::key_of(p);
        let md = std::fs::metadata(&src).unwrap();
        let source = CopySource::by_name(&StoreLocation::Local, &super::super::meta_of(&src, &md));
        let written = Written::default();
        for n in 0..3 {
            let dst = dir.join(format!("out/{n}.bin"));
            let copied = copy_file(&source, &key(&dst), None, &written).unwrap();
            assert_eq!(copied.crc32c, Some(crc32c::crc32c(b"some bytes")));
            assert_eq!(copied.same_as_source, Some(CopyProof::ReadBack));
            assert_eq!(std::fs::read(&dst).unwrap(), b"some bytes");
            // The source's own modification time rode along.
            let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
            assert_eq!(mtime(&dst), mtime(&src));
        }
        // Three copies, one filesystem to sync; synced, none.
        assert_eq!(written.lock().unwrap().len(), 1);
        sync_filesystems(&written).unwrap();
        assert!(written.lock().unwrap().is_empty());

        // Replaced since it was listed: refused, naming the destination, and nothing lands.
        // (The same size: only the pinned version tells the two apart.)
        std::fs::write(dir.join("next"), b"SOME BYTES").unwrap();
        std::fs::rename(dir.join("next"), &src).unwrap();
        let dst = dir.join("out/changed.bin");
        let e = copy_file(&source, &key(&dst), None, &written).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Changed, "{e}");
        assert!(e.to_string().contains("changed.bin"), "{e}");
        assert!(!dst.exists());
        let names: Vec<_> = std::fs::read_dir(dir.join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp file is left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
