//! Key files on disk: one JSON file per key set in a directory of its own, created with
//! mode 0700 (directory) and 0600 (file) on unix, written so that a crash never leaves a
//! half-written key file and two processes starting at once never overwrite each other's
//! keys. A key file that group or others can access is refused.
//! Not a secret manager or HSM: it trusts the host's file system and its administrator.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Largest key file read, in bytes; an RSA key set is about 3 KiB.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::KeyStoreIo {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `dir/name`, or `None` when it does not exist.
pub(crate) fn read_key_file(dir: &Path, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let path = dir.join(name);
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let metadata = file.metadata().map_err(io_error(&path))?;
    check_private(&path, &metadata)?;
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(Error::CorruptKeyFile {
            path,
            reason: "larger than any key file",
        });
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(metadata.len() as usize));
    file.read_to_end(&mut contents).map_err(io_error(&path))?;
    Ok(Some(contents))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> Result<()> {
    Ok(())
}

/// Creates `dir/name` with `contents` unless it already exists; returns whether it did.
/// The file is written and synced under a temporary name, then hard-linked into place,
/// which fails rather than replaces when another process got there first.
pub(crate) fn create_key_file(dir: &Path, name: &str, contents: &[u8]) -> Result<bool> {
    create_private_dir(dir)?;
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.{:016x}.tmp", OsRng.next_u64()));
    let written = write_new_private(&temporary, contents);
    let linked = written.and_then(|()| match fs::hard_link(&temporary, &path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(io_error(&path)(error)),
    });
    // The temporary name is removed whatever happened; a failure to remove it leaves only
    // a stray copy of the same keys in the same private directory.
    let _ = fs::remove_file(&temporary);
    let created = linked?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(created)
}

fn write_new_private(path: &PathBuf, contents: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}
