//! Loss and latency accounting, from the stamps in each message's head.

use crate::clock::Arrival;
use crate::histogram::Histogram;

/// A watcher's view of its stream's sequence numbers.
#[derive(Default, Debug)]
pub struct Acct {
    pub next_seq: u64,
    /// Messages of the measured range skipped over (sequence gaps).
    pub gaps: u64,
    /// Soak mode, per session: when the handshake completed (µs), the publisher's next sequence
    /// number then, the first message sent after it (gaps count only from there), and how many
    /// messages arrived.
    pub opened_us: u64,
    pub join_seq: u64,
    first_live: Option<u64>,
    messages: u64,
}

/// Counts what watchers receive. A stream's measured messages are the sequence numbers in
/// `m0[s]..m1[s]`: those sent between the end of the warm-up and the end of the run.
///
/// Throughput and CPU per message use every load message delivered while `counting` (from the
/// end of the warm-up to the end of the drain), whatever its sequence number: at full speed the
/// server may still be delivering warm-up messages when the measured ones start.
pub struct Meter {
    pub m0: Vec<u64>,
    pub m1: Vec<u64>,
    /// Latency to the kernel's receive timestamp, and to the return of our read.
    pub hist: Histogram,
    pub hist_read: Histogram,
    pub received: u64,
    pub out_of_order: u64,
    pub counting: bool,
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// When the last load message arrived (µs since start).
    pub last_any_us: u64,
    /// Soak mode: per-session accounting (`record_soak`) instead of the measured range.
    pub soak: bool,
}

impl Meter {
    pub fn new(streams: usize) -> Meter {
        Meter {
            m0: vec![u64::MAX; streams],
            m1: vec![u64::MAX; streams],
            hist: Histogram::new(),
            hist_read: Histogram::new(),
            received: 0,
            out_of_order: 0,
            counting: false,
            delivered: 0,
            delivered_bytes: 0,
            last_any_us: 0,
            soak: false,
        }
    }

    pub fn record(&mut self, stream: usize, acct: &mut Acct, head: &[u8], len: u64, at: Arrival) {
        let sent_us = u64::from_be_bytes(head[1..9].try_into().expect("8 bytes"));
        let seq = u64::from_be_bytes(head[9..17].try_into().expect("8 bytes"));
        if self.soak {
            return self.record_soak(acct, sent_us, seq, len, at);
        }
        let (m0, m1) = (self.m0[stream], self.m1[stream]);
        if seq < acct.next_seq {
            self.out_of_order += 1;
            return;
        }
        self.last_any_us = at.read_us;
        if self.counting {
            self.delivered += 1;
            self.delivered_bytes += len;
        }
        let (lo, hi) = (acct.next_seq.max(m0), seq.min(m1));
        acct.gaps += hi.saturating_sub(lo);
        acct.next_seq = seq + 1;
        if (m0..m1).contains(&seq) {
            self.received += 1;
            self.hist.record(at.arrived_us.saturating_sub(sent_us));
            self.hist_read.record(at.read_us.saturating_sub(sent_us));
        }
    }

    /// Soak mode: a session first gets the cached group (older messages), then live ones; gaps
    /// count from the first message sent after it joined.
    fn record_soak(&mut self, acct: &mut Acct, sent_us: u64, seq: u64, len: u64, at: Arrival) {
        if acct.messages > 0 && seq < acct.next_seq {
            self.out_of_order += 1;
            return;
        }
        self.last_any_us = at.read_us;
        self.delivered += 1;
        self.delivered_bytes += len;
        match acct.first_live {
            Some(_) => acct.gaps += seq - acct.next_seq,
            None if sent_us >= acct.opened_us => acct.first_live = Some(seq),
            None => {}
        }
        acct.next_seq = seq + 1;
        acct.messages += 1;
    }

    /// Measured messages a watcher never got: gaps plus the tail after its last message.
    pub fn lost(&self, stream: usize, acct: &Acct) -> u64 {
        let (m0, m1) = (self.m0[stream], self.m1[stream]);
        if m0 >= m1 {
            return 0;
        }
        acct.gaps + m1.saturating_sub(acct.next_seq.max(m0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::load_payload;

    #[test]
    fn meter_counts_gaps_and_the_tail_only_inside_the_measured_range() {
        let mut m = Meter::new(1);
        let mut a = Acct::default();
        let head = |seq: u64| load_payload(17, 10, seq);
        // Warm-up: seq 0..3 received, 3 skipped; nothing counted.
        for seq in [0, 1, 2, 4] {
            m.record(0, &mut a, &head(seq), 17, Arrival { arrived_us: 50, read_us: 50 });
        }
        assert_eq!((m.received, a.gaps), (0, 0));
        m.m0[0] = 6;
        // 5 is before the range; 7 skips 6 (measured); 8, 9 arrive; 10..12 never do.
        for seq in [5, 7, 8, 9] {
            m.record(0, &mut a, &head(seq), 17, Arrival { arrived_us: 60, read_us: 75 });
        }
        m.record(0, &mut a, &head(8), 17, Arrival { arrived_us: 60, read_us: 75 });
        m.m1[0] = 12;
        assert_eq!((m.received, a.gaps, m.out_of_order), (3, 1, 1));
        assert_eq!(m.lost(0, &a), 1 + 2);
        assert_eq!(m.hist.percentile(50.0), Some(50));
        assert_eq!(m.hist_read.percentile(50.0), Some(65));
        assert_eq!(m.last_any_us, 75);
    }

    #[test]
    fn soak_meter_counts_gaps_only_from_the_first_live_message() {
        let mut m = Meter::new(1);
        m.soak = true;
        let mut a = Acct { opened_us: 1000, ..Acct::default() };
        let at = Arrival { arrived_us: 2000, read_us: 2000 };
        let msg = |sent_us: u64, seq: u64| load_payload(17, sent_us, seq);
        // The cached group (sent before the join, may start anywhere), then live messages.
        for (sent, seq) in [(100, 30), (200, 31), (300, 35), (1500, 36), (1600, 37), (1700, 40), (1800, 41)] {
            m.record(0, &mut a, &msg(sent, seq), 17, at);
        }
        assert_eq!((a.first_live, a.gaps, a.messages, m.delivered), (Some(36), 2, 7, 7));
        m.record(0, &mut a, &msg(1900, 39), 17, at);
        assert_eq!(m.out_of_order, 1);
    }
}
