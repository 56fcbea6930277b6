//! Streams against the real server: fan-out, late join, publisher rules, slow watchers.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LIVE: fn() -> serde_json::Value = || json!({"event": "publisher", "live": true});
const NOT_LIVE: fn() -> serde_json::Value = || json!({"event": "publisher", "live": false});

fn publisher(server: &Server, name: &str) -> Ws {
    let mut p = Ws::connect(server.addr, &format!("/ws/publish/{name}"));
    assert_eq!(p.recv_json(), json!({"event": "stream", "name": name}));
    p
}

fn watcher(server: &Server, name: &str) -> Ws {
    Ws::connect(server.addr, &format!("/ws/watch/{name}"))
}

#[test]
fn every_watcher_gets_every_message_byte_identical_and_in_order() {
    let server = Server::start();
    let mut watchers: Vec<Ws> = (0..3).map(|_| watcher(&server, "cam")).collect();
    for w in &mut watchers {
        assert_eq!(w.recv_json(), NOT_LIVE());
    }
    let mut p = publisher(&server, "cam");
    for w in &mut watchers {
        assert_eq!(w.recv_json(), LIVE());
    }
    let sizes = [0usize, 1, 124, 125, 126, 65_535, 65_536, 200_000, 3, 40_000];
    let sent: Vec<Vec<u8>> = (0..200u64)
        .map(|seq| {
            let kind = match seq % 10 {
                0 => 2,
                5 => 4,
                9 => 7,
                _ => 3,
            };
            media(kind, seq, sizes[seq as usize % sizes.len()])
        })
        .collect();
    let mut readers = Vec::new();
    for mut w in watchers {
        let want = sent.clone();
        readers.push(std::thread::spawn(move || {
            for (i, m) in want.iter().enumerate() {
                assert_eq!(&w.recv_binary(), m, "message {i}");
            }
            w
        }));
    }
    for m in &sent {
        p.send_binary(m);
    }
    let _watchers: Vec<Ws> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    server.wait_metric("relay_messages_in_total", 200);
    server.wait_metric("relay_messages_out_total", 600);
    let bytes: u64 = sent.iter().map(|m| m.len() as u64).sum();
    assert_eq!(server.metric("relay_bytes_in_total"), bytes);
    // Out counts frame bytes: each message with its 2, 4 or 10 byte server header, per watcher.
    let header = |len: usize| match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    let framed: u64 = sent.iter().map(|m| (m.len() + header(m.len())) as u64).sum();
    assert_eq!(server.metric("relay_bytes_out_total"), 3 * framed);
    let streams = get(server.addr, "/api/streams").json();
    assert_eq!(streams[0]["name"], "cam");
    assert_eq!(streams[0]["watchers"], 3);
    assert_eq!(streams[0]["messages_in"], 200);
    assert_eq!(streams[0]["bytes_in"], bytes);
    assert!(streams[0]["live_since_ms"].as_u64().unwrap() > 1_700_000_000_000);
}

#[test]
fn late_joiner_gets_init_then_the_latest_key_frame_group() {
    let server = Server::start();
    let mut p = publisher(&server, "late");
    let init = media(1, 0, 50);
    let (old_key, key, delta1, audio, delta2) =
        (media(2, 1, 1000), media(2, 2, 900), media(3, 3, 100), media(4, 4, 30), media(3, 5, 100));
    for m in [&init, &old_key, &media(3, 9, 10), &key, &delta1, &audio, &delta2] {
        p.send_binary(m);
    }
    server.wait_metric("relay_messages_in_total", 7);
    let mut w = watcher(&server, "late");
    assert_eq!(w.recv_json(), LIVE());
    assert_eq!(w.recv_binary(), init);
    assert_eq!(w.recv_binary(), key);
    assert_eq!(w.recv_binary(), delta1);
    assert_eq!(w.recv_binary(), delta2, "audio is not cached");
    let live = media(3, 6, 10);
    p.send_binary(&live);
    assert_eq!(w.recv_binary(), live);
    // The publisher hears about the new watcher and is asked for a key frame.
    let mut events = vec![p.recv_json(), p.recv_json()];
    events.sort_by_key(|e| e.to_string());
    assert_eq!(events, vec![json!({"event": "watchers", "count": 1}), json!({"event": "keyframe"})]);
}

#[test]
fn a_live_name_is_taken_409_until_the_publisher_leaves() {
    let server = Server::start();
    let mut first = publisher(&server, "taken");
    assert_eq!(Ws::try_connect(server.addr, "/ws/publish/taken", "").err().unwrap().status, 409);
    assert_eq!(get(server.addr, "/api/publish/taken").status, 409);
    first.close(1000);
    assert_eq!(first.recv_close(), 1000);
    wait_until("the name is free", || get(server.addr, "/api/publish/taken").status == 200);
    publisher(&server, "taken");
}

#[test]
fn publisher_leaves_and_a_new_one_takes_over_without_watchers_reconnecting() {
    let server = Server::start();
    let mut w = watcher(&server, "relay");
    assert_eq!(w.recv_json(), NOT_LIVE());
    let mut p = publisher(&server, "relay");
    assert_eq!(w.recv_json(), LIVE());
    p.send_binary(&media(2, 1, 10));
    assert_eq!(w.recv_binary(), media(2, 1, 10));
    drop(p); // vanishes without a close frame
    assert_eq!(w.recv_json(), NOT_LIVE());
    assert_eq!(get(server.addr, "/api/streams").json(), json!([]));
    let mut p2 = publisher(&server, "relay");
    assert_eq!(w.recv_json(), LIVE());
    assert_eq!(p2.recv_json(), json!({"event": "watchers", "count": 1}));
    p2.send_binary(&media(2, 7, 10));
    assert_eq!(w.recv_binary(), media(2, 7, 10), "the old stream's cache is gone");
}

#[test]
fn watchers_leaving_update_the_count_and_forget_the_stream() {
    let server = Server::start();
    let mut p = publisher(&server, "count");
    let w1 = watcher(&server, "count");
    assert_eq!(p.recv_json()["count"], 1);
    drop(w1);
    let mut counts = Vec::new();
    while counts.last() != Some(&0) {
        let e = p.recv_json();
        if e["event"] == "watchers" {
            counts.push(e["count"].as_u64().unwrap());
        }
    }
    assert_eq!(counts, vec![0]);
    drop(p);
    server.wait_metric("relay_streams", 0);
}

#[test]
fn publish_without_a_name_gets_a_random_one() {
    let server = Server::start();
    let mut p = Ws::connect(server.addr, "/ws/publish");
    let e = p.recv_json();
    let name = e["name"].as_str().unwrap().to_owned();
    assert_eq!(e["event"], "stream");
    assert!(name.len() >= 8 && name.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
    wait_until("the stream is listed", || get(server.addr, "/api/streams").json()[0]["name"] == name.as_str());
}

#[test]
fn empty_binary_message_closes_the_publisher_with_1007() {
    let server = Server::start();
    let mut p = publisher(&server, "empty");
    p.send_binary(&[]);
    assert_eq!(p.recv_close(), 1007);
}

#[test]
fn text_from_clients_is_ignored() {
    let server = Server::start();
    let mut p = publisher(&server, "text");
    let mut w = watcher(&server, "text");
    assert_eq!(w.recv_json(), LIVE());
    p.send(1, b"{\"hello\":1}");
    w.send(1, b"hi");
    p.send_binary(&media(4, 1, 5));
    assert_eq!(w.recv_binary(), media(4, 1, 5));
}

#[test]
fn publish_key_is_required_when_set() {
    let server = Server::start_with("publish_key = \"s3cret key\"");
    let status = |path: &str| Ws::try_connect(server.addr, path, "").err().map(|r| r.status);
    assert_eq!(status("/ws/publish/k"), Some(403));
    assert_eq!(status("/ws/publish/k?key=wrong"), Some(403));
    assert_eq!(status("/ws/publish/k?key=s3cret"), Some(403));
    assert_eq!(get(server.addr, "/api/publish/k?key=nope").status, 403);
    assert_eq!(get(server.addr, "/api/publish/k?key=s3cret%20key").status, 200);
    assert_eq!(status("/ws/publish/k?key=s3cret%20key"), None);
    assert_eq!(status("/ws/watch/k"), None, "watching needs no key");
}

#[test]
fn allowed_origins_keep_other_sites_out() {
    let server = Server::start_with("allowed_origins = https://cam.example:8443, http://localhost:8888");
    let status = |path: &str, origin: &str| Ws::try_connect(server.addr, path, origin).err().map(|r| r.status);
    assert_eq!(status("/ws/watch/o", "Origin: https://evil.example\r\n"), Some(403));
    assert_eq!(status("/ws/publish/o", "Origin: https://evil.example\r\n"), Some(403));
    assert_eq!(status("/ws/watch/o", "Origin: https://cam.example:8443\r\n"), None);
    assert_eq!(status("/ws/publish/o", "Origin: http://localhost:8888\r\n"), None);
    assert_eq!(status("/ws/watch/o", ""), None, "non-browser clients send no Origin");

    // The capture page asks /api/publish first: the same answer as its upgrade would get.
    let ask = |headers: &str| {
        let raw = format!("GET /api/publish/o HTTP/1.1\r\nHost: {}\r\n{headers}Connection: close\r\n\r\n", server.addr);
        request(server.addr, &raw).status
    };
    assert_eq!(ask("Origin: https://evil.example\r\n"), 403);
    assert_eq!(ask("Origin: https://cam.example:8443\r\n"), 200);
    assert_eq!(ask(""), 200, "non-browser clients send no Origin");
    // A same-origin fetch carries no Origin: the page's origin is http://{Host}, not allowed here.
    assert_eq!(ask("Sec-Fetch-Site: same-origin\r\n"), 403);
    let raw = "GET /api/publish/o HTTP/1.1\r\nHost: localhost:8888\r\nSec-Fetch-Site: same-origin\r\n\r\n";
    assert_eq!(request(server.addr, raw).status, 200);
}

#[test]
fn a_stalled_watcher_is_skipped_then_closed_while_a_fast_one_gets_everything() {
    // Bounds loose enough that the fast reader, sharing two cores with every other test,
    // never falls behind; the stalled one passes them within a second.
    let server = Server::start_with("watcher_queue_bytes = 1048576\nwatcher_max_lag_ms = 2000");
    let mut p = publisher(&server, "slow");
    let mut stalled = watcher(&server, "slow"); // never reads until the end
    let mut fast = watcher(&server, "slow");
    assert_eq!(fast.recv_json(), LIVE());
    let total = 1200u64;
    let reader = std::thread::spawn(move || {
        for seq in 0..total {
            let m = fast.recv_binary();
            assert_eq!(m[1..9], seq.to_be_bytes(), "the fast watcher lost nothing");
        }
    });
    // 32 KiB every 10 ms, a key frame every 25: ~3 MB/s for ~12 s, past the 10 s limit.
    let start = Instant::now();
    for seq in 0..total {
        let kind = if seq % 25 == 0 { 2 } else { 3 };
        p.send_binary(&media(kind, seq, 32 * 1024));
        let due = start + Duration::from_millis(10 * (seq + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    reader.join().unwrap();
    server.wait_metric("relay_watchers_closed_slow_total", 1);
    assert!(server.metric("relay_messages_dropped_total") > 0);
    server.wait_metric("relay_websocket_closes_total{code=\"1008\"}", 1);
    stalled.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_closed(&mut stalled.stream);
    server.wait_metric("relay_connections{kind=\"watcher\"}", 0);
}

#[test]
fn the_publisher_is_paused_when_every_watcher_is_behind() {
    let mut server = Server::start_with("watcher_queue_bytes = 65536");
    let mut p = publisher(&server, "pause");
    let mut w = watcher(&server, "pause");
    assert_eq!(w.recv_json(), LIVE());
    // Nobody reads: soon the server stops reading the publisher and its writes block.
    p.stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let frame = Ws::frame(true, 2, &media(4, 0, 64 * 1024));
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0usize;
    loop {
        match p.stream.write(&frame) {
            Ok(n) if n == frame.len() => sent += 1,
            Ok(_) | Err(_) => break,
        }
        assert!(Instant::now() < deadline, "the publisher was never pushed back ({sent} sent)");
    }
    assert!(server.metric("relay_publisher_pauses_total") >= 1);
    // The watcher catches up; the server reads the publisher again (its queue empties).
    let reader = std::thread::spawn(move || {
        for _ in 0..sent / 2 {
            w.recv_message();
        }
        w
    });
    let _w = reader.join().unwrap();
    server.assert_healthy();
}

/// The same relay driven by a client nobody here wrote (tungstenite), both as publisher and watcher.
#[test]
fn a_third_party_client_publishes_and_watches() {
    use tungstenite::Message;
    let server = Server::start();
    let url = |path: &str| format!("ws://{}{path}", server.addr);
    let (mut watcher, response) = tungstenite::connect(url("/ws/watch/tg")).expect("watcher handshake");
    assert_eq!(response.status(), 101);
    let text = |m: Message| serde_json::from_str::<serde_json::Value>(m.to_text().unwrap()).unwrap();
    assert_eq!(text(watcher.read().unwrap()), NOT_LIVE());
    let (mut publisher, _) = tungstenite::connect(url("/ws/publish/tg")).expect("publisher handshake");
    assert_eq!(text(publisher.read().unwrap()), json!({"event": "stream", "name": "tg"}));
    assert_eq!(text(watcher.read().unwrap()), LIVE());
    let sent: Vec<Vec<u8>> =
        (0..50).map(|seq| media(if seq == 0 { 2 } else { 3 }, seq, 1000 + seq as usize * 997)).collect();
    for m in &sent {
        publisher.send(Message::binary(m.clone())).unwrap();
    }
    let mut received = Vec::new();
    while received.len() < sent.len() {
        match watcher.read().expect("watcher read") {
            Message::Binary(b) => received.push(b.to_vec()),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(received == sent, "relayed bytes differ");
    publisher.close(None).unwrap();
    assert_eq!(text(watcher.read().unwrap()), NOT_LIVE());
}
