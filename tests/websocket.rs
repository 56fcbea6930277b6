//! RFC 6455 against the real server: the handshake and its rejections, frame rules and
//! their close codes, control frames, the close handshake, idle pings.

mod common;

use common::*;

fn echo_server() -> Server {
    Server::start_with("echo_endpoint = true\nmax_message_bytes = 1000")
}

#[test]
fn handshake_rejections() {
    let server = Server::start_with("echo_endpoint = false");
    let refused = |path: &str, extra: &str| Ws::try_connect(server.addr, path, extra).err().map(|r| r.status);
    assert_eq!(refused("/ws/echo", ""), Some(404), "echo is off by default");
    assert_eq!(refused("/ws/unknown", ""), Some(404));
    assert_eq!(refused("/ws/watch/bad.name", ""), Some(400));
    assert_eq!(refused(&format!("/ws/publish/{}", "x".repeat(65)), ""), Some(400));
    let raw = |head: &str| request(server.addr, head);
    let no_key = "GET /ws/watch/a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(raw(no_key).status, 400);
    let plain_get = "GET /ws/watch/a HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(raw(plain_get).status, 400);
    let old_version = upgrade_request("/ws/watch/a", "").replace("Version: 13", "Version: 8");
    let r = raw(&old_version);
    assert_eq!((r.status, r.header("sec-websocket-version")), (426, Some("13")));
}

#[test]
fn no_extension_is_negotiated() {
    let server = echo_server();
    let ws = Ws::try_connect(server.addr, "/ws/echo", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    assert!(ws.is_ok(), "connect() asserts the 101 has no Sec-WebSocket-Extensions");
}

#[test]
fn echo_text_binary_and_fragments() {
    let server = echo_server();
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    ws.send(1, "héllo".as_bytes());
    assert_eq!(ws.recv(), Frame { fin: true, opcode: 1, payload: "héllo".as_bytes().to_vec() });
    ws.send_binary(&[0, 1, 2, 255]);
    assert_eq!(ws.recv().payload, vec![0, 1, 2, 255]);
    // Three fragments with a ping in the middle: the pong comes first, then the whole message.
    let euro = "€".as_bytes();
    ws.send_raw(&Ws::frame(false, 1, &euro[..1]));
    ws.send_raw(&Ws::frame(false, 0, &euro[1..2]));
    ws.send_raw(&Ws::frame(true, 9, b"p"));
    ws.send_raw(&Ws::frame(true, 0, &euro[2..]));
    assert_eq!(ws.recv(), Frame { fin: true, opcode: 10, payload: b"p".to_vec() });
    assert_eq!(ws.recv(), Frame { fin: true, opcode: 1, payload: euro.to_vec() });
    // Exactly at the limit is fine.
    ws.send_binary(&[7; 1000]);
    assert_eq!(ws.recv().payload.len(), 1000);
}

/// Sends `bytes` on a fresh echo connection and returns the close code the server sends.
fn close_code_for(server: &Server, bytes: &[u8]) -> u16 {
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    ws.send_raw(bytes);
    let code = ws.recv_close();
    assert_closed(&mut ws.stream);
    code
}

#[test]
fn frame_violations_close_with_the_rfc_code() {
    let mut server = echo_server();
    let mut stream = LiveStream::open(&server, "steady");
    let unmasked = [0x82, 0x01, 0x00];
    assert_eq!(close_code_for(&server, &unmasked), 1002, "unmasked client frame");
    let mut rsv = Ws::frame(true, 2, b"x");
    rsv[0] |= 0x40;
    assert_eq!(close_code_for(&server, &rsv), 1002, "reserved bit");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 3, b"x")), 1002, "reserved opcode");
    assert_eq!(close_code_for(&server, &Ws::frame(false, 9, b"x")), 1002, "fragmented ping");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 9, &[0; 126])), 1002, "long ping");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 0, b"x")), 1002, "stray continuation");
    let interleaved = [Ws::frame(false, 1, b"a"), Ws::frame(true, 2, b"b")].concat();
    assert_eq!(close_code_for(&server, &interleaved), 1002, "new message inside a fragmented one");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 1, &[0xff, 0xfe])), 1007, "bad UTF-8");
    let split_bad = [Ws::frame(false, 1, &[0xe2, 0x82]), Ws::frame(true, 0, &[0x28])].concat();
    assert_eq!(close_code_for(&server, &split_bad), 1007, "bad UTF-8 across fragments");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 2, &[0; 1001])), 1009, "over max_message_bytes");
    let fragments = [Ws::frame(false, 2, &[0; 600]), Ws::frame(true, 0, &[0; 401])].concat();
    assert_eq!(close_code_for(&server, &fragments), 1009, "fragments over max_message_bytes");
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_for(&server, &huge), 1009, "a header announcing 2^62 bytes");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &[0x03])), 1002, "close payload of one byte");
    assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &999u16.to_be_bytes())), 1002, "invalid close code");
    let bad_reason = [&1000u16.to_be_bytes()[..], &[0xff]].concat();
    assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &bad_reason)), 1007, "close reason not UTF-8");
    server.wait_metric("relay_websocket_closes_total{code=\"1002\"}", 9);
    server.assert_still_serves(&mut stream);
}

#[test]
fn close_frames_with_an_invalid_code_or_reason_are_protocol_errors() {
    let mut server = echo_server();
    let mut stream = LiveStream::open(&server, "steady");
    // RFC 6455 §7.4: below 1000, reserved for local use (1004, 1005, 1006, 1015), undefined
    // (1016, 2000, 2999) or past 4999. docs/protocol.md: an invalid code is a 1002.
    let invalid = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535];
    for code in invalid {
        assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &code.to_be_bytes())), 1002, "close code {code}");
    }
    // A reason that is not UTF-8 is a 1007: a stray byte, an overlong '/', a UTF-16 surrogate,
    // a sequence cut short, a continuation byte after ASCII.
    let reasons: [&[u8]; 5] = [&[0xff], &[0xc0, 0xaf], &[0xed, 0xa0, 0x80], &[0xe2, 0x82], b"bye\x80"];
    for reason in reasons {
        let payload = [&1000u16.to_be_bytes()[..], reason].concat();
        assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &payload)), 1007, "close reason {reason:02x?}");
    }
    // The codes a peer may send are echoed, the boundaries included.
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        assert_eq!(close_code_for(&server, &Ws::frame(true, 8, &code.to_be_bytes())), code, "valid code {code}");
    }
    server.wait_metric("relay_websocket_closes_total{code=\"1002\"}", invalid.len() as u64);
    server.wait_metric("relay_websocket_closes_total{code=\"1007\"}", reasons.len() as u64 + 1);
    server.assert_still_serves(&mut stream);
}

#[test]
fn close_handshake_echoes_the_code() {
    let server = echo_server();
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    ws.send(8, &[&3001u16.to_be_bytes()[..], b"bye"].concat());
    assert_eq!(ws.recv_close(), 3001);
    assert_closed(&mut ws.stream);
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    ws.send(8, b"");
    let f = ws.recv();
    assert_eq!((f.opcode, f.payload.len()), (8, 0), "an empty close is answered with an empty close");
    server.wait_metric("relay_websocket_closes_total{code=\"3001\"}", 1);
}

#[test]
fn idle_connections_are_pinged_then_closed() {
    let server = Server::start_with("echo_endpoint = true\nidle_timeout_ms = 600");
    let mut ws = Ws::connect(server.addr, "/ws/echo");
    let ping = ws.recv();
    assert_eq!(ping.opcode, 9, "a ping after half the idle timeout");
    // A silent client is closed with 1001.
    assert_eq!(ws.recv_close(), 1001);
    // A client that answers pings stays.
    let mut alive = Ws::connect(server.addr, "/ws/echo");
    for _ in 0..3 {
        let ping = alive.recv();
        assert_eq!(ping.opcode, 9);
        alive.send(10, &ping.payload);
    }
    alive.send(1, b"still here");
    assert_eq!(alive.recv_message().payload, b"still here");
}
