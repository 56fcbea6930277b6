//! HTTP/1.1 against the real server: pages, files, statuses, keep-alive, pipelining.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn pages_are_served_by_route() {
    let server = Server::start();
    for (path, body) in [
        ("/", "<h1>home</h1>"),
        ("/capture", "<h1>capture</h1>"),
        ("/capture?autostart=1&codec=jpeg", "<h1>capture</h1>"),
        ("/cast/my-stream_1", "<h1>cast</h1>"),
        ("/js/app.js", "console.log(1);"),
        ("/js/app.js?v=3", "console.log(1);"),
        ("/%6as/app.js", "console.log(1);"),
    ] {
        let r = get(server.addr, path);
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
        assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
    }
}

#[test]
fn content_types_by_extension() {
    let server = Server::start();
    assert_eq!(get(server.addr, "/").header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(server.addr, "/js/app.js").header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(get(server.addr, "/style.css").header("content-type"), Some("text/css; charset=utf-8"));
}

#[test]
fn etag_revalidation_gives_304() {
    let server = Server::start();
    let r = get(server.addr, "/js/app.js");
    let etag = r.header("etag").expect("an ETag").to_owned();
    let again = request(server.addr, &format!("GET /js/app.js HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n"));
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = request(server.addr, "GET /js/app.js HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"nope\"\r\n\r\n");
    assert_eq!(other.status, 200);
}

#[test]
fn head_has_length_but_no_body() {
    let server = Server::start();
    let mut s = connect(server.addr);
    s.write_all(b"HEAD /js/app.js HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = read_response(&mut s, true);
    assert_eq!((head.status, head.header("content-length")), (200, Some("15")));
    // The next response follows at once: HEAD sent no body bytes.
    let next = read_response(&mut s, false);
    assert_eq!((next.status, next.text().as_str()), (200, "ok\n"));
}

#[test]
fn statuses_for_bad_requests() {
    let mut server = Server::start();
    let mut stream = LiveStream::open(&server, "steady");
    let r = request(server.addr, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(request(server.addr, "DELETE /x HTTP/1.1\r\n\r\n").status, 405);
    let upgrade_by_post = upgrade_request("/ws/watch/cam", "").replacen("GET", "POST", 1);
    assert_eq!(request(server.addr, &upgrade_by_post).status, 405, "the method is checked before the upgrade");
    let bad_name = get(server.addr, "/api/publish/bad.name");
    assert_eq!((bad_name.status, bad_name.json()["status"].as_u64()), (400, Some(400)), "JSON for the pages");
    assert_eq!(get(server.addr, "/missing.html").status, 404);
    assert_eq!(get(server.addr, "/api/nothing").status, 404);
    assert_eq!(request(server.addr, "GET / HTTP/1.1\r\nBad Header\r\n\r\n").status, 400);
    assert_eq!(request(server.addr, "\x16\x03\x01\x02\x00\x01\x00\x01\r\n\r\n").status, 400);
    assert_eq!(request(server.addr, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").status, 400);
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024));
    assert_eq!(request(server.addr, &big).status, 431);
    let mut s = connect(server.addr);
    s.write_all(format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(20 * 1024)).as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, false).status, 431, "an endless head is cut off at 16 KiB");
    assert_closed(&mut s);
    server.assert_still_serves(&mut stream);
}

#[test]
fn traversal_never_leaves_public_dir() {
    let mut server = Server::start();
    let mut stream = LiveStream::open(&server, "steady");
    // Each target goes on the socket byte for byte: `\\` is one literal backslash.
    for path in [
        "/../secret.txt",
        "/../../../../../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/js/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..%5c..%5c..%5c..%5c..%5c..%5c..%5c..%5cetc%5cpasswd",
        "/..\\secret.txt",
        "/js\\..\\..\\secret.txt",
        "/..\\..\\etc\\passwd",
        "/..\\..\\..\\..\\..\\..\\..\\..\\etc\\passwd",
        "\\..\\secret.txt",
        "/leak.txt",
        "/up/secret.txt",
        "/js",
        "/js/",
        "/index.html%00.js",
        "/%c0%ae%c0%ae/secret.txt",
        "//etc/passwd",
        "/.hidden",
    ] {
        let r = get(server.addr, path);
        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.status);
        // Not a byte of the secret beside the root, nor of /etc/passwd (its "root:" line).
        assert!(!r.text().contains("TOP-SECRET") && !r.text().contains("root:"), "{path}: {:?}", r.text());
    }
    let r = request(server.addr, "GET /etc/passwd HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404);
    let r = request(server.addr, "GET http://x/../secret.txt HTTP/1.1\r\n\r\n");
    assert!(r.status == 404 || r.status == 400);
    server.assert_still_serves(&mut stream);
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let server = Server::start();
    let mut s = connect(server.addr);
    let paths = ["/", "/js/app.js", "/missing", "/healthz", "/capture"];
    let mut batch = String::new();
    for p in paths {
        batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    s.write_all(batch.as_bytes()).unwrap();
    let statuses: Vec<u16> = paths.iter().map(|_| read_response(&mut s, false).status).collect();
    assert_eq!(statuses, vec![200, 200, 404, 200, 200]);
    // Still open: one more request on the same connection.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).status, 200);
}

#[test]
fn connection_close_and_http10_are_honoured() {
    let server = Server::start();
    for raw in ["GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "GET / HTTP/1.0\r\n\r\n"] {
        let mut s = connect(server.addr);
        s.write_all(raw.as_bytes()).unwrap();
        let r = read_response(&mut s, false);
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert!(assert_closed(&mut s).is_empty(), "nothing after the response");
    }
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).header("connection"), Some("keep-alive"));
}

#[test]
fn a_get_body_is_skipped() {
    let server = Server::start();
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).status, 200);
    assert_eq!(read_response(&mut s, false).text(), "ok\n");
}

#[test]
fn request_split_into_single_bytes() {
    let server = Server::start();
    let mut s = connect(server.addr);
    for b in b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
    }
    assert_eq!(read_response(&mut s, false).status, 200);
}

#[test]
fn api_endpoints() {
    let server = Server::start();
    assert_eq!(get(server.addr, "/healthz").text(), "ok\n");
    let info = get(server.addr, "/api/info");
    assert_eq!(info.header("content-type"), Some("application/json"));
    let info = info.json();
    assert_eq!(info["public_address"], server.addr.to_string());
    assert_eq!(info["tls"], false);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(get(server.addr, "/api/streams").json(), serde_json::json!([]));
    assert_eq!(get(server.addr, "/api/publish/cam").status, 200);
    assert_eq!(get(server.addr, "/api/publish/bad!name").status, 400);
    let metrics = get(server.addr, "/metrics");
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    for name in ["relay_connections{kind=\"http\"}", "relay_streams", "relay_http_responses_total{status=\"200\"}"] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[test]
fn request_timeout_answers_408() {
    let mut server = Server::start_with("request_timeout_ms = 300");
    let mut stream = LiveStream::open(&server, "steady");
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 408);
    assert_closed(&mut s);
    // An idle connection that never sent a byte is closed quietly.
    let mut idle = connect(server.addr);
    assert!(assert_closed(&mut idle).is_empty());
    server.assert_still_serves(&mut stream);
}

#[test]
fn connections_past_the_limit_are_refused_with_503() {
    let mut server = Server::start_with("max_connections = 5");
    let mut stream = LiveStream::open(&server, "steady");
    let held: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    // Connections are accepted in order: with the stream's two, the sixth is past the limit.
    let mut extra = connect(server.addr);
    let text = String::from_utf8_lossy(&assert_closed(&mut extra)).into_owned();
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 503"), "{text}");
    drop(held);
    wait_until("a slot frees up", || try_get(server.addr, "/healthz").is_some_and(|r| r.status == 200));
    assert!(server.metric("relay_connections_rejected_total") >= 1);
    server.assert_still_serves(&mut stream);
}

#[test]
fn pipelined_requests_wait_for_a_slow_reader_and_none_is_lost() {
    // A 1 MiB output bound; each answer is 600 KB, so the server must pause between them.
    let server = Server::start_with("max_message_bytes = 1000");
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.dir.join("public/big.bin"), &big).unwrap();
    let mut s = connect(server.addr);
    let count = 12;
    s.write_all("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".repeat(count).as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(s);
    for i in 0..count {
        let r = read_response(&mut reader, false);
        assert_eq!((r.status, r.body.len()), (200, big.len()), "response {i}");
        assert!(r.body == big, "response {i} body differs");
    }
}

#[test]
fn a_slow_download_is_not_cut_off_by_the_request_or_closing_timers() {
    // Far more than loopback socket buffers hold, read at ~8 MB/s: the answer is still queued
    // in the server long after request_timeout_ms and the 2 s closing grace.
    let server = Server::start_with("request_timeout_ms = 500");
    let big: Vec<u8> = (0..24_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(server.dir.join("public/big.bin"), &big).unwrap();
    for head in ["GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", "GET /big.bin HTTP/1.0\r\n\r\n"] {
        let mut s = connect(server.addr);
        s.write_all(head.as_bytes()).unwrap();
        let mut received = Vec::with_capacity(big.len() + 1024);
        let mut buf = vec![0u8; 256 * 1024];
        let started = std::time::Instant::now();
        loop {
            let n = s.read(&mut buf).expect("read the download");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            // A reader that keeps pace with ~8 MB/s.
            let due = Duration::from_secs_f64(received.len() as f64 / 8e6);
            std::thread::sleep(due.saturating_sub(started.elapsed()));
            if head.contains("1.1") && received.len() >= big.len() {
                break;
            }
        }
        let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received.starts_with(b"HTTP/1.1 200"), "{head:?}");
        assert_eq!(received.len() - body_at, big.len(), "{head:?}: the whole file");
        assert!(received[body_at..] == big[..], "{head:?}: bytes differ");
    }
}

#[test]
fn keep_alive_connections_idle_past_the_request_timeout() {
    let server = Server::start_with("request_timeout_ms = 300\nidle_timeout_ms = 60000");
    let mut s = connect(server.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).status, 200);
    // Idle between requests for longer than a request head may take: still open.
    std::thread::sleep(Duration::from_millis(700));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).status, 200);
}
