//! Streaming assistant: answers word by word with a short pause between words,
//! like the platform's own streaming simulator, so the dashboard's Chat screen
//! shows the reply growing. The shape of an LLM assistant that streams tokens.
//!
//! ```sh
//! WEBHOOK_SECRET=<the App's webhook secret> cargo run --example stream
//! ```
//!
//! The environment is read as in the echo example: `PORT`, `WEBHOOK_SECRET`,
//! `REPLY_FORMAT` (`sse` by default; with `json` the words are joined into one
//! reply) and `PLATFORM_API_URL` (e.g. `http://localhost:8000`, to store the
//! streamed reply so it stays on the Chat screen).

use std::convert::Infallible;
use std::error::Error;
use std::time::Duration;

use partner_webhook::{Reply, assistant_fn};

mod common;

/// Pause before each word; a model producing a few words a second feels alike.
const PAUSE: Duration = Duration::from_millis(60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let words = assistant_fn(|message, _context| async move {
        let text = format!("Echo: {}", message.message.content);
        // Words keep their following space, so the chunks join back to `text`.
        let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
        let chunks = futures_util::stream::unfold(words.into_iter(), |mut words| async move {
            let word = words.next()?;
            tokio::time::sleep(PAUSE).await;
            Some((Ok::<_, Infallible>(word), words))
        });
        Ok::<_, Infallible>(Reply::stream(chunks))
    });
    common::serve(words).await
}
