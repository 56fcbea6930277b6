//! The benchmark's ceiling: the least work a relay can do. After the handshake, a publisher's
//! bytes are read in large chunks; each complete data frame is unmasked and reframed once into one
//! output buffer, and that same buffer is written to every watcher (non-blocking, waiting in
//! `mio` only for the watchers whose socket is full) before the next chunk is read. No validation,
//! no per-watcher queues, no events, no slow-watcher policy, nothing cached.
//!
//! Usage: `relay-limit PORT` (0 picks a free port; the real one is printed on stdout).

mod handshake;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

/// Watchers whose handshake is done, waiting for their stream's publisher thread to take them.
type NewWatchers = Arc<Mutex<HashMap<String, Vec<TcpStream>>>>;

/// How much of the publisher's stream one read takes: large, so that a burst of small messages
/// becomes one write per watcher.
const READ_CHUNK: usize = 256 * 1024;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening on http://{}", listener.local_addr()?);
    let new_watchers: NewWatchers = Arc::default();
    for conn in listener.incoming() {
        let mut tcp = match conn {
            Ok(tcp) => tcp,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Handshakes are done here, one at a time: on loopback each takes microseconds.
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let (path, rest) = match handshake::accept(&mut tcp) {
            Ok(done) => done,
            Err(e) => {
                eprintln!("handshake: {e}");
                continue;
            }
        };
        let _ = tcp.set_read_timeout(None);
        let _ = tcp.set_nodelay(true);
        if let Some(name) = path.strip_prefix("/ws/watch/") {
            new_watchers.lock().unwrap().entry(name.to_owned()).or_default().push(tcp);
        } else if let Some(name) = path.strip_prefix("/ws/publish/") {
            let (name, new_watchers) = (name.to_owned(), new_watchers.clone());
            std::thread::spawn(move || {
                if let Err(e) = relay(tcp, rest, &name, &new_watchers) {
                    eprintln!("publisher of {name}: {e}");
                }
            });
        }
    }
    Ok(())
}

/// Reads the publisher until it closes, sending each batch of complete frames to every watcher.
fn relay(mut publisher: TcpStream, mut buf: Vec<u8>, name: &str, new_watchers: &NewWatchers) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut watchers: Vec<Option<mio::net::TcpStream>> = Vec::new();
    let mut out = Vec::with_capacity(READ_CHUNK + 64);
    let mut in_text = false;
    loop {
        let used = buf.len();
        buf.resize(used + READ_CHUNK, 0);
        let n = match publisher.read(&mut buf[used..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        buf.truncate(used + n);
        let mut pos = 0;
        while let Some(frame) = parse(&buf[pos..]) {
            let payload = &mut buf[pos + frame.header_len..pos + frame.header_len + frame.len];
            match frame.opcode {
                0x8 => return Ok(()),
                0x1 => in_text = !frame.fin,
                0x0 if in_text => in_text = !frame.fin,
                0x0 | 0x2 => {
                    unmask(payload, frame.mask);
                    push_header(&mut out, frame.fin, frame.opcode, frame.len);
                    out.extend_from_slice(payload);
                }
                _ => {} // ping, pong: nobody asks for answers here
            }
            pos += frame.header_len + frame.len;
        }
        buf.drain(..pos);
        if out.is_empty() {
            continue;
        }
        // New watchers join at a batch boundary, so they start on a whole frame.
        for tcp in new_watchers.lock().unwrap().remove(name).unwrap_or_default() {
            tcp.set_nonblocking(true)?;
            let mut tcp = mio::net::TcpStream::from_std(tcp);
            poll.registry().register(&mut tcp, Token(watchers.len()), Interest::WRITABLE)?;
            watchers.push(Some(tcp));
        }
        send_to_all(&out, &mut watchers, &mut poll, &mut events)?;
        out.clear();
    }
}

/// Writes `out` whole to every watcher, dropping those that fail.
fn send_to_all(
    out: &[u8],
    watchers: &mut [Option<mio::net::TcpStream>],
    poll: &mut Poll,
    events: &mut Events,
) -> std::io::Result<()> {
    let mut sent = vec![0usize; watchers.len()];
    let mut unfinished = 0;
    for (i, slot) in watchers.iter_mut().enumerate() {
        if write_some(slot, out, &mut sent[i]) {
            unfinished += 1;
        }
    }
    while unfinished > 0 {
        poll.poll(events, None)?;
        for event in events.iter() {
            let i = event.token().0;
            if sent[i] < out.len() && watchers[i].is_some() && !write_some(&mut watchers[i], out, &mut sent[i]) {
                unfinished -= 1;
            }
        }
    }
    Ok(())
}

/// Writes until done or the socket is full; true while bytes remain for this watcher.
fn write_some(slot: &mut Option<mio::net::TcpStream>, out: &[u8], sent: &mut usize) -> bool {
    let Some(tcp) = slot else { return false };
    while *sent < out.len() {
        match tcp.write(&out[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                // Dropping the stream closes it and removes it from the poll.
                *slot = None;
                return false;
            }
        }
    }
    false
}

struct Frame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    len: usize,
}

/// A complete client frame at the start of `b`, or `None` when more bytes are needed.
fn parse(b: &[u8]) -> Option<Frame> {
    if b.len() < 2 {
        return None;
    }
    let (mut header_len, len) = match b[1] & 0x7f {
        126 => (4, u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize),
        n => (2, n as usize),
    };
    let mut mask = [0; 4];
    if b[1] & 0x80 != 0 {
        mask.copy_from_slice(b.get(header_len..header_len + 4)?);
        header_len += 4;
    }
    if b.len() < header_len + len {
        return None;
    }
    Some(Frame { fin: b[0] & 0x80 != 0, opcode: b[0] & 0x0f, mask, header_len, len })
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().unwrap()) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask index restarts at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

fn push_header(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_masked_hello_is_reframed_unmasked() {
        // RFC 6455 §5.7: a masked "Hello" from a client.
        let mut b = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert!(parse(&b[..10]).is_none());
        let f = parse(&b).unwrap();
        assert_eq!((f.fin, f.opcode, f.header_len, f.len), (true, 1, 6, 5));
        unmask(&mut b[6..], f.mask);
        assert_eq!(&b[6..], b"Hello");
        let mut out = Vec::new();
        push_header(&mut out, true, 2, 300);
        assert_eq!(out, [0x82, 126, 0x01, 0x2c]);
    }

    #[test]
    fn unmask_long_payload_matches_bytewise() {
        let mask = [1, 2, 3, 4];
        let mut p: Vec<u8> = (0..37).collect();
        unmask(&mut p, mask);
        let expected: Vec<u8> = (0..37u8).map(|i| i ^ mask[i as usize % 4]).collect();
        assert_eq!(p, expected);
    }
}
