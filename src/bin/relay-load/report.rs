//! The run's results: one JSON line (the benchmarks' contract) and a table for people.

use std::collections::BTreeMap;

use crate::args::Args;

#[derive(Debug, Default)]
pub struct Report {
    label: String,
    streams: usize,
    watchers: usize,
    size: usize,
    rate: f64,
    idle: bool,
    pub window_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub delivered_mb_s: f64,
    pub msgs_per_s: f64,
    pub lat_p50_us: Option<u64>,
    pub lat_p99_us: Option<u64>,
    pub lat_max_us: Option<u64>,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub server_cpu_s: Option<f64>,
    pub server_rss_kb: Option<u64>,
    pub server_peak_rss_kb: Option<u64>,
    pub idle_rss_per_conn_bytes: Option<i64>,
    // For the table only.
    pub read_p50_us: Option<u64>,
    pub read_p99_us: Option<u64>,
    pub connected: usize,
    pub out_of_order: u64,
    pub own_cpu_s: Option<f64>,
    pub problems: BTreeMap<String, u64>,
}

pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f64(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { "null".into() }
}

pub fn json_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

impl Report {
    pub fn new(args: &Args) -> Report {
        Report {
            label: args.label.clone(),
            streams: args.streams,
            watchers: args.watchers,
            // Idle runs send nothing: no message size or rate to report.
            size: if args.idle { 0 } else { args.size },
            rate: if args.idle { 0.0 } else { args.rate },
            idle: args.idle,
            ..Report::default()
        }
    }

    fn cpu_us_per_msg(&self) -> Option<f64> {
        self.server_cpu_s.filter(|_| self.delivered > 0).map(|cpu| cpu / self.delivered as f64 * 1e6)
    }

    pub fn json(&self) -> String {
        let fields = [
            ("label", json_string(&self.label)),
            ("streams", self.streams.to_string()),
            ("watchers", self.watchers.to_string()),
            ("size", self.size.to_string()),
            ("rate", json_f64(self.rate, 3)),
            ("duration_s", json_f64(self.window_s, 3)),
            ("sent", self.sent.to_string()),
            ("expected", self.expected.to_string()),
            ("received", self.received.to_string()),
            ("lost", self.lost.to_string()),
            ("delivered_bytes", self.delivered_bytes.to_string()),
            ("delivered_mb_s", json_f64(self.delivered_mb_s, 3)),
            ("msgs_per_s", json_f64(self.msgs_per_s, 1)),
            ("lat_p50_us", json_opt(self.lat_p50_us)),
            ("lat_p99_us", json_opt(self.lat_p99_us)),
            ("lat_max_us", json_opt(self.lat_max_us)),
            ("connect_failures", self.connect_failures.to_string()),
            ("closed_by_server", self.closed_by_server.to_string()),
            ("server_cpu_s", self.server_cpu_s.map_or("null".into(), |v| json_f64(v, 3))),
            ("server_rss_kb", json_opt(self.server_rss_kb)),
            ("server_peak_rss_kb", json_opt(self.server_peak_rss_kb)),
            ("cpu_us_per_msg", self.cpu_us_per_msg().map_or("null".into(), |v| json_f64(v, 4))),
            ("idle_rss_per_conn_bytes", json_opt(self.idle_rss_per_conn_bytes)),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let opt = |v: Option<u64>, unit: &str| v.map_or("-".into(), |v| format!("{v} {unit}"));
        let mut t = String::new();
        let label = if self.label.is_empty() { String::new() } else { format!(" [{}]", self.label) };
        let rate = if self.rate > 0.0 { format!("{}/s", self.rate) } else { "max".into() };
        let _ = writeln!(t, "relay-load{label}");
        let _ = writeln!(
            t,
            "  load        {} watchers ({} connected) on {} streams, {} B messages at {rate}, {:.2} s window",
            self.watchers, self.connected, self.streams, self.size, self.window_s
        );
        if !self.idle {
            let _ = writeln!(
                t,
                "  messages    sent {}  expected {}  received {}  lost {}{}",
                self.sent,
                self.expected,
                self.received,
                self.lost,
                if self.out_of_order > 0 { format!("  out of order {}", self.out_of_order) } else { String::new() }
            );
            let _ = writeln!(
                t,
                "  delivered   {:.1} MB/s  {:.0} msg/s  ({} messages, {} bytes)",
                self.delivered_mb_s, self.msgs_per_s, self.delivered, self.delivered_bytes
            );
            let _ = writeln!(
                t,
                "  latency     p50 {}  p99 {}  max {}  (to our read: p50 {}  p99 {})",
                opt(self.lat_p50_us, "us"),
                opt(self.lat_p99_us, "us"),
                opt(self.lat_max_us, "us"),
                opt(self.read_p50_us, "us"),
                opt(self.read_p99_us, "us")
            );
        }
        let _ =
            writeln!(t, "  failures    connect {}  closed by server {}", self.connect_failures, self.closed_by_server);
        for (why, n) in &self.problems {
            let _ = writeln!(t, "              {n} × {why}");
        }
        let cpu = self.server_cpu_s.map_or("-".into(), |v| format!("{v:.2} s"));
        let per_msg = self.cpu_us_per_msg().map_or(String::new(), |v| format!(" ({v:.3} us/msg)"));
        let _ = writeln!(
            t,
            "  server      cpu {cpu}{per_msg}  rss {}  peak {}",
            opt(self.server_rss_kb, "kB"),
            opt(self.server_peak_rss_kb, "kB")
        );
        if let Some(per_conn) = self.idle_rss_per_conn_bytes {
            let _ = writeln!(t, "  idle        {per_conn} bytes of server RSS per watcher");
        }
        if let Some(own) = self.own_cpu_s {
            let _ = writeln!(t, "  generator   cpu {own:.2} s (whole run)");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_contract_keys() {
        let mut r = Report { label: "a \"b\"".into(), delivered: 4, server_cpu_s: Some(0.002), ..Report::default() };
        r.lat_p50_us = Some(12);
        let line = r.json();
        assert!(line.starts_with(r#"{"label":"a \"b\"","streams":0,"#), "{line}");
        assert!(line.contains(r#""lat_p50_us":12,"lat_p99_us":null"#));
        assert!(line.contains(r#""cpu_us_per_msg":500.0000,"idle_rss_per_conn_bytes":null}"#), "{line}");
        let keys = [
            "label",
            "streams",
            "watchers",
            "size",
            "rate",
            "duration_s",
            "sent",
            "expected",
            "received",
            "lost",
            "delivered_bytes",
            "delivered_mb_s",
            "msgs_per_s",
            "lat_p50_us",
            "lat_p99_us",
            "lat_max_us",
            "connect_failures",
            "closed_by_server",
            "server_cpu_s",
            "server_rss_kb",
            "server_peak_rss_kb",
            "cpu_us_per_msg",
            "idle_rss_per_conn_bytes",
        ];
        assert_eq!(line.matches("\":").count(), keys.len());
        for k in keys {
            assert!(line.contains(&format!("\"{k}\":")), "{k}");
        }
    }
}
