//! The WebSocket frame decoder, fed in pieces: the first byte of the input chooses where to
//! split the rest, so fragmentation and UTF-8 state are exercised across reads.
#![no_main]

use camrelay::ws::receiver::{Incoming, Receiver};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut receiver = Receiver::new(MAX_MESSAGE);
    for piece in rest.chunks(step) {
        let mut input = piece;
        loop {
            match receiver.next(&mut input) {
                Ok(Some(Incoming::Data { opcode, buf })) => {
                    assert!(buf.len() <= MAX_MESSAGE + 10);
                    if opcode == 1 {
                        assert!(std::str::from_utf8(&buf[10..]).is_ok(), "text must be valid UTF-8");
                    }
                }
                Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    return;
                }
            }
        }
    }
});
