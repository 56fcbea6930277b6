//! Soak mode (issue 5): one publisher at 30 × 50 KB with real key and delta frames, a few hundred
//! watchers of which a fraction join, leave and stall at random, for a long time. Prints the
//! server's RSS and connection count as it goes and checks that no well-behaved watcher loses
//! a message. See `--help`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use camrelay::ws::frame::OP_CLOSE;
use mio::Events;

use crate::args::Args;
use crate::conn::{Conn, Phase, Role};
use crate::frames::push_masked_frame;
use crate::probe::{proc_cpu_s, proc_status_kb};
use crate::report::{json_opt, json_string};
use crate::run::Run;
use crate::transport::write_some;

/// Key frame every this many messages: one a second at 30 messages a second.
const KEYFRAME_EVERY: u64 = 30;
/// How often the churn plans are looked at and the server's RSS is read.
const STEP: Duration = Duration::from_millis(20);
const SAMPLE: Duration = Duration::from_secs(1);
/// A watcher that ends its stall by leaving first reads for this long, so a close the server
/// sent while it was stalled (1008) is seen and counted.
const READ_BEFORE_LEAVING: Duration = Duration::from_secs(1);
/// After the publisher stops: how long without any message before the rest counts as lost.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
const DRAIN_CAP: Duration = Duration::from_secs(15);
/// How long to wait for the server to count our connections down to zero at the end.
const FINAL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SoakArgs {
    pub churn: f64,
    pub report_every: f64,
    pub seed: Option<u64>,
}

/// How a watcher session ended.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// We closed it (a leave, or the end of the run).
    Left,
    /// The server sent a close frame with this code.
    Server(Option<u16>),
    /// Reset, EOF without a close frame, or a protocol error.
    Lost,
}

/// What a watcher slot does next.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Watches for the whole run (a churner only after the server closed it: it rejoins).
    Steady,
    /// Not connected; joins at this time.
    Offline(Instant),
    /// Connecting and upgrading.
    Joining,
    /// Reading; at this time it leaves or stalls.
    Watching(Instant),
    /// Not reading until this time; then leaves (after reading briefly) or resumes.
    Stalled { until: Instant, leave: bool },
    /// Reading again, then leaving at this time.
    Leaving(Instant),
}

#[derive(Debug, Default, Clone)]
struct Totals {
    joins: u64,
    leaves: u64,
    stalls: u64,
    wb_sessions: u64,
    /// Sequence gaps of well-behaved sessions (stalled ones' gaps before their first stall too).
    wb_lost: u64,
    /// Messages still missing at the end from well-behaved sessions open then.
    wb_tail: u64,
    wb_closed_by_server: u64,
    stalled_sessions: u64,
    stalled_skipped: u64,
    stalled_closed_1008: u64,
    stalled_closed_other: u64,
}

pub struct Soak {
    plans: Vec<Plan>,
    rng: u64,
    totals: Totals,
}

impl Soak {
    fn random(&mut self) -> f64 {
        // xorshift64: plenty for picking stall lengths.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn after(&mut self, now: Instant, lo: f64, hi: f64) -> Instant {
        now + Duration::from_secs_f64(lo + (hi - lo) * self.random())
    }

    fn end_session(&mut self, c: &mut Conn, end: End) {
        let t = &mut self.totals;
        let gaps = std::mem::take(&mut c.acct.gaps);
        if c.stalled_ever {
            t.stalled_sessions += 1;
            t.stalled_skipped += gaps;
            match end {
                End::Server(Some(1008)) => t.stalled_closed_1008 += 1,
                End::Server(_) | End::Lost => t.stalled_closed_other += 1,
                End::Left => {}
            }
        } else {
            t.wb_sessions += 1;
            t.wb_lost += gaps;
            if !matches!(end, End::Left) {
                t.wb_closed_by_server += 1;
            }
        }
    }
}

/// One reading of the server.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    rss_kb: Option<u64>,
    connections: Option<u64>,
}

#[derive(Debug, Default)]
pub struct SoakReport {
    label: String,
    watchers: usize,
    churners: usize,
    size: usize,
    rate: f64,
    duration_s: f64,
    warmup_s: f64,
    sent: u64,
    delivered: u64,
    delivered_bytes: u64,
    totals: Totals,
    out_of_order: u64,
    connect_failures: u64,
    rss_start_kb: Option<u64>,
    rss_min_kb: Option<u64>,
    rss_max_kb: Option<u64>,
    rss_end_kb: Option<u64>,
    peak_rss_kb: Option<u64>,
    server_cpu_s: Option<f64>,
    final_connections: Option<u64>,
    /// The server's own counts (`/metrics`): watchers it closed as too slow, messages skipped.
    server_closed_slow: Option<u64>,
    server_dropped: Option<u64>,
    own_cpu_s: Option<f64>,
    problems: Vec<(String, u64)>,
}

impl SoakReport {
    fn well_behaved_lost(&self) -> u64 {
        self.totals.wb_lost + self.totals.wb_tail
    }

    pub fn json(&self) -> String {
        let t = &self.totals;
        let f = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
        let fields = [
            ("label", json_string(&self.label)),
            ("mode", json_string("soak")),
            ("watchers", self.watchers.to_string()),
            ("churners", self.churners.to_string()),
            ("size", self.size.to_string()),
            ("rate", format!("{:.3}", self.rate)),
            ("duration_s", format!("{:.3}", self.duration_s)),
            ("warmup_s", format!("{:.3}", self.warmup_s)),
            ("sent", self.sent.to_string()),
            ("delivered", self.delivered.to_string()),
            ("delivered_bytes", self.delivered_bytes.to_string()),
            ("joins", t.joins.to_string()),
            ("leaves", t.leaves.to_string()),
            ("stalls", t.stalls.to_string()),
            ("well_behaved_sessions", t.wb_sessions.to_string()),
            ("well_behaved_lost", self.well_behaved_lost().to_string()),
            ("well_behaved_closed_by_server", t.wb_closed_by_server.to_string()),
            ("stalled_sessions", t.stalled_sessions.to_string()),
            ("stalled_skipped", t.stalled_skipped.to_string()),
            ("stalled_closed_1008", t.stalled_closed_1008.to_string()),
            ("stalled_closed_other", t.stalled_closed_other.to_string()),
            ("out_of_order", self.out_of_order.to_string()),
            ("connect_failures", self.connect_failures.to_string()),
            ("server_rss_start_kb", json_opt(self.rss_start_kb)),
            ("server_rss_min_kb", json_opt(self.rss_min_kb)),
            ("server_rss_max_kb", json_opt(self.rss_max_kb)),
            ("server_rss_end_kb", json_opt(self.rss_end_kb)),
            ("server_peak_rss_kb", json_opt(self.peak_rss_kb)),
            ("server_cpu_s", f(self.server_cpu_s)),
            ("final_server_connections", json_opt(self.final_connections)),
            ("server_closed_slow", json_opt(self.server_closed_slow)),
            ("server_messages_dropped", json_opt(self.server_dropped)),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    pub fn table(&self) -> String {
        let t = &self.totals;
        let kb = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} kB"));
        let mut s = String::new();
        let label = if self.label.is_empty() { String::new() } else { format!(" [{}]", self.label) };
        let _ = writeln!(s, "relay-load soak{label}");
        let _ = writeln!(
            s,
            "  load          {} watchers ({} churning), {} B at {}/s, {:.1} s ({:.0} s warm-up)",
            self.watchers, self.churners, self.size, self.rate, self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            s,
            "  messages      sent {}  delivered {} ({:.1} MB)  out of order {}",
            self.sent,
            self.delivered,
            self.delivered_bytes as f64 / 1e6,
            self.out_of_order
        );
        let _ = writeln!(s, "  churn         joins {}  leaves {}  stalls {}", t.joins, t.leaves, t.stalls);
        let verdict = if self.well_behaved_lost() == 0 && t.wb_closed_by_server == 0 { "ok" } else { "FAIL" };
        let _ = writeln!(
            s,
            "  well-behaved  {} sessions  lost {} (gaps {}, tail {})  closed by server {}  [{verdict}]",
            t.wb_sessions,
            self.well_behaved_lost(),
            t.wb_lost,
            t.wb_tail,
            t.wb_closed_by_server
        );
        let _ = writeln!(
            s,
            "  stalled       {} sessions  skipped {}  closed 1008 {}  ended by the server without 1008 {}",
            t.stalled_sessions, t.stalled_skipped, t.stalled_closed_1008, t.stalled_closed_other
        );
        let _ = writeln!(
            s,
            "                (server /metrics: closed slow {}, messages dropped {}; a 1008 close stuck \
             behind a full socket arrives as a bare hang-up)",
            self.server_closed_slow.map_or("-".into(), |v| v.to_string()),
            self.server_dropped.map_or("-".into(), |v| v.to_string())
        );
        for (why, n) in &self.problems {
            let _ = writeln!(s, "                {n} × {why}");
        }
        let _ = writeln!(
            s,
            "  server rss    start {}  after warm-up min {} max {}  end {}  peak {}",
            kb(self.rss_start_kb),
            kb(self.rss_min_kb),
            kb(self.rss_max_kb),
            kb(self.rss_end_kb),
            kb(self.peak_rss_kb)
        );
        let _ = writeln!(
            s,
            "  server        cpu {}  connections at the end {}  (connect failures {})",
            self.server_cpu_s.map_or("-".into(), |v| format!("{v:.2} s")),
            self.final_connections.map_or("-".into(), |v| v.to_string()),
            self.connect_failures
        );
        if let Some(own) = self.own_cpu_s {
            let _ = writeln!(s, "  generator     cpu {own:.2} s");
        }
        s
    }
}

/// What the soak reads of the server's `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    /// The sum of `relay_connections`, minus this request's own connection.
    connections: u64,
    /// `relay_watchers_closed_slow_total` and `relay_messages_dropped_total`.
    closed_slow: u64,
    dropped: u64,
}

fn server_connections(args: &Args) -> Option<u64> {
    server_metrics(args).map(|m| m.connections)
}

/// `GET /metrics` over plain HTTP on the URL's host and port. `None` over TLS or on failure.
fn server_metrics(args: &Args) -> Option<Metrics> {
    if args.tls.is_some() {
        return None;
    }
    scrape(args.addr, &args.authority)
}

fn scrape(addr: SocketAddr, authority: &str) -> Option<Metrics> {
    let timeout = Duration::from_secs(2);
    let mut sock = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.set_write_timeout(Some(timeout)).ok()?;
    write!(sock, "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    sock.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let sum = |name: &str| -> u64 {
        body.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Some(Metrics {
        connections: sum("relay_connections").saturating_sub(1),
        closed_slow: sum("relay_watchers_closed_slow_total"),
        dropped: sum("relay_messages_dropped_total"),
    })
}

/// Runs the soak; `args.soak` is set.
pub fn run(args: Args) -> Result<SoakReport, String> {
    let soak_args = args.soak.clone().ok_or("not a soak run")?;
    let mut run = Run::new(args)?;
    let w = run.args.watchers;
    let churners = ((w as f64) * soak_args.churn).round() as usize;
    let seed = soak_args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    run.meter.soak = true;
    run.pubs[0].keyframe_every = KEYFRAME_EVERY;
    run.soak = Some(Box::new(Soak { plans: vec![Plan::Steady; w], rng: seed | 1, totals: Totals::default() }));
    run.soak_run(churners, &soak_args)
}

impl Run {
    fn soak_state(&mut self) -> &mut Soak {
        self.soak.as_mut().expect("soak mode")
    }

    /// Books the end of a watcher session that is open (soak mode only; once per session).
    pub(super) fn soak_session_end(&mut self, token: usize, end: End) {
        let Some(soak) = self.soak.as_mut() else { return };
        let c = &mut self.conns[token];
        if c.role == Role::Watcher && c.phase == Phase::Open {
            soak.end_session(c, end);
        }
    }

    fn soak_run(mut self, churners: usize, soak_args: &SoakArgs) -> Result<SoakReport, String> {
        let mut events = Events::with_capacity(1024);
        let w = self.args.watchers;
        let pid = self.args.server_pid;
        let rss = move || pid.and_then(|pid| proc_status_kb(pid, "VmRSS"));
        let cpu = move || pid.and_then(|pid| proc_cpu_s(&pid.to_string()));
        if pid.is_some() && cpu().is_none() {
            return Err(format!("cannot read /proc/{}/stat", pid.unwrap_or(0)));
        }
        let mut report = SoakReport {
            label: self.args.label.clone(),
            watchers: w,
            churners,
            size: self.args.size,
            rate: self.args.rate,
            warmup_s: self.args.warmup,
            rss_start_kb: rss(),
            ..SoakReport::default()
        };
        let cpu0 = cpu();
        self.say(format_args!(
            "soak: {w} watchers ({churners} churning) of one {} B × {}/s stream at {} for {} s",
            self.args.size, self.args.rate, self.args.url, self.args.duration
        ));
        self.connect_group(0..w, &mut events)?;
        let open = self.conns[..w].iter().filter(|c| c.opened).count();
        if open == 0 {
            return Err(format!("no watcher could connect to {}{}", self.args.url, self.problem_summary()));
        }
        self.connect_group(w..w + 1, &mut events)?;
        if !self.conns[w].opened {
            return Err(format!("the publisher could not connect to {}{}", self.args.url, self.problem_summary()));
        }
        let start = Instant::now();
        // The churners start desynchronised: each leaves or stalls at a random time.
        for token in w - churners..w {
            let at = self.soak_state().after(start, 0.0, 20.0);
            self.soak_state().plans[token] = Plan::Watching(at);
        }
        self.pubs[0].start = start;
        self.sending = true;
        let t_warm = start + Duration::from_secs_f64(self.args.warmup);
        let t_end = start + Duration::from_secs_f64(self.args.duration);
        let every = Duration::from_secs_f64(soak_args.report_every);
        let (mut next_sample, mut next_report) = (start + SAMPLE, start + every);
        let (mut rss_min, mut rss_max) = (None::<u64>, None::<u64>);
        loop {
            let now = Instant::now();
            if now >= t_end {
                break;
            }
            self.tick(&mut events, Some((now + STEP).min(t_end)))?;
            let now = Instant::now();
            self.churn(now);
            if now >= next_sample {
                next_sample += SAMPLE;
                if now >= t_warm
                    && let Some(kb) = rss()
                {
                    rss_min = Some(rss_min.map_or(kb, |m| m.min(kb)));
                    rss_max = Some(rss_max.map_or(kb, |m| m.max(kb)));
                }
            }
            if now >= next_report {
                next_report += every;
                let sample = Sample { rss_kb: rss(), connections: server_connections(&self.args) };
                self.progress_line((now - start).as_secs_f64(), sample);
            }
        }
        // Stop: the publisher's last message, then until every well-behaved watcher has it.
        self.sending = false;
        while self.pubs[0].pos != self.pubs[0].len && self.conns[w].phase == Phase::Open {
            self.tick(&mut events, Some(Instant::now() + STEP))?;
        }
        let sent = self.pubs[0].next_seq;
        let drain_start = Instant::now();
        let cap = drain_start + DRAIN_CAP;
        loop {
            let missing = self.conns[..w]
                .iter()
                .filter(|c| c.phase == Phase::Open && !c.stalled_ever)
                .any(|c| c.acct.next_seq.max(c.acct.join_seq) < sent);
            if !missing {
                break;
            }
            let last = self.clock.epoch + Duration::from_micros(self.meter.last_any_us);
            let quiet_end = (last.max(drain_start) + DRAIN_QUIET).min(cap);
            if Instant::now() >= quiet_end {
                break;
            }
            self.tick(&mut events, Some(quiet_end))?;
        }
        let tail: u64 = self.conns[..w]
            .iter()
            .filter(|c| c.phase == Phase::Open && !c.stalled_ever)
            .map(|c| sent.saturating_sub(c.acct.next_seq.max(c.acct.join_seq)))
            .sum();
        self.soak_state().totals.wb_tail = tail;
        report.duration_s = start.elapsed().as_secs_f64();
        report.rss_min_kb = rss_min;
        report.rss_max_kb = rss_max;
        report.rss_end_kb = rss();
        report.peak_rss_kb = pid.and_then(|pid| proc_status_kb(pid, "VmHWM"));
        report.server_cpu_s = cpu().zip(cpu0).map(|(b, a)| b - a);
        self.close_all(&mut events);
        // The server counts a connection until it has seen it close: wait for zero, briefly.
        let deadline = Instant::now() + FINAL_WAIT;
        let last = loop {
            let m = server_metrics(&self.args);
            if m.is_none_or(|m| m.connections == 0) || Instant::now() >= deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        report.final_connections = last.map(|m| m.connections);
        report.server_closed_slow = last.map(|m| m.closed_slow);
        report.server_dropped = last.map(|m| m.dropped);
        self.say(format_args!("server connections after closing everything: {:?}", report.final_connections));
        report.sent = sent;
        report.delivered = self.meter.delivered;
        report.delivered_bytes = self.meter.delivered_bytes;
        report.out_of_order = self.meter.out_of_order;
        report.connect_failures = self.connect_failures;
        report.totals = self.soak_state().totals.clone();
        report.problems = std::mem::take(&mut self.problems).into_iter().collect();
        report.own_cpu_s = proc_cpu_s("self");
        Ok(report)
    }

    fn progress_line(&self, elapsed: f64, sample: Sample) {
        let w = self.args.watchers;
        let Some(soak) = self.soak.as_ref() else { return };
        let t = &soak.totals;
        let open = self.conns[..w].iter().filter(|c| c.phase == Phase::Open).count();
        let stalled = self.conns[..w].iter().filter(|c| c.phase == Phase::Open && c.stalled).count();
        let wb_gaps: u64 =
            self.conns[..w].iter().filter(|c| c.phase == Phase::Open && !c.stalled_ever).map(|c| c.acct.gaps).sum();
        let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        self.say(format_args!(
            "soak {elapsed:>6.0} s  rss {:>7} kB  server conns {:>4}  watchers open {open:>3} (stalled {stalled:>2})  \
             delivered {:>9}  wb lost {}  stalled: skipped {} closed 1008 {}",
            opt(sample.rss_kb),
            opt(sample.connections),
            self.meter.delivered,
            t.wb_lost + wb_gaps,
            t.stalled_skipped,
            t.stalled_closed_1008
        ));
    }

    /// Moves every churning watcher along its plan.
    fn churn(&mut self, now: Instant) {
        for token in 0..self.args.watchers {
            let plan = self.soak_state().plans[token];
            let phase = self.conns[token].phase;
            let next = match plan {
                Plan::Steady => continue,
                Plan::Offline(at) if now < at => continue,
                Plan::Offline(_) => {
                    if phase == Phase::Closing {
                        self.drop_socket(token);
                    }
                    self.conns[token] = Conn::new(Role::Watcher, 0);
                    self.start_connect(token, now);
                    self.soak_state().totals.joins += 1;
                    Plan::Joining
                }
                Plan::Joining => match phase {
                    Phase::Open => Plan::Watching(self.soak_state().after(now, 2.0, 20.0)),
                    Phase::Done => Plan::Offline(self.soak_state().after(now, 0.5, 5.0)),
                    _ => continue,
                },
                _ if phase != Phase::Open => Plan::Offline(self.soak_state().after(now, 0.5, 5.0)),
                Plan::Watching(at) if now < at => continue,
                Plan::Watching(_) if self.soak_state().random() < 0.5 => self.leave(token, now),
                Plan::Watching(_) => {
                    // A first stall: the gaps so far were taken while it behaved; from now on
                    // its gaps are skips.
                    let c = &mut self.conns[token];
                    let gaps = if c.stalled_ever { 0 } else { std::mem::take(&mut c.acct.gaps) };
                    (c.stalled, c.stalled_ever) = (true, true);
                    let soak = self.soak_state();
                    soak.totals.wb_lost += gaps;
                    soak.totals.stalls += 1;
                    let until = soak.after(now, 2.0, 20.0);
                    Plan::Stalled { until, leave: soak.random() < 0.5 }
                }
                Plan::Stalled { until, .. } if now < until => continue,
                Plan::Stalled { leave, .. } => {
                    let c = &mut self.conns[token];
                    c.stalled = false;
                    // Whatever waited in the socket is read now, edge or not.
                    c.readable = true;
                    self.requeue(token);
                    if leave {
                        Plan::Leaving(now + READ_BEFORE_LEAVING)
                    } else {
                        Plan::Watching(self.soak_state().after(now, 2.0, 20.0))
                    }
                }
                Plan::Leaving(at) if now < at => continue,
                Plan::Leaving(_) => self.leave(token, now),
            };
            self.soak_state().plans[token] = next;
        }
    }

    /// Closes an open watcher from our side (close frame 1000); it rejoins later.
    fn leave(&mut self, token: usize, now: Instant) -> Plan {
        self.soak_session_end(token, End::Left);
        self.soak_state().totals.leaves += 1;
        let mut out = Vec::new();
        push_masked_frame(&mut out, OP_CLOSE, &1000u16.to_be_bytes());
        let c = &mut self.conns[token];
        c.stalled = false;
        let sent = match c.sock.as_mut() {
            Some(sock) => {
                matches!(write_some(sock, &mut c.tls, &mut out), Ok(true)) && sock.shutdown(Shutdown::Write).is_ok()
            }
            None => false,
        };
        if sent {
            c.phase = Phase::Closing;
        } else {
            self.drop_socket(token);
            self.conns[token].phase = Phase::Done;
        }
        Plan::Offline(self.soak_state().after(now, 0.5, 5.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_booked_by_behaviour() {
        let mut soak = Soak { plans: Vec::new(), rng: 1, totals: Totals::default() };
        let mut c = Conn::new(Role::Watcher, 0);
        c.acct.gaps = 3;
        soak.end_session(&mut c, End::Left);
        let mut stalled = Conn::new(Role::Watcher, 0);
        stalled.stalled_ever = true;
        stalled.acct.gaps = 40;
        soak.end_session(&mut stalled, End::Server(Some(1008)));
        let mut closed = Conn::new(Role::Watcher, 0);
        soak.end_session(&mut closed, End::Lost);
        let t = &soak.totals;
        assert_eq!((t.wb_sessions, t.wb_lost, t.wb_closed_by_server), (2, 3, 1));
        assert_eq!((t.stalled_sessions, t.stalled_skipped, t.stalled_closed_1008), (1, 40, 1));
        for _ in 0..1000 {
            let r = soak.random();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
