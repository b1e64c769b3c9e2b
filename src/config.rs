//! Setup: what the server needs before the first byte arrives.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A webhook secret, as set on the App in the platform's dashboard.
///
/// Only the keyed HMAC state is kept, not the text, and `Debug` prints
/// `Secret(<redacted>)`: the same secret authenticates the platform's Partner API,
/// so it must never reach a log line or an error body. There is no `Display`.
///
/// ```
/// use partner_webhook::Secret;
///
/// let secret = Secret::new("3f9a1c0e5b7d2468ace13579bdf02468")?;
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert!(Secret::new("").is_err());
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    keyed: HmacSha256,
}

impl Secret {
    /// Wraps the secret text. The key is its UTF-8 bytes, as the platform uses it.
    ///
    /// An empty secret is rejected: the platform treats it as "no secret" and
    /// stops signing, so accepting it would silently accept unsigned requests.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SetupError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(SetupError::EmptySecret);
        }
        let keyed =
            HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| SetupError::EmptySecret)?;
        Ok(Secret { keyed })
    }

    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything the server and the [`Webhook`](crate::Webhook) service need.
///
/// Start from `Config::default()` and add at least one secret (or opt out of
/// signatures explicitly with [`Config::accept_unsigned`]):
///
/// ```
/// use std::time::Duration;
/// use partner_webhook::{Config, Secret};
///
/// let config = Config::default()
///     .addr(([0, 0, 0, 0], 8080))
///     .secret(Secret::new("current-secret")?)
///     .secret(Secret::new("previous-secret")?) // accepted too, while rotating
///     .replay_window(Duration::from_secs(120));
/// assert_eq!(config.body_limit, 1024 * 1024);
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where [`Server::bind`](crate::Server::bind) listens. Ignored by [`Webhook`](crate::Webhook).
    /// Default: `127.0.0.1:8080` (the reference servers' port, loopback only; use
    /// `0.0.0.0` to be reachable from other machines).
    pub addr: SocketAddr,
    /// Secrets a request may be signed with; any one of them is accepted, so a
    /// rotation can keep the old and the new secret side by side.
    /// Default: none (see [`accept_unsigned`](Config::accept_unsigned)).
    pub secrets: Vec<Secret>,
    /// Accept requests without signature headers. Only allowed with no secrets:
    /// a server that has a secret never lets an unsigned request through.
    /// Default: `false`.
    pub accept_unsigned: bool,
    /// Largest request body accepted, in bytes. Checked from `Content-Length`
    /// before reading, and again while reading a chunked body.
    /// Default: 1 MiB.
    pub body_limit: usize,
    /// How far `X-Timestamp` may be from the server clock, in the past or the
    /// future, before the request is rejected as a possible replay.
    /// Default: 300 s (the platform's dashboard tells partners 5 minutes).
    pub replay_window: Duration,
    /// Time a client has to send a complete request head, from the moment the
    /// connection opens or the previous response was sent.
    /// Default: 10 s.
    pub header_read_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secrets: Vec::new(),
            accept_unsigned: false,
            body_limit: 1024 * 1024,
            replay_window: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Sets [`addr`](Config::addr).
    pub fn addr(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Adds a secret to [`secrets`](Config::secrets).
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Sets [`accept_unsigned`](Config::accept_unsigned): anyone who can reach
    /// the server can then post messages. Meant for local trials only.
    pub fn accept_unsigned(mut self) -> Self {
        self.accept_unsigned = true;
        self
    }

    /// Sets [`body_limit`](Config::body_limit).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets [`replay_window`](Config::replay_window).
    pub fn replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SetupError> {
        match (self.secrets.is_empty(), self.accept_unsigned) {
            (true, false) => Err(SetupError::NoSecret),
            (false, true) => Err(SetupError::SecretsAndUnsigned),
            _ => Ok(()),
        }
    }
}

/// Why the server could not start. Request-time failures are
/// [`RequestError`](crate::RequestError)s instead.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// [`Secret::new`] was given an empty string.
    EmptySecret,
    /// Neither a secret nor [`Config::accept_unsigned`] was configured.
    NoSecret,
    /// Secrets were configured together with [`Config::accept_unsigned`].
    SecretsAndUnsigned,
    /// The listening socket could not be bound.
    Bind {
        /// The address from [`Config::addr`].
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::EmptySecret => f.write_str(
                "the webhook secret is empty; the platform stops signing with an empty secret, \
                 so leave it unset and call Config::accept_unsigned() instead",
            ),
            SetupError::NoSecret => f.write_str(
                "no webhook secret configured: add the App's secret with \
                 Config::secret(Secret::new(..)) (the examples read WEBHOOK_SECRET), or call \
                 Config::accept_unsigned() to accept unsigned requests on purpose",
            ),
            SetupError::SecretsAndUnsigned => f.write_str(
                "Config::accept_unsigned() cannot be combined with secrets: anyone could skip \
                 the signature; remove one of the two",
            ),
            SetupError::Bind { addr, .. } => write!(f, "could not listen on {addr}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}
