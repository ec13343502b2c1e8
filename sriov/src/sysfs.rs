//! Reading sysfs attribute files with errors that name the path.
//!
//! sysfs files are small, newline-terminated, and can vanish between a
//! directory listing and the read (a VF removed by `sriov_numvfs=0`). Readers
//! here distinguish "absent" (an optional attribute, or a device that went
//! away) from "unreadable" (permissions, I/O), which is always an error.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, Mode, OFlags};
use rustix::io::Errno;

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
    read_file(fs::File::open(path)?)
}

/// The body of [`read_small`] for a file already open.
fn read_file(mut file: fs::File) -> io::Result<String> {
    use std::io::Read;
    // Larger than any attribute a scan reads; a longer file is read on.
    let mut buf = [0u8; 1024];
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

/// `s` without trailing whitespace, reusing its buffer.
fn trimmed(mut s: String) -> String {
    s.truncate(s.trim_end().len());
    s
}

/// Reads a file and trims the trailing newline; `Ok(None)` when absent.
pub fn read_optional(path: &Path) -> Result<Option<String>, SysfsError> {
    match read_small(path) {
        Ok(s) => Ok(Some(trimmed(s))),
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
        .map(trimmed)
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
    id16(path, read_required(path)?)
}

fn id16(path: &Path, content: String) -> Result<u16, SysfsError> {
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

/// A directory entry: its name, and the inode number `getdents` gave
/// with it at no extra cost.
///
/// sysfs numbers each kernel object's node once for the life of the
/// system (kernfs ids carry a generation), so an entry with the same name
/// and inode number is the same object it was: a device removed and added
/// again at the same address has a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// Its inode number.
    pub ino: u64,
}

/// Bytes of `getdents` buffer per listing, about a thousand short entries
/// per call. An entry larger than the buffer fails the listing (EINVAL);
/// a name is at most 255 bytes.
const LISTING_BUFFER: usize = 32 * 1024;

/// The last component of a link target (`../../drivers/mlx5_core` →
/// `mlx5_core`), as [`Path::file_name`] gives it: trailing slashes and `.`
/// components are passed over, and a target ending in `..` has none.
fn last_component(target: &[u8]) -> Option<&[u8]> {
    let mut rest = target;
    loop {
        while let [head @ .., b'/'] = rest {
            rest = head;
        }
        let (head, last) = match rest.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&rest[..0], rest),
        };
        match last {
            b"" | b".." => return None,
            b"." if !head.is_empty() => rest = head,
            b"." => return None,
            name => return Some(name),
        }
    }
}

/// A relative path joined from parts, on the stack where it fits (sysfs
/// names are short: an interface's is at most 15 bytes). A large node's
/// scan reads two attributes of each of thousands of interfaces, and a
/// path allocated for each cost as much as the parsing of what it read.
pub struct JoinedPath {
    short: [u8; JoinedPath::SHORT],
    len: usize,
    long: Option<String>,
}

impl JoinedPath {
    const SHORT: usize = 128;

    /// `parts` one after the other.
    pub fn new(parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut path = JoinedPath {
            short: [0; JoinedPath::SHORT],
            len,
            long: None,
        };
        if len > JoinedPath::SHORT {
            path.long = Some(parts.concat());
            return path;
        }
        let mut at = 0;
        for part in parts {
            path.short[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        path
    }

    /// The joined path.
    pub fn as_str(&self) -> &str {
        match &self.long {
            Some(long) => long,
            // Whole `&str`s copied end to end: always UTF-8.
            None => std::str::from_utf8(&self.short[..self.len]).unwrap_or_default(),
        }
    }
}

/// An open sysfs directory that attributes are read relative to.
///
/// A path-based read walks every component again, and a device reached
/// through `bus/pci/devices/<addr>` also follows that link to its real place
/// under `/sys/devices`: about a third of the cost of each `open` on a large
/// node, where a scan is tens of thousands of small reads. Opening the
/// directory once (`O_PATH`) and using `openat`/`readlinkat` relative to it
/// walks only the attribute's own name. Errors still name the full path.
#[derive(Debug)]
pub struct SysDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `O_PATH`: the descriptor only anchors lookups, so nothing is read or
/// checked on the directory itself.
fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl SysDir {
    /// Opens `path`; `Ok(None)` when it does not exist.
    pub fn open(path: &Path) -> Result<Option<SysDir>, SysfsError> {
        match rustix::fs::open(path, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Some(SysDir {
                fd,
                path: path.to_path_buf(),
            })),
            Err(e) if e == Errno::NOENT => Ok(None),
            Err(e) => Err(SysfsError::Read {
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    /// The directory's path as it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (`.` is the directory itself).
    pub fn join(&self, name: &str) -> PathBuf {
        match name {
            "." => self.path.clone(),
            _ => self.path.join(name),
        }
    }

    fn error(&self, name: &str, source: impl Into<io::Error>) -> SysfsError {
        SysfsError::Read {
            path: self.join(name),
            source: source.into(),
        }
    }

    /// Opens the subdirectory `name` (may contain `/`); `Ok(None)` when absent.
    pub fn open_dir(&self, name: &str) -> Result<Option<SysDir>, SysfsError> {
        match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Some(SysDir {
                fd,
                path: self.join(name),
            })),
            Err(e) if e == Errno::NOENT => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Whether `name` exists (without following a final symlink).
    pub fn exists(&self, name: &str) -> bool {
        rustix::fs::accessat(&self.fd, name, Access::EXISTS, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Opens the file `name` for reading.
    fn open_file(&self, name: &str) -> io::Result<fs::File> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&self.fd, name, flags, Mode::empty())?.into())
    }

    fn read_small(&self, name: &str) -> io::Result<String> {
        read_file(self.open_file(name)?)
    }

    /// [`read_optional`] of `name` in this directory.
    pub fn read_optional(&self, name: &str) -> Result<Option<String>, SysfsError> {
        match self.read_small(name) {
            Ok(s) => Ok(Some(trimmed(s))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// [`read_required`] of `name` in this directory.
    pub fn read_required(&self, name: &str) -> Result<String, SysfsError> {
        self.read_small(name)
            .map(trimmed)
            .map_err(|e| self.error(name, e))
    }

    /// [`read_lenient`] of `name` in this directory.
    pub fn read_lenient(&self, name: &str) -> Option<String> {
        self.read_small(name).ok()
    }

    /// [`read_optional_decimal`] of `name` in this directory.
    pub fn read_optional_decimal<T: std::str::FromStr>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SysfsError> {
        // Parsed where it was read: a large node reads thousands of these,
        // and none needs its text kept.
        let parsed = self.read_in_place(name, |text| {
            let text = text.trim();
            text.parse::<T>().map_err(|_| text.to_string())
        });
        match parsed {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(content)) => Err(SysfsError::Parse {
                path: self.join(name),
                content,
                expected: "a decimal number",
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Reads `name` into a buffer on the stack and hands `f` its text;
    /// a file longer than the buffer is read whole on the heap.
    fn read_in_place<R>(&self, name: &str, f: impl FnOnce(&str) -> R) -> io::Result<R> {
        use std::io::Read;
        let mut file = self.open_file(name)?;
        let mut buf = [0u8; 256];
        let len = file.read(&mut buf)?;
        if len == buf.len() {
            let mut rest = Vec::from(&buf[..]);
            file.read_to_end(&mut rest)?;
            let text = String::from_utf8(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(f(&text));
        }
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(f(text))
    }

    /// [`read_id16`] of `name` in this directory.
    pub fn read_id16(&self, name: &str) -> Result<u16, SysfsError> {
        let content = self.read_required(name)?;
        id16(&self.join(name), content)
    }

    /// Where the symlink `name` points; `Ok(None)` when absent, an
    /// `InvalidInput` error when `name` is not a symlink.
    pub fn link_target(&self, name: &str) -> Result<Option<PathBuf>, SysfsError> {
        match rustix::fs::readlinkat(&self.fd, name, Vec::new()) {
            Ok(target) => Ok(Some(PathBuf::from(OsString::from_vec(target.into_bytes())))),
            Err(e) if e == Errno::NOENT => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// [`link_target_name`] of `name` in this directory.
    pub fn link_target_name(&self, name: &str) -> Result<Option<String>, SysfsError> {
        self.with_link_target_name(name, str::to_owned)
    }

    /// Hands `f` the last component of the target of the symlink `name`
    /// (read into a buffer on the stack) and returns what it made of it;
    /// `Ok(None)` when the link is absent. A scan reads two links per
    /// function, and the IOMMU group's needs no `String` at all.
    pub fn with_link_target_name<R>(
        &self,
        name: &str,
        f: impl FnOnce(&str) -> R,
    ) -> Result<Option<R>, SysfsError> {
        let mut buf = [0u8; 256];
        let whole;
        let target = match rustix::fs::readlinkat_raw(&self.fd, name, &mut buf[..]) {
            Ok(len) if len < buf.len() => &buf[..len],
            // Perhaps cut short: read it whole.
            Ok(_) => match self.link_target(name)? {
                Some(target) => {
                    whole = target;
                    whole.as_os_str().as_bytes()
                }
                None => return Ok(None),
            },
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) => return Err(self.error(name, e)),
        };
        Ok(
            last_component(target).map(|n| match std::str::from_utf8(n) {
                Ok(text) => f(text),
                Err(_) => f(&String::from_utf8_lossy(n)),
            }),
        )
    }

    /// Entries of the subdirectory `name`, sorted; `Ok(None)` when absent.
    pub fn list_present(&self, name: &str) -> Result<Option<Vec<String>>, SysfsError> {
        Ok(self
            .entries_present(name)?
            .map(|entries| entries.into_iter().map(|e| e.name).collect()))
    }

    /// [`list_present`](Self::list_present) with each entry's inode number.
    pub fn entries_present(&self, name: &str) -> Result<Option<Vec<Entry>>, SysfsError> {
        let mut entries = self.entries_unsorted(name)?;
        if let Some(entries) = &mut entries {
            // Names in one directory are unique: no order to keep among equals.
            entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(entries)
    }

    /// [`entries_present`](Self::entries_present) in the order `getdents`
    /// gives them, for a caller that does not need them sorted (sorting
    /// `class/net` on a large node costs more than listing it). An
    /// unchanged directory lists in the same order each time: kernfs keeps
    /// its entries by name hash.
    pub fn entries_unsorted(&self, name: &str) -> Result<Option<Vec<Entry>>, SysfsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) => return Err(self.error(name, e)),
        };
        // Entries are taken straight from the `getdents` buffer: the
        // iterator that copies each name first costs an allocation per
        // entry, and `bus/pci/devices` and `class/net` have thousands.
        let mut buf = Vec::with_capacity(LISTING_BUFFER);
        let mut dir = rustix::fs::RawDir::new(&fd, buf.spare_capacity_mut());
        let mut entries = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = match entry {
                Ok(entry) => entry,
                // Removed while listed: what was read is the listing, as
                // an empty directory's would be.
                Err(e) if e == Errno::NOENT => break,
                Err(e) => return Err(self.error(name, e)),
            };
            let bytes = entry.file_name().to_bytes();
            if bytes != b"." && bytes != b".." {
                let name = match std::str::from_utf8(bytes) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(bytes).into_owned(),
                };
                entries.push(Entry {
                    name,
                    ino: entry.ino(),
                });
            }
        }
        Ok(Some(entries))
    }

    /// [`list_dir`] of the subdirectory `name`: absent is empty.
    pub fn list(&self, name: &str) -> Result<Vec<String>, SysfsError> {
        Ok(self.list_present(name)?.unwrap_or_default())
    }
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
    fn an_open_dir_reads_relative_to_itself_and_errors_name_the_full_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("net/eth0")).unwrap();
        fs::write(dir.path().join("net/eth0/mtu"), "1500\n").unwrap();
        std::os::unix::fs::symlink("../kernel/iommu_groups/7", dir.path().join("iommu_group"))
            .unwrap();
        let d = SysDir::open(dir.path()).unwrap().unwrap();
        assert_eq!(
            d.read_optional_decimal::<u32>("net/eth0/mtu").unwrap(),
            Some(1500)
        );
        assert_eq!(d.read_optional("net/eth0/speed").unwrap(), None);
        assert_eq!(
            d.link_target_name("iommu_group").unwrap().as_deref(),
            Some("7")
        );
        assert_eq!(d.link_target_name("driver").unwrap(), None);
        assert_eq!(d.list("net").unwrap(), ["eth0"]);
        assert_eq!(d.list_present("infiniband").unwrap(), None);
        assert!(d.exists("net/eth0") && !d.exists("net/eth1"));
        // A directory where a file should be: EISDIR, named in full.
        let err = d.read_required("net/eth0").unwrap_err().to_string();
        let full = dir.path().join("net/eth0");
        assert!(err.contains(&full.display().to_string()), "{err}");
        assert!(SysDir::open(&dir.path().join("absent")).unwrap().is_none());
    }

    #[test]
    fn a_link_targets_last_component_is_what_path_file_name_gives() {
        for target in [
            "../../../bus/pci/drivers/mlx5_core",
            "../kernel/iommu_groups/7",
            "7",
            "a//b",
            "drivers/vfio-pci/",
            "a/./",
            "a/.",
            "a/..",
            "..",
            ".",
            "/",
            "",
        ] {
            let ours = last_component(target.as_bytes()).map(|n| std::str::from_utf8(n).unwrap());
            let std = Path::new(target).file_name().and_then(|n| n.to_str());
            assert_eq!(ours, std, "{target:?}");
        }
    }

    #[test]
    fn a_link_longer_than_the_stack_buffer_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = format!("{}/drivers/mlx5_core/", "../x".repeat(100));
        std::os::unix::fs::symlink(&target, dir.path().join("driver")).unwrap();
        let d = SysDir::open(dir.path()).unwrap().unwrap();
        assert!(target.len() > 256);
        assert_eq!(
            d.link_target_name("driver").unwrap().as_deref(),
            Some("mlx5_core")
        );
    }

    #[test]
    fn a_listing_longer_than_one_buffer_comes_back_whole_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        // Long names, so the entries fill several `getdents` buffers.
        let mut names: Vec<String> = (0..3000).map(|i| format!("{i:0>60}")).collect();
        for name in &names {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let d = SysDir::open(dir.path()).unwrap().unwrap();
        let entries = d.entries_present(".").unwrap().unwrap();
        names.sort();
        let listed: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(listed, names);
        let ino = |name: &str| {
            use std::os::unix::fs::MetadataExt;
            fs::symlink_metadata(dir.path().join(name)).unwrap().ino()
        };
        assert!(entries.iter().take(50).all(|e| e.ino == ino(&e.name)));
    }

    #[test]
    fn a_joined_path_is_its_parts_end_to_end_however_long() {
        let path = JoinedPath::new(&["net", "/", "ens1f0v3", "/", "mtu"]);
        assert_eq!(path.as_str(), "net/ens1f0v3/mtu");
        let long = "x".repeat(200);
        assert_eq!(
            JoinedPath::new(&["a/", &long]).as_str(),
            format!("a/{long}")
        );
        assert_eq!(JoinedPath::new(&[]).as_str(), "");
    }

    #[test]
    fn missing_required_file_is_not_found() {
        let err = read_required(Path::new("/nonexistent/sriov/class")).unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("/nonexistent/sriov/class"));
    }
}
