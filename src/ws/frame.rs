//! Server-to-client WebSocket frames (RFC 6455 §5.2): never masked, always final.

use std::rc::Rc;

use crate::chunk::Chunk;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The longest frame header a server writes: 2 bytes + 8-byte extended length (no mask).
pub const MAX_HEADER: usize = 10;

/// Encodes the header of a final, unmasked frame; returns the buffer and how much of it is used.
pub fn header(opcode: u8, payload_len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | opcode;
    let used = if payload_len < 126 {
        h[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// Frames `payload` into a new chunk (one copy; used for small server-made messages).
pub fn encode(opcode: u8, payload: &[u8]) -> Rc<Chunk> {
    let (h, used) = header(opcode, payload.len());
    let mut buf = Vec::with_capacity(used + payload.len());
    buf.extend_from_slice(&h[..used]);
    buf.extend_from_slice(payload);
    Chunk::new(buf)
}

/// Frames a payload that sits in `buf[MAX_HEADER..]`, writing the header into the headroom
/// in front of it, so a received message is relayed without copying it again.
pub fn encode_in_place(opcode: u8, mut buf: Vec<u8>) -> Rc<Chunk> {
    debug_assert!(buf.len() >= MAX_HEADER);
    let (h, used) = header(opcode, buf.len() - MAX_HEADER);
    let start = MAX_HEADER - used;
    buf[start..MAX_HEADER].copy_from_slice(&h[..used]);
    Chunk::with_headroom(buf, start)
}

/// A close frame with a status code and a reason (truncated to fit a control frame).
pub fn close(code: u16, reason: &str) -> Rc<Chunk> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples_unmasked() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        assert_eq!(&encode(OP_TEXT, b"Hello")[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // 256 bytes binary message in a single unmasked frame: 0x82 0x7E 0x0100.
        let f = encode(OP_BINARY, &[0u8; 256]);
        assert_eq!(&f[..4], &[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(f.len(), 260);
        // 64 KiB binary message: 0x82 0x7F 0x0000000000010000.
        let f = encode(OP_BINARY, &[0u8; 65536]);
        assert_eq!(&f[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn length_form_boundaries() {
        assert_eq!(header(OP_BINARY, 125).1, 2);
        assert_eq!(header(OP_BINARY, 126).1, 4);
        assert_eq!(header(OP_BINARY, 65535).1, 4);
        assert_eq!(header(OP_BINARY, 65536).1, 10);
    }

    #[test]
    fn in_place_matches_copying_encoder() {
        for len in [0usize, 5, 125, 126, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = vec![0u8; MAX_HEADER];
            buf.extend_from_slice(&payload);
            assert_eq!(&encode_in_place(OP_BINARY, buf)[..], &encode(OP_BINARY, &payload)[..]);
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let f = close(1000, &reason);
        assert!(f.len() - 2 <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
