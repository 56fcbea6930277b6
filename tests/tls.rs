//! HTTPS and WSS against the real server with a self-signed certificate, driven by a rustls
//! client and tungstenite (code nobody here wrote), plus broken TLS clients.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::Message;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_server(extra: &str) -> Server {
    Server::start_with(&format!("tls_self_signed = true\n{extra}"))
}

/// A client that trusts exactly the certificate the server made for itself.
fn client_config(server: &Server) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.dir.join("camrelay-self-signed.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

fn tls_connect(server: &Server, addr: SocketAddr) -> TlsStream {
    let name = ServerName::IpAddress(addr.ip().into());
    let session = rustls::ClientConnection::new(client_config(server), name).unwrap();
    TlsStream::new(session, connect(addr))
}

fn tls_get(server: &Server, path: &str) -> Response {
    let mut s = tls_connect(server, server.addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    read_response(&mut s, false)
}

fn wss(server: &Server, path: &str) -> tungstenite::WebSocket<TlsStream> {
    let stream = tls_connect(server, server.addr);
    let url = format!("wss://{}{path}", server.addr);
    let (ws, response) = tungstenite::client::client(url, stream).expect("wss handshake");
    assert_eq!(response.status(), 101);
    ws
}

fn json(m: Message) -> serde_json::Value {
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}

#[test]
fn https_serves_pages_and_the_api() {
    let server = tls_server("");
    assert!(server.banner.iter().any(|l| l.contains("SHA-256")), "{:?}", server.banner);
    let r = tls_get(&server, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let info = tls_get(&server, "/api/info").json();
    assert_eq!(info["tls"], true);
    assert_eq!(tls_get(&server, "/").text(), "<h1>home</h1>");
}

#[test]
fn a_stream_is_relayed_over_wss() {
    let server = tls_server("");
    let mut watcher = wss(&server, "/ws/watch/secure");
    assert_eq!(json(watcher.read().unwrap())["live"], false);
    let mut publisher = wss(&server, "/ws/publish/secure");
    assert_eq!(json(publisher.read().unwrap())["name"], "secure");
    assert_eq!(json(watcher.read().unwrap())["live"], true);
    // Big and small messages: several TLS records each, and many per record.
    let sent: Vec<Vec<u8>> =
        (0..40u64).map(|seq| media(if seq == 0 { 2 } else { 3 }, seq, (seq as usize * 7919) % 300_000)).collect();
    for m in &sent {
        publisher.send(Message::binary(m.clone())).unwrap();
    }
    for (i, m) in sent.iter().enumerate() {
        let got = loop {
            match watcher.read().unwrap() {
                Message::Binary(b) => break b,
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(got.as_ref() == m.as_slice(), "message {i} differs");
    }
    publisher.close(None).unwrap();
    assert_eq!(json(watcher.read().unwrap())["live"], false);
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed() {
    let mut server = tls_server("");
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: plain\r\n\r\n").unwrap();
    let answer = assert_closed(&mut s);
    // At most a TLS alert record (content type 21), never an HTTP answer in clear.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert_eq!(tls_get(&server, "/healthz").status, 200);
    server.assert_healthy_tls();
}

#[test]
fn a_client_stalled_mid_handshake_times_out_and_others_are_served() {
    let server = tls_server("request_timeout_ms = 500");
    let mut stalled = connect(server.addr);
    // The first bytes of a TLS record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut silent = connect(server.addr);
    for _ in 0..3 {
        assert_eq!(tls_get(&server, "/healthz").status, 200);
    }
    // Both are closed at the request timeout, without a byte in answer.
    assert!(assert_closed(&mut stalled).is_empty());
    assert!(assert_closed(&mut silent).is_empty());
}

#[test]
fn the_plain_port_redirects_pages_and_allows_only_loopback_websockets() {
    let server = tls_server("http_port = 0\npublic_address = cam.example:8443");
    let line = server.banner.iter().find(|l| l.starts_with("redirect:")).expect("a redirect line");
    let plain: SocketAddr = line.split_whitespace().nth(1).unwrap().trim_start_matches("http://").parse().unwrap();
    let r = get(plain, "/capture?autostart=1");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://cam.example:8443/capture?autostart=1"));
    // From loopback, a plain WebSocket still works (local tools, tests).
    let mut ws = Ws::connect(plain, "/ws/watch/local");
    assert_eq!(ws.recv_json(), serde_json::json!({"event": "publisher", "live": false}));
}

impl Server {
    /// The process is alive, never panicked, and answers over TLS.
    fn assert_healthy_tls(&mut self) {
        assert!(!self.log().contains("panicked"), "server panicked; log:\n{}", self.log());
        assert_eq!(tls_get(self, "/healthz").status, 200);
    }
}

// ---- The redirect port: who may open a plain WebSocket ----

/// This machine's addresses that are not loopback and that a local socket really reaches (an
/// address on a downed interface or a link-local one without its scope would not be).
fn reachable_lan_addresses(v6: bool) -> Vec<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    let mut found: Vec<IpAddr> = interfaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && ip.is_ipv6() == v6)
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .filter(|&ip| {
            let Ok(probe) = TcpListener::bind(SocketAddr::new(ip, 0)) else { return false };
            TcpStream::connect_timeout(&probe.local_addr().unwrap(), Duration::from_secs(2)).is_ok()
        })
        .collect();
    found.dedup();
    found
}

/// The plain address (`http://...`) and the HTTPS `host:port` from the banner's `redirect:` line.
fn redirect_line(server: &Server) -> (SocketAddr, String) {
    let line = server.banner.iter().find(|l| l.starts_with("redirect:")).expect("a redirect line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{line:?}");
    let plain = words[1].strip_prefix("http://").unwrap().parse().unwrap();
    let public = words[3].strip_prefix("https://").unwrap().to_owned();
    (plain, public)
}

/// A plain WebSocket upgrade to `addr` is answered `403` and the connection is closed.
fn assert_upgrade_refused(addr: SocketAddr, path: &str) {
    let mut s = connect(addr);
    s.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 403, "plain upgrade {path} via {addr}: {r:?}");
    assert!(r.header("location").is_none() && r.header("upgrade").is_none(), "{r:?}");
    assert_closed(&mut s);
}

#[test]
fn the_plain_port_refuses_websockets_from_the_lan_but_not_from_loopback() {
    let Some(&lan) = reachable_lan_addresses(false).first() else {
        eprintln!(
            "SKIPPED the_plain_port_refuses_websockets_from_the_lan_but_not_from_loopback: no reachable non-loopback IPv4 address on this machine"
        );
        return;
    };
    let server = tls_server("address = 0.0.0.0\nhttp_port = 0");
    let (plain, public) = redirect_line(&server);
    let plain_lan = SocketAddr::new(lan, plain.port());
    let plain_loopback = SocketAddr::from(([127, 0, 0, 1], plain.port()));

    // From a LAN address: no camera in clear, and no watching either.
    assert_upgrade_refused(plain_lan, "/ws/publish/lan");
    assert_upgrade_refused(plain_lan, "/ws/publish");
    assert_upgrade_refused(plain_lan, "/ws/watch/lan");
    // From loopback, both roles work on the same port, and the stream is relayed.
    let mut watcher = Ws::connect(plain_loopback, "/ws/watch/lan");
    assert_eq!(watcher.recv_json(), serde_json::json!({"event": "publisher", "live": false}));
    let mut publisher = Ws::connect(plain_loopback, "/ws/publish/lan");
    assert_eq!(publisher.recv_json()["name"], "lan");
    assert_eq!(watcher.recv_json()["live"], true);
    let m = media(2, 0, 1000);
    publisher.send_binary(&m);
    assert_eq!(watcher.recv_binary(), m);
    // Refusals after the fact change nothing for the loopback clients.
    assert_upgrade_refused(plain_lan, "/ws/watch/lan");

    // Pages on the plain port, from anywhere: 308 to the HTTPS address the banner shows.
    let public_addr: SocketAddr = public.parse().expect("without public_address the banner shows an IP:port");
    assert_eq!(public_addr.port(), server.addr.port());
    for from in [plain_lan, plain_loopback] {
        let r = get(from, "/capture?autostart=1");
        assert_eq!(r.status, 308, "{from}: {r:?}");
        assert_eq!(r.header("location"), Some(format!("https://{public}/capture?autostart=1").as_str()));
        let r = get(from, "/");
        assert_eq!((r.status, r.header("location")), (308, Some(format!("https://{public}/").as_str())));
    }
    // The Location works: its address is in the self-signed certificate and serves the page.
    let mut s = tls_connect(&server, public_addr);
    s.write_all(b"GET /capture?autostart=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>capture</h1>"));
}

/// Bound to `::` (dual-stack on Linux), peers come as IPv6 or IPv4-mapped addresses; a
/// mapped `::ffff:127.0.0.1` is loopback, a mapped LAN address is not.
#[test]
fn the_plain_port_on_a_dual_stack_socket_judges_mapped_addresses() {
    let Ok(probe) = TcpListener::bind("[::]:0") else {
        eprintln!("SKIPPED the_plain_port_on_a_dual_stack_socket_judges_mapped_addresses: cannot bind [::]");
        return;
    };
    let dual_stack =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], probe.local_addr().unwrap().port())), DEADLINE)
            .is_ok();
    drop(probe);
    let mut refused: Vec<IpAddr> = reachable_lan_addresses(true);
    let mut allowed: Vec<IpAddr> = vec![Ipv6Addr::LOCALHOST.into()];
    if dual_stack {
        refused.extend(reachable_lan_addresses(false));
        allowed.push(Ipv4Addr::LOCALHOST.into());
    }
    if refused.is_empty() {
        eprintln!(
            "SKIPPED the_plain_port_on_a_dual_stack_socket_judges_mapped_addresses: no reachable non-loopback address"
        );
        return;
    }
    let server = tls_server("address = \"::\"\nhttp_port = 0");
    let (plain, _) = redirect_line(&server);
    for ip in refused {
        assert_upgrade_refused(SocketAddr::new(ip, plain.port()), "/ws/publish/dual");
    }
    for ip in allowed {
        let mut w = Ws::connect(SocketAddr::new(ip, plain.port()), "/ws/watch/dual");
        assert_eq!(w.recv_json()["live"], false, "via {ip}");
    }
}

// ---- close_notify ----

/// Reads to the end of the TLS session: it must end with the server's `close_notify` (rustls
/// reports that as `Ok(0)`; a bare TCP end is `UnexpectedEof`), with no plaintext before it.
fn assert_close_notify(s: &mut TlsStream) {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes of plaintext after the end: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            panic!("the server ended TCP without close_notify: {e}")
        }
        Err(e) => panic!("no clean TLS end: {e} ({:?})", e.kind()),
    }
}

/// The next close frame's code (data messages before it are skipped), then the close reply
/// goes out.
fn wss_close_code(ws: &mut tungstenite::WebSocket<TlsStream>) -> u16 {
    loop {
        match ws.read().expect("read up to the close frame") {
            Message::Close(frame) => {
                let code = frame.expect("a close code").code.into();
                // Sends the reply tungstenite queued (a no-op when we started the close).
                match ws.flush() {
                    Ok(()) | Err(tungstenite::Error::ConnectionClosed) => {}
                    Err(e) => panic!("close reply: {e}"),
                }
                return code;
            }
            _ => continue,
        }
    }
}

#[test]
fn the_server_ends_every_tls_connection_with_close_notify() {
    let mut server = tls_server("");
    // An HTTPS answer with `Connection: close`.
    let mut s = tls_connect(&server, server.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).status, 200);
    assert_close_notify(&mut s);

    // A close handshake the client starts: echoed 1000, then close_notify.
    let mut ws = wss(&server, "/ws/watch/bye");
    assert_eq!(json(ws.read().unwrap())["live"], false);
    ws.close(Some(tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "".into() })).unwrap();
    assert_eq!(wss_close_code(&mut ws), 1000);
    assert_close_notify(ws.get_mut());

    // A close the server starts on a protocol error (an unmasked frame): 1002, then
    // close_notify without waiting for the reply.
    let mut ws = wss(&server, "/ws/watch/bye");
    assert_eq!(json(ws.read().unwrap())["live"], false);
    let raw = ws.get_mut();
    raw.write_all(&[0x82, 0x01, 0x00]).unwrap();
    raw.flush().unwrap();
    assert_eq!(wss_close_code(&mut ws), 1002);
    assert_close_notify(ws.get_mut());

    // SIGTERM: every wss watcher and publisher gets 1001, then close_notify; exit 0.
    let mut watcher = wss(&server, "/ws/watch/bye");
    assert_eq!(json(watcher.read().unwrap())["live"], false);
    let mut publisher = wss(&server, "/ws/publish/bye");
    assert_eq!(json(publisher.read().unwrap())["name"], "bye");
    assert_eq!(json(watcher.read().unwrap())["live"], true);
    let status = std::thread::scope(|scope| {
        let ends = [&mut watcher, &mut publisher].map(|ws| {
            scope.spawn(move || {
                let code = wss_close_code(ws);
                assert_close_notify(ws.get_mut());
                // Our end too, so the server need not wait out its grace period.
                ws.get_ref().sock.shutdown(Shutdown::Write).unwrap();
                code
            })
        });
        let status = server.terminate();
        for end in ends {
            assert_eq!(end.join().unwrap(), 1001);
        }
        status
    });
    assert_eq!(status.code(), Some(0));
}

// ---- Backpressure over TLS ----

/// One `/metrics` page over HTTPS (the TLS port serves no plain HTTP).
fn tls_metrics(server: &Server) -> String {
    tls_get(server, "/metrics").text()
}

fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().unwrap())
}

const BP_QUEUE: usize = 256 * 1024;
const BP_MESSAGE: usize = 8 * 1024;
const BP_KEY_EVERY: u64 = 10;
/// The publisher's pace: about 1.6 MB/s of video.
const BP_PACE: Duration = Duration::from_millis(5);
/// The slow watcher needs its socket buffers filled, then 10 s over its bound.
const BP_DEADLINE: Duration = Duration::from_secs(90);

fn bp_message(seq: u64) -> Vec<u8> {
    media(if seq.is_multiple_of(BP_KEY_EVERY) { 2 } else { 3 }, seq, BP_MESSAGE)
}

fn seq_of(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[1..9].try_into().unwrap())
}

/// Stops the publisher thread however the test ends, so a failing assertion cannot leave the
/// thread scope waiting for it forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_wss_watcher_that_stops_reading_is_skipped_and_closed_while_a_reading_one_gets_everything() {
    let server = tls_server(&format!("watcher_queue_bytes = {BP_QUEUE}\nwatcher_max_lag_ms = 2000"));
    let mut slow = wss(&server, "/ws/watch/bp");
    assert_eq!(json(slow.read().unwrap())["live"], false);
    let mut fast = wss(&server, "/ws/watch/bp");
    assert_eq!(json(fast.read().unwrap())["live"], false);
    let mut publisher = wss(&server, "/ws/publish/bp");
    assert_eq!(json(publisher.read().unwrap())["name"], "bp");
    assert_eq!(json(fast.read().unwrap())["live"], true);
    // A server that stopped reading the publisher for good fails the test instead of hanging it.
    publisher.get_ref().sock.set_write_timeout(Some(DEADLINE)).unwrap();
    // From here on the slow watcher reads nothing until the server gives up on it.

    let stop_flag = AtomicBool::new(false);
    let stop = &stop_flag;
    let started = Instant::now();
    let (mut publisher, mut fast, sent, fast_got, max_queued) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(stop);
        let sender = scope.spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                publisher.send(Message::binary(bp_message(seq))).expect("publish");
                seq += 1;
                // A steady rate, not a wait for anything.
                std::thread::sleep(BP_PACE);
            }
            (publisher, seq)
        });
        let reader = scope.spawn(move || {
            let mut next = 0;
            loop {
                match fast.read().expect("the reading watcher is served without a pause of 10 s") {
                    Message::Binary(b) => {
                        assert_eq!(seq_of(&b), next, "the reading watcher missed or reordered a message");
                        assert!(b.as_ref() == bp_message(next).as_slice(), "message {next} differs");
                        next += 1;
                    }
                    Message::Text(t) if serde_json::from_str::<serde_json::Value>(&t).unwrap()["live"] == false => {
                        return (fast, next);
                    }
                    Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                    other => panic!("reading watcher: unexpected {other:?}"),
                }
            }
        });

        // Watch the queues until the server closes the slow watcher.
        let mut max_queued = 0;
        loop {
            let m = tls_metrics(&server);
            max_queued = max_queued.max(sample(&m, "relay_queued_bytes"));
            if sample(&m, "relay_watchers_closed_slow_total") > 0 {
                assert!(sample(&m, "relay_messages_dropped_total") > 0, "closed as too slow without a skip:\n{m}");
                break;
            }
            assert!(!sender.is_finished() && !reader.is_finished(), "a client thread ended early");
            assert!(started.elapsed() < BP_DEADLINE, "the watcher that stopped reading was never closed:\n{m}");
            std::thread::sleep(Duration::from_millis(50));
        }

        // It reads now (within the server's 2 s grace): what it had been sent before it fell
        // behind, in order; skips resume only at a key frame; then 1008 and close_notify.
        let mut got: Vec<u64> = Vec::new();
        let code = loop {
            match slow.read().expect("the slow watcher's backlog and close frame") {
                Message::Binary(b) => {
                    let seq = seq_of(&b);
                    assert!(b.as_ref() == bp_message(seq).as_slice(), "slow watcher: message {seq} differs");
                    match got.last() {
                        None => assert_eq!(seq, 0, "the slow watcher's first message"),
                        Some(&last) => assert!(
                            seq == last + 1 || (seq > last && seq.is_multiple_of(BP_KEY_EVERY)),
                            "slow watcher: {seq} after {last} (a skip must end at a key frame)"
                        ),
                    }
                    got.push(seq);
                }
                Message::Close(frame) => break u16::from(frame.expect("a close code").code),
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("slow watcher: unexpected {other:?}"),
            }
        };
        assert_eq!(code, 1008);
        let _ = slow.flush();
        assert_close_notify(slow.get_mut());
        // Our end too: the server counts the close once the connection is gone.
        slow.get_ref().sock.shutdown(Shutdown::Write).unwrap();

        stop.store(true, Ordering::SeqCst);
        let (publisher, sent) = sender.join().expect("the publisher thread");
        assert!((got.len() as u64) < sent, "the slow watcher got all {sent} messages: nothing was skipped");
        // The publisher leaves; `live:false` ends the reading watcher's loop.
        let mut publisher = publisher;
        publisher.close(Some(tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "".into() })).unwrap();
        let (fast, fast_got) = reader.join().expect("the reading watcher's thread");
        (publisher, fast, sent, fast_got, max_queued)
    });
    eprintln!("backpressure: {sent} messages sent, peak relay_queued_bytes {max_queued}, {:?}", started.elapsed());
    assert_eq!(fast_got, sent, "the reading watcher got every message");
    assert_eq!(wss_close_code(&mut publisher), 1000);
    assert_close_notify(publisher.get_mut());

    // The queues were bounded: the slow watcher's by its bound plus one message; the reading
    // one's by the publisher pause at an eighth of the bound (plus the rest of one 64 KiB read
    // and a message); the publisher's unread events by 64 KiB; 32 KiB of slack ...
    let bound = (BP_QUEUE + BP_MESSAGE + BP_QUEUE / 8 + 64 * 1024 + BP_MESSAGE + 64 * 1024 + 32 * 1024) as u64;
    assert!(max_queued <= bound, "relay_queued_bytes reached {max_queued} (bound {bound})");
    // ... yet the TLS watcher's backlog did show in them: rustls did not swallow it.
    assert!(max_queued >= BP_QUEUE as u64 / 2, "relay_queued_bytes peaked at only {max_queued}");
    // ... and drain to nothing once everyone has read.
    wait_until("relay_queued_bytes == 0 over TLS", || sample(&tls_metrics(&server), "relay_queued_bytes") == 0);
    // The reading watcher is still there, and the one close was the slow watcher's 1008.
    wait_until("the 1008 close is counted", || {
        sample(&tls_metrics(&server), "relay_websocket_closes_total{code=\"1008\"}") == 1
    });
    let m = tls_metrics(&server);
    assert_eq!(sample(&m, "relay_watchers_closed_slow_total"), 1, "{m}");
    assert_eq!(sample(&m, "relay_connections{kind=\"watcher\"}"), 1, "{m}");
    fast.close(None).unwrap();
    assert!(matches!(fast.read(), Ok(Message::Close(_))), "the reading watcher's close is echoed");
}
