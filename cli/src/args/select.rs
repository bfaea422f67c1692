//! What `cp` and `sync` take from the source: `--include`/`--exclude` (in command-line order),
//! size and age bounds, `--files-from` and `--no-clobber`, parsed into the gateway's types.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use skyx_gateway::{FilterRule, KeyFilter, ObjectFilter};

use crate::error::BadInput;
use crate::units::{parse_bytes, parse_duration_s};

#[derive(Debug, Args, Default)]
pub struct SelectArgs {
    /// Take objects whose key (relative to the source prefix) matches this pattern back in;
    /// repeatable. Filters apply in order, the last match deciding, as in the AWS CLI:
    /// `--exclude '*' --include '*.csv'` copies only CSV files.
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Leave out objects whose relative key matches this pattern (`*` any run of characters,
    /// `/` included; `?` one character; `[seq]`, `[!seq]`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// The `--include`/`--exclude` filters in command-line order (filled in from the parsed
    /// command line; see `args::filters`).
    #[arg(skip)]
    pub filters: Vec<FilterRule>,
    /// Only objects of at least this size (e.g. 1MiB).
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<String>,
    /// Only objects of at most this size.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Only objects last modified at least this long ago (e.g. 7d).
    #[arg(long, value_name = "DURATION")]
    pub min_age: Option<String>,
    /// Only objects last modified within this long (e.g. 24h).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Copy only the objects named in FILE: keys relative to the source prefix, one per line
    /// (blank lines and lines starting with '#' or ';' ignored), each looked up without
    /// listing the source.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
    /// Never replace an object that already exists at the destination.
    #[arg(long, visible_alias = "ignore-existing")]
    pub no_clobber: bool,
}

impl SelectArgs {
    /// The filters, with ages turned into times against `now`.
    pub fn object_filter(&self, now: SystemTime) -> Result<ObjectFilter> {
        let size = |flag: &str, v: &Option<String>| -> Result<Option<u64>> {
            v.as_deref()
                .map(|t| parse_bytes(t).with_context(|| format!("{flag} {t}")))
                .transpose()
                .map_err(|e| BadInput(format!("{e:#}")).into())
        };
        let age = |flag: &str, v: &Option<String>| -> Result<Option<SystemTime>> {
            let Some(t) = v.as_deref() else {
                return Ok(None);
            };
            let secs = parse_duration_s(t).map_err(|e| BadInput(format!("{flag} {t}: {e}")))?;
            if !(secs.is_finite() && secs >= 0.0) {
                bail!(BadInput(format!(
                    "{flag} {t}: expected a duration such as 24h or 7d"
                )));
            }
            Ok(Some(
                now.checked_sub(Duration::from_secs_f64(secs))
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            ))
        };
        let filter = ObjectFilter {
            keys: KeyFilter::new(&self.filters),
            min_size: size("--min-size", &self.min_size)?,
            max_size: size("--max-size", &self.max_size)?,
            modified_before: age("--min-age", &self.min_age)?,
            modified_after: age("--max-age", &self.max_age)?,
        };
        if let (Some(min), Some(max)) = (filter.min_size, filter.max_size)
            && min > max
        {
            bail!(BadInput(format!(
                "--min-size {min} is above --max-size {max}: nothing could be copied"
            )));
        }
        if let (Some(before), Some(after)) = (filter.modified_before, filter.modified_after)
            && before < after
        {
            bail!(BadInput(
                "--min-age is longer than --max-age: nothing could be copied".into()
            ));
        }
        Ok(filter)
    }

    /// The keys `--files-from` names, if given.
    pub fn names(&self) -> Result<Option<Vec<String>>> {
        let Some(path) = &self.files_from else {
            return Ok(None);
        };
        let text = crate::files::read_input(path, "--files-from", crate::files::FILES_FROM_CAP)?;
        Ok(Some(parse_names(&text)))
    }
}

/// The names of a `--files-from` file, as rclone reads one: trimmed, comments and blank lines
/// left out, a leading `/` meaning the source prefix itself.
fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| l.trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_and_contradictions_are_refused() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let args = SelectArgs {
            min_size: Some("1KiB".into()),
            max_size: Some("1MB".into()),
            max_age: Some("1h".into()),
            ..SelectArgs::default()
        };
        let f = args.object_filter(now).unwrap();
        assert_eq!((f.min_size, f.max_size), (Some(1024), Some(1_000_000)));
        assert_eq!(
            f.modified_after,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - 3600))
        );
        for (args, says) in [
            (
                SelectArgs {
                    min_size: Some("2MB".into()),
                    max_size: Some("1MB".into()),
                    ..SelectArgs::default()
                },
                "--min-size",
            ),
            (
                SelectArgs {
                    min_size: Some("lots".into()),
                    ..SelectArgs::default()
                },
                "--min-size lots",
            ),
            (
                SelectArgs {
                    min_age: Some("2d".into()),
                    max_age: Some("1d".into()),
                    ..SelectArgs::default()
                },
                "--min-age",
            ),
            (
                SelectArgs {
                    max_age: Some("soon".into()),
                    ..SelectArgs::default()
                },
                "--max-age soon",
            ),
        ] {
            let e = args.object_filter(now).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn files_from_reads_as_rclone_does() {
        let text = "# wanted\na.csv\n\n  sub/b.csv  \n; also a comment\n/c\n/\n";
        assert_eq!(parse_names(text), vec!["a.csv", "sub/b.csv", "c"]);
    }
}
