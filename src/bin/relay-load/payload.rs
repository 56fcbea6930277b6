//! The load messages' first bytes: kind, send time (µs since start, u64 BE) and sequence number
//! per stream (u64 BE). The rest of a payload is filler that watchers never look at.

/// Byte 0 of every payload: a kind the relay forwards but never caches.
pub const KIND_LOAD: u8 = 0x05;
/// Soak mode's kinds: a video key frame (cached, starts a group) and a delta frame.
pub const KIND_KEY: u8 = 0x02;
pub const KIND_DELTA: u8 = 0x03;
/// Kind, send time and sequence number: all a watcher reads of a payload.
pub const HEAD_LEN: usize = 17;

/// A load message's payload with its stamps, `size` bytes in all.
#[cfg(test)]
pub fn load_payload(size: usize, sent_us: u64, seq: u64) -> Vec<u8> {
    let mut p = vec![0xAB; size];
    p[0] = KIND_LOAD;
    p[1..9].copy_from_slice(&sent_us.to_be_bytes());
    p[9..17].copy_from_slice(&seq.to_be_bytes());
    p
}
