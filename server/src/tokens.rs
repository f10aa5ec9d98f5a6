//! Access tokens: HS256 JWTs with `sub` = user id and a `kid` naming the signing secret,
//! checked against the relay's clock and the lifetime the relay issues.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

/// How far ahead of the relay's clock a token's `iat` may be (another instance's clock).
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;
const SECRET_FILE: &str = "jwt_secret";
const KEY_ID_CONTEXT: &[u8] = b"privcomm-jwt-kid-v1";

/// What the relay signs.
#[derive(Debug, Serialize)]
struct Claims {
    sub: Uuid,
    iat: i64,
    exp: i64,
    /// The registration generation the token was issued for: once the number is registered
    /// again (a new device), tokens of earlier generations are refused.
    #[serde(rename = "gen")]
    generation: u32,
}

/// What a presented token carries. `sub` is read as text so that only the form the relay
/// writes (hyphenated, lower case) is accepted, not every spelling a UUID parser takes.
#[derive(Debug, Deserialize)]
struct PresentedClaims {
    sub: String,
    iat: i64,
    exp: i64,
    /// Absent in tokens of relays before re-registration existed: generation 0.
    #[serde(rename = "gen", default)]
    generation: u32,
}

/// Whom a verified token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    /// The user.
    pub user: Uuid,
    /// The registration generation it was issued for.
    pub generation: u32,
}

/// Why a token was refused (never shown to clients, who get a bare 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT we signed, or signed with a key we no longer accept.
    #[error("invalid token")]
    Invalid,
    /// Signed by us but claiming a lifetime longer than the relay issues, or issued in the
    /// future.
    #[error("token lifetime out of bounds")]
    Lifetime,
    /// Signed by us but past its expiry.
    #[error("token expired")]
    Expired,
}

/// One HS256 key and the id (`kid`) its tokens carry.
struct TokenKey {
    id: String,
    decoding: DecodingKey,
}

impl TokenKey {
    fn new(secret: &[u8]) -> Self {
        Self {
            id: key_id(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// The key id of `secret`: 16 hex digits of a domain-separated SHA-256. It names the key so
/// a relay can accept the previous secret's tokens while a rotation is under way; it tells
/// nothing a token's own HMAC would not already let an attacker test.
pub fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(KEY_ID_CONTEXT)
        .chain_update(secret)
        .finalize();
    hex::encode(&digest[..8])
}

/// Issues and verifies tokens: signs with the current secret, verifies with it or (during a
/// rotation) with the previous one, chosen by the token's `kid`.
pub struct TokenIssuer {
    encoding: EncodingKey,
    current: TokenKey,
    previous: Option<TokenKey>,
    validation: Validation,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.current.id)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// A token issuer for `secret`, tokens living `ttl_secs`; a token claiming a longer
    /// lifetime is refused even when well signed.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the relay's own clock in `verify`, so tests can move time.
        validation.validate_exp = false;
        validation.required_spec_claims =
            ["sub".to_owned(), "exp".to_owned(), "iat".to_owned()].into();
        Self {
            encoding: EncodingKey::from_secret(secret),
            current: TokenKey::new(secret),
            previous: None,
            validation,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
        }
    }

    /// Also accepts tokens signed with `previous` (a secret being rotated out) until they
    /// expire; new tokens are still signed with the current one.
    pub fn with_previous(mut self, previous: &[u8]) -> Self {
        self.previous = Some(TokenKey::new(previous));
        self
    }

    /// The key id of the current secret.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// A token for `user` (registration generation 0) issued at `now_secs`.
    pub fn issue(&self, user: Uuid, now_secs: i64) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue_for(user, 0, now_secs)
    }

    /// A token for `user` of registration `generation`, issued at `now_secs`.
    pub fn issue_for(
        &self,
        user: Uuid,
        generation: u32,
        now_secs: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user,
            iat: now_secs,
            exp: now_secs.saturating_add(self.ttl_secs),
            generation,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.id.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// The user a token names, if we signed it with a key we still accept, its lifetime is
    /// at most the one we issue, and it is unexpired at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Uuid, TokenError> {
        self.verify_subject(token, now_secs).map(|s| s.user)
    }

    /// `verify`, with the registration generation the token was issued for (which the
    /// caller compares with the user's current one).
    pub fn verify_subject(&self, token: &str, now_secs: i64) -> Result<TokenSubject, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match header.kid.as_deref() {
            Some(kid) if kid == self.current.id => &self.current,
            Some(kid) if self.previous.as_ref().is_some_and(|p| p.id == kid) => {
                self.previous.as_ref().ok_or(TokenError::Invalid)?
            }
            _ => return Err(TokenError::Invalid),
        };
        let claims =
            jsonwebtoken::decode::<PresentedClaims>(token, &key.decoding, &self.validation)
                .map_err(|_| TokenError::Invalid)?
                .claims;
        let user = Uuid::try_parse(&claims.sub).map_err(|_| TokenError::Invalid)?;
        if user.hyphenated().to_string() != claims.sub {
            return Err(TokenError::Invalid);
        }
        let lifetime = claims.exp.checked_sub(claims.iat);
        if !lifetime.is_some_and(|l| l > 0 && l <= self.ttl_secs)
            || claims.iat > now_secs.saturating_add(MAX_CLOCK_SKEW_SECS)
        {
            return Err(TokenError::Lifetime);
        }
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(TokenSubject {
            user,
            generation: claims.generation,
        })
    }
}

/// Loads the JWT secret: the configured one, else `<data_dir>/jwt_secret`, created with 32
/// random bytes (mode 0600) on first start so tokens survive restarts.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    crate::secrets::load_or_create(configured, "PRIVCOMM_JWT_SECRET", data_dir, SECRET_FILE)
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

    /// Signs `claims` with `secret` under `kid`, as someone holding the secret could.
    fn forge(secret: &[u8], kid: Option<String>, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid;
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn lifetimes_beyond_the_issued_one_and_unknown_keys_are_refused() {
        let secret = [1u8; 32];
        let issuer = TokenIssuer::new(&secret, 1800);
        let kid = Some(key_id(&secret));
        let sub = Uuid::new_v4();
        let claims = |iat: i64, exp: i64| Claims {
            sub,
            iat,
            exp,
            generation: 0,
        };
        let ok = forge(&secret, kid.clone(), &claims(1_000, 2_800));
        assert_eq!(issuer.verify(&ok, 1_000), Ok(sub));
        // Ten years, a negative lifetime, issued in the future.
        for (iat, exp) in [(1_000, 1_000 + 315_360_000), (1_000, 999), (1_000, 1_000)] {
            let token = forge(&secret, kid.clone(), &claims(iat, exp));
            assert_eq!(issuer.verify(&token, 1_000), Err(TokenError::Lifetime));
        }
        let future = forge(&secret, kid.clone(), &claims(1_100, 1_200));
        assert_eq!(issuer.verify(&future, 1_000), Err(TokenError::Lifetime));
        assert_eq!(issuer.verify(&future, 1_040), Ok(sub));
        // No kid, someone else's kid.
        for kid in [None, Some("0011223344556677".to_owned())] {
            let token = forge(&secret, kid, &claims(1_000, 2_800));
            assert_eq!(issuer.verify(&token, 1_000), Err(TokenError::Invalid));
        }
        // Without iat.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid;
        let no_iat = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": sub, "exp": 2_800}),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(issuer.verify(&no_iat, 1_000), Err(TokenError::Invalid));
    }

    /// Found by the `access_token` fuzz target: a `sub` in another spelling of the same
    /// UUID (upper case, braces, `urn:uuid:`, no hyphens) verified. Only the relay's own
    /// form is accepted now.
    #[test]
    fn only_the_issued_spelling_of_the_user_id_verifies() {
        let secret = [1u8; 32];
        let issuer = TokenIssuer::new(&secret, 1800);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(&secret));
        let sub = Uuid::new_v4();
        let sign = |sub: String| {
            jsonwebtoken::encode(
                &header,
                &serde_json::json!({"sub": sub, "iat": 1_000, "exp": 2_800}),
                &EncodingKey::from_secret(&secret),
            )
            .unwrap()
        };
        assert_eq!(issuer.verify(&sign(sub.to_string()), 1_000), Ok(sub));
        let spellings = [
            sub.to_string().to_uppercase(),
            sub.braced().to_string(),
            sub.urn().to_string(),
            sub.simple().to_string(),
        ];
        for spelling in spellings {
            assert_eq!(
                issuer.verify(&sign(spelling.clone()), 1_000),
                Err(TokenError::Invalid),
                "{spelling}"
            );
        }
    }

    #[test]
    fn a_rotated_out_secret_verifies_until_its_tokens_expire() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let user = Uuid::new_v4();
        let before = TokenIssuer::new(&old, 1800).issue(user, 1_000).unwrap();
        let rotating = TokenIssuer::new(&new, 1800).with_previous(&old);
        assert_eq!(rotating.verify(&before, 1_500), Ok(user));
        let after = rotating.issue(user, 1_500).unwrap();
        let header = jsonwebtoken::decode_header(&after).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(&new).as_str()));
        assert_eq!(rotating.verify(&before, 2_800), Err(TokenError::Expired));
        let rotated = TokenIssuer::new(&new, 1800);
        assert_eq!(rotated.verify(&before, 1_500), Err(TokenError::Invalid));
        assert_eq!(rotated.verify(&after, 1_500), Ok(user));
        assert_ne!(key_id(&old), key_id(&new));
    }

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(None, dir.path()).unwrap();
        let b = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(*a, *b);
        assert_eq!(a.len(), 32);
        assert!(load_or_create_secret(Some("short"), dir.path()).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join(SECRET_FILE);
            assert_eq!(
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_or_create_secret(None, dir.path()).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        }
    }
}
