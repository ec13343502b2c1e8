//! Entering a pod's network namespace without moving any thread we keep.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread*. Done
//! on a tokio worker it would make every later task on that worker talk to
//! the pod's network, so [`run_in_netns`] spawns a fresh OS thread, enters
//! the namespace there, runs the closure and lets the thread end: a thread
//! that entered a namespace is never reused. The attach path only opens its
//! rtnetlink socket this way: a socket stays in the namespace it was created
//! in, so the rest of the work runs on the caller's thread with that socket.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a namespace could not be entered or created.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Opening the namespace file failed (`ENOENT`: the pod's netns is gone).
    #[error("opening network namespace {path}: {source}")]
    Open {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `setns` refused the file (not a network namespace, or no privilege).
    #[error("entering network namespace {path}: {source}")]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating or pinning a new namespace failed.
    #[error("creating network namespace at {path}: {action}: {source}")]
    Create {
        /// Where it was to be pinned.
        path: PathBuf,
        /// Which step failed.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The OS would not give us a thread.
    #[error("spawning a thread for network namespace {path}: {source}")]
    Spawn {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The closure panicked inside the namespace.
    #[error("work inside network namespace {path} panicked")]
    Panicked {
        /// The namespace path.
        path: PathBuf,
    },
}

impl NetnsError {
    /// Whether the namespace no longer exists (its file is gone).
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Opens a network namespace file (`/var/run/netns/X`, `/proc/PID/ns/net`),
/// e.g. for `IFLA_NET_NS_FD`.
pub fn open_netns(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// The network namespace of the calling thread, which for every thread but
/// those [`run_in_netns`] spawns is the host's.
pub fn current_netns() -> Result<File, NetnsError> {
    open_netns(Path::new("/proc/thread-self/ns/net"))
}

fn setns(file: &File, path: &Path) -> Result<(), NetnsError> {
    // SAFETY: setns takes a file descriptor we own for the call's duration
    // and a namespace type constant; it only changes this thread's netns.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(NetnsError::Enter {
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        })
    }
}

fn on_fresh_thread<T, F>(path: &Path, name: &str, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(work)
        .map_err(|source| NetnsError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    handle.join().map_err(|_| NetnsError::Panicked {
        path: path.to_path_buf(),
    })?
}

/// Runs `work` on a new OS thread inside the network namespace at `path`
/// and returns its result; the thread ends with the closure.
pub fn run_in_netns<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let owned = path.to_path_buf();
    on_fresh_thread(path, "netns-enter", move || {
        let file = open_netns(&owned)?;
        setns(&file, &owned)?;
        Ok(work())
    })
}

/// A new network namespace kept alive by a bind mount at a path, the way
/// `ip netns add` makes one; unmounted and removed on drop, which destroys
/// the namespace once nothing else holds it.
///
/// Tests and the attach benchmark use it to play pods; the driver itself
/// only enters namespaces the runtime made.
#[derive(Debug)]
pub struct PinnedNetns {
    path: PathBuf,
}

impl PinnedNetns {
    /// Creates the namespace and pins it at `path` (whose directory must
    /// exist). Needs CAP_SYS_ADMIN.
    pub fn create(path: &Path) -> Result<PinnedNetns, NetnsError> {
        let owned = path.to_path_buf();
        let err = |action, path: &Path| {
            let source = io::Error::last_os_error();
            NetnsError::Create {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        File::create(path).map_err(|source| NetnsError::Create {
            path: path.to_path_buf(),
            action: "creating the mount point",
            source,
        })?;
        let pinned = PinnedNetns {
            path: path.to_path_buf(),
        };
        on_fresh_thread(path, "netns-create", move || {
            // SAFETY: unshare only changes this (throw-away) thread's netns.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(err("unshare(CLONE_NEWNET)", &owned));
            }
            let source = c"/proc/thread-self/ns/net";
            let target =
                std::ffi::CString::new(owned.as_os_str().as_encoded_bytes()).map_err(|_| {
                    NetnsError::Create {
                        path: owned.clone(),
                        action: "path has a NUL byte",
                        source: io::Error::from(io::ErrorKind::InvalidInput),
                    }
                })?;
            // SAFETY: both paths are NUL-terminated C strings that outlive
            // the call; a bind mount with no fs type or data is valid.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(err("bind-mounting it", &owned));
            }
            Ok(())
        })?;
        Ok(pinned)
    }

    /// Where the namespace is pinned.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinnedNetns {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path; failure (not mounted) is fine.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn netns_inode(path: &str) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn closure_runs_in_the_pod_netns_and_the_caller_stays_home() {
        if !crate::testing::netns::have_root("closure_runs_in_the_pod_netns") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = PinnedNetns::create(&dir.path().join("pod")).unwrap();
        let home = netns_inode("/proc/thread-self/ns/net");
        let pod = std::fs::metadata(ns.path()).unwrap().ino();
        assert_ne!(home, pod);
        let seen = run_in_netns(ns.path(), || netns_inode("/proc/thread-self/ns/net")).unwrap();
        assert_eq!(seen, pod, "the closure ran inside the pod netns");
        assert_eq!(netns_inode("/proc/thread-self/ns/net"), home);
    }

    #[test]
    fn a_missing_netns_is_reported_as_gone() {
        let err = run_in_netns(Path::new("/nonexistent/netns/x"), || ()).unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert!(
            err.to_string()
                .starts_with("opening network namespace /nonexistent/netns/x")
        );
    }

    #[test]
    fn a_file_that_is_no_netns_is_refused() {
        if !crate::testing::netns::have_root("a_file_that_is_no_netns_is_refused") {
            return;
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = run_in_netns(file.path(), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
    }

    #[test]
    fn a_panic_inside_is_an_error_not_a_crash() {
        let err = run_in_netns(Path::new("/proc/self/ns/net"), || panic!("boom")).unwrap_err();
        // Entering our own namespace needs CAP_SYS_ADMIN; without root the
        // setns error comes first, which is also an error, not a crash.
        assert!(
            matches!(err, NetnsError::Panicked { .. } | NetnsError::Enter { .. }),
            "{err}"
        );
    }
}
