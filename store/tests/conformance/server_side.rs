//! Server-side copies, as part of the conformance suite: `store` writes objects of `other`
//! (another bucket of the same kind; on Azure, another account) without their bytes passing
//! through us, with the properties asked for, and refuses a source that changed since it was
//! listed rather than copy another version.

use bytes::Bytes;
use md5::Digest;
use skyx_store::{ObjectStore, ObjectStoreExt, Properties};

pub async fn copies_across_buckets(
    store: &dyn ObjectStore,
    other: &dyn ObjectStore,
    root: &str,
    props: &Properties,
    kept: impl Fn(&Properties) -> Properties,
) {
    let key = |name: &str| format!("{root}/{name}");
    for (name, len) in [
        ("ss-empty", 0usize),
        ("ss-small", 100_000),
        ("ss-parts", 12 << 20),
    ] {
        let data = Bytes::from(super::pseudo_random(len as u64 + 7, len));
        other.put(&key(name), data.clone()).await.unwrap();
        let meta = other.head(&key(name)).await.unwrap();
        let source = other.copy_source(&meta);
        let copied = store
            .copy_from(&source, &key(&format!("{name}.copy")), props)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // What the service says it wrote is what was there: the gateway verifies by it.
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        if let Some(stated) = copied.md5 {
            assert_eq!(stated, md5, "{name}: the MD5 the copy's answer states");
        }
        if let Some(stated) = copied.crc32c {
            assert_eq!(
                stated,
                crc32c::crc32c(&data),
                "{name}: the copy's stated CRC32C"
            );
        }
        if copied.same_as_source == Some(skyx_store::CopyProof::Md5) {
            assert!(
                copied.md5.is_some(),
                "{name}: the same as the source, by MD5"
            );
        }
        let copy = key(&format!("{name}.copy"));
        assert_eq!(store.get(&copy).await.unwrap(), data, "{name}");
        assert_eq!(
            store.properties(&copy).await.unwrap(),
            kept(props),
            "{name}"
        );
        let landed = store.head(&copy).await.unwrap();
        // (A local file keeps no checksum: its copy was read back instead.)
        let local = *store.location() == skyx_store::StoreLocation::Local;
        assert!(
            landed.crc32c.is_some() || landed.md5.is_some() || len > 5 << 20 || local,
            "{name}: a server-side copy keeps a content checksum: {landed:?}"
        );
        store.delete(&copy).await.unwrap();
        other.delete(&key(name)).await.unwrap();
    }

    // Keeping the source's own properties: the service carries them, none is read first.
    if store.copies_keeping_properties() {
        let data = Bytes::from_static(b"<h1>kept</h1>");
        other
            .put_with(&key("ss-own"), data.clone(), props)
            .await
            .unwrap();
        let meta = other.head(&key("ss-own")).await.unwrap();
        let copied = store
            .copy_keeping(&other.copy_source(&meta), &key("ss-own.copy"))
            .await
            .unwrap()
            .expect("a small object is copied keeping its properties");
        assert!(copied.same_as_source.is_some(), "{copied:?}");
        assert_eq!(store.get(&key("ss-own.copy")).await.unwrap(), data);
        assert_eq!(
            store.properties(&key("ss-own.copy")).await.unwrap(),
            other.properties(&key("ss-own")).await.unwrap(),
            "the copy carries the source's own properties"
        );
        // Onto its own key (where S3 refuses a plain `COPY`): the object stays as it was.
        let own = store.head(&key("ss-own.copy")).await.unwrap();
        store
            .copy_keeping(&store.copy_source(&own), &key("ss-own.copy"))
            .await
            .unwrap_or_else(|e| panic!("a copy onto its own key: {e}"))
            .expect("a small object is copied keeping its properties");
        assert_eq!(store.get(&key("ss-own.copy")).await.unwrap(), data);
        assert_eq!(
            store.properties(&key("ss-own.copy")).await.unwrap(),
            other.properties(&key("ss-own")).await.unwrap(),
            "a copy onto its own key keeps its properties"
        );
        store.delete(&key("ss-own.copy")).await.unwrap();
        other.delete(&key("ss-own")).await.unwrap();
    }

    // The source changes between listing and copy: the copy fails, nothing of the new
    // version lands under the old one's listing.
    other
        .put(&key("ss-changing"), Bytes::from_static(b"first version"))
        .await
        .unwrap();
    let listed = other.head(&key("ss-changing")).await.unwrap();
    other
        .put(
            &key("ss-changing"),
            Bytes::from_static(b"second, longer version"),
        )
        .await
        .unwrap();
    let e = store
        .copy_from(&other.copy_source(&listed), &key("ss-changed"), props)
        .await
        .expect_err("a changed source is not copied");
    assert!(e.to_string().contains("ss-changed"), "{e}");
    other.delete(&key("ss-changing")).await.unwrap();
}
