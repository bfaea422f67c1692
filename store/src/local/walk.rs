//! Listing a local tree: depth-first in name order, the files whose key starts with a prefix.
//!
//! The rules, as the AWS CLI has them for uploads:
//! - Symbolic links are followed by default, to files and to directories; a link that leads
//!   back to a directory above it (a loop) is not descended again. With `follow_symlinks` off,
//!   links are left out, silently, as the user asked.
//! - An entry that cannot be served is reported and the walk goes on: a dangling link, a link
//!   loop, a file or directory that cannot be read, a device, FIFO or socket. Each comes as an
//!   [`ErrorKind::Unreadable`] error naming its key; only a start directory that cannot be read
//!   ends the listing.
//! - Hidden names starting with `.skyx-` (this store's temp files) are never listed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio::sync::mpsc::Sender;

use super::{io_error, is_hidden, key_of, meta_of};
use crate::ObjectMeta;
use crate::error::{ErrorKind, Result, StoreError};

/// Linux's "too many levels of symbolic links" (std has no stable `ErrorKind` for it).
const ELOOP: i32 = 40;

pub(super) struct Walk {
    prefix: String,
    follow_symlinks: bool,
    tx: Sender<Result<ObjectMeta>>,
    /// (device, inode) of each directory from the start down to the one being read.
    ancestors: Vec<(u64, u64)>,
}

fn identity(md: &std::fs::Metadata) -> (u64, u64) {
    (md.dev(), md.ino())
}

impl Walk {
    /// Lists the files under `start` whose key starts with `prefix`, sending each to `tx`.
    pub(super) fn run(
        start: &Path,
        prefix: String,
        follow_symlinks: bool,
        tx: Sender<Result<ObjectMeta>>,
    ) {
        let mut walk = Walk {
            prefix,
            follow_symlinks,
            tx,
            ancestors: Vec::new(),
        };
        match std::fs::metadata(start) {
            Ok(md) if md.is_dir() => {
                walk.ancestors.push(identity(&md));
                walk.dir(start, true);
            }
            // Nothing under a file or a path that does not exist.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                walk.send(Err(io_error("list", &key_of(start), e)));
            }
        }
    }

    /// False when the consumer has gone away.
    fn send(&self, item: Result<ObjectMeta>) -> bool {
        self.tx.blocking_send(item).is_ok()
    }

    fn skip(&self, key: &str, why: String) -> bool {
        self.send(Err(StoreError::new(
            ErrorKind::Unreadable,
            "file://",
            "list",
            key,
            why,
        )))
    }

    /// Whether keys under the directory `dir_key` (ending in `/`) can still match the prefix.
    fn may_hold_matches(&self, dir_key: &str) -> bool {
        dir_key.starts_with(&self.prefix) || self.prefix.starts_with(dir_key)
    }

    fn dir(&mut self, dir: &Path, is_start: bool) -> bool {
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(e) if is_start => return self.send(Err(io_error("list", &key_of(dir), e))),
            Err(e) => {
                return self.skip(
                    &format!("{}/", key_of(dir)),
                    format!("the directory cannot be read ({e})"),
                );
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if is_hidden(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let key = key_of(&path);
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && !self.follow_symlinks {
                continue;
            }
            // Follows a link to what it points at.
            let md = match std::fs::metadata(&path) {
                Ok(md) => md,
                Err(e) => {
                    if !(key.starts_with(&self.prefix) || self.may_hold_matches(&format!("{key}/")))
                    {
                        continue;
                    }
                    let why = if e.raw_os_error() == Some(ELOOP) {
                        "a symbolic link loop (the links never resolve)".to_string()
                    } else if is_link && e.kind() == std::io::ErrorKind::NotFound {
                        "a dangling symbolic link (its target does not exist)".to_string()
                    } else {
                        format!("cannot be read ({e})")
                    };
                    if !self.skip(&key, why) {
                        return false;
                    }
                    continue;
                }
            };
            if md.is_dir() {
                if !self.may_hold_matches(&format!("{key}/")) {
                    continue;
                }
                if self.ancestors.contains(&identity(&md)) {
                    if !self.skip(
                        &key,
                        "a symbolic link loop (it leads back to a directory above it)".into(),
                    ) {
                        return false;
                    }
                    continue;
                }
                self.ancestors.push(identity(&md));
                let more = self.dir(&path, false);
                self.ancestors.pop();
                if !more {
                    return false;
                }
                continue;
            }
            if !key.starts_with(&self.prefix) {
                continue;
            }
            let item = if !md.is_file() {
                Err("not a regular file (a device, FIFO or socket)".to_string())
            } else {
                // Readable now, checked as the AWS CLI checks (`access(R_OK)`, one system
                // call, where opening and closing it took two): a file the agents could not
                // open would otherwise fail the copy after its retries.
                rustix::fs::access(&path, rustix::fs::Access::READ_OK)
                    .map(|()| meta_of(&path, &md))
                    .map_err(|e| format!("cannot be read ({})", std::io::Error::from(e)))
            };
            let more = match item {
                Ok(meta) => self.send(Ok(meta)),
                Err(why) => self.skip(&key, why),
            };
            if !more {
                return false;
            }
        }
        true
    }
}
