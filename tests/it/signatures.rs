//! Signed requests as the real sender signs them, over real sockets.

use partner_webhook::{Config, Secret, escape_non_ascii, sign};

use crate::support::*;

#[tokio::test]
async fn non_ascii_messages_signed_like_the_platform_are_accepted() {
    let server = TestServer::echo().await;
    for content in [
        "Café",
        "中文",
        "👋 emoji",
        "DEL \u{7f} too",
        "mixé 中 👋 \"quoted\" \\ \n",
    ] {
        let body = body_of(&payload(content));
        let escaped = escape_non_ascii(std::str::from_utf8(&body).unwrap());
        assert_ne!(
            escaped.as_bytes(),
            body.as_slice(),
            "the trap must be exercised"
        );
        let response = server.send(&signed_post(&payload(content))).await;
        assert_eq!(response.reply(), format!("Echo: {content}"));
    }
}

#[tokio::test]
async fn key_rotation_accepts_old_and_new_secret_only() {
    let config = Config::default()
        .secret(Secret::new("new-secret").unwrap())
        .secret(Secret::new(SECRET).unwrap());
    let server = TestServer::start(config, echo()).await;
    let body = body_of(&payload("rotating"));
    for (secret, status) in [("new-secret", 200), (SECRET, 200), ("retired-secret", 401)] {
        let mut headers = platform_headers();
        headers.extend(platform_signature(secret, now(), &body));
        let response = server.send(&request("POST", "/", &headers, &body)).await;
        assert_eq!(
            response.status,
            status,
            "secret {secret}: {}",
            response.text()
        );
    }
}

#[tokio::test]
async fn raw_body_signature_also_works() {
    let server = TestServer::echo().await;
    let body = body_of(&payload("signé tel quel"));
    let timestamp = now();
    let signature = sign(&Secret::new(SECRET).unwrap(), timestamp, &body);
    let mut headers = platform_headers();
    headers.push(("X-Timestamp".into(), timestamp.to_string()));
    headers.push(("X-Signature".into(), signature));
    let response = server.send(&request("POST", "/", &headers, &body)).await;
    assert_eq!(response.reply(), "Echo: signé tel quel");
}
