//! A streamed sync: a source listing in no particular order, sorted on disk, merged with the
//! destination's real listing, each object decided once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use skyx_gateway::{
    CopyItem, Decision, FilterRule, KeyFilter, ObjectFilter, StreamedSync, SyncRules, SyncTally,
    copies, items_of, list_destination_streaming, sync_decisions,
};
use skyx_store::local::LocalStore;
use skyx_store::{ObjectStore, Properties, RetryPolicy};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skyx-sync-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_of(path: &std::path::Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

fn item(src: &str, dst: &str, rel: &str, size: u64) -> CopyItem {
    CopyItem {
        src_key: format!("{src}/{rel}"),
        dst_key: format!("{dst}/{rel}"),
        size,
        version: String::new(),
        etag: None,
        last_modified: None,
        md5: None,
        crc32c: None,
        properties: Properties::default(),
    }
}

#[tokio::test]
async fn a_sync_pairs_an_unordered_source_with_the_destination_through_sorted_runs_on_disk() {
    let dir = scratch("merge");
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    for (rel, size) in [("a-c", 2), ("a0", 9), ("extra", 1), ("keep.tmp", 1)] {
        let path = dst.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; size]).unwrap();
    }
    let (src_key, dst_key) = (key_of(&src), key_of(&dst));
    // Not in key order: "a-c" sorts before "a/b" ('-' < '/'), which a walk of the tree
    // directory by directory does not give, and here the listing is backwards besides.
    let listed = vec![
        item(&src_key, &dst_key, "z", 4),
        item(&src_key, &dst_key, "sub/dir/deep", 5),
        item(&src_key, &dst_key, "a0", 3),
        item(&src_key, &dst_key, "a/b", 1),
        item(&src_key, &dst_key, "a-c", 2),
    ];
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(RetryPolicy::default()));
    let filter = ObjectFilter::keys(KeyFilter::new(&[FilterRule::Exclude("*.tmp".into())]));
    let rules = SyncRules {
        compare: skyx_gateway::Compare::SizeOnly,
        ..SyncRules::default()
    };
    let mut how = StreamedSync::new(rules, &dst_key, filter, dir.join("spill"));
    how.delete = true;
    // Runs of two: both listings go through disk.
    how.run = 2;
    let decisions: Vec<Decision> = sync_decisions(
        store.clone(),
        store.clone(),
        items_of(listed),
        list_destination_streaming(store.clone(), &dst_key),
        how.clone(),
    )
    .try_collect()
    .await
    .unwrap();
    let shape: Vec<String> = decisions
        .iter()
        .map(|d| match d {
            Decision::Copy(i) => format!("copy {}", i.dst_key.strip_prefix(&dst_key).unwrap()),
            Decision::Unchanged => "unchanged".into(),
            Decision::Delete(k) => format!("delete {}", k.strip_prefix(&dst_key).unwrap()),
            Decision::Kept => "kept".into(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "unchanged",
            "copy /a/b",
            "copy /a0",
            "delete /extra",
            "kept",
            "copy /sub/dir/deep",
            "copy /z",
        ]
    );

    // The same sync as the stream a copy takes: copies out, the rest counted.
    let tally = Arc::new(Mutex::new(SyncTally::new(dir.join("spill"))));
    let to_copy: Vec<CopyItem> = copies(
        sync_decisions(
            store.clone(),
            store.clone(),
            items_of(vec![item(&src_key, &dst_key, "a-c", 2)]),
            list_destination_streaming(store.clone(), &dst_key),
            how,
        ),
        tally.clone(),
    )
    .try_collect()
    .await
    .unwrap();
    assert!(to_copy.is_empty());
    let tally = std::mem::replace(&mut *tally.lock().unwrap(), SyncTally::new(PathBuf::new()));
    assert_eq!(tally.unchanged, 1);
    let deletes: Vec<String> = tally
        .delete
        .batches(10)
        .unwrap()
        .flat_map(Result::unwrap)
        .collect();
    assert_eq!(
        deletes,
        [format!("{dst_key}/a0"), format!("{dst_key}/extra")]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_destination_that_does_not_exist_yet_lists_nothing() {
    let dir = scratch("missing");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(RetryPolicy::default()));
    let listed: Vec<_> = list_destination_streaming(store, &key_of(&dir.join("not-yet")))
        .try_collect()
        .await
        .unwrap();
    assert!(listed.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `sync --delete --max-age`: the source's old object is left out of the copy by its own time,
/// but its destination copy, written since, is young. The copy is kept because its source is
/// still there; only what the source no longer has goes.
#[tokio::test]
async fn an_age_filter_never_deletes_a_copy_whose_source_it_left_out() {
    let dir = scratch("age");
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    let file = std::fs::File::create(src.join("old")).unwrap();
    file.set_modified(old).unwrap();
    for rel in ["old", "gone"] {
        std::fs::write(dst.join(rel), b"").unwrap();
    }
    let (src_key, dst_key) = (key_of(&src), key_of(&dst));
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(RetryPolicy::default()));
    let filter = ObjectFilter {
        modified_after: Some(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400)),
        ..ObjectFilter::default()
    };
    let mut how = StreamedSync::new(SyncRules::default(), &dst_key, filter, dir.join("spill"));
    how.delete = true;
    how.src_prefix = src_key.clone();
    // The listing the filter left: nothing (the source's one object is a month old).
    let decisions: Vec<Decision> = sync_decisions(
        store.clone(),
        store.clone(),
        items_of(Vec::new()),
        list_destination_streaming(store.clone(), &dst_key),
        how,
    )
    .try_collect()
    .await
    .unwrap();
    let shape: Vec<String> = decisions
        .iter()
        .map(|d| match d {
            Decision::Delete(k) => format!("delete {}", k.strip_prefix(&dst_key).unwrap()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(shape, ["delete /gone", "Kept"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
