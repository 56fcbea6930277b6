//! An immutable byte buffer shared (reference-counted) by every write queue that sends it.
//!
//! A relayed WebSocket message is framed once into a `Chunk`; each watcher's queue holds an
//! `Rc<Chunk>`, never a copy. The buffer may keep unused headroom in front so a frame header
//! can be written in place after the payload was received (no copy to prepend it).

use std::ops::Deref;
use std::rc::Rc;

pub struct Chunk {
    buf: Vec<u8>,
    start: usize,
}

impl Chunk {
    /// A chunk whose bytes are all of `buf`.
    pub fn new(buf: Vec<u8>) -> Rc<Chunk> {
        Rc::new(Chunk { buf, start: 0 })
    }

    /// A chunk whose bytes are `buf[start..]` (the part before `start` is unused headroom).
    pub fn with_headroom(buf: Vec<u8>, start: usize) -> Rc<Chunk> {
        debug_assert!(start <= buf.len());
        Rc::new(Chunk { buf, start })
    }
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}
