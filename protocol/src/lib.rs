//! Wire contract between the Privcomm client core and the relay.
//!
//! Both sides depend on this crate, so a field renamed here is renamed everywhere and the two
//! cannot drift. `docs/PROTOCOL.md` describes the same contract for humans.

pub mod b64;
pub mod error;
pub mod limits;
pub mod phone_hash;
pub mod rest;
pub mod signing;
pub mod ws;

pub use b64::{Base64Error, Base64String};
pub use error::{ErrorBody, ErrorCode};
pub use phone_hash::{PhoneHash, PhoneHashError, PhoneNumber, PhoneNumberError};
