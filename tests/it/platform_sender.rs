//! The independent emulation of the platform's sender (Python, standard
//! library, `tests/sender/platform_sender.py`) against the echo assistant.

use partner_webhook::{Config, ReplyFormat};

use crate::support::*;

async fn run_sender(server: &TestServer, extra_args: &[&str]) {
    let url = format!("http://{}/webhook", server.addr);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sender/platform_sender.py"
    );
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(script)
        .args(["--url", &url, "--hostile"])
        .args(extra_args);
    let output = command
        .output()
        .await
        .expect("python3 is required for this test (it emulates the platform's sender)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sender emulation failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn real_sender_emulation_with_a_secret() {
    let server = TestServer::echo().await;
    run_sender(&server, &["--secret", SECRET]).await;
}

#[tokio::test]
async fn real_sender_emulation_without_a_secret() {
    let server = TestServer::start(Config::default().accept_unsigned(), echo()).await;
    run_sender(&server, &[]).await;
}

#[tokio::test]
async fn real_sender_emulation_reading_sse_as_the_chat_screen_does() {
    let config = signed_config().reply_format(ReplyFormat::Sse);
    let server = TestServer::start(config, echo()).await;
    run_sender(&server, &["--secret", SECRET, "--stream"]).await;
}
