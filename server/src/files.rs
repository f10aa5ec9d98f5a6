//! The relay's files are its operator's alone: the data dir is created 0700, database files
//! 0600, and a secret file that other users can read is refused rather than used.
//!
//! SQLite gives a database's `-wal` and `-shm` files the mode of the database file, so
//! creating (or tightening) the database file is enough for all three.

use std::path::Path;

/// Mode bits that let the file's group or other users in.
#[cfg(unix)]
const GROUP_OR_OTHER: u32 = 0o077;

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it
/// is, with a warning when other users can reach into it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    #[cfg(unix)]
    let existed = dir.is_dir();
    builder.create(dir)?;
    #[cfg(unix)]
    if existed {
        if let Some(mode) = open_mode(dir)? {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:04o}"),
                "the data dir is open to other users; chmod 700 it"
            );
        }
    }
    Ok(())
}

/// Makes sure the SQLite database at `path` and its `-wal`/`-shm` companions are 0600:
/// creates the database file so (empty, which SQLite takes as a new database) when it is
/// missing, and tightens the mode of those that exist.
pub fn private_database_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    drop(options.open(path)?);
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match open_mode(file) {
            Ok(Some(mode)) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                tracing::info!(
                    file = %file.display(),
                    was = format!("{mode:04o}"),
                    "database file made private (0600)"
                );
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Refuses a secret file that the file's group or other users may read or write.
pub fn check_secret_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(mode) = open_mode(path)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is open to other users (mode {mode:04o}); run `chmod 600` on it, \
                 and replace the secret if anyone else may have read it",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The permission bits of `path` when its group or other users have any, else `None`.
#[cfg(unix)]
fn open_mode(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok((mode & GROUP_OR_OTHER != 0).then_some(mode))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_dirs_and_databases() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        let db = dir.join("x.db");
        private_database_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = dir.join("x.db-wal");
        std::fs::write(&wal, b"w").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&db, b"kept").unwrap();
        private_database_file(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
    }

    #[test]
    fn secret_files_open_to_others_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let secret = root.path().join("s");
        std::fs::write(&secret, [1u8; 32]).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_secret_file(&secret).unwrap();
        for open in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(open)).unwrap();
            let err = check_secret_file(&secret).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }
}
