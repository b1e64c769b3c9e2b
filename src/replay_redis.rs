//! Replay, shared: a [`ReplayCache`] in Redis, so that several instances
//! behind one Webhook URL refuse each other's replays (feature `redis`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::error::BoxError;
use crate::replay::ReplayCache;

/// Remembers accepted signatures in Redis with `SET key NX EX ttl`: atomic
/// across instances, and expiring with the replay window.
///
/// Keys are the prefix followed by the signature in hex. The expiry follows
/// [`ReplayCache`]'s rule: a key lives `expires_at + 1 - now` seconds,
/// counted from the clock reading the request was verified with, so it is
/// refused for every second up to and including its last valid one, whatever
/// the Redis server's clock says.
///
/// The connection reconnects by itself. While Redis cannot answer within
/// the timeout, requests get `503` with `Retry-After` (never let through);
/// when it is back, service resumes without a restart.
///
/// ```no_run
/// use std::sync::Arc;
/// use partner_webhook::{Config, RedisReplayCache, Secret};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let cache = RedisReplayCache::connect("redis://127.0.0.1:6379/").await?;
/// let mut config = Config::default().secret(Secret::new("app-secret")?);
/// config.replay_cache = Arc::new(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisReplayCache {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisReplayCache {
    /// Connects to the Redis at `url` (`redis://host:port/db`), with the key
    /// prefix `partner-webhook:replay:` and a timeout of 1 s per check.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(RedisReplayCache {
            connection,
            prefix: "partner-webhook:replay:".to_owned(),
            timeout: Duration::from_secs(1),
        })
    }

    /// Sets the key prefix, e.g. to keep two deployments apart in one Redis.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long one check may wait for Redis before the request gets
    /// `503`. It should stay well under the reply deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn key(&self, signature: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        crate::signature::push_hex(&mut key, signature);
        key
    }
}

#[async_trait]
impl ReplayCache for RedisReplayCache {
    async fn first_seen(
        &self,
        signature: [u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, BoxError> {
        let ttl = expires_at.saturating_sub(now).saturating_add(1);
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(&signature))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl);
        let set = command.query_async::<Option<String>>(&mut connection);
        match tokio::time::timeout(self.timeout, set).await {
            Ok(answer) => Ok(answer?.is_some()),
            Err(_) => Err(format!("Redis did not answer within {:?}", self.timeout).into()),
        }
    }

    /// `PING`, within the same timeout.
    async fn ready(&self) -> Result<(), BoxError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(answer) => answer.map(drop).map_err(Into::into),
            Err(_) => Err(format!("Redis did not answer within {:?}", self.timeout).into()),
        }
    }
}

/// The prefix and timeout; the connection's address may carry a password.
impl fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
