//! Publishers: paced, pre-built batches of masked frames.

use std::time::{Duration, Instant};

use camrelay::ws::frame::OP_BINARY;

use crate::frames::{MASK, push_masked_frame};
use crate::payload::{KIND_DELTA, KIND_KEY, KIND_LOAD};

/// A publisher stamps and writes up to this many bytes of whole frames per write call.
const BATCH_BYTES: usize = 64 * 1024;

/// One publisher's frames: `max_batch` copies of the same masked frame back to back. Sending a
/// batch only rewrites the 16 stamped bytes of each frame (masked like the rest) and writes the
/// whole batch in one call.
pub struct Publisher {
    pub token: usize,
    pub stream: usize,
    frame_len: usize,
    payload_at: usize,
    max_batch: usize,
    pub batch: Vec<u8>,
    /// The unsent part of the batch is `batch[pos..len]`.
    pub pos: usize,
    pub len: usize,
    pub next_seq: u64,
    /// When its first message is due (publishers are staggered over one interval).
    pub start: Instant,
    /// Soak mode: every this many messages a key frame (kind 2), deltas (kind 3) between;
    /// 0 = every message is `KIND_LOAD`.
    pub keyframe_every: u64,
}

impl Publisher {
    pub fn new(token: usize, stream: usize, size: usize) -> Publisher {
        let payload: Vec<u8> = (0..size).map(|i| if i == 0 { KIND_LOAD } else { (i % 251) as u8 }).collect();
        let mut frame = Vec::with_capacity(size + 14);
        push_masked_frame(&mut frame, OP_BINARY, &payload);
        let max_batch = (BATCH_BYTES / frame.len()).max(1);
        Publisher {
            token,
            stream,
            frame_len: frame.len(),
            payload_at: frame.len() - size,
            max_batch,
            batch: frame.repeat(max_batch),
            pos: 0,
            len: 0,
            next_seq: 0,
            start: Instant::now(),
            keyframe_every: 0,
        }
    }

    /// Messages due now: all that the rate allows so far (catching up after a late wake-up),
    /// at most one batch.
    pub fn due(&self, now: Instant, rate: f64) -> usize {
        if rate <= 0.0 {
            return self.max_batch;
        }
        if now < self.start {
            return 0;
        }
        // The epsilon keeps float rounding from missing a message exactly at its due time.
        let total = ((now - self.start).as_secs_f64() * rate + 1e-9).floor() as u64 + 1;
        total.saturating_sub(self.next_seq).min(self.max_batch as u64) as usize
    }

    pub fn next_due_at(&self, rate: f64) -> Instant {
        self.start + Duration::from_secs_f64(self.next_seq as f64 / rate)
    }

    /// Stamps the next `n` messages with `now_us` and their sequence numbers and makes them the
    /// unsent batch.
    pub fn stamp(&mut self, n: usize, now_us: u64) {
        for k in 0..n {
            let at = k * self.frame_len + self.payload_at + 1;
            let mut plain = [0u8; 16];
            plain[..8].copy_from_slice(&now_us.to_be_bytes());
            plain[8..].copy_from_slice(&self.next_seq.to_be_bytes());
            // Payload byte i is masked with MASK[i % 4]; these are payload bytes 1..17.
            for (j, b) in plain.iter().enumerate() {
                self.batch[at + j] = b ^ MASK[(1 + j) % 4];
            }
            if self.keyframe_every > 0 {
                let kind = if self.next_seq.is_multiple_of(self.keyframe_every) { KIND_KEY } else { KIND_DELTA };
                self.batch[at - 1] = kind ^ MASK[0];
            }
            self.next_seq += 1;
        }
        self.pos = 0;
        self.len = n * self.frame_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks a client frame the way the server does; returns (opcode, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "final");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        let mask = &frame[at..at + 4];
        let payload = frame[at + 4..at + 4 + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        (frame[0] & 0x0f, payload)
    }

    #[test]
    fn publisher_batches_carry_stamps_under_the_mask() {
        for size in [17, 100, 1000, 70_000] {
            let mut p = Publisher::new(0, 0, size);
            assert_eq!(p.due(p.start, 0.0), p.max_batch);
            let n = p.max_batch.min(3);
            p.stamp(n, 123_456);
            p.stamp(n, 987_654);
            assert_eq!(p.len, n * p.frame_len);
            for k in 0..n {
                let (opcode, payload) = unmask(&p.batch[k * p.frame_len..(k + 1) * p.frame_len]);
                assert_eq!(opcode, OP_BINARY);
                assert_eq!(payload.len(), size);
                assert_eq!(payload[0], KIND_LOAD);
                assert_eq!(u64::from_be_bytes(payload[1..9].try_into().unwrap()), 987_654);
                assert_eq!(u64::from_be_bytes(payload[9..17].try_into().unwrap()), (n + k) as u64);
                assert!(payload[17..].iter().enumerate().all(|(i, &b)| b == ((i + 17) % 251) as u8));
            }
        }
    }

    #[test]
    fn pacing_releases_messages_at_the_rate_and_catches_up() {
        let mut p = Publisher::new(0, 0, 100);
        let t = p.start;
        assert_eq!(p.due(t, 10.0), 1);
        p.stamp(1, 0);
        assert_eq!(p.due(t + Duration::from_millis(99), 10.0), 0);
        assert_eq!(p.next_due_at(10.0), t + Duration::from_millis(100));
        assert_eq!(p.due(p.next_due_at(10.0), 10.0), 1);
        assert_eq!(p.due(t + Duration::from_millis(450), 10.0), 4);
    }

    #[test]
    fn soak_publisher_sends_key_frames_every_n_and_deltas_between() {
        let mut p = Publisher::new(0, 0, 100);
        p.keyframe_every = 3;
        let n = p.max_batch.min(4);
        p.stamp(n, 1);
        for k in 0..n {
            let (_, payload) = unmask(&p.batch[k * p.frame_len..(k + 1) * p.frame_len]);
            assert_eq!(payload[0], if k % 3 == 0 { KIND_KEY } else { KIND_DELTA }, "message {k}");
            assert_eq!(u64::from_be_bytes(payload[9..17].try_into().unwrap()), k as u64);
        }
    }
}
