//! What a directory may hold before it is granted to guests: directories, regular files
//! and symlinks only. A FIFO, socket or device in a grant could park a host thread: opening
//! a FIFO for reading waits for a writer, and wasmtime-wasi opens and reads files on
//! Tokio's blocking pool, where neither the attempt's deadline nor its cancellation
//! reaches. The attempt would end on time, but the thread would stay blocked for good.
//! Guests cannot create such files (grants are read-only), so checking a directory when it
//! is granted by the operator (`fabric serve --volume`, `fabric run --dir`) keeps them out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a scan of a directory found acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantScan {
    /// Entries looked at (the directory itself excluded).
    pub entries: u64,
    /// How long the scan took.
    pub elapsed: Duration,
}

/// Why a directory cannot be granted.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is a {kind}: a grant may hold only directories, regular files and symlinks \
         (a {kind} can block a host thread past the attempt's deadline)",
        path.display()
    )]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Walks `dir` (without following symlinks: a symlink that leads out of a grant cannot be
/// followed by a guest, and one that stays inside points at something this walk sees) and
/// refuses it at the first FIFO, socket, or block or character device.
pub fn scan_grant(dir: &Path) -> Result<GrantScan, GrantError> {
    let started = Instant::now();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GrantError::Io { path, source }
    };
    if !std::fs::metadata(dir).map_err(io(dir))?.is_dir() {
        return Err(GrantError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut entries = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(io(&current))? {
            let entry = entry.map_err(io(&current))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            entries += 1;
            if kind.is_dir() {
                pending.push(path);
            } else if let Some(kind) = special_kind(&kind) {
                return Err(GrantError::SpecialFile { path, kind });
            }
        }
    }
    Ok(GrantScan {
        entries,
        elapsed: started.elapsed(),
    })
}

/// The name of a kind of file a grant must not hold, or `None` for a regular file or a
/// symlink.
fn special_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_socket() {
        Some("socket")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_char_device() {
        Some("character device")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_tree_of_files_directories_and_symlinks_is_accepted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/file"), b"x").unwrap();
        std::fs::write(dir.path().join("top"), b"y").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("a/out")).unwrap();
        let scan = scan_grant(dir.path()).unwrap();
        assert_eq!(scan.entries, 5);
    }

    #[test]
    fn a_fifo_deep_in_the_tree_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        let fifo = dir.path().join("x/y/pipe");
        mkfifo(&fifo);
        let error = scan_grant(dir.path()).unwrap_err();
        assert!(
            matches!(&error, GrantError::SpecialFile { path, kind: "FIFO" } if *path == fifo),
            "{error}"
        );
        assert!(error.to_string().contains("x/y/pipe is a FIFO"), "{error}");
    }

    #[test]
    fn a_socket_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let error = scan_grant(dir.path()).unwrap_err();
        assert!(
            matches!(error, GrantError::SpecialFile { kind: "socket", .. }),
            "{error}"
        );
        let error = scan_grant(Path::new("/dev")).unwrap_err();
        assert!(matches!(error, GrantError::SpecialFile { .. }), "{error}");
    }

    #[test]
    fn a_file_or_a_missing_path_is_not_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            scan_grant(&file),
            Err(GrantError::NotADirectory { .. })
        ));
        assert!(matches!(
            scan_grant(&dir.path().join("missing")),
            Err(GrantError::Io { .. })
        ));
    }
}
