//! Hostile and broken clients against the real server: each case gets its answer, and the same
//! process goes on serving `/healthz` and an existing stream afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A live stream with one watcher, to check that abuse elsewhere does not touch it.
struct LiveStream {
    publisher: Ws,
    watcher: Ws,
    seq: u64,
}

impl LiveStream {
    fn open(server: &Server, name: &str) -> LiveStream {
        let mut watcher = Ws::connect(server.addr, &format!("/ws/watch/{name}"));
        assert_eq!(watcher.recv_json(), json!({"event": "publisher", "live": false}));
        let mut publisher = Ws::connect(server.addr, &format!("/ws/publish/{name}"));
        assert_eq!(publisher.recv_json(), json!({"event": "stream", "name": name}));
        assert_eq!(watcher.recv_json(), json!({"event": "publisher", "live": true}));
        LiveStream { publisher, watcher, seq: 0 }
    }

    /// One message through the relay, byte-identical.
    fn assert_flows(&mut self) {
        self.seq += 1;
        let m = media(4, self.seq, 1000);
        self.publisher.send_binary(&m);
        assert_eq!(self.watcher.recv_binary(), m);
    }
}

fn ok_status(server: &Server) -> u16 {
    get(server.addr, "/healthz").status
}

#[test]
fn slowloris_connections_time_out_while_normal_clients_are_served() {
    let server = Server::start_with("request_timeout_ms = 1500");
    let count = 1000;
    let mut slow: Vec<TcpStream> = (0..count).map(|_| connect(server.addr)).collect();
    let head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    // One byte per connection every 200 ms: a head that would take seconds to arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for byte in head {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for s in &mut slow {
                    // The server may already have answered and closed: that is the point.
                    let _ = s.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            done_tx.send(slow).unwrap();
        })
    };
    // A normal client is served throughout.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(ok_status(&server), 200);
        served += 1;
    }
    assert!(served > 10, "only {served} requests served during the attack");
    stop.store(true, Ordering::Relaxed);
    let mut slow = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    trickle.join().unwrap();
    for (i, s) in slow.iter_mut().enumerate() {
        let answer = String::from_utf8_lossy(&assert_closed(s)).into_owned();
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "connection {i}: {answer:?}");
    }
    assert!(server.metric("relay_http_responses_total{status=\"408\"}") > 0);
    server.wait_metric("relay_connections{kind=\"closing\"}", 0);
}

#[test]
fn a_connection_flood_is_refused_while_a_stream_keeps_flowing() {
    let mut server = Server::start_with("max_connections = 50");
    let mut stream = LiveStream::open(&server, "steady");
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(connect(server.addr));
        if held.len() % 20 == 0 {
            stream.assert_flows();
        }
    }
    stream.assert_flows();
    drop(held);
    wait_until("slots free up", || try_get(server.addr, "/healthz").is_some_and(|r| r.status == 200));
    // The stream's two connections and 48 of the flood fit; the other 152 (and any health
    // check that came before a slot freed up) were refused.
    assert!(server.metric("relay_connections_rejected_total") >= 152);
    assert!(server.metric("relay_http_responses_total{status=\"503\"}") >= 152, "each refusal answered 503");
    stream.assert_flows();
    server.assert_healthy();
}

#[test]
fn a_thousand_tiny_fragments_are_reassembled() {
    let server = Server::start_with("echo_endpoint = true");
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    let message: Vec<u8> = (0..1000u32).map(|i| (i % 200) as u8).collect();
    let mut bytes = Vec::new();
    for (i, b) in message.iter().enumerate() {
        let opcode = if i == 0 { 2 } else { 0 };
        bytes.extend(Ws::frame(i == message.len() - 1, opcode, &[*b]));
    }
    ws.send_raw(&bytes);
    let echoed = ws.recv_message();
    assert_eq!((echoed.opcode, echoed.payload), (2, message));
}

#[test]
fn random_bytes_get_400_or_a_protocol_close() {
    let mut server = Server::start_with("echo_endpoint = true");
    let mut stream = LiveStream::open(&server, "steady");
    // A deterministic pseudo-random generator: the same bytes every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for round in 0..20 {
        let mut s = connect(server.addr);
        let mut bytes = noise(512);
        bytes.extend_from_slice(b"\r\n\r\n");
        let _ = s.write_all(&bytes);
        let answer = String::from_utf8_lossy(&assert_closed(&mut s)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 405"), "round {round}: {answer:?}");
    }
    for round in 0..20 {
        let mut ws = Ws::connect(server.addr, "/ws/echo");
        ws.send_raw(&noise(300));
        // Unmasked, reserved bits, bad opcodes, bad lengths, or a frame still waiting for its
        // bytes when the peer leaves: either way the server closes, and nothing else breaks.
        let _ = ws.stream.shutdown(Shutdown::Write);
        assert_closed(&mut ws.stream);
        assert_eq!(ok_status(&server), 200, "round {round}");
    }
    stream.assert_flows();
    server.assert_healthy();
}

#[test]
fn a_ping_flood_without_reading_cannot_grow_a_queue() {
    let mut server = Server::start_with("echo_endpoint = true\nmax_message_bytes = 1000");
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    // Empty pings: 6 bytes each on the wire, each answer a 2-byte pong that costs far more
    // than 2 bytes in memory. Two million of them, and the client never reads.
    let ping = Ws::frame(true, 9, b"");
    let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 2_000_000).collect();
    let writer = std::thread::spawn(move || {
        let _ = ws.stream.set_write_timeout(Some(Duration::from_secs(20)));
        let _ = ws.stream.write_all(&flood);
        ws
    });
    let ws = writer.join().unwrap();
    // The own-output bound (1 MiB here) counts each queued frame's memory, not just its wire
    // bytes: a few thousand pongs at most, a few KiB on the wire.
    let queued = server.metric("relay_queued_bytes");
    assert!(queued <= 64 * 1024, "queued {queued} bytes of pongs for one ping flood");
    drop(ws);
    server.wait_metric("relay_connections{kind=\"echo\"}", 0);
    server.assert_healthy();
}

#[test]
fn peers_vanishing_mid_frame_leak_nothing() {
    let mut server = Server::start_with("watcher_queue_bytes = 100000");
    let mut stream = LiveStream::open(&server, "steady");
    // A publisher reset in the middle of a frame.
    let mut p = Ws::connect(server.addr, "/ws/publish/gone");
    let frame = Ws::frame(true, 2, &media(2, 1, 5000));
    p.send_raw(&frame[..frame.len() / 2]);
    // Unread data in our receive buffer (the stream event) turns the close into a reset.
    drop(p);
    // A watcher reset while the server is writing to it.
    let mut fast = Ws::connect(server.addr, "/ws/watch/steady");
    assert_eq!(fast.recv_json(), json!({"event": "publisher", "live": true}));
    let stalled = Ws::connect(server.addr, "/ws/watch/steady");
    for seq in 0..50 {
        // A new watcher waits for a key frame: start with one.
        let m = media(if seq == 0 { 2 } else { 3 }, seq, 20_000);
        stream.publisher.send_binary(&m);
        assert_eq!(stream.watcher.recv_binary(), m);
        assert_eq!(fast.recv_binary(), m);
    }
    drop(stalled);
    // A half-closed watcher: it sends FIN but could still read.
    let half = Ws::connect(server.addr, "/ws/watch/steady");
    half.stream.shutdown(Shutdown::Write).unwrap();
    stream.assert_flows();
    assert_eq!(fast.recv_binary(), media(4, stream.seq, 1000));
    drop((fast, half));
    // Everything but the live stream is gone, and nothing stays queued.
    server.wait_metric("relay_connections{kind=\"watcher\"}", 1);
    server.wait_metric("relay_connections{kind=\"publisher\"}", 1);
    server.wait_metric("relay_streams", 1);
    stream.assert_flows();
    server.wait_metric("relay_queued_bytes", 0);
    let mut rest = Vec::new();
    let _ = stream.watcher.stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.watcher.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing unexpected for the steady watcher");
    server.assert_healthy();
}
