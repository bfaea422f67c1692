//! Pairing a source listing with a destination listing, both in destination-key order, and
//! deciding each pair (pure: no IO).
//!
//! A sync walks the two listings side by side like a merge: the smaller key goes first, equal
//! keys are a pair. Nothing but the two heads is held, so a sync of ten million objects holds
//! two. Each listing must be strictly ascending; one that is not is an error
//! ([`SyncError::OutOfOrder`]), never a guess, since an object paired wrongly would be copied
//! again or, worse, deleted.

use std::cmp::Ordering;
use std::time::SystemTime;

use skyx_store::ObjectMeta;

use super::{SyncError, SyncRules, is_in_place};
use crate::core::filter::ObjectFilter;
use crate::listing::CopyItem;

/// One step of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pairing {
    /// A source object the destination does not have.
    Source(CopyItem),
    /// A source object and the destination object at its key.
    Both(CopyItem, ObjectMeta),
    /// A destination object no source object maps to.
    Destination(ObjectMeta),
}

/// Takes the next pairing off the heads of the two listings (`None` once both are empty);
/// the caller refills the heads it emptied.
pub fn next_pairing(src: &mut Option<CopyItem>, dst: &mut Option<ObjectMeta>) -> Option<Pairing> {
    let order = match (src.as_ref(), dst.as_ref()) {
        (None, None) => return None,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(s), Some(d)) => s.dst_key.as_str().cmp(d.key.as_str()),
    };
    Some(match order {
        Ordering::Less => Pairing::Source(src.take()?),
        Ordering::Greater => Pairing::Destination(dst.take()?),
        Ordering::Equal => Pairing::Both(src.take()?, dst.take()?),
    })
}

/// Every pairing of two sequences already in destination-key order (as [`next_pairing`]
/// takes them, refilling each head it empties).
pub fn pair_sorted(
    src: impl IntoIterator<Item = CopyItem>,
    dst: impl IntoIterator<Item = ObjectMeta>,
) -> impl Iterator<Item = Pairing> {
    let (mut src, mut dst) = (src.into_iter(), dst.into_iter());
    let (mut src_head, mut dst_head) = (src.next(), dst.next());
    std::iter::from_fn(move || {
        let pairing = next_pairing(&mut src_head, &mut dst_head)?;
        if src_head.is_none() {
            src_head = src.next();
        }
        if dst_head.is_none() {
            dst_head = dst.next();
        }
        Some(pairing)
    })
}

/// Which listing a key came from, for [`SyncError::OutOfOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Checks that one listing's keys arrive strictly ascending.
#[derive(Debug)]
pub struct InOrder {
    side: Side,
    last: Option<String>,
}

impl InOrder {
    pub fn new(side: Side) -> InOrder {
        InOrder { side, last: None }
    }

    pub fn check(&mut self, key: &str) -> Result<(), SyncError> {
        if let Some(last) = &self.last
            && key <= last.as_str()
        {
            return Err(SyncError::OutOfOrder {
                side: self.side,
                before: last.clone(),
                after: key.to_string(),
            });
        }
        self.last = Some(key.to_string());
        Ok(())
    }
}

/// What a sync does with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Copy(Box<CopyItem>),
    /// The destination already holds the source object.
    Unchanged,
    /// A destination object to delete (its key).
    Delete(String),
    /// A destination object no source object maps to, left where it is (no `--delete`, or
    /// the filters leave it out).
    Kept,
}

/// Which destination objects a sync deletes: those without a source object whose key
/// relative to `prefix` (the destination's, as a directory: `dst/`) the filter takes.
#[derive(Debug, Clone, Copy)]
pub struct DeleteRule<'a> {
    pub prefix: &'a str,
    pub filter: &'a ObjectFilter,
}

/// What a sync does with `pairing` under `rules`; `recorded` is the source time the
/// destination object was written from, when it says (see `recorded_time`), and `delete` which
/// destination-only objects go (`None`: none).
pub fn decide(
    pairing: Pairing,
    recorded: Option<SystemTime>,
    rules: &SyncRules,
    delete: Option<DeleteRule<'_>>,
) -> Result<Decision, SyncError> {
    Ok(match pairing {
        Pairing::Source(item) => Decision::Copy(Box::new(item)),
        Pairing::Both(item, meta) => {
            if is_in_place(&item, &meta, recorded, rules)? {
                Decision::Unchanged
            } else {
                Decision::Copy(Box::new(item))
            }
        }
        Pairing::Destination(meta) => match delete {
            Some(rule)
                if meta
                    .key
                    .strip_prefix(rule.prefix)
                    .is_some_and(|rel| rule.filter.accepts(rel, meta.size, meta.last_modified)) =>
            {
                Decision::Delete(meta.key)
            }
            _ => Decision::Kept,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::tests::src;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: format!("d/{key}"),
            size: 5,
            last_modified: None,
            etag: None,
            md5: None,
            crc32c: None,
        }
    }

    fn pair_all(src_items: Vec<CopyItem>, dst: Vec<ObjectMeta>) -> Vec<Pairing> {
        pair_sorted(src_items, dst).collect()
    }

    #[test]
    fn the_smaller_key_goes_first_and_equal_keys_pair() {
        let pairs = pair_all(
            vec![
                src("a", 5, None, 1),
                src("c", 5, None, 1),
                src("e", 5, None, 1),
            ],
            vec![meta("b"), meta("c"), meta("f")],
        );
        let shape: Vec<String> = pairs
            .iter()
            .map(|p| match p {
                Pairing::Source(i) => format!("S {}", i.dst_key),
                Pairing::Both(i, m) => format!("B {} {}", i.dst_key, m.key),
                Pairing::Destination(m) => format!("D {}", m.key),
            })
            .collect();
        assert_eq!(shape, ["S d/a", "D d/b", "B d/c d/c", "S d/e", "D d/f"]);
    }

    #[test]
    fn a_listing_out_of_order_is_an_error_naming_both_keys() {
        let mut order = InOrder::new(Side::Destination);
        order.check("d/a").unwrap();
        order.check("d/b").unwrap();
        let e = order.check("d/a/x").unwrap_err();
        assert!(
            e.to_string().contains("d/a/x") && e.to_string().contains("d/b"),
            "{e}"
        );
        assert!(
            order.check("d/b").is_err(),
            "a repeated key is out of order too"
        );
    }
}
