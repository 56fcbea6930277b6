//! Time: when the generator started, and when bytes arrived.

use std::time::Instant;

/// The generator's time base: µs since it started, on the monotonic clock. Kernel receive
/// timestamps are on the real-time clock; `epoch_real_ns` maps them onto it.
pub struct Clock {
    pub epoch: Instant,
    epoch_real_ns: i128,
}

/// When a read's bytes arrived: the kernel's receive time of its last segment (when the socket
/// has timestamps), and when our read returned.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub arrived_us: u64,
    pub read_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let epoch = Instant::now();
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Clock { epoch, epoch_real_ns: real.map_or(0, |d| d.as_nanos() as i128) }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The arrival of bytes just read; a receive time later than the read (a clock step) is
    /// not believed.
    pub fn arrival(&self, real_ns: Option<i128>) -> Arrival {
        let read_us = self.now_us();
        let arrived_us = match real_ns {
            Some(ns) => ((ns - self.epoch_real_ns) / 1000).clamp(0, read_us as i128) as u64,
            None => read_us,
        };
        Arrival { arrived_us, read_us }
    }
}
