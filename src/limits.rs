//! Limits: what is checked before and while the body is read, so an oversized
//! or non-JSON request is refused without buffering it.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::{Body, Buf, Bytes};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{BoxError, Overload, RequestError};

/// Accepts an absent `Content-Type`, `application/json` and any `*/*+json`,
/// with any parameters (`; charset=utf-8`).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), RequestError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let is_json = value.to_str().is_ok_and(|text| {
        let essence = text.split(';').next().unwrap_or_default().trim();
        essence.split_once('/').is_some_and(|(kind, subtype)| {
            let suffix = subtype
                .len()
                .checked_sub("+json".len())
                .and_then(|start| subtype.get(start..));
            (kind.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("json"))
                || (subtype.len() > "+json".len()
                    && suffix.is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json")))
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

    /// Refuses a body whose `Content-Length` is over the limit, before a byte
    /// of it is read.
    pub(crate) fn check_declared_length(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        match declared_length(headers) {
            Some(length) if length > self.limit as u64 => {
                Err(RequestError::PayloadTooLarge { limit: self.limit })
            }
            _ => Ok(()),
        }
    }

    /// Reads the whole body, counted while reading (a chunked body has no
    /// `Content-Length`, and a stated one is only a claim) and cut off when it
    /// does not arrive in time.
    ///
    /// Each frame is copied into one buffer owned by the request and dropped at
    /// once, so hyper reuses its read buffer: a frame kept as `Bytes` would pin
    /// the whole read buffer it was cut from, and a body trickled in tiny
    /// frames would then cost kilobytes of memory per byte. The shared budget is
    /// charged for the buffer's capacity, which is what the process really
    /// holds, as it grows; never for what `Content-Length` announces, so a
    /// client that announces a large body and sends nothing holds nothing. The
    /// returned permit holds the body's share; drop it with the body.
    pub(crate) async fn read<B>(
        &self,
        headers: &HeaderMap,
        body: B,
    ) -> Result<(Bytes, OwnedSemaphorePermit), RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let declared = declared_length(headers).and_then(|length| usize::try_from(length).ok());
        tokio::time::timeout(self.timeout, self.collect(body, declared))
            .await
            .unwrap_or(Err(RequestError::BodyTimeout {
                timeout: self.timeout,
            }))
    }

    async fn collect<B>(
        &self,
        body: B,
        declared: Option<usize>,
    ) -> Result<(Bytes, OwnedSemaphorePermit), RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut reserved = self.reserve(0)?;
        let mut buffer: Vec<u8> = Vec::new();
        // Grow towards what was announced, never past the limit.
        let ceiling = declared.unwrap_or(self.limit).min(self.limit);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| RequestError::BodyRead(error.into()))?;
            // Trailers carry nothing the webhook uses.
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let length = buffer.len() + data.remaining();
            if length > self.limit {
                return Err(RequestError::PayloadTooLarge { limit: self.limit });
            }
            if length > buffer.capacity() {
                let capacity = grown_capacity(buffer.capacity(), length, ceiling);
                let needed_kib = u32::try_from(capacity.div_ceil(KIB)).unwrap_or(u32::MAX);
                let held_kib = u32::try_from(reserved.num_permits()).unwrap_or(u32::MAX);
                if needed_kib > held_kib {
                    reserved.merge(self.reserve(needed_kib - held_kib)?);
                }
                buffer.reserve_exact(capacity - buffer.len());
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                buffer.extend_from_slice(chunk);
                let copied = chunk.len();
                data.advance(copied);
            }
        }
        Ok((Bytes::from(buffer), reserved))
    }

    fn reserve(&self, kib: u32) -> Result<OwnedSemaphorePermit, RequestError> {
        Arc::clone(&self.budget_kib)
            .try_acquire_many_owned(kib)
            .map_err(|_| RequestError::Overloaded {
                limit: Overload::BodyMemory,
                source: None,
            })
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok())
}

/// Smallest first allocation: tiny frames should not each cost a reallocation.
const MIN_BODY_CAPACITY: usize = KIB;

/// Doubles (at least to `needed`), so a body trickled in tiny frames is copied
/// a logarithmic number of times; stops at `ceiling` (the announced length or
/// the limit) so the last doubling does not overshoot what can arrive.
fn grown_capacity(current: usize, needed: usize, ceiling: usize) -> usize {
    current
        .saturating_mul(2)
        .max(MIN_BODY_CAPACITY)
        .min(ceiling)
        .max(needed)
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
            "application/problem+JSON",
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

    #[test]
    fn body_buffers_double_up_to_what_can_arrive() {
        assert_eq!(grown_capacity(0, 1, 1 << 20), MIN_BODY_CAPACITY);
        assert_eq!(grown_capacity(1024, 1025, 1 << 20), 2048);
        // A big first frame is taken whole.
        assert_eq!(grown_capacity(0, 5000, 1 << 20), 5000);
        // Never past the announced length or the limit...
        assert_eq!(grown_capacity(0, 10, 100), 100);
        assert_eq!(grown_capacity(600 * 1024, 600 * 1024 + 1, 1 << 20), 1 << 20);
        // ...unless a frame needs it (the caller refuses over-limit bodies first).
        assert_eq!(grown_capacity(64, 200, 100), 200);
    }
}
