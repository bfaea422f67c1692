//! `skyx cp` end to end: real agent processes, mutual TLS between them, real local servers,
//! and routes through a relay region (`--via`), between every pair of store kinds. Every
//! destination object is read back through the store layer and compared with its source.

use crate::stores::{
    ALL, Kind, Scratch, VIA_RELAY, assert_holds, dataset, is_empty, remove_all, report, unique,
    write_local,
};

const MIB: usize = 1024 * 1024;

fn cp(s: &Scratch, src: &str, dst: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["cp", "-r", src, dst, "--json"];
    if !extra.contains(&"--chunk-size") {
        args.extend_from_slice(&["--chunk-size", "5MiB"]);
    }
    args.extend_from_slice(extra);
    report(&s.skyx(&args, &[]))
}

/// The relay carried the data: bytes crossed both hops of the route.
fn assert_relayed(r: &serde_json::Value) {
    let hops = r["hops"].as_array().expect("hops");
    let carried = |a: &str, b: &str| {
        hops.iter().any(|h| {
            h["src_region"] == a
                && h["dst_region"].as_str().unwrap().starts_with(b)
                && h["wire_bytes"].as_u64().unwrap() > 0
        })
    };
    assert!(
        carried("aws:us-east-1", "aws:us-east-2"),
        "first hop: {hops:?}"
    );
    assert!(
        carried("aws:us-east-2", "gcp:asia-southeast1"),
        "second hop: {hops:?}"
    );
    assert!(r["egress_usd"].as_f64().unwrap() > 0.0, "priced egress");
    assert_eq!(r["metering"], "rehearsal", "a local relay is a rehearsal");
}

/// Puts the dataset into a store of `kind` (with a plain local copy) and returns its URL.
fn seed(s: &Scratch, kind: Kind, data: &crate::stores::Dataset) -> String {
    let local = s.dir.join("seed");
    write_local(&local, data);
    if kind == Kind::Local {
        return local.display().to_string();
    }
    let url = s.root(kind, "src");
    let r = cp(s, &local.display().to_string(), &url, &[]);
    assert_eq!(r["objects_copied"], data.len() as u64);
    url
}

fn from_kind_to_every_kind(kind: Kind) {
    let s = Scratch::new(&format!("matrix-{kind:?}"));
    let data = dataset(150, 20 * MIB + 7);
    let src = seed(&s, kind, &data);
    for dst_kind in ALL {
        let dst = s.root(dst_kind, &format!("to-{dst_kind:?}").to_lowercase());
        let r = cp(&s, &src, &dst, VIA_RELAY);
        assert_eq!(
            r["objects_copied"],
            data.len() as u64,
            "{kind:?} -> {dst_kind:?}"
        );
        assert_eq!(r["objects_failed"].as_array().unwrap().len(), 0);
        assert_relayed(&r);
        assert_holds(&dst, &data);
    }
}

#[test]
fn local_to_every_store_kind_through_a_relay() {
    from_kind_to_every_kind(Kind::Local);
}

#[test]
fn s3_to_every_store_kind_through_a_relay() {
    from_kind_to_every_kind(Kind::S3);
}

#[test]
fn azure_to_every_store_kind_through_a_relay() {
    from_kind_to_every_kind(Kind::Azure);
}

#[test]
fn gcs_to_every_store_kind_through_a_relay() {
    from_kind_to_every_kind(Kind::Gcs);
}

/// 10,000 small objects (plus an empty and a one-byte one) go through every kind of store:
/// local -> S3 -> GCS -> local, then half of them (5,002: still more than one page of an Azure
/// listing) -> Azure, each copy through a relay. Azure gets half and comes last: Azurite's
/// in-memory store spends longer on each request the more blobs it holds (500 blobs into a
/// fresh one: 2.9 s; 10,000: 189 s, and 432 s once the suite's other tests had filled it).
#[test]
fn ten_thousand_small_objects_go_through_every_store_kind() {
    let s = Scratch::new("ten-thousand");
    let data = dataset(10_000, 0);
    let mut src = seed(&s, Kind::Local, &data);
    let half: crate::stores::Dataset = data
        .iter()
        .filter(|(key, _)| !key.starts_with("dir1"))
        .map(|(key, &len)| (key.clone(), len))
        .collect();
    assert_eq!(half.len(), 5_002);
    let hops: [(Kind, &crate::stores::Dataset, &[&str]); 4] = [
        (Kind::S3, &data, &[]),
        (Kind::Gcs, &data, &[]),
        (Kind::Local, &data, &[]),
        (Kind::Azure, &half, &["--exclude", "dir1*"]),
    ];
    for (kind, moved, filter) in hops {
        let dst = s.root(kind, &format!("hop-{kind:?}").to_lowercase());
        let r = cp(&s, &src, &dst, &[VIA_RELAY, filter].concat());
        assert_eq!(r["objects_copied"], moved.len() as u64, "-> {kind:?}");
        assert_relayed(&r);
        assert_holds(&dst, moved);
        src = dst;
    }
}

/// One object past 2 GiB streams from a local file through a relay into S3 and back; agents
/// hold a bounded number of chunks, never the object.
#[test]
fn a_two_gib_object_streams_through_a_relay_and_back() {
    let s = Scratch::new("two-gib");
    let mut data = crate::stores::Dataset::new();
    data.insert("huge.bin".into(), 2 * 1024 * MIB + 12345);
    let src = seed(&s, Kind::Local, &data);
    let s3 = s.root(Kind::S3, "huge");
    let r = cp(
        &s,
        &src,
        &s3,
        &[VIA_RELAY, &["--chunk-size", "64MiB"]].concat(),
    );
    assert_eq!(r["objects_copied"], 1);
    assert_relayed(&r);
    assert_holds(&s3, &data);
    // Gigabytes each: the suite's other tests run beside this one on the same disk.
    std::fs::remove_dir_all(&src).unwrap();
    let back = s.dir.join("back").display().to_string();
    let r = cp(&s, &s3, &back, VIA_RELAY);
    assert_eq!(r["objects_copied"], 1);
    assert_holds(&back, &data);
    remove_all(&s3);
}

/// QUIC is a drop-in transport: the same copy over one QUIC connection per hop.
#[test]
fn quic_carries_a_copy_through_a_relay() {
    let s = Scratch::new("quic");
    let data = dataset(50, 12 * MIB);
    let src = seed(&s, Kind::Local, &data);
    let dst = s.root(Kind::S3, "quic");
    let r = cp(
        &s,
        &src,
        &dst,
        &[VIA_RELAY, &["--transport", "quic"]].concat(),
    );
    assert_eq!(r["objects_copied"], data.len() as u64);
    assert_relayed(&r);
    assert_holds(&dst, &data);
}

/// Without regions, two local paths are copied by skyx's own process (each file read back),
/// and by one local agent pair with `--server-side never`; `--dry-run` moves nothing.
#[test]
fn a_copy_without_regions_is_direct_and_dry_run_moves_nothing() {
    let s = Scratch::new("direct");
    let data = dataset(20, 6 * MIB);
    let src = seed(&s, Kind::Local, &data);
    let dst = s.dir.join(unique("dst")).display().to_string();
    let out = s.skyx(&["cp", "-r", &src, &dst, "--dry-run"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Would copy: {} objects", data.len())),
        "{text}"
    );
    assert!(!std::path::Path::new(&dst).exists(), "dry run wrote {dst}");
    let r = cp(&s, &src, &dst, &[]);
    assert_eq!(r["objects_copied"], data.len() as u64);
    assert_eq!(r["objects_server_side"], data.len() as u64, "{r}");
    assert_eq!(r["agents"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["verified"]["readback"], data.len() as u64, "{r}");
    assert_holds(&dst, &data);
    assert!(!is_empty(&dst));
    // No temp file is left beside what landed.
    let hidden = walkdir(&dst).filter(|p| p.contains(".skyx-")).count();
    assert_eq!(hidden, 0);

    // Not into itself: the walk would copy the copies, deeper each time.
    let inside = format!("{src}/copy");
    let out = s.skyx(&["cp", "-r", &src, &inside], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the source"), "{err}");
    assert!(!std::path::Path::new(&inside).exists());

    let through_agents = s.dir.join(unique("agents")).display().to_string();
    let r = cp(&s, &src, &through_agents, &["--server-side", "never"]);
    assert_eq!(r["objects_copied"], data.len() as u64);
    assert_eq!(r["objects_server_side"], 0, "{r}");
    assert_eq!(r["agents"].as_array().unwrap().len(), 2);
    assert_holds(&through_agents, &data);
}

/// Agents on this machine tell the truth. With both regions named, the local provider copies
/// through one source agent and one sink agent (no relay process stands in for a region),
/// bills nothing, and shows the plan only as what cloud agents would do; a relay asked for by
/// name without `--rehearse` is refused before anything starts.
#[test]
fn local_agents_copy_directly_unless_asked_to_rehearse() {
    let s = Scratch::new("truth");
    let data = dataset(10, 6 * MIB);
    let src = seed(&s, Kind::Local, &data);
    let regions = [
        "--src-region",
        "aws:us-east-1",
        "--dst-region",
        "gcp:asia-southeast1",
    ];
    let dst = s.root(Kind::S3, "truth");
    let r = cp(&s, &src, &dst, &regions);
    assert_eq!(r["objects_copied"], data.len() as u64, "{r}");
    assert_eq!(r["metering"], "local", "{r}");
    let agents = r["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "one source, one sink: {agents:?}");
    for hop in r["hops"].as_array().unwrap() {
        assert_eq!(hop["src_region"], "local", "{hop}");
        assert_eq!(hop["dst_region"], "local", "{hop}");
    }
    assert_eq!(r["total_usd"].as_f64(), Some(0.0), "{r}");
    // The plan is still shown, as a prediction for cloud agents.
    assert!(r["predicted"]["cost_usd"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["predicted_for"], "first plan", "{r}");
    assert_holds(&dst, &data);

    let mut text = vec!["cp", "-r", &src, &dst, "--no-progress"];
    text.extend_from_slice(&regions);
    let out = s.skyx(&text, &[]);
    assert!(out.status.success(), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("not run here"), "{summary}");
    assert!(!summary.contains("  cost: $"), "{summary}");

    let refused = s.root(Kind::S3, "refused");
    let mut via = vec!["cp", "-r", &src, &refused, "--via", "aws:us-east-2"];
    via.extend_from_slice(&regions);
    let out = s.skyx(&via, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rehearse"), "{err}");
    assert!(is_empty(&refused), "a refused copy wrote to {refused}");
}

/// Every path under `dir`, as text.
fn walkdir(dir: &str) -> impl Iterator<Item = String> {
    let mut stack = vec![std::path::PathBuf::from(dir)];
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.into_iter()
}

/// `--include`/`--exclude` choose objects by their key relative to the source prefix, in order
/// (the last match decides), and a single object copies into a destination "directory".
#[test]
fn filters_and_single_objects() {
    let s = Scratch::new("filters");
    let data = dataset(40, 0);
    let src = seed(&s, Kind::Local, &data);
    let dst = s.root(Kind::S3, "filtered");
    let r = cp(
        &s,
        &src,
        &dst,
        &[
            "--exclude",
            "*",
            "--include",
            "dir0*",
            "--exclude",
            "*small-0000*",
        ],
    );
    let want: crate::stores::Dataset = data
        .iter()
        .filter(|(k, _)| k.starts_with("dir0") && !k.contains("small-0000"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(!want.is_empty() && want.len() < data.len());
    assert_eq!(r["objects_copied"], want.len() as u64);
    assert_holds(&dst, &want);

    let one = format!("{src}/dir01/small-00001");
    let into = s.root(Kind::Gcs, "single");
    let out = s.skyx(&["cp", &one, &format!("{into}/"), "--json"], &[]);
    assert_eq!(report(&out)["objects_copied"], 1);
    // The object keeps its base name under the destination prefix.
    let got = crate::stores::read(&format!("{into}/small-00001"));
    assert!(got == crate::stores::content("dir01/small-00001", data["dir01/small-00001"]));
}

/// `skyx sync` copies only what is missing or different and, with `--delete`, removes what
/// the source no longer has; `--dry-run` says so without doing it.
#[test]
fn sync_copies_only_what_differs_and_deletes_extraneous_objects() {
    let s = Scratch::new("sync");
    let mut data = dataset(30, 0);
    let src_dir = s.dir.join("src");
    write_local(&src_dir, &data);
    let src = src_dir.display().to_string();
    let dst = s.root(Kind::Gcs, "mirror");
    let first = report(&s.skyx(&["sync", &src, &dst, "--json"], &[]));
    assert_eq!(first["objects_copied"], data.len() as u64);
    assert_holds(&dst, &data);

    // Change one object's size, add one, remove one (the others are left untouched).
    let mut changed = crate::stores::Dataset::new();
    changed.insert("dir00/small-00000".into(), 5000);
    changed.insert("added".into(), 77);
    write_local(&src_dir, &changed);
    data.extend(changed);
    std::fs::remove_file(src_dir.join("one-byte")).unwrap();
    data.remove("one-byte");

    let dry = s.skyx(&["sync", &src, &dst, "--delete", "--dry-run"], &[]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("Would copy 2 objects"), "{text}");
    assert!(text.contains("delete 1"), "{text}");
    let second = report(&s.skyx(&["sync", &src, &dst, "--delete", "--json"], &[]));
    assert_eq!(second["objects_copied"], 2, "{second}");
    assert_eq!(second["deleted"], 1, "{second}");
    assert_eq!(second["unchanged"], (data.len() - 2) as u64, "{second}");
    assert_holds(&dst, &data);
    let third = report(&s.skyx(&["sync", &src, &dst, "--delete", "--json"], &[]));
    assert_eq!(third["unchanged"], data.len() as u64, "{third}");
    assert_eq!(third["deleted"], 0);
}

/// Whole objects are checked at rest by content on every cloud store, never by size alone:
/// S3 and GCS by the CRC32C they keep, Azure by the MD5 it keeps against the MD5 of the bytes
/// the sink wrote.
#[test]
fn whole_objects_are_verified_by_content_on_every_cloud_store() {
    let s = Scratch::new("verified");
    let data = dataset(6, 0);
    let src = seed(&s, Kind::Local, &data);
    for (kind, check) in [
        (Kind::S3, "crc32c"),
        (Kind::Gcs, "crc32c"),
        (Kind::Azure, "md5"),
    ] {
        let dst = s.root(kind, "checked");
        let r = cp(&s, &src, &dst, &["--chunk-size", "64MiB"]);
        assert_eq!(
            r["verified"],
            serde_json::json!({ check: data.len() }),
            "{dst}: {r}"
        );
    }
}
