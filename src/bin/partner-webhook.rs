//! `partner-webhook`: talk to a partner webhook the way the platform does,
//! without the platform (feature `cli`).
//!
//! - `send` builds a `message_received` payload as the real sender does, signs
//!   it as it signs (the `\u`-escaped form, sent raw), sends it with its
//!   headers, and judges the answer by the platform's own rules;
//! - `sign` prints the two signature headers for a body, for curl;
//! - `verify` says whether a captured request verifies, and in which form.
//!
//! Plain `http://` only: there is no TLS client.

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use partner_webhook::testing::{self, MessageBuilder};
use partner_webhook::{Secret, escape_non_ascii, sign};
use serde_json::{Value, json};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(name = "partner-webhook", version, about)]
struct Cli {
    /// Print one JSON object instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// `send`'s arguments, as parsed.
#[derive(Args)]
struct SendArgs {
    /// The webhook URL (http:// only).
    #[arg(long)]
    url: String,
    /// The App's webhook secret; without it the request is unsigned, as for
    /// an App without a secret.
    #[arg(long)]
    secret: Option<String>,
    /// The user's message.
    #[arg(long, default_value = "Hello from the partner-webhook CLI")]
    message: String,
    /// Entries of `history_tail`, at most 10.
    #[arg(long, default_value_t = 2)]
    history: usize,
    /// The thread's customer id.
    #[arg(long)]
    customer: Option<String>,
    /// Send the dashboard's exact "Test webhook" payload (answered with JSON).
    #[arg(long)]
    test_button: bool,
    /// Read the answer as the Chat screen does (text/event-stream).
    #[arg(long)]
    stream: bool,
    /// Sign the raw body instead of the escaped form the real sender signs.
    #[arg(long)]
    sign_raw: bool,
    /// Seconds to wait for each read, as the platform's per-read timeout.
    #[arg(long, default_value_t = 8.0)]
    timeout: f64,
}

impl SendArgs {
    fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.001))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Send a message as the platform's sender does and judge the answer as
    /// the platform would. Exit code 0 only when the platform would accept it.
    Send(SendArgs),
    /// Print X-Timestamp and X-Signature for the body on standard input,
    /// signed as the real sender signs (the escaped form).
    Sign {
        /// The App's webhook secret.
        #[arg(long)]
        secret: String,
        /// Unix seconds; now by default.
        #[arg(long)]
        timestamp: Option<u64>,
    },
    /// Say whether a captured request (body on standard input) verifies, and
    /// which form matched: the raw body, or the escaped form the sender signs.
    Verify {
        /// The App's webhook secret.
        #[arg(long)]
        secret: String,
        /// The captured X-Timestamp.
        #[arg(long)]
        timestamp: u64,
        /// The captured X-Signature.
        #[arg(long)]
        signature: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(error) => return fail(cli.json, &format!("could not start: {error}")),
            };
            runtime.block_on(send(&args, cli.json))
        }
        Command::Sign { secret, timestamp } => sign_command(&secret, timestamp, cli.json),
        Command::Verify {
            secret,
            timestamp,
            signature,
        } => verify_command(&secret, timestamp, &signature, cli.json),
    };
    result.unwrap_or_else(|error| fail(cli.json, &error))
}

/// A usage or connection problem: exit code 2, with the reason.
fn fail(json: bool, error: &str) -> ExitCode {
    if json {
        say(&json!({ "error": error }).to_string());
    } else {
        eprintln!("error: {error}");
    }
    ExitCode::from(2)
}

fn say(line: &str) {
    #[allow(clippy::print_stdout, reason = "a command-line tool's output")]
    {
        println!("{line}");
    }
}

/// What was received, with each body read's arrival time.
struct Received {
    status: u16,
    content_type: String,
    latency_ms: f64,
    reads: Vec<(f64, Bytes)>,
}

async fn send(options: &SendArgs, json_output: bool) -> Result<ExitCode, String> {
    let target = Target::parse(&options.url)?;
    let secret = options
        .secret
        .as_deref()
        .filter(|secret| !secret.is_empty())
        .map(Secret::new)
        .transpose()
        .map_err(|error| error.to_string())?;
    let mut builder = if options.test_button {
        MessageBuilder::test_button()
    } else {
        MessageBuilder::new(options.message.as_str()).history(options.history)
    };
    if let Some(customer) = &options.customer {
        builder = builder.customer(customer.as_str());
    }
    let body = builder.body();
    let mut request = testing::signed_request(&body, secret.as_ref(), unix_now());
    if let (Some(secret), true) = (&secret, options.sign_raw) {
        let timestamp = unix_now();
        let headers = request.headers_mut();
        headers.insert("x-timestamp", timestamp.into());
        let raw = sign(secret, timestamp, &body);
        headers.insert("x-signature", raw.parse().map_err(|_| "bad signature")?);
    }
    let received = exchange(
        &target,
        request,
        options.read_timeout(),
        options.stream,
        json_output,
    )
    .await?;
    let verdict = if options.stream && !options.test_button {
        judge_stream(&received)
    } else {
        judge_json(&received)
    };
    report(&received, secret.is_some(), &verdict, json_output);
    Ok(if verdict.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("{url:?} is not a URL such as http://127.0.0.1:8080/webhook"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https:// is not supported: this tool has no TLS client and speaks \
                            plain HTTP only. Send to the server's own http:// address (for a \
                            tunnel, its local side, e.g. http://127.0.0.1:8080)"
                        .to_owned(),
                );
            }
            _ => return Err(format!("{url:?} must start with http://")),
        }
        let authority = uri.authority().ok_or("the URL names no host")?;
        Ok(Target {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.to_string(),
            path: uri
                .path_and_query()
                .map_or("/".to_owned(), ToString::to_string),
        })
    }
}

async fn exchange(
    target: &Target,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    print_frames: bool,
    json_output: bool,
) -> Result<Received, String> {
    let (mut parts, body) = request.into_parts();
    parts.uri = target.path.parse().map_err(|_| "bad path")?;
    parts
        .headers
        .insert("host", target.authority.parse().map_err(|_| "bad host")?);
    let request = Request::from_parts(parts, body);
    let started = Instant::now();
    let waited = || {
        format!(
            "no answer within {:.1} s (the platform gives up here too)",
            timeout.as_secs_f64()
        )
    };
    let stream = tokio::time::timeout(
        timeout,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| waited())?
    .map_err(|error| {
        format!(
            "could not connect to {}: {error}; is the server running on that port?",
            target.authority
        )
    })?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| waited())?
        .map_err(|error| format!("the server closed the connection without an answer: {error}"))?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = response.into_body();
    let mut reads = Vec::new();
    while let Some(frame) = tokio::time::timeout(timeout, body.frame())
        .await
        .map_err(|_| waited())?
    {
        let frame = frame.map_err(|error| format!("the answer broke off: {error}"))?;
        if let Ok(data) = frame.into_data() {
            let at = started.elapsed().as_secs_f64() * 1000.0;
            if print_frames && !json_output {
                // One line per read: an event's two lines side by side.
                let shown = String::from_utf8_lossy(&data)
                    .trim_end()
                    .replace('\n', "  ");
                say(&format!("{at:>9.1} ms  {shown}"));
            }
            reads.push((at, data));
        }
    }
    Ok(Received {
        status,
        content_type,
        latency_ms,
        reads,
    })
}

/// What the platform would make of an answer.
struct Verdict {
    reply: Option<String>,
    frames: Vec<Value>,
    problems: Vec<String>,
}

impl Verdict {
    /// Both paths' first rule: exactly 200. Anything else is shown to the end
    /// user with the first 200 characters of its body.
    fn of_status(received: &Received) -> Self {
        let mut verdict = Verdict {
            reply: None,
            frames: Vec::new(),
            problems: Vec::new(),
        };
        if received.status != 200 {
            let body = body_of(received);
            let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            verdict.problems.push(format!(
                "status {} (the end user sees: {shown})",
                received.status
            ));
        }
        verdict
    }
}

fn body_of(received: &Received) -> Vec<u8> {
    received
        .reads
        .iter()
        .flat_map(|(_, data)| data.to_vec())
        .collect()
}

/// The run API's and Test button's rules: exactly 200, a JSON object with a
/// non-null `reply` (a non-string one is shown through Python's `str()`).
fn judge_json(received: &Received) -> Verdict {
    let mut verdict = Verdict::of_status(received);
    if !verdict.problems.is_empty() {
        return verdict;
    }
    let body = body_of(received);
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => match object.get("reply") {
            None | Some(Value::Null) => verdict
                .problems
                .push("no \"reply\" in the JSON object".to_owned()),
            Some(Value::String(text)) => verdict.reply = Some(text.clone()),
            Some(other) => verdict.reply = Some(other.to_string()),
        },
        Ok(_) => verdict
            .problems
            .push("the body is JSON but not an object".to_owned()),
        Err(error) => verdict
            .problems
            .push(format!("the body is not JSON ({error})")),
    }
    verdict
}

/// The Chat screen's rules: 200, `text/event-stream`, well-formed ASCII
/// events (`event:` then one `data:` line of JSON), ending with `done`.
fn judge_stream(received: &Received) -> Verdict {
    let mut verdict = Verdict::of_status(received);
    if !verdict.problems.is_empty() {
        return verdict;
    }
    if !received.content_type.contains("text/event-stream") {
        verdict.problems.push(format!(
            "Content-Type {:?}: the stream path refuses anything but text/event-stream",
            received.content_type
        ));
        return verdict;
    }
    if received.reads.iter().any(|(_, data)| !data.is_ascii()) {
        verdict.problems.push(
            "non-ASCII bytes in a frame: the platform decodes each read on its own, so a \
             character split across reads becomes U+FFFD"
                .to_owned(),
        );
    }
    let text = String::from_utf8_lossy(&body_of(received)).into_owned();
    let mut joined = String::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|event| !event.trim().is_empty()) {
        let lines: Vec<&str> = event.lines().collect();
        let name = lines
            .iter()
            .find_map(|line| line.strip_prefix("event:"))
            .map(str::trim);
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|line| line.strip_prefix("data:"))
            .collect();
        let (Some(name), [data]) = (name, data.as_slice()) else {
            verdict.problems.push(format!(
                "malformed event (needs event: and one data: line): {event:?}"
            ));
            continue;
        };
        let Ok(data) = serde_json::from_str::<Value>(data.trim()) else {
            verdict
                .problems
                .push(format!("{name} data is not JSON: {data:?}"));
            continue;
        };
        match name {
            "delta" => joined.push_str(data["text"].as_str().unwrap_or_default()),
            "error" => verdict.problems.push(format!(
                "the stream reported an error: {}",
                data["message"].as_str().unwrap_or_default()
            )),
            "done" => done = true,
            _ => {}
        }
        verdict.frames.push(json!({ "event": name, "data": data }));
    }
    if !done {
        verdict
            .problems
            .push("the stream ended without a done event".to_owned());
    }
    verdict.reply = Some(joined);
    verdict
}

fn report(received: &Received, signed: bool, verdict: &Verdict, json_output: bool) {
    let accepted = verdict.problems.is_empty();
    if json_output {
        let reads: Vec<Value> = received
            .reads
            .iter()
            .map(|(at, data)| json!({ "at_ms": at, "text": String::from_utf8_lossy(data) }))
            .collect();
        say(&json!({
            "status": received.status,
            "latency_ms": received.latency_ms,
            "signed": signed,
            "content_type": received.content_type,
            "reply": verdict.reply,
            "frames": verdict.frames,
            "reads": reads,
            "accepted": accepted,
            "problems": verdict.problems,
        })
        .to_string());
        return;
    }
    say(&format!(
        "status {} in {:.1} ms ({})",
        received.status,
        received.latency_ms,
        if signed {
            "signed"
        } else {
            "unsigned: no secret given"
        }
    ));
    if let Some(reply) = &verdict.reply {
        say(&format!("reply: {reply}"));
    }
    if accepted {
        say("verdict: accepted, the platform would show this reply");
    } else {
        for problem in &verdict.problems {
            say(&format!("verdict: REJECTED, {problem}"));
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|error| format!("could not read the body from standard input: {error}"))?;
    Ok(body)
}

fn sign_command(
    secret: &str,
    timestamp: Option<u64>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let secret = Secret::new(secret).map_err(|error| error.to_string())?;
    let body = read_stdin()?;
    let timestamp = timestamp.unwrap_or_else(unix_now);
    let signature = testing::platform_signature(&secret, timestamp, &body);
    if json_output {
        say(&json!({ "x_timestamp": timestamp.to_string(), "x_signature": signature }).to_string());
    } else {
        say(&format!("X-Timestamp: {timestamp}"));
        say(&format!("X-Signature: {signature}"));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_command(
    secret: &str,
    timestamp: u64,
    signature: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let secret = Secret::new(secret).map_err(|error| error.to_string())?;
    let body = read_stdin()?;
    let wanted = signature.trim().to_ascii_lowercase();
    let raw = sign(&secret, timestamp, &body) == wanted;
    let escaped = std::str::from_utf8(&body)
        .is_ok_and(|text| sign(&secret, timestamp, escape_non_ascii(text).as_bytes()) == wanted);
    let form = match (raw, escaped) {
        (true, _) => Some("raw body"),
        (false, true) => Some("escaped form (\\uXXXX, as the platform signs non-ASCII)"),
        (false, false) => None,
    };
    let skew = i128::from(timestamp) - i128::from(unix_now());
    if json_output {
        say(&json!({ "verifies": form.is_some(), "form": form, "skew_secs": skew }).to_string());
    } else {
        match form {
            Some(form) => say(&format!("verifies: the signature matches the {form}")),
            None => say(
                "does not verify: neither the raw body nor its escaped form was signed with \
                 this secret at this timestamp (check the secret, and that nothing changed \
                 the body)",
            ),
        }
        say(&format!(
            "X-Timestamp is {} s {} now (the default window is 300 s)",
            skew.unsigned_abs(),
            if skew < 0 { "before" } else { "after" }
        ));
    }
    Ok(if form.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
