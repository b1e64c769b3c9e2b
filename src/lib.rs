//! Put an assistant (or any reply logic) behind a chat platform's partner
//! webhook, on hyper, in a few lines.

mod config;
mod signature;

pub use config::{Config, Secret, SetupError};
pub use signature::{
    SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, Verifier, escape_non_ascii, sign,
};
