//! Reading sysfs attribute files with errors that name the path.
//!
//! sysfs files are small, newline-terminated, and can vanish between a
//! directory listing and the read (a VF removed by `sriov_numvfs=0`). Readers
//! here distinguish "absent" (an optional attribute, or a device that went
//! away) from "unreadable" (permissions, I/O), which is always an error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A sysfs read that failed for a reason other than the file being absent.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file was read but its content is not what the kernel writes there.
    #[error("unexpected content {content:?} in {path}: expected {expected}")]
    Parse {
        /// The file that held the value.
        path: PathBuf,
        /// What was in it (trimmed).
        content: String,
        /// A short description of the expected form.
        expected: &'static str,
    },
}

impl SysfsError {
    /// True when the underlying cause is a missing file or directory.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SysfsError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads a small attribute file in one `read`.
///
/// `fs::read_to_string` stats the file for a size hint and reads until a
/// zero-length read: five syscalls where three do, which is most of a scan
/// of a 2048-VF node. sysfs serves an attribute (at most a page) in one read.
fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut len = file.read(&mut buf)?;
    if len == buf.len() {
        // Not a sysfs attribute after all: read the rest properly.
        let mut rest = Vec::from(&buf[..]);
        file.read_to_end(&mut rest)?;
        return String::from_utf8(rest).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
    }
    while len > 0 && buf[len - 1] == b'\n' {
        len -= 1;
    }
    std::str::from_utf8(&buf[..len])
        .map(str::to_string)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads a file and trims the trailing newline; `Ok(None)` when absent.
pub fn read_optional(path: &Path) -> Result<Option<String>, SysfsError> {
    match read_small(path) {
        Ok(s) => Ok(Some(s.trim_end().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysfsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a file that must exist.
pub fn read_required(path: &Path) -> Result<String, SysfsError> {
    read_small(path)
        .map(|s| s.trim_end().to_string())
        .map_err(|source| SysfsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a file whose read may legitimately fail (the kernel answers EINVAL
/// for the speed of a down link, EOPNOTSUPP for a port name a driver lacks):
/// any failure is "no value".
pub fn read_lenient(path: &Path) -> Option<String> {
    read_small(path).ok()
}

/// Parses a `0x`-prefixed hex attribute (`vendor`, `device`, `class`).
pub fn parse_hex(path: &Path, content: &str) -> Result<u32, SysfsError> {
    let digits = content.strip_prefix("0x").unwrap_or(content);
    u32::from_str_radix(digits, 16).map_err(|_| SysfsError::Parse {
        path: path.to_path_buf(),
        content: content.to_string(),
        expected: "a hexadecimal number such as 0x15b3",
    })
}

/// Parses a 16-bit ID attribute (`vendor`, `device`, `subsystem_*`).
pub fn read_id16(path: &Path) -> Result<u16, SysfsError> {
    let content = read_required(path)?;
    let value = parse_hex(path, &content)?;
    u16::try_from(value).map_err(|_| SysfsError::Parse {
        path: path.to_path_buf(),
        content,
        expected: "a 16-bit hexadecimal ID",
    })
}

/// Parses a decimal attribute into any integer type.
pub fn parse_decimal<T: std::str::FromStr>(path: &Path, content: &str) -> Result<T, SysfsError> {
    content.trim().parse().map_err(|_| SysfsError::Parse {
        path: path.to_path_buf(),
        content: content.to_string(),
        expected: "a decimal number",
    })
}

/// Reads an optional decimal attribute.
pub fn read_optional_decimal<T: std::str::FromStr>(path: &Path) -> Result<Option<T>, SysfsError> {
    read_optional(path)?
        .map(|c| parse_decimal(path, &c))
        .transpose()
}

/// The last path component a symlink points at (`driver` → `mlx5_core`);
/// `Ok(None)` when the link is absent.
pub fn link_target_name(path: &Path) -> Result<Option<String>, SysfsError> {
    match fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysfsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Directory entries' names, sorted; an absent directory is empty.
pub fn list_dir(path: &Path) -> Result<Vec<String>, SysfsError> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SysfsError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SysfsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_reads_distinguish_absent_from_present() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("numa_node");
        assert_eq!(read_optional(&f).unwrap(), None);
        fs::write(&f, "1\n").unwrap();
        assert_eq!(read_optional(&f).unwrap().as_deref(), Some("1"));
        assert_eq!(read_optional_decimal::<i32>(&f).unwrap(), Some(1));
    }

    #[test]
    fn parse_errors_name_the_file_and_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vendor");
        fs::write(&f, "0xZZ\n").unwrap();
        let err = read_id16(&f).unwrap_err().to_string();
        assert!(err.contains("vendor") && err.contains("0xZZ"), "{err}");
        fs::write(&f, "0x12345\n").unwrap();
        assert!(read_id16(&f).unwrap_err().to_string().contains("16-bit"));
    }

    #[test]
    fn long_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        let text = "x".repeat(10_000);
        fs::write(&f, format!("{text}\n")).unwrap();
        assert_eq!(read_required(&f).unwrap(), text);
        assert_eq!(read_lenient(&dir.path().join("absent")), None);
    }

    #[test]
    fn missing_required_file_is_not_found() {
        let err = read_required(Path::new("/nonexistent/sriov/class")).unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("/nonexistent/sriov/class"));
    }
}
