//! Files only the server's user can read: the umask that makes everything this process
//! creates owner-only, and the start-up check that warns about anything in the data
//! directory that other users can open.
//!
//! The data directory holds PIN hashes, personal data and the call session key. The store
//! creates its directory 0700 and its database 0600 itself, and key files are written 0600
//! (`serve::write_private_file`); the umask covers everything else, such as files SQLite or
//! a later feature creates. Existing files are never changed, only reported: an operator
//! may have made them so on purpose.

use std::path::{Path, PathBuf};

/// Entries looked at below the data directory, and how deep: it holds a handful of files,
/// so a bound only matters when it points somewhere it should not.
const MAX_ENTRIES: usize = 1000;
const MAX_DEPTH: usize = 3;

/// Make every file and directory this process creates owner-only (umask 077). Called first
/// thing in `main`, so every command that opens the store is covered.
pub fn restrict_umask() {
    #[cfg(unix)]
    {
        use rustix::fs::Mode;
        rustix::process::umask(Mode::RWXG | Mode::RWXO);
    }
}

/// Something in the data directory that group or others may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub path: PathBuf,
    /// Permission bits (`mode & 0o777`).
    pub mode: u32,
    pub is_dir: bool,
}

/// `dir` itself and what lies under it (symbolic links are not followed) that group or
/// others have any permission on. Nothing when `dir` does not exist or on non-Unix systems.
pub fn exposed(dir: &Path) -> Vec<Exposed> {
    let mut found = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut pending = vec![(dir.to_owned(), 0usize)];
        let mut seen = 0usize;
        while let Some((path, depth)) = pending.pop() {
            seen += 1;
            if seen > MAX_ENTRIES {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                found.push(Exposed {
                    path: path.clone(),
                    mode,
                    is_dir: meta.is_dir(),
                });
            }
            if meta.is_dir() && depth < MAX_DEPTH {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    pending.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
    }
    #[cfg(not(unix))]
    let _ = dir;
    found
}

/// Log a warning for each entry of [`exposed`], with the command that fixes it.
pub fn warn_exposed(dir: &Path) {
    for e in exposed(dir) {
        let (what, fix) = if e.is_dir {
            ("directory", "700")
        } else {
            ("file", "600")
        };
        let path = crate::serve::shell_word(&e.path.display().to_string());
        tracing::warn!(
            "data {what} {path} can be opened by other users (mode {:04o}); it may hold PIN hashes and keys: run `chmod {fix} {path}`",
            e.mode
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_entries_open_to_group_or_others_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        std::fs::write(dir.join("private"), "x").unwrap();
        chmod(&dir.join("private"), 0o600);
        std::fs::write(dir.join("shared"), "x").unwrap();
        chmod(&dir.join("shared"), 0o640);
        std::fs::create_dir(dir.join("sub")).unwrap();
        chmod(&dir.join("sub"), 0o711);
        std::fs::write(dir.join("sub").join("deep"), "x").unwrap();
        chmod(&dir.join("sub").join("deep"), 0o604);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();

        let found = exposed(&dir);
        let summary: Vec<(String, u32, bool)> = found
            .iter()
            .map(|e| {
                let name = e.path.strip_prefix(&dir).unwrap().display().to_string();
                (name, e.mode, e.is_dir)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("shared".to_owned(), 0o640, false),
                ("sub".to_owned(), 0o711, true),
                ("sub/deep".to_owned(), 0o604, false),
            ]
        );

        chmod(&dir, 0o755);
        assert_eq!(exposed(&dir)[0].path, dir);
        assert!(exposed(&tmp.path().join("missing")).is_empty());
    }
}
