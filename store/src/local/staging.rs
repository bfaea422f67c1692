//! Where the local store stages writes: unnamed files linked into place (temp files renamed
//! into place where that cannot be) and upload part directories beside the destination. The
//! names are after the process that created them, so that a later run can tell a temp file
//! whose writer died (and remove it) from one being written.

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
    // The process never forks (only spawns), so its id is read once, not once per file.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    format!("{}-{}", PID.get_or_init(std::process::id), random_suffix())
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

/// Writes `write` beside `dest`, syncs it and links (or renames) it into place.
pub(super) fn write_atomically(
    dest: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_staged(dest, Durability::EachFile, write)
}

/// When a staged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Synced before it takes its name: what an agent reports landed is on disk.
    EachFile,
    /// Left to the page cache; the writer syncs the whole filesystem once when it is done
    /// (see `LocalStore::sync_written`).
    Later,
}

/// Writes `write` into a file of no name in `dest`'s directory (`O_TMPFILE`) and links it
/// into place; a failure leaves nothing behind, and neither does a crash (the kernel frees an
/// unlinked file). Linking a new name costs the directory one entry, as creating the file
/// would; a named temp file renamed into place cost it two more (the temp's entry and its
/// removal), which was most of the system time of copying many small files. Where the name
/// is taken (an overwrite), the file takes a temp name and is renamed over it; where the
/// filesystem has no unnamed files, the whole write goes through a named temp file.
pub(super) fn write_staged(
    dest: &Path,
    durability: Durability,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| std::io::Error::new(IoKind::InvalidInput, "no parent directory"))?;
    if dest.file_name().is_none() {
        return Err(std::io::Error::new(
            IoKind::InvalidInput,
            "key names a directory",
        ));
    }
    // The directory is made only when it is missing: most files of a copy land in one that
    // is already there.
    let f = match open_unnamed(dir) {
        Err(e) if e.kind() == IoKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open_unnamed(dir)
        }
        other => other,
    };
    let mut f = match f {
        Err(e) if no_unnamed_files(&e) => {
            return write_named(&temp_beside(dest), dest, durability, write);
        }
        other => other?,
    };
    write_and_sync(&mut f, durability, write)?;
    match link(&f, dest) {
        Err(e) if e.kind() == IoKind::AlreadyExists => {
            let tmp = temp_beside(dest);
            link(&f, &tmp)?;
            std::fs::rename(&tmp, dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
        other => other,
    }
}

/// A temp name in `dest`'s directory, made only where a write needs one (not per file). It
/// leaves out the destination's own name: a name near the filesystem's limit would not fit.
fn temp_beside(dest: &Path) -> PathBuf {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    dir.join(format!("{HIDDEN}tmp-{}", owned_suffix()))
}

/// [`write_staged`] through temp file `tmp`, renamed to `dest`.
fn write_named(
    tmp: &Path,
    dest: &Path,
    durability: Durability,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let open = || {
        // Readable too: a writer may read back what it wrote.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
    };
    let mut f = match open() {
        Err(e) if e.kind() == IoKind::NotFound => {
            std::fs::create_dir_all(tmp.parent().unwrap_or(Path::new("/")))?;
            open()?
        }
        other => other?,
    };
    let result =
        write_and_sync(&mut f, durability, write).and_then(|()| std::fs::rename(tmp, dest));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn write_and_sync(
    f: &mut std::fs::File,
    durability: Durability,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write(f)?;
    if durability == Durability::EachFile {
        f.sync_all()?;
    }
    Ok(())
}

/// A file of no name in `dir`, readable too: a writer may read back what it wrote. Its mode
/// is a created file's (0666 less the umask), applied here: kernels before 6.0 did not apply
/// the umask to unnamed files on filesystems without ACLs.
fn open_unnamed(dir: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666 & !umask()),
    )?;
    Ok(std::fs::File::from(fd))
}

/// This process's umask, read once (from /proc: reading it otherwise means setting it).
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            // The usual default where /proc cannot say.
            .unwrap_or(0o022)
    })
}

/// Whether `e`, from [`open_unnamed`], says the filesystem (or kernel) has no unnamed files.
fn no_unnamed_files(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL, Errno::NOSYS]
        .iter()
        .any(|&no| errno == Some(no))
}

/// Gives unnamed file `f` the name `dest`: by the file itself where this process may
/// (`AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH`), else through `/proc/self/fd`.
fn link(f: &std::fs::File, dest: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Refused once, refused every time: the other way is taken from then on.
    static BY_FD_REFUSED: AtomicBool = AtomicBool::new(false);
    if !BY_FD_REFUSED.load(Ordering::Relaxed) {
        match link_by_fd(f, dest) {
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
                BY_FD_REFUSED.store(true, Ordering::Relaxed)
            }
            other => return Ok(other?),
        }
    }
    link_by_proc(f, dest)
}

fn link_by_fd(f: &std::fs::File, dest: &Path) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    linkat(f, c"", CWD, dest, AtFlags::EMPTY_PATH)
}

fn link_by_proc(f: &std::fs::File, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use std::os::fd::AsRawFd;
    let by_proc = format!("/proc/self/fd/{}", f.as_raw_fd());
    Ok(linkat(
        CWD,
        by_proc.as_str(),
        CWD,
        dest,
        AtFlags::SYMLINK_FOLLOW,
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skyx-staging-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_write_has_no_name_until_it_is_whole_and_leaves_no_temp_behind() {
        let dir = scratch("write");
        // The directory is missing: it is made.
        let dest = dir.join("sub/file");
        std::fs::create_dir_all(&dir).unwrap();
        let unnamed = open_unnamed(&dir).is_ok();
        let writes = [
            (b"first".as_slice(), Durability::Later),
            (b"second", Durability::EachFile),
        ];
        for (content, durability) in writes {
            write_staged(&dest, durability, |f| {
                // While it is written, the directory holds no entry for it (where the
                // filesystem has unnamed files): a reader never sees part of it, and no temp
                // name costs the directory.
                let now = names(&dir.join("sub"));
                assert!(!unnamed || now.iter().all(|n| n == "file"), "{now:?}");
                f.write_all(content)
            })
            .unwrap();
            // The second write replaces the first.
            assert_eq!(std::fs::read(&dest).unwrap(), content);
            assert_eq!(names(&dir.join("sub")), ["file"]);
            // A created file's mode: 0666 less the umask.
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o666 & !umask(), "{mode:o}");
        }
        // A failed write leaves the old content and nothing else.
        let e = write_staged(&dest, Durability::Later, |f| {
            f.write_all(b"partial")?;
            Err(std::io::Error::other("the source went away"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("went away"), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
        assert_eq!(names(&dir.join("sub")), ["file"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The ways this machine's run may not take (as root, linking by the file itself always
    /// works; here unnamed files always exist): each lands the file whole.
    #[test]
    fn the_other_ways_into_place_land_the_file_whole() {
        let dir = scratch("ways");
        std::fs::create_dir_all(&dir).unwrap();
        // Through /proc, as a process without CAP_DAC_READ_SEARCH links.
        if let Ok(mut f) = open_unnamed(&dir) {
            f.write_all(b"by proc").unwrap();
            link_by_proc(&f, &dir.join("by-proc")).unwrap();
            assert_eq!(std::fs::read(dir.join("by-proc")).unwrap(), b"by proc");
        }
        // Through a named temp file, as on a filesystem with no unnamed files: into a missing
        // directory, then over the file it made.
        let dest = dir.join("sub/named");
        for content in [b"one".as_slice(), b"two"] {
            let tmp = dir.join(format!("sub/{HIDDEN}tmp-{}", owned_suffix()));
            write_named(&tmp, &dest, Durability::EachFile, |f| f.write_all(content)).unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), content);
            assert_eq!(names(&dir.join("sub")), ["named"]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
