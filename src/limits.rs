//! Limits: what is checked before and while the body is read, so an oversized
//! or non-JSON request is refused without buffering it.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::{Body, Buf, Bytes};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{BoxError, RequestError};

/// Accepts an absent `Content-Type`, `application/json` and any `*/*+json`,
/// with any parameters (`; charset=utf-8`).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), RequestError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let is_json = value.to_str().is_ok_and(|text| {
        let essence = text.split(';').next().unwrap_or_default().trim();
        essence.split_once('/').is_some_and(|(kind, subtype)| {
            let subtype = subtype.to_ascii_lowercase();
            (kind.eq_ignore_ascii_case("application") && subtype == "json")
                || (subtype.len() > "+json".len() && subtype.ends_with("+json"))
        })
    });
    if is_json {
        Ok(())
    } else {
        Err(RequestError::UnsupportedMediaType {
            content_type: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
    }
}

/// How bodies may be read: the per-request size limit and time, and the
/// memory all requests together may hold.
#[derive(Debug)]
pub(crate) struct BodyLimits {
    limit: usize,
    timeout: Duration,
    /// Buffered bytes still available, in KiB so that any budget fits the
    /// semaphore's permit count.
    budget_kib: Arc<Semaphore>,
}

const KIB: usize = 1024;

impl BodyLimits {
    pub(crate) fn new(limit: usize, timeout: Duration, max_buffered_bytes: usize) -> Self {
        let budget = (max_buffered_bytes / KIB).min(Semaphore::MAX_PERMITS);
        BodyLimits {
            limit,
            timeout,
            budget_kib: Arc::new(Semaphore::new(budget)),
        }
    }

    /// Reads the whole body: refused from `Content-Length` before the first
    /// byte is read, counted while reading bodies without one (chunked), and
    /// cut off when it does not arrive in time. Memory is reserved from the
    /// shared budget as bytes arrive, not from what `Content-Length` claims,
    /// so a client that announces a large body and sends nothing holds
    /// nothing. The returned permit holds the body's share; drop it with the
    /// body.
    pub(crate) async fn read<B>(
        &self,
        headers: &HeaderMap,
        body: B,
    ) -> Result<(Bytes, OwnedSemaphorePermit), RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limit as u64) {
            return Err(RequestError::PayloadTooLarge { limit: self.limit });
        }
        tokio::time::timeout(self.timeout, self.collect(body))
            .await
            .unwrap_or(Err(RequestError::BodyTimeout {
                timeout: self.timeout,
            }))
    }

    async fn collect<B>(&self, body: B) -> Result<(Bytes, OwnedSemaphorePermit), RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut reserved = self.reserve(0)?;
        // hyper's frames are kept as they come (no copy, no capacity doubling)
        // and joined once at the end, so memory follows the bytes counted.
        let mut frames: Vec<Bytes> = Vec::new();
        let mut length = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| RequestError::BodyRead(error.into()))?;
            // Trailers carry nothing the webhook uses.
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            length += data.remaining();
            if length > self.limit {
                return Err(RequestError::PayloadTooLarge { limit: self.limit });
            }
            let needed_kib = u32::try_from(length.div_ceil(KIB)).unwrap_or(u32::MAX);
            let held_kib = u32::try_from(reserved.num_permits()).unwrap_or(u32::MAX);
            if needed_kib > held_kib {
                reserved.merge(self.reserve(needed_kib - held_kib)?);
            }
            frames.push(data.copy_to_bytes(data.remaining()));
        }
        let body = match frames.len() {
            0 => Bytes::new(),
            1 => frames.swap_remove(0),
            _ => Bytes::from(frames.concat()),
        };
        Ok((body, reserved))
    }

    fn reserve(&self, kib: u32) -> Result<OwnedSemaphorePermit, RequestError> {
        Arc::clone(&self.budget_kib)
            .try_acquire_many_owned(kib)
            .map_err(|_| RequestError::Overloaded {
                reason: "too many request bodies in memory",
                source: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with_content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_content_types_pass() {
        for value in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.partner+json",
            "text/ld+json",
        ] {
            assert!(
                check_content_type(&with_content_type(value)).is_ok(),
                "{value}"
            );
        }
        assert!(check_content_type(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn other_content_types_are_415() {
        for value in [
            "text/plain",
            "application/jsonp",
            "+json",
            "application/+json",
            "json",
        ] {
            let error = check_content_type(&with_content_type(value)).expect_err(value);
            assert_eq!(error.status(), hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }
}
