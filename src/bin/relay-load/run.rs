//! The run: every connection in one mio loop, from connecting through the measured window to
//! the drain. The loop itself, connecting and closing are in the submodules.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::args::Args;
use crate::clock::Clock;
use crate::conn::{Conn, Role};
use crate::meter::Meter;
use crate::probe::{ServerProbe, proc_cpu_s, proc_status_kb};
use crate::publisher::Publisher;
use crate::report::Report;
use crate::soak;

mod close;
mod connect;
mod event_loop;

const READ_BUF: usize = 256 * 1024;
/// After the last message is sent, how long watchers may go without receiving anything
/// before the messages still missing count as lost.
const DRAIN: Duration = Duration::from_secs(2);
const DRAIN_CAP: Duration = Duration::from_secs(60);

pub struct Run {
    pub args: Args,
    poll: Poll,
    pub conns: Vec<Conn>,
    pub pubs: Vec<Publisher>,
    buf: Vec<u8>,
    pub clock: Clock,
    pub meter: Meter,
    /// Connections whose I/O budget ran out with work left: served again next tick.
    pending: Vec<usize>,
    retries: Vec<(Instant, usize)>,
    queue: VecDeque<usize>,
    in_flight: usize,
    /// Publishers stamp new messages only while this is set.
    pub sending: bool,
    pub connect_failures: u64,
    closed_by_server: u64,
    /// Why connections failed or ended early, with counts (for the table).
    pub problems: BTreeMap<String, u64>,
    fatal: Option<String>,
    /// Soak mode's churn plans and per-session totals.
    pub soak: Option<Box<soak::Soak>>,
}

impl Run {
    pub fn new(args: Args) -> Result<Run, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let mut conns: Vec<Conn> = (0..args.watchers).map(|i| Conn::new(Role::Watcher, i % args.streams)).collect();
        let mut pubs = Vec::new();
        if !args.idle {
            for s in 0..args.streams {
                let token = conns.len();
                conns.push(Conn::new(Role::Publisher(pubs.len()), s));
                pubs.push(Publisher::new(token, s, args.size));
            }
        }
        let meter = Meter::new(args.streams);
        Ok(Run {
            args,
            poll,
            conns,
            pubs,
            buf: vec![0; READ_BUF],
            clock: Clock::new(),
            meter,
            pending: Vec::new(),
            retries: Vec::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            sending: false,
            connect_failures: 0,
            closed_by_server: 0,
            problems: BTreeMap::new(),
            fatal: None,
            soak: None,
        })
    }

    pub fn say(&self, line: std::fmt::Arguments) {
        if !self.args.json_only {
            eprintln!("relay-load: {line}");
        }
    }

    fn probe(&self) -> ServerProbe {
        let Some(pid) = self.args.server_pid else { return ServerProbe::default() };
        ServerProbe {
            cpu_s: proc_cpu_s(&pid.to_string()),
            rss_kb: proc_status_kb(pid, "VmRSS"),
            peak_rss_kb: proc_status_kb(pid, "VmHWM"),
        }
    }

    pub fn execute(mut self) -> Result<Report, String> {
        let mut events = Events::with_capacity(1024);
        let (w, k) = (self.args.watchers, self.args.streams);
        let before = self.probe();
        if self.args.server_pid.is_some() && before.cpu_s.is_none() {
            return Err(format!("cannot read /proc/{}/stat", self.args.server_pid.unwrap_or(0)));
        }
        self.say(format_args!("connecting {w} watchers on {k} streams to {}", self.args.url));
        let t = Instant::now();
        self.connect_group(0..w, &mut events)?;
        let watchers_open = self.conns[..w].iter().filter(|c| c.opened).count();
        self.say(format_args!("{watchers_open} watchers open in {:.2} s", t.elapsed().as_secs_f64()));
        if w > 0 && watchers_open == 0 {
            return Err(format!("no watcher could connect to {}{}", self.args.url, self.problem_summary()));
        }
        let mut report = Report::new(&self.args);
        if self.args.idle {
            let start = self.probe();
            let hold_end = Instant::now() + Duration::from_secs_f64(self.args.duration);
            self.run_until(hold_end, &mut events)?;
            let end = self.probe();
            report.window_s = self.args.duration;
            report.server_cpu_s = end.cpu_s.zip(start.cpu_s).map(|(b, a)| b - a);
            report.idle_rss_per_conn_bytes = end
                .rss_kb
                .zip(before.rss_kb)
                .filter(|_| watchers_open > 0)
                .map(|(b, a)| (b as i64 - a as i64) * 1024 / watchers_open as i64);
            report.server_rss_kb = end.rss_kb;
            report.server_peak_rss_kb = end.peak_rss_kb;
        } else {
            self.connect_group(w..w + k, &mut events)?;
            let pubs_open = self.conns[w..].iter().filter(|c| c.opened).count();
            if pubs_open == 0 {
                return Err(format!("no publisher could connect to {}{}", self.args.url, self.problem_summary()));
            }
            self.traffic(&mut events, &mut report)?;
        }
        report.connect_failures = self.connect_failures;
        report.closed_by_server = self.closed_by_server;
        report.out_of_order = self.meter.out_of_order;
        report.connected = watchers_open;
        report.problems = std::mem::take(&mut self.problems);
        self.close_all(&mut events);
        report.own_cpu_s = proc_cpu_s("self");
        Ok(report)
    }

    pub fn problem_summary(&self) -> String {
        let list: Vec<String> = self.problems.iter().map(|(why, n)| format!("{why} ×{n}")).collect();
        if list.is_empty() { String::new() } else { format!(": {}", list.join(", ")) }
    }

    fn problem(&mut self, why: String) {
        *self.problems.entry(why).or_default() += 1;
    }

    /// Sends for warm-up + duration, then drains; fills in the traffic part of `report`.
    fn traffic(&mut self, events: &mut Events, report: &mut Report) -> Result<(), String> {
        let args = self.args.clone();
        let start = Instant::now();
        let k = self.pubs.len();
        for (i, p) in self.pubs.iter_mut().enumerate() {
            // Spread the publishers over one interval rather than sending all at once.
            let offset = if args.rate > 0.0 { i as f64 / (k as f64 * args.rate) } else { 0.0 };
            p.start = start + Duration::from_secs_f64(offset);
        }
        let t_warm = start + Duration::from_secs_f64(args.warmup);
        let t_end = t_warm + Duration::from_secs_f64(args.duration);
        self.say(format_args!("sending for {} s after {} s of warm-up", args.duration, args.warmup));
        self.sending = true;
        self.run_until(t_warm, events)?;
        // The window runs from these two readings of the sequence numbers (a busy machine may
        // wake us late; the counts and the time then still match).
        let warm_us = self.clock.now_us();
        let open: Vec<bool> = self.pubs.iter().map(|p| self.conns[p.token].opened).collect();
        for (p, &open) in self.pubs.iter().zip(&open) {
            self.meter.m0[p.stream] = if open { p.next_seq } else { 0 };
        }
        let cpu0 = self.probe().cpu_s;
        self.meter.counting = true;
        self.run_until(t_end, events)?;
        self.sending = false;
        let end_us = self.clock.now_us();
        for (p, &open) in self.pubs.iter().zip(&open) {
            self.meter.m1[p.stream] = if open { p.next_seq } else { 0 };
        }
        let mut watchers_per_stream = vec![0u64; args.streams];
        for c in self.conns.iter().filter(|c| c.opened && c.role == Role::Watcher) {
            watchers_per_stream[c.stream] += 1;
        }
        let sent: u64 = (0..args.streams).map(|s| self.meter.m1[s].saturating_sub(self.meter.m0[s])).sum();
        let expected: u64 =
            (0..args.streams).map(|s| self.meter.m1[s].saturating_sub(self.meter.m0[s]) * watchers_per_stream[s]).sum();
        // Drain: until everything arrived, or nothing arrived for DRAIN (a server at full speed
        // may hold seconds of queued messages), and never longer than DRAIN_CAP.
        let cap = Instant::now() + DRAIN_CAP;
        loop {
            let flushed = self.pubs.iter().all(|p| p.pos == p.len || !self.conns[p.token].opened);
            if flushed && self.meter.received >= expected {
                break;
            }
            let last = self.clock.epoch + Duration::from_micros(self.meter.last_any_us.max(end_us));
            let quiet_end = (last + DRAIN).min(cap);
            if Instant::now() >= quiet_end {
                break;
            }
            self.tick(events, Some(quiet_end))?;
        }
        self.meter.counting = false;
        let end = self.probe();
        let window_us = self.meter.last_any_us.max(end_us).saturating_sub(warm_us).max(1);
        let window_s = window_us as f64 / 1e6;
        let lost: u64 = self
            .conns
            .iter()
            .filter(|c| c.opened && c.role == Role::Watcher)
            .map(|c| self.meter.lost(c.stream, &c.acct))
            .sum();
        let m = &self.meter;
        report.window_s = window_s;
        report.sent = sent;
        report.expected = expected;
        report.received = m.received;
        report.lost = lost;
        report.delivered = m.delivered;
        report.delivered_bytes = m.delivered_bytes;
        report.delivered_mb_s = m.delivered_bytes as f64 / window_s / 1e6;
        report.msgs_per_s = m.delivered as f64 / window_s;
        report.lat_p50_us = m.hist.percentile(50.0);
        report.lat_p99_us = m.hist.percentile(99.0);
        report.lat_max_us = (m.hist.total > 0).then_some(m.hist.max);
        report.read_p50_us = m.hist_read.percentile(50.0);
        report.read_p99_us = m.hist_read.percentile(99.0);
        report.server_cpu_s = end.cpu_s.zip(cpu0).map(|(b, a)| b - a);
        report.server_rss_kb = end.rss_kb;
        report.server_peak_rss_kb = end.peak_rss_kb;
        Ok(())
    }
}
