//! What a copy moves: the source objects, filtered, each with its destination key.
//!
//! Semantics follow `aws s3 cp` / `gsutil cp`, which the users already know:
//! - `cp SRC_OBJECT DST` copies one object to `DST`, or into it when `DST` ends with `/`, is a
//!   bucket root or an existing local directory (`DST/basename`).
//! - `cp -r SRC_PREFIX DST_PREFIX` copies every object under `SRC_PREFIX/` to the same relative
//!   key under `DST_PREFIX/` (the prefix is matched at a `/`, so `data` never takes `data2/`).
//! - `--include` / `--exclude` filters match the key relative to the source prefix, in order,
//!   the last match deciding; size and age bounds apply too ([`crate::core::filter`]).
//! - `--files-from` names the relative keys to copy; each is looked up on its own (no
//!   listing), and one the source does not have is skipped and named.
//! - Source keys are untrusted. Into a local directory, a key whose path would leave the
//!   destination or alias another file (`..`, `.` or empty segments, a leading `/`, control
//!   characters) is skipped with its reason, never followed; the rest are copied.

use crate::core::filter::ObjectFilter;
use futures::TryStreamExt;
use skyx_store::{
    ErrorKind, ObjectMeta, ObjectStore, ObjectUrl, Properties, StoreError, StoreLocation,
};

/// The source listing, as it streams in: what a copy moves, in the order it is listed.
pub type CopyItems = futures::stream::BoxStream<'static, Result<CopyItem, StoreError>>;

/// A listing forwarded through a queue whose task ended without saying the listing had:
/// an error, never a complete listing.
pub(crate) fn listing_stopped() -> StoreError {
    StoreError::new(
        ErrorKind::Other,
        "listing",
        "list",
        "",
        "the listing stopped before its end".to_string(),
    )
}

/// How far a listing forwarded by [`owned_listing`] may run ahead of what takes it.
const LISTING_BUFFER: usize = 1024;

/// `store`'s listing of `prefix` as a stream that owns what it needs: a task lists, and a
/// bounded queue forwards the entries with an explicit end, so a task that dies is an error
/// ([`listing_stopped`]), never a complete listing. The listing ends at its first error.
pub(crate) fn owned_listing(
    store: std::sync::Arc<dyn ObjectStore>,
    prefix: String,
) -> futures::stream::BoxStream<'static, Result<ObjectMeta, StoreError>> {
    use futures::StreamExt;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Option<Result<ObjectMeta, StoreError>>>(LISTING_BUFFER);
    tokio::spawn(async move {
        let mut listing = store.list(&prefix);
        loop {
            let entry = match listing.try_next().await {
                Ok(Some(meta)) => Ok(meta),
                Ok(None) => {
                    let _ = tx.send(None).await;
                    return;
                }
                Err(e) => Err(e),
            };
            // An entry the source cannot serve is named and the listing goes on; any other
            // error ends it.
            let last = entry
                .as_ref()
                .is_err_and(|e| e.kind != ErrorKind::Unreadable);
            // A closed channel: whoever took the listing stopped.
            if tx.send(Some(entry)).await.is_err() || last {
                return;
            }
        }
    });
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Some(entry)) => Some((entry, Some(rx))),
            Some(None) => None,
            None => Some((Err(listing_stopped()), None)),
        }
    })
    .boxed()
}

/// One object to copy (serializable, so a long listing can be sorted on disk).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyItem {
    pub src_key: String,
    pub dst_key: String,
    pub size: u64,
    /// What identifies this version of the source object (etag, else modification time).
    pub version: String,
    pub etag: Option<String>,
    pub last_modified: Option<std::time::SystemTime>,
    pub md5: Option<[u8; 16]>,
    pub crc32c: Option<u32>,
    /// What the copy writes with the object (see [`attach_properties`]).
    pub properties: Properties,
}

/// A source object the copy will not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedObject {
    pub src_key: String,
    pub why: String,
}

/// What a copy moves, and the source objects it refuses to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<CopyItem>,
    pub skipped: Vec<SkippedObject>,
    /// Source objects the filters (keys, sizes, ages) left out.
    pub filtered_out: usize,
    /// The source named one object, not a prefix (`cp -r FILE`, or `sync` of an object).
    pub source_is_object: bool,
}

/// Why the listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url} is a prefix (directory) holding {count}+ objects; copy it with -r/--recursive")]
    IsPrefix { url: String, count: usize },
    #[error("{url}: no such object or prefix")]
    NotFound { url: String },
}

/// The listing prefix of everything under `key` as a directory: `key/` (one slash), or
/// nothing for the root.
pub(crate) fn dir_prefix(key: &str) -> String {
    let base = key.trim_end_matches('/');
    if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    }
}

fn join(prefix: &str, rel: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        rel.to_string()
    } else if rel.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// What identifies a version of an object: its etag, else its modification time.
pub fn version_of(meta: &ObjectMeta) -> String {
    if let Some(e) = &meta.etag {
        return e.clone();
    }
    match meta.last_modified {
        Some(t) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => format!("mtime:{}.{:09}", d.as_secs(), d.subsec_nanos()),
            Err(_) => String::new(),
        },
        None => String::new(),
    }
}

impl CopyItem {
    /// Whether `now` (a fresh head of the source) is still the version that was listed. Stores
    /// do not always report the same fields in listings and heads (s3s-fs lists no etag for
    /// multipart objects; S3 lists milliseconds and heads whole seconds), so compare what
    /// both have: size always, etags when both have one, else times to the second.
    /// The source object as its listing described it.
    pub fn listed_meta(&self) -> ObjectMeta {
        ObjectMeta {
            key: self.src_key.clone(),
            size: self.size,
            last_modified: self.last_modified,
            etag: self.etag.clone(),
            md5: self.md5,
            crc32c: self.crc32c,
        }
    }

    pub fn is_same_version(&self, now: &ObjectMeta) -> bool {
        if now.size != self.size {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.etag, &now.etag) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.last_modified, now.last_modified) {
            let secs = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            return secs(a) == secs(b);
        }
        true
    }
}

fn item(meta: &ObjectMeta, dst_key: String) -> CopyItem {
    CopyItem {
        src_key: meta.key.clone(),
        dst_key,
        size: meta.size,
        version: version_of(meta),
        etag: meta.etag.clone(),
        last_modified: meta.last_modified,
        md5: meta.md5,
        crc32c: meta.crc32c,
        properties: Properties::default(),
    }
}

/// Whether `dst` names a container to copy *into* rather than an object name.
fn dst_is_directory(dst: &ObjectUrl) -> bool {
    if dst.key.is_empty() || dst.key.ends_with('/') {
        return true;
    }
    matches!(dst.location, StoreLocation::Local) && dst.local_path().is_some_and(|p| p.is_dir())
}

/// Why the relative key `rel` of a `size`-byte object may not be written under `dst`, if it
/// may not: only a local destination maps keys to paths (object stores take any key as a
/// name). A directory marker (a key ending in `/`) becomes a directory there, so it may not
/// hold bytes.
fn refusal(dst: &ObjectUrl, rel: &str, size: u64) -> Option<String> {
    if dst.location != StoreLocation::Local {
        return None;
    }
    match rel.strip_suffix('/') {
        Some(_) if size > 0 => Some(format!(
            "a directory marker (key ending in '/') holding {size} bytes: no file can have that name"
        )),
        Some(dir) => skyx_store::local::unsafe_relative_path(dir).map(str::to_string),
        None => skyx_store::local::unsafe_relative_path(rel).map(str::to_string),
    }
}

/// Where another destination `to` of a broadcast writes `item`, which the listing placed at
/// `item.dst_key` under the first destination `first`: the same place relative to it, as the
/// listing would have placed it under `to`. A listing of a prefix (or of `--files-from`)
/// places every object under its destination's key, slash or not; a single object
/// (`source_is_object`) goes to a destination that names an object as that name, and under
/// one that is a directory by the source's name. Refused as a listing refuses a key (one that
/// would leave a local destination), and a key not under `first` (never made by a listing) is
/// refused too.
pub fn rebase_key(
    item: &CopyItem,
    first: &ObjectUrl,
    to: &ObjectUrl,
    source_is_object: bool,
) -> Result<String, String> {
    let rel = if !source_is_object {
        let prefix = dir_prefix(&first.key);
        match item.dst_key.strip_prefix(&prefix) {
            Some(rel) if !rel.is_empty() => rel.to_string(),
            _ => {
                return Err(format!(
                    "{:?} is not under the first destination's {prefix:?}",
                    item.dst_key
                ));
            }
        }
    } else if dst_is_directory(to) {
        let name = item.src_key.trim_end_matches('/').rsplit('/').next();
        name.unwrap_or_default().to_string()
    } else {
        return Ok(to.key.clone());
    };
    match refusal(to, &rel, item.size) {
        Some(why) => Err(why),
        None => Ok(join(&to.key, &rel)),
    }
}

/// Whether `item` is a directory marker: an empty object whose key ends in `/`.
pub fn is_marker(item: &CopyItem) -> bool {
    item.size == 0 && item.dst_key.ends_with('/')
}

/// One entry of a source listing, as a copy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Copy(Box<CopyItem>),
    /// Never written, and why (a key that would leave a local destination; an entry the
    /// source cannot serve).
    Skipped(SkippedObject),
    FilteredOut,
    /// The prefix itself (a marker for the directory being copied).
    Prefix,
}

/// What the listed object `meta` under `prefix` becomes in a copy to `dst` under `filter`.
pub(crate) fn classify(
    meta: ObjectMeta,
    prefix: &str,
    dst: &ObjectUrl,
    filter: &ObjectFilter,
) -> Listed {
    // A store may answer with keys outside the prefix asked for: never trust it.
    let Some(rel) = meta.key.strip_prefix(prefix) else {
        return Listed::Skipped(SkippedObject {
            src_key: meta.key.clone(),
            why: format!("listed under {prefix:?} but outside it"),
        });
    };
    if rel.is_empty() {
        return Listed::Prefix;
    }
    if !filter.accepts(rel, meta.size, meta.last_modified) {
        return Listed::FilteredOut;
    }
    match refusal(dst, rel, meta.size) {
        Some(why) => Listed::Skipped(SkippedObject {
            src_key: meta.key.clone(),
            why,
        }),
        None => {
            let dst_key = join(&dst.key, rel);
            Listed::Copy(Box::new(item(&meta, dst_key)))
        }
    }
}

/// A listing error for one entry the source cannot serve (a dangling link) is that entry,
/// skipped and named; any other ends the listing.
pub(crate) fn unreadable(e: StoreError) -> Result<Listed, StoreError> {
    if e.kind == ErrorKind::Unreadable {
        Ok(Listed::Skipped(SkippedObject {
            src_key: e.key,
            why: e.message,
        }))
    } else {
        Err(e)
    }
}

/// Lists what `cp [-r] src dst` copies.
pub async fn list_copy(
    src_store: &dyn ObjectStore,
    src: &ObjectUrl,
    dst: &ObjectUrl,
    recursive: bool,
    filter: &ObjectFilter,
) -> Result<Listing, ListError> {
    let base = src.key.trim_end_matches('/');
    let prefix = dir_prefix(base);
    if recursive {
        let mut out = Listing::default();
        let mut listing = src_store.list(&prefix);
        loop {
            let entry = match listing.try_next().await {
                Ok(Some(meta)) => classify(meta, &prefix, dst, filter),
                Ok(None) => break,
                Err(e) => unreadable(e)?,
            };
            match entry {
                Listed::Copy(item) => out.items.push(*item),
                Listed::Skipped(s) => out.skipped.push(s),
                Listed::FilteredOut => out.filtered_out += 1,
                Listed::Prefix => {}
            }
        }
        let listed_nothing =
            out.items.is_empty() && out.skipped.is_empty() && out.filtered_out == 0;
        if listed_nothing && !base.is_empty() {
            // `cp -r FILE DST` copies the file, as the single-object form would; a prefix with
            // nothing under it is most likely a typo, and says so. A prefix whose objects the
            // filters all left out is not empty: it never falls back to a sibling object.
            return match src_store.head(base).await {
                Ok(meta) => Ok(single(meta, src, dst, filter)),
                Err(e) if e.kind == ErrorKind::NotFound => Err(ListError::NotFound {
                    url: src.to_string(),
                }),
                Err(e) => Err(e.into()),
            };
        }
        out.items.sort_by(|a, b| a.src_key.cmp(&b.src_key));
        return Ok(out);
    }
    match src_store.head(base).await {
        Ok(meta) => Ok(single(meta, src, dst, filter)),
        Err(e) if e.kind == ErrorKind::NotFound => {
            // Not an object: say whether it is a prefix, which needs -r.
            let mut listing = src_store.list(&prefix);
            let mut count = 0;
            while count < 1 {
                match listing.try_next().await? {
                    Some(_) => count += 1,
                    None => break,
                }
            }
            if count > 0 {
                Err(ListError::IsPrefix {
                    url: src.to_string(),
                    count,
                })
            } else {
                Err(ListError::NotFound {
                    url: src.to_string(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn single(meta: ObjectMeta, src: &ObjectUrl, dst: &ObjectUrl, filter: &ObjectFilter) -> Listing {
    let name = src
        .key
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    if !filter.accepts(&name, meta.size, meta.last_modified) {
        return Listing {
            filtered_out: 1,
            source_is_object: true,
            ..Listing::default()
        };
    }
    let dst_key = if dst_is_directory(dst) {
        if let Some(why) = refusal(dst, &name, meta.size) {
            return Listing {
                skipped: vec![SkippedObject {
                    src_key: meta.key,
                    why,
                }],
                source_is_object: true,
                ..Listing::default()
            };
        }
        join(&dst.key, &name)
    } else {
        dst.key.clone()
    };
    Listing {
        items: vec![item(&meta, dst_key)],
        source_is_object: true,
        ..Listing::default()
    }
}

/// Lists what `cp`/`sync --files-from` copy: the objects named by `names` (keys relative to
/// `src`'s prefix, one per entry), each looked up with a HEAD (32 at a time) rather than by
/// listing the source. A name the source does not have, or that may not be written under a
/// local `dst`, is skipped with its reason; the filters apply as to a listing.
pub async fn list_files_from(
    src_store: &dyn ObjectStore,
    src: &ObjectUrl,
    dst: &ObjectUrl,
    names: &[String],
    filter: &ObjectFilter,
) -> Result<Listing, ListError> {
    use futures::StreamExt;
    let base = src.key.trim_end_matches('/').to_string();
    let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let heads: Vec<(String, Result<ObjectMeta, StoreError>)> = futures::stream::iter(wanted)
        .map(|rel| {
            let key = join(&base, rel);
            async move {
                let head = src_store.head(&key).await;
                (rel.to_string(), head)
            }
        })
        .buffered(PROPERTY_READS)
        .collect()
        .await;
    let mut out = Listing::default();
    for (rel, head) in heads {
        let src_key = join(&base, &rel);
        let meta = match head {
            Ok(meta) => meta,
            Err(e) if e.kind == ErrorKind::NotFound => {
                out.skipped.push(SkippedObject {
                    src_key,
                    why: "named in --files-from but not at the source".into(),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !filter.accepts(&rel, meta.size, meta.last_modified) {
            out.filtered_out += 1;
            continue;
        }
        match refusal(dst, &rel, meta.size) {
            Some(why) => out.skipped.push(SkippedObject { src_key, why }),
            None => out.items.push(item(&meta, join(&dst.key, &rel))),
        }
    }
    Ok(out)
}

/// Which properties a copy writes with each object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPolicy {
    /// Drop the source's system properties and user metadata (`--no-metadata`); the
    /// modification time is still carried.
    pub drop: bool,
    /// Every object's Content-Type (`--content-type`).
    pub content_type: Option<String>,
    /// User metadata added to every object's, replacing entries of the same name
    /// (`--metadata k=v`).
    pub set: std::collections::BTreeMap<String, String>,
}

/// How many property reads run at once.
const PROPERTY_READS: usize = 32;

/// Gives each item the properties the copy writes with it: the source's (one HEAD per object
/// on a cloud store, [`PROPERTY_READS`] at a time; none with `drop`), then the policy's
/// overrides. The modification time is the source's `mtime` metadata where it has one (its
/// origin's), else its last-modified time. An object whose properties cannot be read gets
/// none and is copied anyway (its read will say what is wrong).
pub async fn attach_properties(
    src: &dyn ObjectStore,
    items: &mut [CopyItem],
    policy: &MetadataPolicy,
) {
    use futures::StreamExt;
    // Owned keys: a stream over borrowed items would not be `Send` for every lifetime.
    let wanted: Vec<(Option<String>, Option<std::time::SystemTime>)> = items
        .iter()
        .map(|item| (read_key(item, policy), item.last_modified))
        .collect();
    let read: Vec<Properties> = futures::stream::iter(wanted)
        .map(|(key, modified)| properties_of(src, key, modified, policy))
        .buffered(PROPERTY_READS)
        .collect()
        .await;
    for (item, properties) in items.iter_mut().zip(read) {
        item.properties = properties;
    }
}

/// As [`attach_properties`], for a listing that streams: [`PROPERTY_READS`] at a time, in
/// order.
pub fn with_properties(
    src: std::sync::Arc<dyn ObjectStore>,
    items: CopyItems,
    policy: MetadataPolicy,
) -> CopyItems {
    use futures::StreamExt;
    let policy = std::sync::Arc::new(policy);
    items
        .map(move |item| {
            let (src, policy) = (src.clone(), policy.clone());
            async move {
                let mut item = item?;
                let key = read_key(&item, &policy);
                item.properties =
                    properties_of(src.as_ref(), key, item.last_modified, &policy).await;
                Ok(item)
            }
        })
        .buffered(PROPERTY_READS)
        .boxed()
}

/// The source's own properties for `item` (its time where they record none), as a copy that
/// changes none of them writes them.
pub(crate) async fn source_properties(src: &dyn ObjectStore, item: &CopyItem) -> Properties {
    let policy = MetadataPolicy::default();
    properties_of(src, read_key(item, &policy), item.last_modified, &policy).await
}

/// The source key whose properties `item` carries under `policy`, if any.
fn read_key(item: &CopyItem, policy: &MetadataPolicy) -> Option<String> {
    (!policy.drop && !is_marker(item)).then(|| item.src_key.clone())
}

/// The properties an object is written with under `policy`: those of source key `key` (none
/// when `None`), its time `modified` unless they record one, then the policy's overrides.
async fn properties_of(
    src: &dyn ObjectStore,
    key: Option<String>,
    modified: Option<std::time::SystemTime>,
    policy: &MetadataPolicy,
) -> Properties {
    let mut properties = match key {
        None => Properties::default(),
        Some(key) => match src.properties(&key).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%key, error = %e, "reading the source object's properties failed; copying it without them");
                Properties::default()
            }
        },
    };
    if properties.modified.is_none() {
        properties.modified = modified;
    }
    if let Some(t) = &policy.content_type {
        properties.content_type = Some(t.clone());
    }
    for (k, v) in &policy.set {
        properties.user.insert(k.to_ascii_lowercase(), v.clone());
    }
    properties
}

/// Lists the destination objects under `dst`'s prefix, keyed by full key (for `sync`).
pub async fn list_destination(
    dst_store: &dyn ObjectStore,
    dst: &ObjectUrl,
) -> Result<Vec<ObjectMeta>, ListError> {
    match dst_store.list(&dir_prefix(&dst.key)).try_collect().await {
        Ok(v) => Ok(v),
        // A local destination directory that does not exist yet holds nothing.
        Err(e) if e.kind == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod rebase_tests {
    use super::*;

    fn item(src_key: &str, dst_key: &str) -> CopyItem {
        CopyItem {
            src_key: src_key.into(),
            dst_key: dst_key.into(),
            size: 3,
            version: String::new(),
            etag: None,
            last_modified: None,
            md5: None,
            crc32c: None,
            properties: Properties::default(),
        }
    }

    fn url(s: &str) -> ObjectUrl {
        ObjectUrl::parse(s).unwrap()
    }

    #[test]
    fn another_destination_gets_each_object_where_a_listing_would_put_it() {
        // A prefix's objects keep their path under each destination, slash or not.
        for first in ["s3://aaa/out", "s3://aaa/out/"] {
            for to in ["gs://bbb/x", "gs://bbb/x/"] {
                let it = item("d/sub/f", "out/sub/f");
                let got = rebase_key(&it, &url(first), &url(to), false);
                assert_eq!(got.as_deref(), Ok("x/sub/f"), "{first} -> {to}");
            }
        }
        let root = rebase_key(
            &item("d/f", "f"),
            &url("s3://aaa"),
            &url("gs://bbb/y"),
            false,
        );
        assert_eq!(root.as_deref(), Ok("y/f"));
        // A single object: named, or by the source's name under a directory.
        let one = item("d/f.bin", "new.bin");
        let named = rebase_key(&one, &url("s3://aaa/new.bin"), &url("gs://bbb/z.bin"), true);
        assert_eq!(named.as_deref(), Ok("z.bin"));
        let under = rebase_key(&one, &url("s3://aaa/new.bin"), &url("gs://bbb/dir/"), true);
        assert_eq!(under.as_deref(), Ok("dir/f.bin"));
        // A key outside the first destination is never placed anywhere.
        let outside = item("d/f", "elsewhere/f");
        assert!(rebase_key(&outside, &url("s3://aaa/out"), &url("gs://bbb/x"), false).is_err());
    }

    #[test]
    fn a_key_that_would_leave_a_local_destination_is_refused_there() {
        let dir = std::env::temp_dir().join("skyx-rebase-test");
        let to = url(&format!("{}/", dir.display()));
        let hostile = item("d/../../etc/passwd", "out/../../etc/passwd");
        let got = rebase_key(&hostile, &url("s3://aaa/out/"), &to, false);
        assert!(got.is_err(), "{got:?}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn src(key: &str, size: u64, md5: Option<u8>, mtime: u64) -> CopyItem {
        CopyItem {
            src_key: format!("s/{key}"),
            dst_key: format!("d/{key}"),
            size,
            version: String::new(),
            etag: None,
            last_modified: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime)),
            md5: md5.map(|b| [b; 16]),
            crc32c: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn markers_become_directories_locally_and_stay_objects_between_stores() {
        let local = ObjectUrl::parse("/tmp/dst/").unwrap();
        let s3 = ObjectUrl::parse("s3://bkt/dst/").unwrap();
        assert_eq!(refusal(&local, "d/", 0), None);
        assert_eq!(refusal(&local, "a/b/", 0), None);
        assert!(
            refusal(&local, "d/", 3)
                .unwrap()
                .contains("directory marker")
        );
        assert!(refusal(&local, "../", 0).is_some());
        assert!(refusal(&local, "a//", 0).is_some());
        assert!(refusal(&local, "../x", 0).is_some());
        assert_eq!(refusal(&s3, "d/", 3), None);
        assert_eq!(refusal(&s3, "../x", 1), None);
        let marker = |key: &str, size| CopyItem {
            size,
            dst_key: key.into(),
            ..src("m", 0, None, 0)
        };
        assert!(is_marker(&marker("d/", 0)));
        assert!(!is_marker(&marker("d/", 1)) && !is_marker(&marker("d", 0)));
    }

    #[test]
    fn keys_join_at_one_slash() {
        assert_eq!(join("", "a/b"), "a/b");
        assert_eq!(join("dst/", "a"), "dst/a");
        assert_eq!(join("dst", "a"), "dst/a");
        assert_eq!(join("dst", ""), "dst");
    }
}
