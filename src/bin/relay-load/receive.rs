//! What the server sends: read from the socket (or through TLS), parsed, answered and counted.

use std::io;

use camrelay::ws::frame::{OP_BINARY, OP_PONG};
use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::clock::{Arrival, Clock};
use crate::conn::{Conn, IO_BUDGET, Role};
use crate::frames::{Event, FrameError, push_masked_frame};
use crate::meter::Meter;
use crate::payload::{HEAD_LEN, KIND_DELTA, KIND_KEY, KIND_LOAD};
use crate::{sys, tls};

/// Payload runs at least this long are discarded in the kernel rather than read.
const SKIP_MIN: u64 = 16 * 1024;
/// With big messages, what one read takes at a frame boundary: the longest header and the head.
pub const PEEK: usize = 10 + HEAD_LEN;

/// What a read pass left to do.
pub enum After {
    Fine,
    More,
    Lost(String),
}

/// What a read produced: bytes, or a count of payload bytes discarded unseen.
pub enum Input<'a> {
    Bytes(&'a [u8]),
    Skipped(u64),
}

/// Feeds what a connection received to its parser and acts on what it finds.
pub fn ingest(c: &mut Conn, input: Input, at: Arrival, meter: &mut Meter) -> Result<(), FrameError> {
    let Conn { parser, acct, ctrl_out, close_code, role, stream, .. } = c;
    let (watcher, stream) = (*role == Role::Watcher, *stream);
    let on = |event: Event| match event {
        Event::Message { opcode: OP_BINARY, head, len }
            if watcher && head.len() == HEAD_LEN && matches!(head[0], KIND_LOAD | KIND_KEY | KIND_DELTA) =>
        {
            meter.record(stream, acct, head, len, at)
        }
        // Text events of our server, other kinds, publisher-side events: not counted.
        Event::Message { .. } | Event::Pong => {}
        Event::Ping(payload) => push_masked_frame(ctrl_out, OP_PONG, payload),
        Event::Close(code) => {
            close_code.get_or_insert(code);
        }
    };
    match input {
        Input::Bytes(data) => parser.feed(data, on),
        Input::Skipped(n) => {
            parser.skip(n, on);
            Ok(())
        }
    }
}

/// Reads plaintext through TLS and parses it for `c`, until drained, closed or over budget.
/// Every byte is decrypted anyway, so nothing is discarded in the kernel, and records carry no
/// receive timestamp: latency runs to the return of the read.
pub fn read_tls_into(
    sock: &mut TcpStream,
    tls: &mut ClientConnection,
    c: &mut Conn,
    buf: &mut [u8],
    clock: &Clock,
    meter: &mut Meter,
) -> After {
    let mut total = 0;
    loop {
        match tls::recv(sock, tls, buf) {
            Ok(0) => return After::Lost("closed by the server without a close frame".into()),
            Ok(n) => {
                if let Some(after) = take(c, Input::Bytes(&buf[..n]), clock.arrival(None), meter) {
                    return after;
                }
                total += n;
                if total >= IO_BUDGET {
                    return After::More;
                }
            }
            Err(e) => {
                if let Some(after) = read_error(c, e) {
                    return after;
                }
            }
        }
    }
}

/// Reads from `sock` and parses what arrives for `c`, until drained, closed or over budget.
///
/// Small messages are read in large chunks. Once messages are big, only their headers and heads
/// are read (`PEEK` bytes at a time) and the rest of each payload is dropped in the kernel with
/// `MSG_TRUNC`: copying every byte out would make the generator, not the server, the limit.
pub fn read_into(sock: &mut TcpStream, c: &mut Conn, buf: &mut [u8], clock: &Clock, meter: &mut Meter) -> After {
    let mut total = 0;
    loop {
        let skippable = c.parser.skippable();
        let discard = skippable >= SKIP_MIN;
        let asked = if discard {
            skippable.min(buf.len() as u64) as usize
        } else if c.parser.last_len >= SKIP_MIN {
            (skippable as usize + PEEK).min(buf.len())
        } else {
            buf.len()
        };
        match sys::receive(sock, &mut buf[..asked], discard) {
            Ok((0, _)) => return After::Lost("closed by the server without a close frame".into()),
            Ok((n, stamp)) => {
                let at = clock.arrival(stamp);
                let input = if discard { Input::Skipped(n as u64) } else { Input::Bytes(&buf[..n]) };
                if let Some(after) = take(c, input, at, meter) {
                    return after;
                }
                // A short read emptied the socket; epoll reports the next bytes as a new edge,
                // so this saves the read that would only say WouldBlock.
                if n < asked {
                    c.readable = false;
                    return After::Fine;
                }
                total += n;
                if total >= IO_BUDGET {
                    return After::More;
                }
            }
            Err(e) => {
                if let Some(after) = read_error(c, e) {
                    return after;
                }
            }
        }
    }
}

/// Parses one read's bytes for `c`; `Some` when the read loop must stop there.
fn take(c: &mut Conn, input: Input, at: Arrival, meter: &mut Meter) -> Option<After> {
    if let Err(e) = ingest(c, input, at, meter) {
        return Some(After::Lost(format!("protocol error: {e}")));
    }
    c.close_code.is_some().then_some(After::Fine)
}

/// What a failed read means: drained for now, try again (`None`), or the connection is lost.
fn read_error(c: &mut Conn, e: io::Error) -> Option<After> {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            c.readable = false;
            Some(After::Fine)
        }
        io::ErrorKind::Interrupted => None,
        _ => Some(After::Lost(format!("read: {e}"))),
    }
}
