//! One test per row of the HTTP table: each status, a JSON error body, and a
//! server that keeps serving afterwards.

use partner_webhook::{BoxError, Config, Context, MessageReceived, assistant_fn};
use serde_json::json;

use crate::support::*;

fn signed_raw(body: &[u8], extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = platform_headers();
    for (name, value) in extra_headers {
        headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        headers.push(((*name).to_owned(), (*value).to_owned()));
    }
    headers.extend(platform_signature(SECRET, now(), body));
    request("POST", "/", &headers, body)
}

#[tokio::test]
async fn valid_post_on_any_path_gets_the_reply() {
    let server = TestServer::echo().await;
    for path in ["/", "/webhook", "/any/path?x=1"] {
        let body = body_of(&payload("hi"));
        let mut headers = platform_headers();
        headers.extend(platform_signature(SECRET, now(), &body));
        let response = server.send(&request("POST", path, &headers, &body)).await;
        assert_eq!(response.reply(), "Echo: hi");
        assert_eq!(response.json(), json!({"reply": "Echo: hi"}));
    }
}

#[tokio::test]
async fn metadata_is_sent_when_set() {
    let assistant = assistant_fn(|message: MessageReceived, _: Context| async move {
        Ok::<_, BoxError>(
            partner_webhook::Reply::new(message.message.content).with_metadata("model", "rules"),
        )
    });
    let server = TestServer::start(signed_config(), assistant).await;
    let response = server.send(&signed_post(&payload("x"))).await;
    assert_eq!(
        response.json(),
        json!({"reply": "x", "metadata": {"model": "rules"}})
    );
}

#[tokio::test]
async fn healthz_needs_no_signature() {
    let server = TestServer::echo().await;
    let response = server
        .send(&request("GET", "/healthz", &platform_headers(), b""))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"status": "ok"}));
    let ready = server
        .send(&request("GET", "/readyz", &platform_headers(), b""))
        .await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready"}));
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let server = TestServer::echo().await;
    for (method, path, allow) in [
        ("GET", "/", "POST"),
        ("PUT", "/webhook", "POST"),
        ("DELETE", "/healthz", "GET, POST"),
        ("PUT", "/readyz", "GET, POST"),
    ] {
        let response = server
            .send(&request(method, path, &platform_headers(), b""))
            .await;
        response.assert_json_error(405);
        assert_eq!(response.header("allow"), Some(allow));
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn each_signature_problem_is_401_and_named() {
    let server = TestServer::echo().await;
    let body = body_of(&payload("hi"));
    let signed = platform_signature(SECRET, now(), &body);
    let (timestamp, signature) = (signed[0].clone(), signed[1].clone());
    let old = now() - 301;
    let cases = [
        ("missing", vec![timestamp.clone()], "missing X-Signature"),
        ("missing", vec![signature.clone()], "missing X-Timestamp"),
        (
            "malformed",
            vec![
                timestamp.clone(),
                ("X-Signature".into(), "sha256=zz".into()),
            ],
            "malformed X-Signature",
        ),
        (
            "outside window",
            platform_signature(SECRET, old, &body),
            "outside the 300 s replay window",
        ),
        (
            "mismatch",
            platform_signature("another-secret", now(), &body),
            "signature mismatch",
        ),
    ];
    for (label, signature_headers, expected) in cases {
        let mut headers = platform_headers();
        headers.extend(signature_headers);
        let response = server.send(&request("POST", "/", &headers, &body)).await;
        let error = response.assert_json_error(401);
        assert!(error.contains(expected), "{label}: {error}");
        assert!(
            !error.contains(&signature.1[7..]),
            "{label} leaks the signature"
        );
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let server = TestServer::echo().await;
    let body = body_of(&payload("hi"));
    let response = server
        .send(&signed_raw(&body, &[("Content-Type", "text/plain")]))
        .await;
    response.assert_json_error(415);
    assert_still_serving(&server).await;
    let ok = server
        .send(&signed_raw(
            &body,
            &[("Content-Type", "application/json; charset=utf-8")],
        ))
        .await;
    assert_eq!(ok.reply(), "Echo: hi");
}

#[tokio::test]
async fn body_over_the_limit_is_413_before_it_is_sent() {
    let server = TestServer::start(signed_config().body_limit(1024), echo()).await;
    let mut connection = Connection::open(server.addr).await;
    // Only the head: the server must answer from Content-Length alone.
    let mut headers = platform_headers();
    headers.extend(platform_signature(SECRET, now(), b"{}"));
    let mut head = request("POST", "/", &headers, b"");
    let length_line = head.len() - "0\r\n\r\n".len();
    head.truncate(length_line);
    head.extend_from_slice(b"5000000\r\n\r\n");
    connection.write(&head).await;
    let error = connection.read_response().await.assert_json_error(413);
    assert!(error.contains("1024-byte limit"), "{error}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let server = TestServer::start(signed_config().body_limit(1024), echo()).await;
    let mut raw = plausible_head("Transfer-Encoding: chunked\r\n");
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b' '; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    server.send(&raw).await.assert_json_error(413);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn invalid_json_is_400_with_line_and_column() {
    let server = TestServer::echo().await;
    let response = server
        .send(&signed_raw(b"{\"version\": \"1.0\",\n oops}", &[]))
        .await;
    let error = response.assert_json_error(400);
    assert!(error.contains("line 2 column 2"), "{error}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn invalid_utf8_is_400_even_where_the_payload_ignores_it() {
    let server = TestServer::echo().await;
    let mut body = body_of(&payload("hi"));
    body.truncate(body.len() - 1);
    body.extend_from_slice(b",\"extra\":\"\xff\"}");
    // Not UTF-8, so there is no escaped form: sign the raw bytes.
    let timestamp = now();
    let signature = partner_webhook::sign(
        &partner_webhook::Secret::new(SECRET).unwrap(),
        timestamp,
        &body,
    );
    let mut headers = platform_headers();
    headers.push(("X-Timestamp".into(), timestamp.to_string()));
    headers.push(("X-Signature".into(), signature));
    let response = server.send(&request("POST", "/", &headers, &body)).await;
    let error = response.assert_json_error(400);
    assert!(error.contains("invalid UTF-8"), "{error}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn wrong_shape_or_event_is_422_naming_the_field() {
    let server = TestServer::echo().await;
    let mut wrong_type = payload("hi");
    wrong_type["message"]["content"] = json!(42);
    let mut wrong_event = payload("hi");
    wrong_event["event"] = json!("message_deleted");
    for (payload, field) in [(wrong_type, "message.content"), (wrong_event, "`event`")] {
        let response = server.send(&signed_raw(&body_of(&payload), &[])).await;
        let error = response.assert_json_error(422);
        assert!(error.contains(field), "{error}");
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn assistant_error_is_500_without_details() {
    let failing = assistant_fn(|_: MessageReceived, _: Context| async {
        Err::<String, _>(std::io::Error::other("database password is hunter2"))
    });
    let server = TestServer::start(signed_config(), failing).await;
    let error = server
        .send(&signed_post(&payload("hi")))
        .await
        .assert_json_error(500);
    assert_eq!(error, "the assistant failed to reply");
}

#[tokio::test]
async fn assistant_panic_is_500_and_others_are_unaffected() {
    let moody = assistant_fn(|message: MessageReceived, _: Context| async move {
        if message.message.content == "panic" {
            panic!("assistant bug");
        }
        Ok::<_, BoxError>(format!("Echo: {}", message.message.content))
    });
    let server = TestServer::start(signed_config(), moody).await;
    let (panic_request, fine_request) = (
        signed_post(&payload("panic")),
        signed_post(&payload("fine")),
    );
    let (panicking, fine) = tokio::join!(server.send(&panic_request), server.send(&fine_request));
    assert_eq!(
        panicking.assert_json_error(500),
        "the assistant failed to reply"
    );
    assert_eq!(fine.reply(), "Echo: fine");
    assert_still_serving(&server).await;
}

/// An `Assistant` written without the `async_trait` macro: its `reply`
/// panics before it returns a future.
struct PanicsBeforeItsFuture;

impl partner_webhook::Assistant for PanicsBeforeItsFuture {
    fn reply<'life0, 'async_trait>(
        &'life0 self,
        message: MessageReceived,
        _context: Context,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<partner_webhook::Reply, BoxError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        assert_ne!(message.message.content, "panic", "assistant bug");
        Box::pin(async move { Ok(format!("Echo: {}", message.message.content).into()) })
    }
}

#[tokio::test]
async fn assistant_panicking_before_its_future_is_500_too() {
    let server = TestServer::start(signed_config(), PanicsBeforeItsFuture).await;
    let error = server
        .send(&signed_post(&payload("panic")))
        .await
        .assert_json_error(500);
    assert_eq!(error, "the assistant failed to reply");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn unsigned_requests_only_when_chosen() {
    let open = TestServer::start(Config::default().accept_unsigned(), echo()).await;
    let body = body_of(&payload("no secret"));
    let unsigned = request("POST", "/", &platform_headers(), &body);
    assert_eq!(open.send(&unsigned).await.reply(), "Echo: no secret");

    let guarded = TestServer::echo().await;
    guarded.send(&unsigned).await.assert_json_error(401);
}

#[tokio::test]
async fn webhook_mounts_as_a_tower_service() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use tower_service::Service;

    let mut webhook =
        partner_webhook::Webhook::new(&Config::default().accept_unsigned(), echo()).unwrap();
    std::future::poll_fn(|cx| Service::<hyper::Request<Full<Bytes>>>::poll_ready(&mut webhook, cx))
        .await
        .unwrap();
    let request = hyper::Request::post("/webhook")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body_of(&payload("via tower")))))
        .unwrap();
    let response = webhook.call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"reply":"Echo: via tower"}"#);
}
