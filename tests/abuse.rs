//! Hostile and broken clients against the real server: each case gets its answer, and the same
//! process goes on serving `/healthz` and an existing stream afterwards.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Growth of the server's RSS that any case here must stay under: far below what buffering
/// an announced length, a flood or a queue without bound would take.
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

/// The server's RSS grew less than `RSS_GROWTH_BOUND` since `before` (from `rss_bytes`).
fn assert_rss_growth_bounded(server: &Server, before: u64, during: &str) {
    let growth = server.rss_bytes().saturating_sub(before);
    assert!(growth < RSS_GROWTH_BOUND, "RSS grew {growth} bytes {during}");
}

fn ok_status(server: &Server) -> u16 {
    get(server.addr, "/healthz").status
}

/// One slowloris connection: when it was opened, what the server answered, when it closed.
struct SlowClient {
    stream: TcpStream,
    /// Taken before `connect`, so the server cannot have accepted it earlier.
    opened: Instant,
    answer: Vec<u8>,
    closed: Option<Instant>,
}

impl SlowClient {
    /// Reads what has arrived without blocking; notes the time the server closed.
    fn poll(&mut self) {
        let mut buf = [0u8; 1024];
        while self.closed.is_none() {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = Some(Instant::now()),
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.closed = Some(Instant::now()),
            }
        }
        // Our side too, so the server's closing connection is freed at once.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// `count` connections that each send a request head one byte per second, until the server
/// has closed all of them or `give_up` passes.
fn slowloris(addr: SocketAddr, count: usize, give_up: Duration) -> Vec<SlowClient> {
    let head = b"GET / HTTP/1.1\r\nHost: slow\r\nUser-Agent: one byte per second, never done\r\n";
    assert!(head.len() as u64 > give_up.as_secs(), "the head outlasts the attack");
    let mut clients: Vec<SlowClient> = (0..count)
        .map(|_| {
            let opened = Instant::now();
            let stream = connect(addr);
            stream.set_nonblocking(true).unwrap();
            SlowClient { stream, opened, answer: Vec::new(), closed: None }
        })
        .collect();
    let started = Instant::now();
    for (second, byte) in (1..).zip(head) {
        for c in clients.iter_mut().filter(|c| c.closed.is_none()) {
            // The server may have answered and shut its side: that is the point.
            let _ = c.stream.write(&[*byte]);
            c.poll();
        }
        if clients.iter().all(|c| c.closed.is_some()) || started.elapsed() > give_up {
            break;
        }
        // Paces the trickle: the next byte one second after the previous one.
        std::thread::sleep((started + Duration::from_secs(second)).saturating_duration_since(Instant::now()));
    }
    clients
}

#[test]
fn slowloris_connections_time_out_while_normal_clients_are_served() {
    let timeout = Duration::from_millis(3000);
    let mut server = Server::start_with(&format!("request_timeout_ms = {}", timeout.as_millis()));
    let mut stream = LiveStream::open(&server, "steady");
    let give_up = timeout + DEADLINE;
    let attack = std::thread::spawn({
        let addr = server.addr;
        move || slowloris(addr, 1000, give_up)
    });
    // A normal client is served throughout, each request well within a second (a bound, not
    // a benchmark: it fails only on a visible stall).
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while !attack.is_finished() {
        let asked = Instant::now();
        assert_eq!(ok_status(&server), 200);
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(1), "request {served} took {took:?} during the attack");
        slowest = slowest.max(took);
        served += 1;
        // Paces the normal client at about 20 requests a second.
        std::thread::sleep(Duration::from_millis(50));
    }
    let clients = attack.join().unwrap();
    assert!(served >= 20, "only {served} requests during the attack (slowest {slowest:?})");
    for (i, c) in clients.iter().enumerate() {
        let answer = String::from_utf8_lossy(&c.answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "connection {i}: {answer:?}");
        let closed = c.closed.unwrap_or_else(|| panic!("connection {i} still open after {give_up:?}"));
        let lived = closed - c.opened;
        // Not before request_timeout_ms, and not long after it.
        assert!(lived >= timeout, "connection {i} closed after {lived:?}, before request_timeout_ms");
        assert!(lived < give_up, "connection {i} closed after {lived:?}");
    }
    assert!(server.metric("relay_http_responses_total{status=\"408\"}") > 0);
    server.wait_metric("relay_connections{kind=\"closing\"}", 0);
    server.assert_still_serves(&mut stream);
}

#[test]
fn a_connection_flood_is_refused_while_a_stream_keeps_flowing() {
    let mut server = Server::start_with("max_connections = 50");
    let mut stream = LiveStream::open(&server, "steady");
    let rss_before = server.rss_bytes();
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(connect(server.addr));
        if held.len() % 50 == 0 {
            stream.assert_flows();
        }
    }
    stream.assert_flows();
    // While the flood is held (no /metrics now: every slot is taken).
    assert_rss_growth_bounded(&server, rss_before, "during the flood");
    drop(held);
    wait_until("slots free up", || try_get(server.addr, "/healthz").is_some_and(|r| r.status == 200));
    // The stream's two connections and 48 of the flood fit; the other 952 (and any health
    // check that came before a slot freed up) were refused.
    assert!(server.metric("relay_connections_rejected_total") >= 952);
    assert!(server.metric("relay_http_responses_total{status=\"503\"}") >= 952, "each refusal answered 503");
    server.assert_still_serves(&mut stream);
}

#[test]
fn a_thousand_tiny_fragments_are_reassembled() {
    let mut server = Server::start_with("echo_endpoint = true");
    let mut stream = LiveStream::open(&server, "steady");
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
    server.assert_still_serves(&mut stream);
}

#[test]
fn frame_headers_announcing_huge_lengths_allocate_nothing() {
    // The default max_message_bytes: 16 MiB.
    let mut server = Server::start_with("echo_endpoint = true");
    let mut stream = LiveStream::open(&server, "steady");
    let rss_before = server.rss_bytes();
    let cases = [
        ((16 << 20) + 1, 1009, "just over max_message_bytes"),
        (1 << 62, 1009, "2^62"),
        ((1 << 63) - 1, 1009, "2^63-1, the largest length RFC 6455 allows"),
        // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
        (1 << 63, 1002, "2^63: the top bit set is a protocol error"),
        (u64::MAX, 1002, "2^64-1: the top bit set is a protocol error"),
    ];
    for path in ["/ws/echo", "/ws/publish/huge", "/ws/watch/steady"] {
        for (announced, code, what) in cases {
            let mut ws = Ws::connect(server.addr, path);
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&u64::to_be_bytes(announced));
            header.extend_from_slice(&[1, 2, 3, 4]);
            ws.send_raw(&header);
            assert_eq!(ws.recv_close(), code, "{path}: a header announcing {what}");
            assert_closed(&mut ws.stream);
        }
    }
    assert_rss_growth_bounded(&server, rss_before, "for frame headers alone");
    server.assert_still_serves(&mut stream);
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
    server.assert_still_serves(&mut stream);
}

/// How a client leaves in the middle of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// Shuts its write side (FIN) and waits for the server to close.
    Close,
    /// Closes with unread input, which makes the kernel send a reset (RST).
    Reset,
}

/// Half headers and half payloads, on every kind of WebSocket, each left both ways.
fn truncations() -> Vec<(&'static str, usize, Leave)> {
    // 8 header bytes (2, a 16-bit length, the mask), then 5009 bytes of payload.
    let half_payload = truncated_frame().len() / 2;
    let mut cases = Vec::new();
    for path in ["/ws/echo", "/ws/publish/cut", "/ws/watch/steady"] {
        for cut in [1, 4, half_payload] {
            cases.extend([(path, cut, Leave::Close), (path, cut, Leave::Reset)]);
        }
    }
    cases
}

fn truncated_frame() -> Vec<u8> {
    Ws::frame(true, 2, &media(2, 1, 5000))
}

/// Opens `path`, sends the first `cut` bytes of a frame, leaves; then waits until the server
/// has freed everything of it: the gauges are back to the live stream alone, the name is free
/// again, nothing is queued. Returns the client's address, as the server logs it.
fn truncate_and_wait_until_freed(server: &Server, path: &str, cut: usize, leave: Leave) -> String {
    let mut ws = Ws::connect(server.addr, path);
    let peer = ws.stream.local_addr().unwrap().to_string();
    // A ping's pong is input we leave unread (the reset) or read before the server closes.
    ws.send(9, b"unread");
    ws.stream.peek(&mut [0]).unwrap();
    ws.send_raw(&truncated_frame()[..cut]);
    match leave {
        Leave::Close => {
            ws.stream.shutdown(Shutdown::Write).unwrap();
            assert_closed(&mut ws.stream);
        }
        Leave::Reset => drop(ws),
    }
    for (kind, open) in [("http", 1), ("publisher", 1), ("watcher", 1), ("echo", 0), ("closing", 0)] {
        server.wait_metric(&format!("relay_connections{{kind=\"{kind}\"}}"), open);
    }
    server.wait_metric("relay_streams", 1);
    server.wait_metric("relay_queued_bytes", 0);
    peer
}

/// docs/protocol.md: "Every close and its code is logged and counted in
/// relay_websocket_closes_total{code}"; 1006 is a WebSocket that ended without a close frame.
fn assert_logged_and_counted_as_1006(server: &Server, peer: &str, count: u64, case: &str) {
    server.wait_metric("relay_websocket_closes_total{code=\"1006\"}", count);
    wait_until(&format!("a log line for {case} ({peer}) with its code 1006"), || {
        server.log().lines().any(|l| l.contains(peer) && l.contains("1006"))
    });
}

#[test]
fn truncated_frames_are_logged_and_freed() {
    let mut server = Server::start_with("echo_endpoint = true");
    let mut stream = LiveStream::open(&server, "steady");
    for (count, (path, cut, leave)) in (1..).zip(truncations()) {
        let peer = truncate_and_wait_until_freed(&server, path, cut, leave);
        // Left with a FIN or reset mid-frame: either way a WebSocket ended with no close frame.
        assert_logged_and_counted_as_1006(&server, &peer, count, &format!("{path}: {cut} bytes, {leave:?}"));
        stream.assert_flows();
    }
    server.assert_still_serves(&mut stream);
}

#[test]
fn a_ping_flood_without_reading_cannot_grow_a_queue() {
    let mut server = Server::start_with("echo_endpoint = true\nmax_message_bytes = 1000");
    let mut stream = LiveStream::open(&server, "steady");
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
    // The stream flows while the flood goes on.
    let give_up = Instant::now() + Duration::from_secs(60);
    while !writer.is_finished() {
        assert!(Instant::now() < give_up, "the ping flood was not taken in time");
        stream.assert_flows();
    }
    let ws = writer.join().unwrap();
    // The own-output bound (1 MiB here) counts each queued frame's memory, not just its wire
    // bytes: a few thousand pongs at most, a few KiB on the wire.
    let queued = server.metric("relay_queued_bytes");
    assert!(queued <= 64 * 1024, "queued {queued} bytes of pongs for one ping flood");
    drop(ws);
    server.wait_metric("relay_connections{kind=\"echo\"}", 0);
    server.assert_still_serves(&mut stream);
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
    let m = stream.assert_flows();
    assert_eq!(fast.recv_binary(), m);
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
    let _ = stream.watcher.stream.set_read_timeout(Some(DEADLINE));
    server.assert_still_serves(&mut stream);
}
