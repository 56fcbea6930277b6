//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use crate::http::request::Request;

/// §1.3: the GUID appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    NotGet,
    NotHttp11,
    MissingUpgrade,
    MissingConnectionUpgrade,
    MissingHost,
    BadKey,
    /// No `Sec-WebSocket-Version` at all: a malformed handshake.
    MissingVersion,
    /// §4.4: a version we do not speak, answered 426 with the one we do.
    UnsupportedVersion,
}

impl HandshakeError {
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

/// Checks the upgrade request (§4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub fn validate(req: &Request) -> Result<String, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if req.minor_version != 1 {
        return Err(HandshakeError::NotHttp11);
    }
    if req.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = req.header("sec-websocket-key").ok_or(HandshakeError::BadKey)?.trim();
    // §4.2.1: the key, base64-decoded, is 16 bytes long.
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    match req.header("sec-websocket-version").map(str::trim) {
        None => return Err(HandshakeError::MissingVersion),
        Some("13") => {}
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    }
    Ok(accept_key(key))
}

pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// The 101 response (no subprotocol and no extension is ever selected).
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse;

    #[test]
    fn rfc_accept_key_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn check(head: &str) -> Result<String, HandshakeError> {
        let (_, req) = parse(head.as_bytes()).unwrap().unwrap();
        validate(&req)
    }

    const GOOD: &str = "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn accepts_a_browser_handshake() {
        assert_eq!(check(GOOD).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(check(&GOOD.replace("websocket", "WebSocket")).is_ok());
    }

    #[test]
    fn rejections() {
        assert_eq!(check(&GOOD.replace("GET", "POST")), Err(HandshakeError::NotGet));
        assert_eq!(check(&GOOD.replace("HTTP/1.1", "HTTP/1.0")), Err(HandshakeError::NotHttp11));
        assert_eq!(check(&GOOD.replace("Upgrade: websocket\r\n", "")), Err(HandshakeError::MissingUpgrade));
        assert_eq!(
            check(&GOOD.replace("keep-alive, Upgrade", "keep-alive")),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
        assert_eq!(check(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")), Err(HandshakeError::BadKey));
        assert_eq!(check(&GOOD.replace("Version: 13", "Version: 8")), Err(HandshakeError::UnsupportedVersion));
        assert_eq!(check(&GOOD.replace("Sec-WebSocket-Version: 13\r\n", "")), Err(HandshakeError::MissingVersion));
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }
}
