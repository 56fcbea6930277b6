//! Property tests: any sequence of valid client messages, fragmented and masked any way and
//! delivered in pieces split anywhere, decodes to the same messages.

use proptest::prelude::*;

use super::frame::{self, MAX_HEADER, OP_BINARY, OP_PING, OP_TEXT};
use super::receiver::{Incoming, Receiver};

/// One client message: text or binary, cut into fragments, maybe with a ping between the first two.
#[derive(Debug, Clone)]
struct Message {
    opcode: u8,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    ping_after_first: bool,
}

fn message() -> impl Strategy<Value = Message> {
    let text = ".{0,200}".prop_map(|s: String| (OP_TEXT, s.into_bytes()));
    let binary = prop::collection::vec(any::<u8>(), 0..3000).prop_map(|b| (OP_BINARY, b));
    (prop_oneof![text, binary], prop::collection::vec(any::<usize>(), 0..4), any::<bool>()).prop_map(
        |((opcode, payload), mut cuts, ping_after_first)| {
            cuts.iter_mut().for_each(|c| *c %= payload.len() + 1);
            cuts.sort_unstable();
            Message { opcode, payload, cuts, ping_after_first }
        },
    )
}

/// A masked client frame, as a browser would send it (shared with the receiver's unit tests).
pub(super) fn masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The wire bytes of `messages` and what the receiver must produce from them.
fn encode(messages: &[Message], mask: [u8; 4]) -> (Vec<u8>, Vec<Incoming>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for m in messages {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &m.payload[w[0]..w[1]]).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = if i == pieces.len() - 1 { 0x80 } else { 0 };
            let opcode = if i == 0 { m.opcode } else { 0 };
            wire.extend(masked(fin | opcode, piece, mask));
            if i == 0 && pieces.len() > 1 && m.ping_after_first {
                wire.extend(masked(0x80 | OP_PING, b"p", mask));
                expected.push(Incoming::Ping(b"p".to_vec()));
            }
        }
        let mut buf = vec![0; MAX_HEADER];
        buf.extend_from_slice(&m.payload);
        expected.push(Incoming::Data { opcode: m.opcode, buf });
    }
    (wire, expected)
}

proptest! {
    #[test]
    fn split_anywhere_decodes_the_same(
        messages in prop::collection::vec(message(), 1..6),
        mask in any::<[u8; 4]>(),
        splits in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (wire, expected) = encode(&messages, mask);
        let mut splits: Vec<usize> = splits.iter().map(|s| s % (wire.len() + 1)).collect();
        splits.push(wire.len());
        splits.sort_unstable();
        let mut receiver = Receiver::new(1 << 20);
        let mut got = Vec::new();
        let mut from = 0;
        for to in splits {
            let mut input = &wire[from..to];
            while let Some(m) = receiver.next(&mut input).unwrap() {
                got.push(m);
            }
            prop_assert!(input.is_empty());
            from = to;
        }
        prop_assert_eq!(got, expected);
        prop_assert!(!receiver.is_mid_message());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut receiver = Receiver::new(4096);
        let mut input = &bytes[..];
        while let Ok(Some(_)) = receiver.next(&mut input) {}
    }

    #[test]
    fn server_frame_header_round_trips(opcode in 0u8..16, len in 0usize..200_000) {
        let (h, used) = frame::header(opcode, len);
        prop_assert_eq!(h[0], 0x80 | opcode);
        let decoded = match h[1] {
            126 => u16::from_be_bytes([h[2], h[3]]) as usize,
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap()) as usize,
            n => n as usize,
        };
        prop_assert_eq!(decoded, len);
        prop_assert_eq!(used, match len { 0..=125 => 2, 126..=65535 => 4, _ => 10 });
    }
}
