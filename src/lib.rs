//! Put an assistant (or any reply logic) behind a chat platform's partner
//! webhook, on hyper, in a few lines.

mod config;
mod limits;
mod signature;
mod payload;
mod response;
mod error;

pub use config::{Config, Secret, SetupError};
pub use error::{BoxError, RequestError};
pub use payload::{App, HistoryEntry, Message, MessageReceived, Role, Thread};
pub use response::{Reply, ResponseBody};
pub use signature::{
    SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, Verifier, escape_non_ascii, sign,
};
