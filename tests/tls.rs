//! HTTPS and WSS against the real server with a self-signed certificate, driven by a rustls
//! client and tungstenite (code nobody here wrote), plus broken TLS clients.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

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
