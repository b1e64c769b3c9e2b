//! The LLM assistant of `examples/llm`: any OpenAI-compatible
//! chat-completions endpoint (the hosted API, or a local Ollama, vLLM or
//! llama.cpp server), its tokens streamed as the reply's chunks.
//!
//! Shared with the tests (`tests/it/llm.rs` includes this file), so what is
//! tested is what the example runs.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use partner_webhook::{Assistant, BoxError, Context, MessageReceived, Reply, Role, async_trait};
use serde_json::{Value, json};

/// What the end user is told when the model fails; the detail goes to the
/// log, never the upstream's body.
const UNAVAILABLE: &str = "the model is unavailable";

/// An assistant backed by `POST {base_url}/chat/completions` with `stream: true`.
pub(crate) struct Llm {
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
    system_prompt: String,
}

impl Llm {
    /// `base_url` like `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub(crate) fn new(
        base_url: &str,
        api_key: Option<String>,
        model: impl Into<String>,
        system_prompt: impl Into<String>,
    ) -> Self {
        // reqwest's TLS (rustls) needs a process-wide crypto provider; ring
        // builds with nothing but a C compiler. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Llm {
            client: reqwest::Client::new(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.filter(|key| !key.is_empty()),
            model: model.into(),
            system_prompt: system_prompt.into(),
        }
    }

    /// The chat messages for `message`: the system prompt, then the thread's
    /// `history_tail` oldest first (which ends with the current message), or
    /// the current message alone when the platform sent no history.
    pub(crate) fn messages(&self, message: &MessageReceived) -> Vec<Value> {
        let mut messages = Vec::new();
        if !self.system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": self.system_prompt}));
        }
        for entry in &message.history_tail {
            let role = match entry.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                // A role the model does not know is left out, not guessed.
                _ => continue,
            };
            messages.push(json!({"role": role, "content": entry.content}));
        }
        let ends_with_current = message
            .history_tail
            .last()
            .is_some_and(|last| last.role == Role::User && last.content == message.message.content);
        if !ends_with_current {
            messages.push(json!({"role": "user", "content": message.message.content}));
        }
        messages
    }
}

#[async_trait]
impl Assistant for Llm {
    async fn reply(&self, message: MessageReceived, _context: Context) -> Result<Reply, BoxError> {
        let body = json!({
            "model": self.model,
            "messages": self.messages(&message),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|error| {
            tracing::warn!(%error, "the model could not be reached");
            UNAVAILABLE
        })?;
        let status = response.status();
        if !status.is_success() {
            // The body may echo the request or the key's account: not read.
            tracing::warn!(status = status.as_u16(), "the model refused the request");
            return Err(UNAVAILABLE.into());
        }
        // Dropping this stream (a hang-up, a deadline) drops the response,
        // which closes the upstream connection and so cancels the completion.
        Ok(Reply::stream(tokens(response.bytes_stream())))
    }
}

/// The `delta.content` of each `data:` event of a chat-completions stream,
/// up to `data: [DONE]`.
fn tokens<S>(bytes: S) -> Pin<Box<dyn Stream<Item = Result<String, BoxError>> + Send>>
where
    S: Stream<Item = reqwest::Result<hyper::body::Bytes>> + Send + 'static,
{
    struct State<S> {
        bytes: Pin<Box<S>>,
        pending: Vec<u8>,
        done: bool,
    }
    let state = State {
        bytes: Box::pin(bytes),
        pending: Vec::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            loop {
                if state.done {
                    return None;
                }
                // One complete line, if one has arrived.
                if let Some(end) = state.pending.iter().position(|&byte| byte == b'\n') {
                    let line: Vec<u8> = state.pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                        continue;
                    };
                    if data == "[DONE]" {
                        return None;
                    }
                    match token(data) {
                        Ok(Some(text)) => return Some((Ok(text), state)),
                        Ok(None) => continue,
                        Err(error) => {
                            state.done = true;
                            return Some((Err(error), state));
                        }
                    }
                }
                match state.bytes.next().await {
                    Some(Ok(chunk)) => state.pending.extend_from_slice(&chunk),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the model's stream broke off");
                        state.done = true;
                        return Some((Err(UNAVAILABLE.into()), state));
                    }
                    None => {
                        tracing::warn!("the model's stream ended without [DONE]");
                        state.done = true;
                        return Some((Err(UNAVAILABLE.into()), state));
                    }
                }
            }
        },
    ))
}

/// The text of one event, `None` for an event without any (the role, the
/// usage); the usage is logged, as the reply's metadata is sent before it.
fn token(data: &str) -> Result<Option<String>, BoxError> {
    let event: Value = serde_json::from_str(data).map_err(|error| {
        tracing::warn!(%error, "the model sent an event that is not JSON");
        UNAVAILABLE
    })?;
    if let Some(usage) = event.get("usage").filter(|usage| !usage.is_null()) {
        tracing::info!(%usage, "model usage");
    }
    let text = event
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty());
    Ok(text.map(str::to_owned))
}
