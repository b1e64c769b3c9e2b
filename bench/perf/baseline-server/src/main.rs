//! Bare hyper 1.x (http1, tokio multi-thread runtime, like the `echo` example):
//! reads the whole request body and answers a fixed small JSON reply. The
//! baseline of bench/perf: the least any hyper server must spend per request.
//!
//! `PORT` (default 18300); listens on 127.0.0.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const REPLY: &[u8] = br#"{"reply":"Echo: ok"}"#;

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body whole, as any webhook must before verifying it.
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    std::hint::black_box(body);
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REPLY)))
        .unwrap_or_default();
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(18300);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("baseline-server listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
