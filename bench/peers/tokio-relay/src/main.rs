//! Benchmark peer: the camrelay relay contract written the way most tokio users would.
//!
//! `/ws/publish/{name}`: one publisher per stream; `/ws/watch/{name}`: any number of watchers.
//! Every binary message goes through one `tokio::sync::broadcast` channel per stream, so each
//! watcher task writes the same `Bytes` (tungstenite frames it once per watcher). Text is ignored.
//!
//! Usage: `tokio-relay PORT` (0 picks a free port; the real one is printed on stdout).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Messages a stream's channel holds. At the benchmark's largest rate-limited load (100 KB × 60/s)
/// this is 17 s of video, so a watcher that keeps up never lags; it costs nothing until used
/// because the channel stores `Bytes` handles, not copies.
const CHANNEL_CAPACITY: usize = 1024;
/// The publisher waits while more than this many messages are unread by the slowest watcher:
/// without it an as-fast-as-possible publisher overruns the ring and watchers lose messages.
const PUBLISH_HIGH_WATER: usize = CHANNEL_CAPACITY / 2;

type Streams = Arc<Mutex<HashMap<String, broadcast::Sender<Bytes>>>>;

fn channel(streams: &Streams, name: &str) -> broadcast::Sender<Bytes> {
    let mut map = streams.lock().unwrap();
    map.entry(name.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).clone()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let streams: Streams = Arc::default();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let streams = streams.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, streams).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn serve(tcp: TcpStream, streams: Streams) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tcp.set_nodelay(true)?;
    let mut path = String::new();
    let mut subscription = None;
    // The error type is tungstenite's callback contract, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let route = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        // Subscribe before the 101 goes out: a watcher that saw its handshake complete must
        // receive everything published after that.
        if let Some(name) = path.strip_prefix("/ws/watch/") {
            subscription = Some(channel(&streams, name).subscribe());
        }
        Ok(resp)
    };
    // The default 128 KiB read buffer is zero-filled before every read, tripling this relay's CPU;
    // 4 KiB is what a tuned deployment uses.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(tcp, route, Some(config)).await?;

    if let Some(name) = path.strip_prefix("/ws/publish/") {
        let tx = channel(&streams, name);
        let (_sink, mut source) = ws.split();
        while let Some(msg) = source.next().await {
            match msg? {
                Message::Binary(data) => {
                    while tx.len() > PUBLISH_HIGH_WATER {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // An error only means nobody is watching yet.
                    let _ = tx.send(data);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    } else if let Some(mut rx) = subscription {
        let name = &path["/ws/watch/".len()..];
        let (mut sink, mut source) = ws.split();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(data) => sink.send(Message::Binary(data)).await?,
                    Err(RecvError::Lagged(n)) => eprintln!("watcher of {name} lagged, {n} messages lost"),
                    Err(RecvError::Closed) => break,
                },
                // Read to answer pings and notice the watcher leaving.
                incoming = source.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    Ok(())
}
