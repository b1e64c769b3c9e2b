//! The payload variants the real sender produces, end to end.

use partner_webhook::{BoxError, Context, MessageReceived, Role, assistant_fn};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn fallback_payload_without_history() {
    let server = TestServer::echo().await;
    let mut fallback = payload("");
    fallback["message"] = json!({"content": "only content"});
    fallback.as_object_mut().unwrap().remove("history_tail");
    assert_eq!(
        server.send(&signed_post(&fallback)).await.reply(),
        "Echo: only content"
    );
}

#[tokio::test]
async fn dashboard_test_webhook() {
    let server = TestServer::echo().await;
    let mut test = payload("Test message");
    test["thread"] =
        json!({"id": "00000000-0000-0000-0000-000000000000", "customer_id": "test-customer"});
    test["message"]["id"] = json!("00000000-0000-0000-0000-000000000001");
    test["message"]["seq"] = json!(1);
    test["history_tail"] = json!([]);
    assert_eq!(
        server.send(&signed_post(&test)).await.reply(),
        "Echo: Test message"
    );
}

#[tokio::test]
async fn assistant_sees_history_context_and_extra_fields() {
    let inspect = assistant_fn(|message: MessageReceived, context: Context| async move {
        let roles: Vec<&str> = message
            .history_tail
            .iter()
            .map(|e| e.role.as_str())
            .collect();
        assert_eq!(message.history_tail[0].role, Role::Assistant);
        assert_eq!(message.history_tail[0].content_json["source"], "system");
        assert_eq!(
            message.message.content_json["clé"]["深い"],
            json!([1, {"x": null}])
        );
        assert_eq!(message.app.name, "");
        assert!(context.verified && context.signed_at.is_some());
        let raw: serde_json::Value = serde_json::from_slice(&context.body)?;
        Ok::<_, BoxError>(format!(
            "{} {} {} {}",
            roles.join(","),
            context.app_id,
            context.thread_id,
            raw["context"]["locale"]
        ))
    });
    let server = TestServer::start(signed_config(), inspect).await;
    let mut rich = payload("Bonjour");
    rich["app"]["name"] = json!("");
    rich["message"]["content_json"] = json!({"clé": {"深い": [1, {"x": null}]}});
    rich["context"] = json!({"locale": "fr"});
    rich["timestamp"] = json!("2026-11-23T12:00:00+00:00");
    let reply = server.send(&signed_post(&rich)).await.reply();
    assert_eq!(
        reply,
        "assistant,user 6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10 0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b \"fr\""
    );
}
