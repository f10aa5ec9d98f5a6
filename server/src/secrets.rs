//! The relay's own secrets (the JWT key, the phone pepper): given in the configuration, or
//! generated once into a 0600 file in the data dir and read from it on every later start.

use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

/// Smallest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Loads a secret: the configured one (`setting` names it in errors), else
/// `<data_dir>/<file>`, created with 32 random bytes (mode 0600) on first start. A file that
/// others may read, or one shorter than `MIN_SECRET_LEN`, is refused.
pub fn load_or_create(
    configured: Option<&str>,
    setting: &str,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    if let Some(secret) = configured_secret(configured, setting)? {
        return Ok(secret);
    }
    let path = data_dir.join(file);
    match crate::files::check_secret_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= MIN_SECRET_LEN => return Ok(Zeroizing::new(bytes)),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than {MIN_SECRET_LEN} bytes", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut secret = Zeroizing::new(vec![0u8; MIN_SECRET_LEN]);
    rand::rng().fill_bytes(&mut secret);
    write_private_file(&path, &secret)?;
    Ok(secret)
}

/// A secret given in the configuration, if any, checked for length; `setting` names it in
/// the error.
pub fn configured_secret(
    configured: Option<&str>,
    setting: &str,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    match configured.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(secret) if secret.len() < MIN_SECRET_LEN => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{setting} must be at least {MIN_SECRET_LEN} bytes"),
        )),
        Some(secret) => Ok(Some(Zeroizing::new(secret.as_bytes().to_vec()))),
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
