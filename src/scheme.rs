//! Verify, as data: which headers a platform signs with, what it signs, how it
//! writes the digest, and whether a signed timestamp bounds replays.

use std::time::Duration;

use hyper::header::HeaderName;

/// How one platform signs its webhooks: the headers, the signed content, the
/// digest's encoding and the timestamp rule. Always HMAC-SHA256, compared in
/// constant time, with upper- or lowercase hex.
///
/// Presets cover the platforms this crate knows: [`Scheme::platform`] (the
/// default, for the [`Assistant`](crate::Assistant) path),
/// [`Scheme::sendseven`] and [`Scheme::webhook_signature`]. Another platform
/// is a [`Scheme::new`] with the builder methods.
///
/// A scheme without a signed timestamp cannot tell a replay from a retry
/// except by remembering what it has seen: such a scheme is refused for an
/// event route unless the operator accepts that with
/// [`EventsConfig::accept_replays_caught_by_dedupe_only`](crate::EventsConfig::accept_replays_caught_by_dedupe_only).
///
/// ```
/// use std::time::Duration;
/// use partner_webhook::{Encoding, Scheme};
///
/// // A platform sending `X-Hub-Signature-256: sha256=<hex>` over the body, and
/// // `X-Hub-Delivery` as a delivery id.
/// let hub = Scheme::new("hub", "X-Hub-Signature-256", Encoding::PrefixedHex)
///     .with_delivery_id("X-Hub-Delivery");
/// assert!(!hub.signs_timestamp());
///
/// let sendseven = Scheme::sendseven();
/// assert_eq!(sendseven.replay_window(), Some(Duration::from_secs(300)));
/// ```
#[derive(Debug, Clone)]
pub struct Scheme {
    name: &'static str,
    signature: Header,
    encoding: Encoding,
    timestamp: Option<Timestamp>,
    delivery_id: Option<Header>,
    event_type: Option<Header>,
    /// This platform's sender signs the `\uXXXX`-escaped form of a non-ASCII
    /// body but sends it raw; no other known sender does.
    escaped_non_ascii: bool,
}

/// How the digest is written in the signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// `sha256=` followed by 64 hex digits.
    PrefixedHex,
    /// 64 hex digits alone.
    Hex,
    /// Either of the two: for a family of senders that share a header but not
    /// the prefix. Accepting both weakens nothing: the digest is the same.
    PrefixedOrBareHex,
}

/// A header as the scheme names it: parsed once, and spelled as its platform
/// documents it for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) name: HeaderName,
    pub(crate) display: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Timestamp {
    pub(crate) header: Header,
    pub(crate) window: Duration,
}

impl Header {
    fn new(display: &'static str) -> Self {
        let name = HeaderName::from_bytes(display.as_bytes())
            .unwrap_or_else(|_| panic!("{display:?} is not a valid HTTP header name"));
        Header { name, display }
    }
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

impl Scheme {
    /// This crate's own platform: `X-Signature: sha256=<hex>` over
    /// `{X-Timestamp}.{body}`, a 300 s window, and the sender's quirk of
    /// signing non-ASCII text `\u`-escaped while sending it raw. What
    /// [`Webhook::new`](crate::Webhook::new) verifies with.
    pub fn platform() -> Self {
        Scheme {
            escaped_non_ascii: true,
            ..Scheme::new("platform", "X-Signature", Encoding::PrefixedHex)
                .with_signed_timestamp("X-Timestamp", DEFAULT_WINDOW)
        }
    }

    /// SendSeven: `X-Sendseven-Signature: sha256=<hex>` over
    /// `{X-Sendseven-Timestamp}.{body}`, with `X-Sendseven-Delivery-Id` (kept
    /// when a delivery is retried, so retries are recognised by it) and
    /// `X-Sendseven-Event`. SendSeven documents no window; 300 s is assumed.
    pub fn sendseven() -> Self {
        Scheme::new("sendseven", "X-Sendseven-Signature", Encoding::PrefixedHex)
            .with_signed_timestamp("X-Sendseven-Timestamp", DEFAULT_WINDOW)
            .with_delivery_id("X-Sendseven-Delivery-Id")
            .with_event_type("X-Sendseven-Event")
    }

    /// The `X-Webhook-Signature` family of WhatsApp APIs and CRMs: an
    /// HMAC-SHA256 of the raw body, written `sha256=<hex>` by some and as
    /// bare hex by others (both are accepted). No timestamp and no delivery
    /// id: a retry is the same bytes with the same signature, which is how
    /// it is recognised.
    pub fn webhook_signature() -> Self {
        Scheme::new(
            "webhook-signature",
            "X-Webhook-Signature",
            Encoding::PrefixedOrBareHex,
        )
    }

    /// A scheme signing the body alone, with no timestamp; add one with
    /// [`with_signed_timestamp`](Scheme::with_signed_timestamp). `name` labels
    /// the scheme in logs and keeps its de-duplication keys apart from other
    /// schemes'.
    ///
    /// # Panics
    ///
    /// When `signature_header` is not a valid header name, like
    /// [`HeaderName::from_static`].
    pub fn new(name: &'static str, signature_header: &'static str, encoding: Encoding) -> Self {
        Scheme {
            name,
            signature: Header::new(signature_header),
            encoding,
            timestamp: None,
            delivery_id: None,
            event_type: None,
            escaped_non_ascii: false,
        }
    }

    /// Signs `{timestamp}.{body}`, the timestamp (unix seconds) sent in
    /// `header` and required, and refused further than `window` from the
    /// server clock, either way.
    ///
    /// # Panics
    ///
    /// When `header` is not a valid header name.
    #[must_use]
    pub fn with_signed_timestamp(mut self, header: &'static str, window: Duration) -> Self {
        self.timestamp = Some(Timestamp {
            header: Header::new(header),
            window,
        });
        self
    }

    /// The header carrying a delivery id that stays the same when the
    /// platform retries a delivery: retries are de-duplicated by it.
    ///
    /// # Panics
    ///
    /// When `header` is not a valid header name.
    #[must_use]
    pub fn with_delivery_id(mut self, header: &'static str) -> Self {
        self.delivery_id = Some(Header::new(header));
        self
    }

    /// The header naming the event type, when the platform sends one.
    ///
    /// # Panics
    ///
    /// When `header` is not a valid header name.
    #[must_use]
    pub fn with_event_type(mut self, header: &'static str) -> Self {
        self.event_type = Some(Header::new(header));
        self
    }

    /// Replaces the replay window of a scheme with a signed timestamp; no
    /// effect on one without.
    #[must_use]
    pub fn with_replay_window(mut self, window: Duration) -> Self {
        if let Some(timestamp) = &mut self.timestamp {
            timestamp.window = window;
        }
        self
    }

    /// The scheme's name, as given to [`Scheme::new`] or a preset's.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a timestamp is signed, so a captured request expires.
    pub fn signs_timestamp(&self) -> bool {
        self.timestamp.is_some()
    }

    /// How far a signed timestamp may be from the server clock; `None` when
    /// the scheme signs none.
    pub fn replay_window(&self) -> Option<Duration> {
        self.timestamp.as_ref().map(|timestamp| timestamp.window)
    }

    pub(crate) fn signature(&self) -> &Header {
        &self.signature
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub(crate) fn timestamp(&self) -> Option<&Timestamp> {
        self.timestamp.as_ref()
    }

    pub(crate) fn delivery_id(&self) -> Option<&Header> {
        self.delivery_id.as_ref()
    }

    pub(crate) fn event_type(&self) -> Option<&Header> {
        self.event_type.as_ref()
    }

    pub(crate) fn escapes_non_ascii(&self) -> bool {
        self.escaped_non_ascii
    }
}

impl Default for Scheme {
    /// [`Scheme::platform`].
    fn default() -> Self {
        Scheme::platform()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_their_headers_as_documented() {
        let platform = Scheme::platform();
        assert_eq!(platform.signature().name, "x-signature");
        assert_eq!(
            platform.timestamp().map(|t| t.header.display),
            Some("X-Timestamp")
        );
        assert!(platform.escapes_non_ascii());

        let sendseven = Scheme::sendseven();
        assert_eq!(sendseven.signature().display, "X-Sendseven-Signature");
        assert_eq!(
            sendseven.delivery_id().map(|h| h.name.as_str()),
            Some("x-sendseven-delivery-id")
        );
        assert!(!sendseven.escapes_non_ascii());

        let family = Scheme::webhook_signature();
        assert!(!family.signs_timestamp());
        assert_eq!(family.encoding(), Encoding::PrefixedOrBareHex);
    }

    #[test]
    #[should_panic(expected = "not a valid HTTP header name")]
    fn an_invalid_header_name_is_a_programming_error() {
        let _ = Scheme::new("bad", "X Signature", Encoding::Hex);
    }
}
