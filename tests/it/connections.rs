//! Connection behaviour: keep-alive and graceful shutdown.

use std::time::Duration;

use partner_webhook::{BoxError, Context, MessageReceived, assistant_fn};

use crate::support::*;

#[tokio::test]
async fn several_requests_on_one_keep_alive_connection() {
    let server = TestServer::echo().await;
    let mut connection = Connection::open(server.addr).await;
    for index in 0..5 {
        let content = format!("message {index} ✓");
        let response = connection.send(&signed_post(&payload(&content))).await;
        assert_eq!(response.reply(), format!("Echo: {content}"));
    }
    // A rejected request does not cost the connection either.
    let bad = request("GET", "/", &platform_headers(), b"");
    assert_eq!(connection.send(&bad).await.status, 405);
    assert_eq!(
        connection
            .send(&signed_post(&payload("after")))
            .await
            .reply(),
        "Echo: after"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let slow = assistant_fn(|message: MessageReceived, _: Context| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, BoxError>(format!("Echo: {}", message.message.content))
    });
    let mut server = TestServer::start(signed_config(), slow).await;
    let addr = server.addr;
    let mut in_flight = Connection::open(addr).await;
    in_flight.write(&signed_post(&payload("slow"))).await;
    // Let the request reach the assistant before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = server.begin_shutdown();

    assert_eq!(in_flight.read_response().await.reply(), "Echo: slow");
    assert!(
        in_flight.is_closed().await,
        "connection should close after the last response"
    );
    tokio::time::timeout(IO_TIMEOUT, stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
