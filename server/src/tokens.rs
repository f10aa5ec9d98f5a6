//! Access tokens: HS256 JWTs with `sub` = user id, checked against the relay's clock.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Smallest accepted JWT secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
const SECRET_FILE: &str = "jwt_secret";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    iat: i64,
    exp: i64,
}

/// Why a token was refused (never shown to clients, who get a bare 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT we signed.
    #[error("invalid token")]
    Invalid,
    /// Signed by us but past its expiry.
    #[error("token expired")]
    Expired,
}

/// Issues and verifies tokens with one secret.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// A token issuer for `secret`, tokens living `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the relay's own clock in `verify`, so tests can move time.
        validation.validate_exp = false;
        validation.required_spec_claims = ["sub".to_owned(), "exp".to_owned()].into();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
        }
    }

    /// A token for `user` issued at `now_secs`.
    pub fn issue(&self, user: Uuid, now_secs: i64) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user,
            iat: now_secs,
            exp: now_secs.saturating_add(self.ttl_secs),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user a token names, if it is ours and unexpired at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Uuid, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(data.claims.sub)
    }

    /// Expiry time (Unix seconds) of a token we issued, without checking it is unexpired.
    pub fn expiry(&self, token: &str) -> Option<i64> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims.exp)
    }
}

/// Loads the JWT secret: the configured one, else `<data_dir>/jwt_secret`, created with 32
/// random bytes (mode 0600) on first start so tokens survive restarts.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        if secret.len() < MIN_SECRET_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PRIVCOMM_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        return Ok(Zeroizing::new(secret.as_bytes().to_vec()));
    }
    let path = data_dir.join(SECRET_FILE);
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
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    rand::rng().fill_bytes(&mut secret);
    write_private_file(&path, &secret)?;
    Ok(secret)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_own_tokens_until_expiry_only() {
        let issuer = TokenIssuer::new(&[1u8; 32], 1800);
        let user = Uuid::new_v4();
        let token = issuer.issue(user, 1_000).unwrap();
        assert_eq!(issuer.verify(&token, 1_000), Ok(user));
        assert_eq!(issuer.verify(&token, 2_799), Ok(user));
        assert_eq!(issuer.verify(&token, 2_800), Err(TokenError::Expired));
        let other = TokenIssuer::new(&[2u8; 32], 1800);
        assert_eq!(other.verify(&token, 1_000), Err(TokenError::Invalid));
        assert_eq!(issuer.verify("garbage", 1_000), Err(TokenError::Invalid));
    }

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(None, dir.path()).unwrap();
        let b = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(*a, *b);
        assert_eq!(a.len(), 32);
        assert!(load_or_create_secret(Some("short"), dir.path()).is_err());
    }
}
