//! A connection's bounded write queue: shared chunks plus an offset into the head chunk,
//! flushed with vectored writes so many queued frames leave in one syscall.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;
use std::time::Instant;

use crate::chunk::Chunk;

/// At most this many chunks go into one `writev` (Linux allows 1024): enough that a burst of
/// small messages leaves in a few syscalls, small enough that the slice array is cheap to set
/// up for the common case of one or two queued frames.
const MAX_IOVECS: usize = 256;
/// The common case, one or a few queued frames, sets up only this many slices.
const FEW_IOVECS: usize = 8;
/// Memory an entry takes beyond its bytes: the queue slot, the shared chunk's header and the
/// allocator's minimum block.
const ENTRY_COST: usize = 64;

struct Entry {
    chunk: Rc<Chunk>,
    queued_at: Instant,
}

#[derive(Default)]
pub struct OutQueue {
    entries: VecDeque<Entry>,
    /// Bytes of the head chunk already written.
    head_offset: usize,
    /// Unsent bytes in the queue.
    bytes: usize,
}

pub enum Flush {
    /// Everything was written.
    Done,
    /// The socket is full; a writable event will come.
    Blocked,
}

impl OutQueue {
    pub fn push(&mut self, chunk: Rc<Chunk>, now: Instant) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        self.entries.push_back(Entry { chunk, queued_at: now });
    }

    /// Unsent bytes, as they go on the wire.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the queue costs in memory: its bytes plus a charge per entry, so a flood of tiny
    /// frames (empty pongs, say) is bounded by what it really takes, not by its wire size.
    pub fn cost(&self) -> usize {
        self.bytes + self.entries.len() * ENTRY_COST
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long the oldest unsent chunk has waited.
    pub fn oldest_wait(&self, now: Instant) -> std::time::Duration {
        self.entries.front().map_or(std::time::Duration::ZERO, |e| now.saturating_duration_since(e.queued_at))
    }

    /// Drops every chunk that has not started to go out (a partly sent one must finish,
    /// or the peer would see half a frame).
    pub fn discard_unsent(&mut self) {
        let keep = usize::from(self.head_offset > 0);
        while self.entries.len() > keep {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.chunk.len();
            }
        }
    }

    /// Writes until the queue is empty or the writer would block; returns bytes written too.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<(Flush, usize)> {
        let mut written = 0;
        while !self.entries.is_empty() {
            let result = if self.entries.len() <= FEW_IOVECS {
                self.write_some::<FEW_IOVECS>(w)
            } else {
                self.write_some::<MAX_IOVECS>(w)
            };
            let n = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Flush::Blocked, written)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written += n;
            self.consume(n);
        }
        Ok((Flush::Done, written))
    }

    /// One vectored write of up to `N` queued chunks.
    fn write_some<const N: usize>(&self, w: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for (i, e) in self.entries.iter().take(N).enumerate() {
            let bytes: &[u8] = &e.chunk;
            slices[i] = IoSlice::new(if i == 0 { &bytes[self.head_offset..] } else { bytes });
            count += 1;
        }
        w.write_vectored(&slices[..count])
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(head) = self.entries.front() else { break };
            let left = head.chunk.len() - self.head_offset;
            if n >= left {
                n -= left;
                self.head_offset = 0;
                self.entries.pop_front();
            } else {
                self.head_offset += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts up to `budget` bytes, then says `WouldBlock`, like a full socket.
    struct Trickle {
        out: Vec<u8>,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                self.budget -= take;
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_exact_bytes_and_release_chunks() {
        let now = Instant::now();
        let a = Chunk::new(b"hello ".to_vec());
        let b = Chunk::new(b"world".to_vec());
        let mut q = OutQueue::default();
        q.push(a.clone(), now);
        q.push(b.clone(), now);
        assert_eq!(Rc::strong_count(&a), 2);
        let mut w = Trickle { out: Vec::new(), budget: 8, calls: 0 };
        assert!(matches!(q.flush(&mut w).unwrap(), (Flush::Blocked, 8)));
        assert_eq!(q.bytes(), 3);
        assert_eq!(Rc::strong_count(&a), 1, "a fully written chunk is released");
        assert_eq!(Rc::strong_count(&b), 2);
        w.budget = 100;
        assert!(matches!(q.flush(&mut w).unwrap(), (Flush::Done, 3)));
        assert_eq!(w.out, b"hello world");
        assert_eq!(Rc::strong_count(&b), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn many_small_chunks_leave_in_one_write() {
        let now = Instant::now();
        let mut q = OutQueue::default();
        for i in 0..MAX_IOVECS + 1 {
            q.push(Chunk::new(vec![i as u8; 3]), now);
        }
        let mut w = Trickle { out: Vec::new(), budget: 10_000, calls: 0 };
        q.flush(&mut w).unwrap();
        assert_eq!(w.calls, 2, "{MAX_IOVECS} frames per write");
        assert_eq!(w.out.len(), 3 * (MAX_IOVECS + 1));
    }

    #[test]
    fn discard_keeps_a_partly_sent_chunk() {
        let now = Instant::now();
        let mut q = OutQueue::default();
        for _ in 0..3 {
            q.push(Chunk::new(vec![7; 10]), now);
        }
        let mut w = Trickle { out: Vec::new(), budget: 4, calls: 0 };
        let _ = q.flush(&mut w).unwrap();
        q.discard_unsent();
        assert_eq!(q.bytes(), 6);
        w.budget = 100;
        let _ = q.flush(&mut w).unwrap();
        assert_eq!(w.out, vec![7; 10]);
    }
}
