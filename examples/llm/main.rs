//! An LLM assistant: any OpenAI-compatible chat-completions endpoint, the
//! hosted API or a local server (Ollama, vLLM, llama.cpp), its tokens
//! streamed to the dashboard's Chat screen as they come.
//!
//! ```sh
//! OPENAI_API_KEY=sk-... WEBHOOK_SECRET=<the App's secret> cargo run --example llm
//! OPENAI_BASE_URL=http://localhost:11434/v1 MODEL=llama3.2 cargo run --example llm   # Ollama
//! ```
//!
//! `OPENAI_BASE_URL` (default `https://api.openai.com/v1`), `OPENAI_API_KEY`
//! (optional for local servers), `MODEL` (default `gpt-4o-mini`),
//! `SYSTEM_PROMPT`; and, as in the echo example, `PORT`, `WEBHOOK_SECRET`,
//! `REPLY_FORMAT`, `PLATFORM_API_URL`, `REDIS_URL`, `METRICS_ADDR`.

use std::error::Error;

mod assistant;
#[path = "../common/mod.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let llm = assistant::Llm::new(
        &env("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        std::env::var("OPENAI_API_KEY").ok(),
        env("MODEL", "gpt-4o-mini"),
        env(
            "SYSTEM_PROMPT",
            "You are a helpful assistant. Answer briefly, in the user's language.",
        ),
    );
    common::serve(llm).await
}
