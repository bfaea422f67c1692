//! Copying a whole prefix ("directory") between two stores through this process: what a
//! pipeline stage's machine does with its region's store, bringing its inputs down before it
//! runs and taking its output up after. Objects stream through (memory bounded by the upload's
//! part size), a few at a time.

use futures::{StreamExt, TryStreamExt};

use crate::{ErrorKind, ObjectStoreExt, ObjectUrl, Result, StoreConfig, UploadOptions};

/// Objects in flight at once.
const CONCURRENT_OBJECTS: usize = 8;

/// The prefix a URL names, as a store key ending in `/` (or empty: the whole bucket).
fn prefix_of(url: &ObjectUrl) -> String {
    let key = url.key.trim_end_matches('/');
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    }
}

/// Copies every object under the prefix `src` to the same relative keys under `dst` and
/// returns the bytes copied. A prefix with nothing under it (a stage's empty output) copies
/// nothing; a local destination directory is created either way, so a stage always finds its
/// input directory.
pub async fn copy_prefix(
    src: &ObjectUrl,
    src_config: &StoreConfig,
    dst: &ObjectUrl,
    dst_config: &StoreConfig,
) -> Result<u64> {
    if let Some(dir) = dst.local_path() {
        std::fs::create_dir_all(&dir).map_err(|e| {
            crate::StoreError::new(
                ErrorKind::Other,
                dst.to_string(),
                "copy_prefix",
                dir.display().to_string(),
                e.to_string(),
            )
        })?;
    }
    let src_store = crate::open(src, src_config).await?;
    let dst_store = crate::open(dst, dst_config).await?;
    let (src_prefix, dst_prefix) = (prefix_of(src), prefix_of(dst));
    let objects = match crate::list_all(src_store.as_ref(), &src_prefix).await {
        Ok(objects) => objects,
        Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let options = UploadOptions {
        part_size: 16 << 20,
        concurrency: 2,
    };
    let local_dst = dst.local_path().is_some();
    futures::stream::iter(objects.into_iter().filter(|o| !o.key.ends_with('/')))
        .map(|object| {
            let (src_store, dst_store) = (src_store.clone(), dst_store.clone());
            // Listed keys are untrusted: one outside the prefix, or one whose path would leave
            // a local destination, fails the copy rather than being written anywhere.
            let rel = object.key.strip_prefix(&src_prefix);
            let refused = match rel {
                None => Some("listed outside the prefix asked for"),
                Some(rel) if local_dst => crate::local::unsafe_relative_path(rel),
                Some(_) => None,
            };
            let dst_key = format!("{dst_prefix}{}", rel.unwrap_or_default());
            async move {
                if let Some(why) = refused {
                    return Err(crate::StoreError::new(
                        ErrorKind::InvalidInput,
                        src_store.location().to_string(),
                        "copy_prefix",
                        object.key.escape_debug().to_string(),
                        why,
                    ));
                }
                let data = src_store
                    .get_range(&object.key, 0..object.size, object.etag.as_deref())
                    .await?;
                let written = dst_store.upload(&dst_key, data, options).await?;
                if written != object.size {
                    return Err(crate::StoreError::new(
                        ErrorKind::Transient,
                        src_store.location().to_string(),
                        "copy_prefix",
                        object.key.clone(),
                        format!("listed as {} bytes, {written} copied", object.size),
                    ));
                }
                Ok(written)
            }
        })
        .buffer_unordered(CONCURRENT_OBJECTS)
        .try_fold(0u64, |total, n| async move { Ok(total + n) })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_is_copied_whole_and_an_empty_one_still_makes_its_directory() {
        let dir = std::env::temp_dir().join(format!("skyx-prefix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/sub")).unwrap();
        std::fs::write(dir.join("src/a"), vec![7u8; 100_000]).unwrap();
        std::fs::write(dir.join("src/sub/b"), b"bee").unwrap();
        let config = StoreConfig::default();
        let url = |p: &str| ObjectUrl::parse(&format!("{}/", dir.join(p).display())).unwrap();
        let n = copy_prefix(&url("src"), &config, &url("dst"), &config)
            .await
            .unwrap();
        assert_eq!(n, 100_003);
        assert_eq!(
            std::fs::read(dir.join("dst/a")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(std::fs::read(dir.join("dst/sub/b")).unwrap(), b"bee");

        assert_eq!(
            copy_prefix(&url("nothing-here"), &config, &url("made"), &config)
                .await
                .unwrap(),
            0
        );
        assert!(dir.join("made").is_dir());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
