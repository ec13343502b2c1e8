//! Unix sockets in the kubelet's directories: bound privately, replacing a
//! stale socket from a previous run, and a client connector for callers that
//! play the kubelet (tests, benchmarks).

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// Permission bits of every socket we serve: only root (the kubelet) may
/// connect, since the DRA service configures host devices.
pub const SOCKET_MODE: u32 = 0o600;

/// Why a socket could not be put in place; each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path has no parent directory or file name.
    #[error("socket path {0} has no parent directory or file name")]
    BadPath(PathBuf),
    /// Something that is not a socket sits where the socket goes; we do not
    /// delete files we did not create.
    #[error("{0} exists and is not a unix socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A filesystem or socket call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Binds a unix socket at `path` with mode [`SOCKET_MODE`], creating the
/// parent directories and replacing a stale socket left by a previous run.
///
/// The socket is bound under a hidden temporary name (the kubelet's plugin
/// watcher ignores names starting with "."), restricted to 0600 and then
/// renamed into place, so nobody can ever see it with looser permissions or
/// half set up. Must be called inside a tokio runtime.
pub fn bind_private_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SocketError::BadPath(path.to_path_buf()));
    };
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_path_buf()));
        }
        Ok(_) | Err(_) => {}
    }

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    remove_if_exists(&tmp)?;
    let listener = UnixListener::bind(&tmp).map_err(io_err("bind", &tmp))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_err("chmod", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_err("rename into place", path)));
    if let Err(err) = placed {
        // Leave nothing behind: the listener closes when dropped.
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(listener)
}

fn remove_if_exists(path: &Path) -> Result<(), SocketError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(SocketError::Io {
            action: "remove stale",
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Runs `serve` to its end, then removes `path`: a socket left behind on
/// a clean stop keeps a dead plugin registered with the kubelet until a
/// new one replaces the socket. Only a socket is removed, never a file
/// something else put there.
pub async fn serve_then_remove<T>(path: PathBuf, serve: impl Future<Output = T>) -> T {
    let out = serve.await;
    let is_socket = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket");
    }
    out
}

/// Opens a gRPC channel to a unix socket the way the kubelet does, for code
/// that plays the kubelet against our servers.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector ignores it.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn binds_with_mode_0600_and_creates_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/x.sock");
        let _listener = bind_private_socket(&path).expect("bind");
        assert_eq!(mode_of(&path), 0o600);
        assert!(
            std::fs::symlink_metadata(&path)
                .expect("stat")
                .file_type()
                .is_socket()
        );
        // No temporary name is left next to it.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("readdir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("x.sock")]);
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_and_serves_on_the_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.sock");
        // A socket left behind by a crashed run: bound, then its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale bind"));
        assert!(
            UnixStream::connect(&path).await.is_err(),
            "stale socket refuses"
        );

        let listener = bind_private_socket(&path).expect("bind over stale");
        let (connected, accepted) = tokio::join!(UnixStream::connect(&path), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok());
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.sock");
        std::fs::write(&path, b"keep me").expect("write");
        let err = bind_private_socket(&path).expect_err("must refuse");
        assert!(matches!(err, SocketError::NotASocket(p) if p == path));
        assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
    }
}
