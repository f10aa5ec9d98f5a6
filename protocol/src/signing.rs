//! The exact byte strings that clients sign and the relay verifies.

/// Domain separator for registration signatures.
pub const REGISTER_CONTEXT: &[u8] = b"privcomm-register-v1";
/// Domain separator for authentication (token) signatures.
pub const AUTH_CONTEXT: &[u8] = b"privcomm-auth-v1";

/// Bytes signed by the identity key to register: `"privcomm-register-v1" ‖ nonce ‖ phone_hash`.
pub fn register_message(nonce: &[u8], phone_hash: &str) -> Vec<u8> {
    concat(REGISTER_CONTEXT, nonce, phone_hash)
}

/// Bytes signed by the identity key to obtain a token: `"privcomm-auth-v1" ‖ nonce ‖ phone_hash`.
pub fn auth_message(nonce: &[u8], phone_hash: &str) -> Vec<u8> {
    concat(AUTH_CONTEXT, nonce, phone_hash)
}

fn concat(context: &[u8], nonce: &[u8], phone_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + nonce.len() + phone_hash.len());
    out.extend_from_slice(context);
    out.extend_from_slice(nonce);
    out.extend_from_slice(phone_hash.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_separate_register_from_auth() {
        let nonce = [7u8; 32];
        let r = register_message(&nonce, "ab");
        let a = auth_message(&nonce, "ab");
        assert_ne!(r, a);
        assert!(r.starts_with(b"privcomm-register-v1\x07"));
        assert!(a.ends_with(b"\x07ab"));
        assert_eq!(a.len(), AUTH_CONTEXT.len() + 32 + 2);
    }
}
