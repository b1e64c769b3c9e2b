//! A rule-based support bot that reads the thread's history: it remembers an
//! order number the customer gave earlier, and hands over to a human with the
//! thread id. The shape of a real assistant, without an LLM.
//!
//! ```sh
//! WEBHOOK_SECRET=<the App's webhook secret> cargo run --example support_bot
//! ```

use std::error::Error;

use partner_webhook::{
    Assistant, BoxError, Config, Context, MessageReceived, Reply, Role, Secret, Server, async_trait,
};

struct SupportBot;

#[async_trait]
impl Assistant for SupportBot {
    async fn reply(&self, message: MessageReceived, context: Context) -> Result<Reply, BoxError> {
        let text = message.message.content.to_lowercase();
        // history_tail includes the current message, so an order number given
        // just now counts as well as one from earlier in the thread.
        let known_order = message
            .history_tail
            .iter()
            .rev()
            .filter(|entry| entry.role == Role::User)
            .find_map(|entry| order_number(&entry.content));

        let answer = if text.contains("human") || text.contains("agent") {
            // From the signed body: the X-Thread-Id header is not signed.
            let thread = &context.thread_id;
            format!("I've asked a colleague to take over. Your reference is {thread}.")
        } else if text.contains("order") || text.contains("where") {
            match &known_order {
                Some(order) => format!("Order #{order} has shipped and arrives within 2 days."),
                None => "Happy to check. What is your order number (e.g. #12345)?".to_owned(),
            }
        } else if let Some(order) = order_number(&text) {
            format!("Thanks, I've noted order #{order}. What would you like to know about it?")
        } else {
            "I can track an order or connect you with a human. What do you need?".to_owned()
        };
        let reply = Reply::new(answer).with_metadata("bot", "rules");
        Ok(match known_order {
            Some(order) => reply.with_metadata("order", order),
            None => reply,
        })
    }
}

/// The digits after a `#`, e.g. `12345` in "my order is #12345".
fn order_number(text: &str) -> Option<String> {
    let digits: String = text
        .split_once('#')?
        .1
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt().init();
    let secret = match std::env::var("WEBHOOK_SECRET") {
        Ok(secret) if !secret.is_empty() => secret,
        _ => return Err("set WEBHOOK_SECRET to the App's webhook secret".into()),
    };
    let config = Config::default()
        .addr(([0, 0, 0, 0], 8080))
        .secret(Secret::new(secret)?);
    let server = Server::bind(config, SupportBot).await?;
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
