//! Reading the files users name (a pipeline, a config, a `--files-from` list, catalog CSVs)
//! with a size cap each: a wrong path such as `/dev/zero` or a multi-GB log is refused with a
//! clear message instead of being read until the kernel kills the process.

use std::io::Read;
use std::path::Path;

use crate::error::BadInput;

/// Caps on what skyx reads: far above any real file of the kind, far below a mistake.
pub const PIPELINE_CAP: u64 = 4 << 20;
pub const CONFIG_CAP: u64 = 4 << 20;
pub const CATALOG_CAP: u64 = 256 << 20;
pub const FILES_FROM_CAP: u64 = 4 << 30;

/// The text of `path`, at most `cap` bytes, as UTF-8; `what` names the file in errors.
pub fn read_text(path: &Path, what: &str, cap: u64) -> Result<String, std::io::Error> {
    let mut text = String::new();
    let file = std::fs::File::open(path)?;
    file.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{what} is larger than {} (is this the right file?)",
                crate::units::format_bytes(cap as f64)
            ),
        ));
    }
    Ok(text)
}

/// As [`read_text`], any failure a bad-input error naming the file.
pub fn read_input(path: &Path, what: &str, cap: u64) -> Result<String, BadInput> {
    read_text(path, what, cap).map_err(|e| BadInput(format!("{what} {}: {e}", path.display())))
}

/// A reader of `path` that fails past `cap` bytes (CSV parsers read as they go).
pub fn open_capped(path: &Path, what: &str, cap: u64) -> Result<impl Read, BadInput> {
    let file = std::fs::File::open(path)
        .map_err(|e| BadInput(format!("cannot open {what} file {}: {e}", path.display())))?;
    Ok(Capped {
        inner: file,
        left: cap,
        what: format!("{what} file {}", path.display()),
        cap,
    })
}

struct Capped<R> {
    inner: R,
    left: u64,
    what: String,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more means the file is over the cap.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is larger than {} (is this the right file?)",
                        self.what,
                        crate::units::format_bytes(self.cap as f64)
                    ),
                )),
            };
        }
        let n = buf.len().min(self.left as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_files_are_refused_at_the_cap() {
        let e = read_input(Path::new("/dev/zero"), "pipeline", 1024).unwrap_err();
        assert!(e.0.contains("larger than"), "{}", e.0);
        let mut r = open_capped(Path::new("/dev/zero"), "grid", 1024).unwrap();
        let mut sink = Vec::new();
        let e = r.read_to_end(&mut sink).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(sink.len(), 1024);
    }
}
