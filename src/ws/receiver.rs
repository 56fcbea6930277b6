//! Client-to-server WebSocket decoding (RFC 6455 §5): a streaming frame parser that unmasks
//! payload straight into the message being assembled, reassembles fragments, validates UTF-8
//! of text as it arrives, and enforces the size limit before allocating anything.

use super::frame::{MAX_HEADER, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A data message. `buf[MAX_HEADER..]` is the payload; the headroom lets
    /// `frame::encode_in_place` relay it without another copy.
    Data {
        opcode: u8,
        buf: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong,
    /// `code` is `None` when the close frame had no payload.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// A broken rule, named after it; `close_code` is the answer on the wire.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum WsError {
    ReservedBitsSet,
    UnknownOpcode(u8),
    UnmaskedClientFrame,
    FragmentedControlFrame,
    ControlFrameTooLong,
    UnexpectedContinuation,
    ExpectedContinuation,
    LengthTooLarge,
    CloseFrameTooShort,
    InvalidCloseCode(u16),
    InvalidUtf8,
    MessageTooBig,
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            WsError::InvalidUtf8 => 1007,
            WsError::MessageTooBig => 1009,
            _ => 1002,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The most a new message reserves before its payload arrives.
const INITIAL_RESERVE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
}

#[derive(Debug)]
enum State {
    /// Collecting the 2..14 header bytes in `head`.
    Header,
    /// Inside a frame's payload: `remaining` bytes left, `mask_pos` is the mask offset.
    Payload { frame: FrameHead, remaining: u64, mask_pos: usize },
}

/// A data message being reassembled from fragments.
struct Partial {
    opcode: u8,
    buf: Vec<u8>,
    /// Bytes of the payload known to be valid UTF-8 (text only).
    utf8_valid: usize,
}

pub struct Receiver {
    head: [u8; 14],
    head_len: usize,
    state: State,
    message: Option<Partial>,
    control: Vec<u8>,
    max_message: usize,
}

impl Receiver {
    pub fn new(max_message: usize) -> Receiver {
        Receiver { head: [0; 14], head_len: 0, state: State::Header, message: None, control: Vec::new(), max_message }
    }

    /// True while part of a frame or message has been received but not completed.
    pub fn is_mid_message(&self) -> bool {
        self.head_len > 0 || self.message.is_some() || matches!(self.state, State::Payload { .. })
    }

    /// Consumes bytes from `input` until one message completes (`Ok(Some)`) or the input
    /// is used up (`Ok(None)`: need more bytes). After an error the receiver is unusable.
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<Incoming>, WsError> {
        loop {
            match self.state {
                State::Header => {
                    let Some(frame) = self.read_header(input)? else {
                        return Ok(None);
                    };
                    self.begin_frame(&frame)?;
                    self.state = State::Payload { frame, remaining: frame.len, mask_pos: 0 };
                }
                State::Payload { frame, ref mut remaining, ref mut mask_pos } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let (bytes, rest) = input.split_at(take);
                    *input = rest;
                    let start_pos = *mask_pos;
                    let frame_left = *remaining;
                    *remaining -= take as u64;
                    *mask_pos = (*mask_pos + take) % 4;
                    let done = *remaining == 0;
                    self.append_payload(&frame, bytes, start_pos, frame_left)?;
                    if !done {
                        return Ok(None);
                    }
                    self.state = State::Header;
                    if let Some(msg) = self.end_frame(&frame)? {
                        return Ok(Some(msg));
                    }
                }
            }
        }
    }

    /// Collects header bytes; returns the parsed header once all of it is here.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<Option<FrameHead>, WsError> {
        loop {
            let needed = header_len(&self.head[..self.head_len]);
            if self.head_len == needed {
                break;
            }
            let Some((&b, rest)) = input.split_first() else {
                return Ok(None);
            };
            self.head[self.head_len] = b;
            self.head_len += 1;
            *input = rest;
        }
        let h = &self.head[..self.head_len];
        self.head_len = 0;
        // §5.2: RSV1-3 MUST be 0 unless an extension was negotiated (we negotiate none).
        if h[0] & 0x70 != 0 {
            return Err(WsError::ReservedBitsSet);
        }
        // §5.1: the server MUST close the connection upon receiving an unmasked frame.
        if h[1] & 0x80 == 0 {
            return Err(WsError::UnmaskedClientFrame);
        }
        let len7 = h[1] & 0x7f;
        let (len, mask_at) = match len7 {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (n as u64, 2),
        };
        // §5.2: the most significant bit of a 64-bit length MUST be 0.
        if len >> 63 != 0 {
            return Err(WsError::LengthTooLarge);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        Ok(Some(FrameHead { fin: h[0] & 0x80 != 0, opcode: h[0] & 0x0f, mask, len }))
    }

    /// Checks a frame header against the message state, before any payload is stored.
    fn begin_frame(&mut self, f: &FrameHead) -> Result<(), WsError> {
        match f.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                // §5.5: control frames MUST have a payload of 125 bytes or less and MUST NOT be fragmented.
                if !f.fin {
                    return Err(WsError::FragmentedControlFrame);
                }
                if f.len > 125 {
                    return Err(WsError::ControlFrameTooLong);
                }
                self.control.clear();
            }
            OP_CONTINUATION => {
                // §5.4: a continuation frame only follows a non-final data frame.
                let Some(m) = &self.message else {
                    return Err(WsError::UnexpectedContinuation);
                };
                if (m.buf.len() - MAX_HEADER) as u64 + f.len > self.max_message as u64 {
                    return Err(WsError::MessageTooBig);
                }
            }
            OP_TEXT | OP_BINARY => {
                // §5.4: a new message may not start inside a fragmented one.
                if self.message.is_some() {
                    return Err(WsError::ExpectedContinuation);
                }
                if f.len > self.max_message as u64 {
                    return Err(WsError::MessageTooBig);
                }
                // Reserve no more than a little up front: an announced length costs nothing
                // until its bytes actually arrive.
                let mut buf = Vec::with_capacity(MAX_HEADER + (f.len as usize).min(INITIAL_RESERVE));
                buf.resize(MAX_HEADER, 0);
                self.message = Some(Partial { opcode: f.opcode, buf, utf8_valid: 0 });
            }
            other => return Err(WsError::UnknownOpcode(other)),
        }
        Ok(())
    }

    /// Adds payload bytes that arrived; `frame_left` counts them and the rest of the frame.
    fn append_payload(&mut self, f: &FrameHead, bytes: &[u8], mask_pos: usize, frame_left: u64) -> Result<(), WsError> {
        let is_control = f.opcode >= OP_CLOSE;
        let Some(m) = (if is_control { None } else { self.message.as_mut() }) else {
            let from = self.control.len();
            self.control.extend_from_slice(bytes);
            unmask(&mut self.control[from..], f.mask, mask_pos);
            return Ok(());
        };
        let from = m.buf.len();
        if m.buf.capacity() - from < bytes.len() {
            // Grow geometrically (at most doubling what actually arrived) but never past the
            // frame's end: a relayed message keeps no slack in every queue that holds it.
            let grow = (frame_left as usize).min(bytes.len().max(from));
            m.buf.reserve_exact(grow);
        }
        m.buf.extend_from_slice(bytes);
        unmask(&mut m.buf[from..], f.mask, mask_pos);
        if m.opcode == OP_TEXT {
            // Fail fast on invalid UTF-8 (§8.1); an incomplete trailing sequence may finish later.
            let unchecked = &m.buf[MAX_HEADER + m.utf8_valid..];
            match std::str::from_utf8(unchecked) {
                Ok(_) => m.utf8_valid += unchecked.len(),
                Err(e) if e.error_len().is_none() => m.utf8_valid += e.valid_up_to(),
                Err(_) => return Err(WsError::InvalidUtf8),
            }
        }
        Ok(())
    }

    fn end_frame(&mut self, f: &FrameHead) -> Result<Option<Incoming>, WsError> {
        match f.opcode {
            OP_PING => Ok(Some(Incoming::Ping(std::mem::take(&mut self.control)))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => parse_close(&self.control).map(Some),
            _ if !f.fin => Ok(None),
            _ => {
                let Some(m) = self.message.take() else {
                    return Ok(None);
                };
                if m.opcode == OP_TEXT && MAX_HEADER + m.utf8_valid != m.buf.len() {
                    return Err(WsError::InvalidUtf8);
                }
                Ok(Some(Incoming::Data { opcode: m.opcode, buf: m.buf }))
            }
        }
    }
}

/// How many header bytes a frame needs, given the ones seen so far.
fn header_len(seen: &[u8]) -> usize {
    if seen.len() < 2 {
        return 2;
    }
    let ext = match seen[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if seen[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// §5.5.1: an optional 2-byte code, then a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Incoming, WsError> {
    match payload.len() {
        0 => Ok(Incoming::Close { code: None, reason: String::new() }),
        1 => Err(WsError::CloseFrameTooShort),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Incoming::Close { code: Some(code), reason: reason.to_owned() })
        }
    }
}

/// §7.4: codes a peer may send (1004-1006 and 1015 are reserved for local use).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs `data` with the mask, starting at mask offset `pos` (§5.3).
fn unmask(data: &mut [u8], mask: [u8; 4], pos: usize) {
    let m = [mask[pos % 4], mask[(pos + 1) % 4], mask[(pos + 2) % 4], mask[(pos + 3) % 4]];
    let word = u32::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        crate::ws::props::masked(first, payload, MASK)
    }

    fn decode_all(max: usize, bytes: &[u8]) -> Result<Vec<Incoming>, WsError> {
        let mut r = Receiver::new(max);
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(m) = r.next(&mut input)? {
            out.push(m);
        }
        assert!(input.is_empty());
        Ok(out)
    }

    fn data(opcode: u8, payload: &[u8]) -> Incoming {
        let mut buf = vec![0; MAX_HEADER];
        buf.extend_from_slice(payload);
        Incoming::Data { opcode, buf }
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(decode_all(100, &bytes), Ok(vec![data(OP_TEXT, b"Hello")]));
    }

    #[test]
    fn length_forms_and_split_anywhere() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let bytes = client_frame(0x82, &payload);
            assert_eq!(decode_all(1 << 20, &bytes), Ok(vec![data(OP_BINARY, &payload)]));
            // Every strict prefix needs more bytes; any split gives the same message.
            for cut in [1, 2, 3, bytes.len() / 2, bytes.len() - 1] {
                if cut >= bytes.len() {
                    continue;
                }
                let mut r = Receiver::new(1 << 20);
                let (a, b) = bytes.split_at(cut);
                let mut input = a;
                assert_eq!(r.next(&mut input), Ok(None));
                let mut input = b;
                assert_eq!(r.next(&mut input), Ok(Some(data(OP_BINARY, &payload))));
            }
        }
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let mut bytes = client_frame(0x01, b"Hel");
        bytes.extend(client_frame(0x89, b"ping!"));
        bytes.extend(client_frame(0x80, "lo, wörld".as_bytes()));
        let whole = decode_all(1000, &bytes).unwrap();
        let mut r = Receiver::new(1000);
        let mut out = Vec::new();
        for b in &bytes {
            let mut input = std::slice::from_ref(b);
            if let Some(m) = r.next(&mut input).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, whole);
        assert_eq!(whole, vec![Incoming::Ping(b"ping!".to_vec()), data(OP_TEXT, "Hello, wörld".as_bytes())]);
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x82, 0x00], WsError::UnmaskedClientFrame),
            (client_frame(0xC2, b"x"), WsError::ReservedBitsSet),
            (client_frame(0x83, b"x"), WsError::UnknownOpcode(3)),
            (client_frame(0x8B, b"x"), WsError::UnknownOpcode(11)),
            (client_frame(0x09, b"x"), WsError::FragmentedControlFrame),
            (client_frame(0x89, &[0; 126]), WsError::ControlFrameTooLong),
            (client_frame(0x80, b"x"), WsError::UnexpectedContinuation),
            ([client_frame(0x02, b"x"), client_frame(0x82, b"y")].concat(), WsError::ExpectedContinuation),
            (client_frame(0x88, &[3]), WsError::CloseFrameTooShort),
            (client_frame(0x88, &1005u16.to_be_bytes()), WsError::InvalidCloseCode(1005)),
            (client_frame(0x88, &[0x03, 0xe8, 0xff]), WsError::InvalidUtf8),
            (client_frame(0x81, &[0xce, 0xba, 0xff]), WsError::InvalidUtf8),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_all(1000, &bytes), Err(err), "{bytes:02x?}");
        }
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::MessageTooBig.close_code(), 1009);
        assert_eq!(WsError::UnmaskedClientFrame.close_code(), 1002);
    }

    #[test]
    fn invalid_utf8_fails_fast_before_the_message_ends() {
        let mut r = Receiver::new(1000);
        let mut input = &client_frame(0x01, &[b'a', 0xff])[..];
        assert_eq!(r.next(&mut input), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn utf8_sequence_split_across_fragments_is_valid() {
        let euro = "€".as_bytes();
        let mut bytes = client_frame(0x01, &euro[..1]);
        bytes.extend(client_frame(0x00, &euro[1..2]));
        bytes.extend(client_frame(0x80, &euro[2..]));
        assert_eq!(decode_all(100, &bytes), Ok(vec![data(OP_TEXT, euro)]));
        // Ending a message inside a sequence is invalid.
        assert_eq!(decode_all(100, &client_frame(0x81, &euro[..2])), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn size_limit_is_checked_before_allocating() {
        // A header announcing 2^63-1 bytes: rejected at once, nothing allocated.
        let mut bytes = vec![0x82, 0xff];
        bytes.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        bytes.extend_from_slice(&MASK);
        assert_eq!(decode_all(1 << 24, &bytes), Err(WsError::MessageTooBig));
        let mut bytes = vec![0x82, 0xff];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&MASK);
        assert_eq!(decode_all(1 << 24, &bytes), Err(WsError::LengthTooLarge));
        // Fragments adding up past the limit.
        let mut bytes = client_frame(0x02, &[0; 60]);
        bytes.extend(client_frame(0x80, &[0; 41]));
        assert_eq!(decode_all(100, &bytes), Err(WsError::MessageTooBig));
        assert_eq!(decode_all(100, &client_frame(0x82, &[0; 100])).map(|v| v.len()), Ok(1));
    }

    #[test]
    fn a_message_keeps_no_slack_past_its_frame() {
        for len in [100_000usize, 1_000_000] {
            let bytes = client_frame(0x82, &vec![7u8; len]);
            let mut r = Receiver::new(1 << 24);
            let mut got = None;
            for piece in bytes.chunks(64 * 1024) {
                let mut input = piece;
                if let Some(m) = r.next(&mut input).unwrap() {
                    got = Some(m);
                }
            }
            let Some(Incoming::Data { buf, .. }) = got else { panic!("no message") };
            assert_eq!((buf.len(), buf.capacity()), (MAX_HEADER + len, MAX_HEADER + len));
        }
    }

    #[test]
    fn close_frames() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(100, &client_frame(0x88, &payload)),
            Ok(vec![Incoming::Close { code: Some(1000), reason: "bye".into() }])
        );
        assert_eq!(
            decode_all(100, &client_frame(0x88, b"")),
            Ok(vec![Incoming::Close { code: None, reason: String::new() }])
        );
        for code in [999u16, 1004, 1006, 1012, 1015, 2999, 5000] {
            assert!(!is_valid_close_code(code), "{code}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert!(is_valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn unmask_at_every_offset() {
        for pos in 0..4 {
            for len in 0..11 {
                let plain: Vec<u8> = (0..len as u8).collect();
                let mut data: Vec<u8> = plain.iter().enumerate().map(|(i, b)| b ^ MASK[(i + pos) % 4]).collect();
                unmask(&mut data, MASK, pos);
                assert_eq!(data, plain);
            }
        }
    }
}
