//! Storing a streamed reply: the platform keeps only the replies of its own
//! simulator, so a streamed reply would vanish from the Chat screen at `done`
//! and be missing after a reload and from the next `history_tail`. Its
//! Partner API stores it; `done` then carries the stored message's id, and
//! the Chat screen shows it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;

use crate::config::{Secret, SetupError};
use crate::error::BoxError;

/// The stored message's answer is a small JSON object; anything larger is
/// not the Partner API.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where replies are stored: the platform's base URL (`http://host:port`, an
/// optional path prefix).
#[derive(Clone)]
pub(crate) struct PartnerApi {
    /// Scheme and authority, plus the path prefix without a trailing slash.
    base: String,
    authority: String,
    host: String,
    port: u16,
}

impl PartnerApi {
    /// Checks the URL at setup: plain `http://` only, since the crate has no
    /// TLS client (the platform's backend listens on `http://localhost:8000`
    /// by default; put a TLS-terminating proxy in front of a remote one).
    pub(crate) fn new(url: &str) -> Result<Self, SetupError> {
        let invalid = |reason| SetupError::InvalidConfig {
            field: "platform_api_url",
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("must be a URL such as http://localhost:8000"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported (no TLS client); use http:// to a local platform \
                     or a proxy",
                ));
            }
            _ => return Err(invalid("must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("must name a host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(80);
        Ok(PartnerApi {
            base: format!("http://{}{}", authority, uri.path().trim_end_matches('/')),
            authority: authority.to_string(),
            host,
            port,
        })
    }

    /// Posts `text` as the assistant's message in the thread, authenticated
    /// with the secret that verified the request, and returns the stored
    /// message's `id` and `seq`.
    pub(crate) fn store(
        &self,
        app_id: &str,
        thread_id: &str,
        secret: &Secret,
        text: String,
    ) -> Storing {
        let api = self.clone();
        let path = format!(
            "{}/apps/{}/threads/{}/messages/assistant",
            api.base,
            encode_segment(app_id),
            encode_segment(thread_id)
        );
        let (app_id, secret) = (app_id.to_owned(), secret.text_for_partner_api());
        Box::pin(async move {
            let body = json!({ "content": text, "content_json": { "source": "webhook" } });
            let request = Request::post(path)
                .header(HOST, &api.authority)
                .header(CONTENT_TYPE, "application/json")
                .header("x-app-id", &app_id)
                .header("x-app-secret", HeaderValue::from_str(&secret)?)
                .body(Full::new(Bytes::from(body.to_string())))?;
            let stream = TcpStream::connect((api.host.as_str(), api.port)).await?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            // Drives the connection; it ends with the one exchange below.
            tokio::spawn(connection);
            let response = sender.send_request(request).await?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            if status != StatusCode::OK && status != StatusCode::CREATED {
                // The platform's error text may echo the request; not the secret.
                return Err(format!("the Partner API answered {status}").into());
            }
            Ok(serde_json::from_slice::<Stored>(&answer)?)
        })
    }
}

/// A store in progress.
pub(crate) type Storing = Pin<Box<dyn Future<Output = Result<Stored, BoxError>> + Send>>;

/// One reply's destination: the thread it answers, and the secret that
/// verified its request.
#[derive(Debug)]
pub(crate) struct StoreTarget {
    pub(crate) api: PartnerApi,
    pub(crate) app_id: String,
    pub(crate) thread_id: String,
    pub(crate) secret: Secret,
}

impl StoreTarget {
    pub(crate) fn store(self, text: String) -> Storing {
        self.api
            .store(&self.app_id, &self.thread_id, &self.secret, text)
    }
}

impl fmt::Debug for PartnerApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerApi")
            .field("base", &self.base)
            .finish()
    }
}

/// What the Partner API answers about the stored message (more fields are
/// ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct Stored {
    pub(crate) id: serde_json::Value,
    pub(crate) seq: serde_json::Value,
}

/// Ids are UUIDs; anything else is percent-encoded rather than allowed to
/// change the path.
fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let api = PartnerApi::new("http://localhost:8000/").expect("valid");
        assert_eq!(api.base, "http://localhost:8000");
        assert_eq!((api.host.as_str(), api.port), ("localhost", 8000));
        let prefixed = PartnerApi::new("http://10.0.0.5/platform/").expect("valid");
        assert_eq!(prefixed.base, "http://10.0.0.5/platform");
        assert_eq!(prefixed.port, 80);
        for bad in [
            "https://platform.example",
            "localhost:8000",
            "ftp://x",
            "not a url",
        ] {
            assert!(PartnerApi::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_cannot_change_the_path() {
        assert_eq!(encode_segment("6f1c2a4e-8b1d"), "6f1c2a4e-8b1d");
        assert_eq!(encode_segment("../x?y"), "%2E%2E%2Fx%3Fy");
    }
}
