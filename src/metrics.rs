//! Counters the reactor keeps, and the Prometheus text exposition of `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::hub::Stats;

#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub http_responses: BTreeMap<u16, u64>,
    pub ws_closes: BTreeMap<u16, u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// What is true right now, gathered at scrape time.
pub struct Gauges {
    pub connections: BTreeMap<&'static str, usize>,
    pub streams: usize,
    pub queued_bytes: usize,
}

impl Metrics {
    pub fn render(&self, gauges: &Gauges, hub: &Stats) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v)];
        let mut by_kind: Vec<(String, u64)> = ["http", "publisher", "watcher", "echo", "closing"]
            .iter()
            .map(|k| (format!("{{kind=\"{k}\"}}"), *gauges.connections.get(k).unwrap_or(&0) as u64))
            .collect();
        by_kind.sort();
        metric("relay_connections", "gauge", "Open connections by kind.", &by_kind);
        metric("relay_streams", "gauge", "Streams with a publisher or watchers.", &plain(gauges.streams as u64));
        metric(
            "relay_queued_bytes",
            "gauge",
            "Bytes queued for sending, all connections.",
            &plain(gauges.queued_bytes as u64),
        );
        metric(
            "relay_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &plain(self.connections_accepted),
        );
        metric(
            "relay_connections_rejected_total",
            "counter",
            "TCP connections refused past max_connections.",
            &plain(self.connections_rejected),
        );
        metric("relay_messages_in_total", "counter", "Messages received from publishers.", &plain(hub.messages_in));
        metric("relay_bytes_in_total", "counter", "Payload bytes received from publishers.", &plain(hub.bytes_in));
        metric("relay_messages_out_total", "counter", "Messages queued to watchers.", &plain(hub.messages_out));
        metric("relay_bytes_out_total", "counter", "Frame bytes queued to watchers.", &plain(hub.bytes_out));
        metric(
            "relay_messages_dropped_total",
            "counter",
            "Messages skipped for watchers over their bound.",
            &plain(hub.messages_dropped),
        );
        metric(
            "relay_watchers_closed_slow_total",
            "counter",
            "Watchers closed with 1008 for staying too slow.",
            &plain(hub.watchers_closed_slow),
        );
        metric(
            "relay_publisher_pauses_total",
            "counter",
            "Times a publisher was not read because every watcher of its stream was behind.",
            &plain(hub.publisher_pauses),
        );
        let codes: Vec<(String, u64)> =
            self.ws_closes.iter().map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n)).collect();
        metric("relay_websocket_closes_total", "counter", "WebSocket connections ended, by close code.", &codes);
        let statuses: Vec<(String, u64)> =
            self.http_responses.iter().map(|(s, n)| (format!("{{status=\"{s}\"}}"), *n)).collect();
        metric("relay_http_responses_total", "counter", "HTTP responses by status.", &statuses);
        metric("relay_socket_bytes_read_total", "counter", "Bytes read from sockets.", &plain(self.bytes_read));
        metric("relay_socket_bytes_written_total", "counter", "Bytes written to sockets.", &plain(self.bytes_written));
        out
    }
}
