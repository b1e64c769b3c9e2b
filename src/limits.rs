//! Limits: what is checked before and while the body is read, so an oversized
//! or non-JSON request is refused without buffering it.

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::HeaderMap;
use hyper::body::{Body, Bytes};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};

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

/// Reads the whole body, refusing from `Content-Length` before the first byte
/// is read, and counting as it reads for bodies without one (chunked).
pub(crate) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, RequestError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(RequestError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(RequestError::PayloadTooLarge { limit })
        }
        Err(error) => Err(RequestError::BodyRead(error)),
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
