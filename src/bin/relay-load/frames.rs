//! WebSocket frames as a client sees them: the server's parsed without copying their payloads,
//! ours built masked.

use camrelay::ws::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

use crate::payload::HEAD_LEN;

/// Clients must mask (RFC 6455 §5.3); a fixed key lets the publisher build its frames once.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame that breaks RFC 6455 §5.2 as a server must follow it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    ReservedBitsSet,
    UnknownOpcode(u8),
    /// §5.1: a server MUST NOT mask frames it sends.
    MaskedServerFrame,
    /// §5.5: control frames are final and carry at most 125 bytes.
    BadControlFrame,
    UnexpectedContinuation,
    ExpectedContinuation,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the parser found; slices borrow the parser's small buffers.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message: its opcode, its first `HEAD_LEN` payload bytes (all of them if
    /// shorter) and its total length.
    Message {
        opcode: u8,
        head: &'a [u8],
        len: u64,
    },
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

/// A streaming parser that keeps only a frame header, the head of the current message and a
/// control payload: payload bytes past the head are counted and skipped, never copied.
pub struct FrameParser {
    hdr: [u8; 10],
    hdr_len: usize,
    in_payload: bool,
    fin: bool,
    opcode: u8,
    remaining: u64,
    /// Opcode of the data message being received, 0 between messages.
    msg_opcode: u8,
    msg_len: u64,
    head: [u8; HEAD_LEN],
    head_len: usize,
    ctrl: [u8; 125],
    ctrl_len: usize,
    /// Length of the last complete data message: tells the reader whether payloads are big.
    pub last_len: u64,
}

impl FrameParser {
    pub fn new() -> FrameParser {
        FrameParser {
            hdr: [0; 10],
            hdr_len: 0,
            in_payload: false,
            fin: false,
            opcode: 0,
            remaining: 0,
            msg_opcode: 0,
            msg_len: 0,
            head: [0; HEAD_LEN],
            head_len: 0,
            ctrl: [0; 125],
            ctrl_len: 0,
            last_len: 0,
        }
    }

    /// Payload bytes that may be dropped unseen now: the rest of a data frame whose message
    /// head is complete.
    pub fn skippable(&self) -> u64 {
        if self.in_payload && self.opcode < OP_CLOSE && self.head_len == HEAD_LEN { self.remaining } else { 0 }
    }

    /// Accounts for `n <= skippable()` payload bytes that were discarded without being read.
    pub fn skip(&mut self, n: u64, mut on: impl FnMut(Event)) {
        debug_assert!(n <= self.skippable());
        self.remaining -= n;
        self.msg_len += n;
        if self.remaining == 0 {
            self.end_frame(&mut on);
        }
    }

    /// Consumes all of `data`, calling `on` for every message and control frame it completes.
    /// After an error the parser is unusable.
    pub fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Event)) -> Result<(), FrameError> {
        while !data.is_empty() {
            if !self.in_payload {
                // Two fixed bytes, then the extended length the second one announces.
                let mut need = if self.hdr_len < 2 { 2 } else { Self::header_len(self.hdr[1])? };
                loop {
                    let take = (need - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                    self.hdr_len += take;
                    data = &data[take..];
                    if self.hdr_len < need {
                        return Ok(());
                    }
                    let full = Self::header_len(self.hdr[1])?;
                    if full == need {
                        break;
                    }
                    need = full;
                }
                self.begin_frame()?;
                if self.remaining == 0 {
                    self.end_frame(&mut on);
                }
                continue;
            }
            let take = self.remaining.min(data.len() as u64) as usize;
            let (bytes, rest) = data.split_at(take);
            if self.opcode >= OP_CLOSE {
                self.ctrl[self.ctrl_len..self.ctrl_len + take].copy_from_slice(bytes);
                self.ctrl_len += take;
            } else {
                let n = (HEAD_LEN - self.head_len).min(take);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                self.msg_len += take as u64;
            }
            data = rest;
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.end_frame(&mut on);
            }
        }
        Ok(())
    }

    fn header_len(b1: u8) -> Result<usize, FrameError> {
        if b1 & 0x80 != 0 {
            return Err(FrameError::MaskedServerFrame);
        }
        Ok(match b1 & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        })
    }

    fn begin_frame(&mut self) -> Result<(), FrameError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBitsSet);
        }
        let len = match b1 & 0x7f {
            126 => u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64,
            127 => u64::from_be_bytes(self.hdr[2..10].try_into().expect("8 bytes")),
            n => n as u64,
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        match opcode {
            OP_CONTINUATION if self.msg_opcode == 0 => return Err(FrameError::UnexpectedContinuation),
            OP_CONTINUATION => {}
            OP_TEXT | OP_BINARY if self.msg_opcode != 0 => return Err(FrameError::ExpectedContinuation),
            OP_TEXT | OP_BINARY => {
                self.msg_opcode = opcode;
                self.msg_len = 0;
                self.head_len = 0;
            }
            OP_CLOSE | OP_PING | OP_PONG if !fin || len > 125 => return Err(FrameError::BadControlFrame),
            OP_CLOSE | OP_PING | OP_PONG => self.ctrl_len = 0,
            other => return Err(FrameError::UnknownOpcode(other)),
        }
        self.hdr_len = 0;
        self.in_payload = true;
        self.fin = fin;
        self.opcode = opcode;
        self.remaining = len;
        Ok(())
    }

    fn end_frame(&mut self, on: &mut impl FnMut(Event)) {
        self.in_payload = false;
        match self.opcode {
            OP_PING => on(Event::Ping(&self.ctrl[..self.ctrl_len])),
            OP_PONG => on(Event::Pong),
            OP_CLOSE => {
                let code = (self.ctrl_len >= 2).then(|| u16::from_be_bytes([self.ctrl[0], self.ctrl[1]]));
                on(Event::Close(code));
            }
            _ if self.fin => {
                on(Event::Message { opcode: self.msg_opcode, head: &self.head[..self.head_len], len: self.msg_len });
                self.msg_opcode = 0;
                self.last_len = self.msg_len;
            }
            _ => {}
        }
    }
}

/// A final client frame (masked, §5.3) with `payload`, appended to `out`.
pub fn push_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{KIND_LOAD, load_payload};
    use crate::receive::PEEK;

    /// Owned copies of the parser's events, for comparing runs.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Seen {
        Message(u8, Vec<u8>, u64),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn parse_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<Vec<Seen>, FrameError> {
        let mut parser = FrameParser::new();
        let mut seen = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([wire.len()].iter()) {
            parser.feed(&wire[from..to], |e| {
                seen.push(match e {
                    Event::Message { opcode, head, len } => Seen::Message(opcode, head.to_vec(), len),
                    Event::Ping(p) => Seen::Ping(p.to_vec()),
                    Event::Pong => Seen::Pong,
                    Event::Close(code) => Seen::Close(code),
                })
            })?;
            from = to;
        }
        Ok(seen)
    }

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let (h, used) = camrelay::ws::frame::header(b0 & 0x0f, payload.len());
        let mut f = h[..used].to_vec();
        f[0] = b0;
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_split_anywhere_parse_the_same() {
        let mut wire = Vec::new();
        wire.extend(server_frame(0x81, br#"{"event":"publisher","live":true}"#));
        wire.extend(server_frame(0x82, &load_payload(17, 1, 0)));
        wire.extend(server_frame(0x82, &load_payload(300, 2, 1))); // 16-bit length
        wire.extend(server_frame(0x82, &load_payload(70_000, 3, 2))); // 64-bit length
        wire.extend(server_frame(0x82, &[KIND_LOAD, 1, 2])); // shorter than a head
        wire.extend(server_frame(0x89, b"hi"));
        // A fragmented message with a ping between fragments; its head spans two frames.
        wire.extend(server_frame(0x02, &load_payload(40, 4, 3)[..10]));
        wire.extend(server_frame(0x8A, b""));
        wire.extend(server_frame(0x00, &load_payload(40, 4, 3)[10..]));
        wire.extend(server_frame(0x80, &[]));
        wire.extend(server_frame(0x82, &[]));
        wire.extend(server_frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));

        let whole = parse_in_pieces(&wire, &[]).unwrap();
        let head = |size, us, seq| load_payload(size, us, seq)[..HEAD_LEN].to_vec();
        let expected = vec![
            Seen::Message(OP_TEXT, br#"{"event":"publish"#.to_vec(), 33),
            Seen::Message(OP_BINARY, head(17, 1, 0), 17),
            Seen::Message(OP_BINARY, head(300, 2, 1), 300),
            Seen::Message(OP_BINARY, head(70_000, 3, 2), 70_000),
            Seen::Message(OP_BINARY, vec![KIND_LOAD, 1, 2], 3),
            Seen::Ping(b"hi".to_vec()),
            Seen::Pong,
            Seen::Message(OP_BINARY, head(40, 4, 3), 40),
            Seen::Message(OP_BINARY, vec![], 0),
            Seen::Close(Some(1000)),
        ];
        assert_eq!(whole, expected);
        // Every single cut point, a spread of double cuts, and byte by byte.
        for cut in 0..=wire.len() {
            assert_eq!(parse_in_pieces(&wire, &[cut]).unwrap(), expected, "cut at {cut}");
        }
        for a in (0..wire.len()).step_by(97) {
            for b in (a..wire.len()).step_by(61) {
                assert_eq!(parse_in_pieces(&wire, &[a, b]).unwrap(), expected, "cuts at {a}, {b}");
            }
        }
        let bytes: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(parse_in_pieces(&wire, &bytes).unwrap(), expected);
    }

    #[test]
    fn skipping_payload_past_the_head_gives_the_same_events() {
        let mut wire = Vec::new();
        for (i, size) in [17usize, 5000, 70_000, 100, 300_000].into_iter().enumerate() {
            wire.extend(server_frame(0x82, &load_payload(size, i as u64 * 7, i as u64)));
            wire.extend(server_frame(0x81, b"{}"));
        }
        let expected = parse_in_pieces(&wire, &[]).unwrap();
        // Like `read_into`: skip what may be skipped (at most `step` bytes at a time), otherwise
        // read `peek` bytes.
        for (step, peek) in [(1usize, 1usize), (1000, PEEK), (1 << 20, PEEK), (4096, 3)] {
            let mut parser = FrameParser::new();
            let mut seen = Vec::new();
            let mut on = |e: Event| {
                if let Event::Message { opcode, head, len } = e {
                    seen.push(Seen::Message(opcode, head.to_vec(), len));
                }
            };
            let (mut at, mut skipped) = (0, 0);
            while at < wire.len() {
                let skippable = parser.skippable() as usize;
                if skippable > 0 {
                    let n = skippable.min(step);
                    parser.skip(n as u64, &mut on);
                    (at, skipped) = (at + n, skipped + n);
                } else {
                    let n = peek.min(wire.len() - at);
                    parser.feed(&wire[at..at + n], &mut on).unwrap();
                    at += n;
                }
            }
            assert_eq!(seen, expected, "step {step}, peek {peek}");
            assert!(skipped > 300_000, "payload was read, not skipped");
        }
    }

    #[test]
    fn frames_that_break_the_rules_are_errors() {
        let err = |wire: &[u8]| parse_in_pieces(wire, &[1]).unwrap_err();
        assert_eq!(err(&[0x82, 0x81, 1, 2, 3, 4, 0]), FrameError::MaskedServerFrame);
        assert_eq!(err(&[0xC2, 0x00]), FrameError::ReservedBitsSet);
        assert_eq!(err(&[0x83, 0x00]), FrameError::UnknownOpcode(3));
        assert_eq!(err(&[0x80, 0x00]), FrameError::UnexpectedContinuation);
        assert_eq!(err(&[0x02, 0x00, 0x82, 0x00]), FrameError::ExpectedContinuation);
        assert_eq!(err(&[0x09, 0x00]), FrameError::BadControlFrame);
        assert_eq!(err(&[0x89, 126, 0, 126]), FrameError::BadControlFrame);
    }
}
